"""One worker of a two-worker MultiWorkerMirroredStrategy run (or a single-worker run without TF_CONFIG).

Usage: python tf_multiworker.py OUT_JSON [nodes]
Trains a small Dense model for 3 epochs on fixed data with a global batch of 16 and writes the weights after
each epoch to OUT_JSON.
"""
import json
import sys

import numpy as np

import zoobot.tensorflow  # noqa: F401  (quiet TensorFlow import)
import keras
import tensorflow as tf

from zoobot.tensorflow.distributed import MultiWorkerModelMixin, is_chief, multi_worker_strategy

out, nodes = sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 1
strategy = multi_worker_strategy(nodes) if nodes > 1 else tf.distribute.get_strategy()


class SmallModel(MultiWorkerModelMixin, keras.Model):
    pass


keras.utils.set_random_seed(0)
with strategy.scope():
    inputs = keras.Input((8,))
    model = SmallModel(inputs, keras.layers.Dense(2)(keras.layers.Dense(4, activation="relu")(inputs)))
    model.compile(optimizer=keras.optimizers.SGD(0.05), loss="mse")
rng = np.random.default_rng(0)
x, y = rng.normal(size=(64, 8)).astype("float32"), rng.normal(size=(64, 2)).astype("float32")
options = tf.data.Options()
options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
dataset = tf.data.Dataset.from_tensor_slices((x, y)).batch(16).with_options(options)

weights = []


class Record(keras.callbacks.Callback):
    def on_epoch_end(self, epoch, logs=None):
        weights.append([w.tolist() for w in self.model.get_weights()])


history = model.fit(dataset, epochs=3, verbose=0, validation_data=dataset, callbacks=[Record()])
with open(out, "w") as f:
    json.dump({"chief": is_chief(strategy), "weights": weights, "history": history.history}, f)
