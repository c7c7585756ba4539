"""One worker of ``train_with_keras.train(nodes=2)`` on a catalog written by the test.

Usage: python tf_multiworker_train.py CATALOG_CSV SAVE_DIR OUT_JSON
Writes, per epoch, a digest of every trainable weight (so the test can check the workers stay in lock-step) and
which files the worker's run folder holds.
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
digests = []


class Digest(keras.callbacks.Callback):
    def on_epoch_end(self, epoch, logs=None):
        # trainable weights only: BatchNorm moving statistics are each worker's own, as on MirroredStrategy
        digests.append([float(np.abs(w.numpy()).sum()) for w in self.model.trainable_weights])


model, trainer = train_with_keras.train(
    save_dir, schemas.decals_dr5_ortho_schema, catalog=pd.read_csv(catalog_csv, dtype={"id_str": str}),
    model_architecture="tiny_cnn", batch_size=8, resize_size=32, gpus=0, num_workers=1, prefetch_factor=1,
    epochs=2, nodes=2, extra_callbacks=[Digest()],
)
with open(out, "w") as f:
    json.dump({"digests": digests, "loss": trainer.history.history["loss"],
               "test_loss": trainer.test_metrics.get("test/supervised_loss")}, f)
