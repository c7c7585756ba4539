"""One worker of ``train_with_keras.train(nodes=2)`` on a catalog written by the test.

Usage: python tf_multiworker_train.py CATALOG_CSV SAVE_DIR OUT_JSON [EPOCHS]
Writes to OUT_JSON, per epoch this call trained, the epoch and a digest of every trainable weight (so the test can
check the workers stay in lock-step), and the trainable weights after the last epoch to OUT_JSON's ``.npz`` twin.
With a backup in SAVE_DIR the run resumes (``resume=True``, the default).
"""
import json
import sys

import numpy as np
import pandas as pd

import zoobot.tensorflow  # noqa: F401  (quiet TensorFlow import)
import keras

from zoobot.shared import schemas
from zoobot.tensorflow.training import train_with_keras

catalog_csv, save_dir, out = sys.argv[1:4]
epochs = int(sys.argv[4]) if len(sys.argv) > 4 else 2
digests, epochs_run, last_weights = [], [], []


class Digest(keras.callbacks.Callback):
    def on_epoch_end(self, epoch, logs=None):
        # trainable weights only: BatchNorm moving statistics are each worker's own, as on MirroredStrategy
        weights = [np.asarray(w.numpy()) for w in self.model.trainable_weights]
        digests.append([float(np.abs(w).sum()) for w in weights])
        epochs_run.append(int(epoch))
        last_weights[:] = weights


model, trainer = train_with_keras.train(
    save_dir, schemas.decals_dr5_ortho_schema, catalog=pd.read_csv(catalog_csv, dtype={"id_str": str}),
    model_architecture="tiny_cnn", batch_size=8, resize_size=32, gpus=0, num_workers=1, prefetch_factor=1,
    epochs=epochs, nodes=2, extra_callbacks=[Digest()],
)
np.savez(out.replace(".json", ".npz"), *last_weights)
with open(out, "w") as f:
    json.dump({"digests": digests, "epochs": epochs_run, "loss": trainer.history.history["loss"],
               "test_loss": trainer.test_metrics.get("test/supervised_loss")}, f)
