"""One worker of a finetuning fit with ``get_trainer(..., num_nodes=2)`` (or, with NODES=1, the same fit on one).

Usage: python tf_multiworker_finetune.py SAVE_DIR OUT_JSON NODES TASK [MAX_EPOCHS [last]]   (TASK: classifier or tree;
``last``: resume with ``ckpt_path='last'``)
A tiny convolutional encoder without BatchNorm (whose batch statistics would be per worker) and no dropout (masks
are drawn per replica), so that two workers with half of each global batch of 16 compute what one worker does.
Writes the trainable weights after the fit to OUT_JSON's ``.npz`` twin, and to OUT_JSON what the worker saw.
"""
import contextlib
import json
import sys

import numpy as np

import zoobot.tensorflow  # noqa: F401  (quiet TensorFlow import)
from zoobot.tensorflow.training import finetune  # no TensorFlow work yet: the strategy must come first

save_dir, out, nodes, task = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
max_epochs = int(sys.argv[5]) if len(sys.argv) > 5 else 2
ckpt_path = sys.argv[6] if len(sys.argv) > 6 else None
cluster = {"num_nodes": nodes} if nodes > 1 else {}
trainer = finetune.get_trainer(save_dir, max_epochs=max_epochs, accelerator="cpu", enable_progress_bar=False,
                               **cluster)

import keras  # noqa: E402
import tensorflow as tf  # noqa: E402

from zoobot.shared import schemas  # noqa: E402

rng = np.random.default_rng(0)
images = rng.uniform(size=(64, 32, 32, 1)).astype("float32")
if task == "tree":
    labels = rng.integers(0, 10, size=(64, 2)).astype("float32")
else:
    labels = (images.mean(axis=(1, 2, 3)) > 0.5).astype("int64")
train = tf.data.Dataset.from_tensor_slices((images[:48], labels[:48])).batch(16)
val = tf.data.Dataset.from_tensor_slices((images[48:], labels[48:])).batch(16)

outside_scope_error = None
if nodes > 1 and ckpt_path is None:  # a model built outside the strategy's scope is refused before any work
    outside = finetune.FinetuneableZoobotClassifier(num_classes=2, name="tiny_cnn", prog_bar=False)
    try:
        trainer.fit(outside, (train, val))
    except RuntimeError as err:
        outside_scope_error = str(err)
    del outside

keras.utils.set_random_seed(0)
with trainer.strategy.scope() if trainer.strategy is not None else contextlib.nullcontext():
    encoder = keras.Sequential([keras.Input((32, 32, 1)), keras.layers.Conv2D(4, 3, activation="relu"),
                                keras.layers.GlobalAveragePooling2D()])
    options = dict(encoder=encoder, n_blocks=-1, dropout_prob=0.0, learning_rate=1e-2, prog_bar=False)
    if task == "tree":
        model = finetune.FinetuneableZoobotTree(schema=schemas.gz_rings_schema, **options)
    else:
        model = finetune.FinetuneableZoobotClassifier(num_classes=2, **options)
trainer.fit(model, (train, val), ckpt_path=ckpt_path)
np.savez(out.replace(".json", ".npz"), *[np.asarray(w.numpy()) for w in model.trainable_weights])
with open(out, "w") as f:
    json.dump({"chief": trainer.is_chief, "history": trainer.history.history,
               "best": trainer.checkpoint_callback.best_model_path,
               "calibration": getattr(model, "calibration", None), "outside_scope_error": outside_scope_error}, f)
