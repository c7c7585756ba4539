"""Keras's own callbacks and TensorBoard work with a zoobot finetune as they do with any Keras model.

The finetuning logs carry zoobot's names (``finetuning/val_loss``, as in PyTorch) and Keras's
(``val_loss``, ``val_accuracy``), so ``keras.callbacks.EarlyStopping(monitor='val_loss')`` and
``keras.callbacks.CSVLogger`` need no renaming.
"""
import csv

import numpy as np
import pytest

import zoobot.tensorflow  # noqa: F401  (sets KERAS_BACKEND before keras is imported)
import keras  # noqa: E402
import tensorflow as tf  # noqa: E402

from zoobot.tensorflow.training import finetune  # noqa: E402

pytestmark = pytest.mark.tf


def _data(n=32, size=32, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.random((n, size, size, 3)).astype("float32")
    y = rng.integers(0, 2, n).astype("float32")
    train = tf.data.Dataset.from_tensor_slices((x, y)).batch(16)
    val = tf.data.Dataset.from_tensor_slices((x[:16], y[:16])).batch(16)
    return train, val


def _fit(tmp_path, callbacks, max_epochs=2):
    model = finetune.FinetuneableZoobotClassifier(name="tiny_cnn", num_classes=2, n_blocks=-1, learning_rate=1e-3,
                                                  prog_bar=False)
    trainer = finetune.get_trainer(tmp_path / "run", accelerator="cpu", max_epochs=max_epochs,
                                   enable_progress_bar=False, callbacks=callbacks)
    trainer.fit(model, _data())
    return trainer


def test_keras_early_stopping_and_csv_logger_see_keras_names(tmp_path):
    stopper = keras.callbacks.EarlyStopping(monitor="val_loss", patience=5)
    seen = []

    class Record(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            seen.append(dict(logs))

    trainer = _fit(tmp_path, [stopper, keras.callbacks.CSVLogger(str(tmp_path / "keras.csv")), Record()])
    assert stopper.best == pytest.approx(min(s["val_loss"] for s in seen))  # it monitored the real metric
    for logs in seen:
        assert logs["val_loss"] == logs["finetuning/val_loss"]
        assert logs["val_accuracy"] == logs["finetuning/val_acc"]
        assert logs["loss"] == logs["finetuning/train_loss"] and logs["accuracy"] == logs["finetuning/train_acc"]
        assert not any(k.startswith("val_finetuning/") for k in logs)
    with open(tmp_path / "keras.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 2
    assert {"val_loss", "val_accuracy", "loss", "accuracy"} <= set(rows[0])
    assert all(value not in ("", "NA") for row in rows for value in row.values())
    # zoobot's own metrics.csv keeps the backend-neutral names only
    with open(tmp_path / "run" / "logs" / "metrics.csv", newline="") as handle:
        header = next(csv.reader(handle))
    assert "finetuning/val_loss" in header and "val_loss" not in header
    assert trainer.callback_metrics["finetuning/val_loss"] == pytest.approx(seen[-1]["val_loss"])


def test_keras_tensorboard_callback_writes_the_epoch_metrics(tmp_path):
    pytest.importorskip("tensorboard", reason="the [logging] extra installs tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    _fit(tmp_path, [keras.callbacks.TensorBoard(log_dir=str(tmp_path / "tb"))])
    events = EventAccumulator(str(tmp_path / "tb" / "validation")).Reload()
    tags = events.Tags()["tensors"] + events.Tags()["scalars"]
    assert "epoch_loss" in tags and "epoch_accuracy" in tags  # Keras's val_loss / val_accuracy


def test_epoch_line_logger_shows_the_chosen_metrics(capsys):
    from zoobot.tensorflow.training.console import EpochLineLogger

    logs = {"loss": 2.0, "question_loss/bar": 0.5, "val_loss": 1.5, "learning_rate": 1e-3}
    EpochLineLogger(3, keep=("val_loss", "loss", "learning_rate")).on_epoch_end(0, dict(logs))
    EpochLineLogger(3, hide={"loss"}).on_epoch_end(1, dict(logs))
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("Epoch 1/3: val_loss 1.5000, loss 2.0000, learning_rate 0.0010 (")
    assert lines[1].startswith("Epoch 2/3: question_loss/bar 0.5000, val_loss 1.5000, learning_rate 0.0010 (")
