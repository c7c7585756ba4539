"""Crash and resume, and determinism, TensorFlow backend (issue 8): the twin of ``test_pytorch_resume.py``.

- Training interrupted after some epochs (an exception from a callback; a real SIGKILL of a training
  subprocess half-way through an epoch) and resumed with ``resume=True`` (Keras ``BackupAndRestore`` in
  ``save_dir/backup``) ends with the same weights (deterministic CPU) as an uninterrupted run.
- Prediction killed (SIGKILL) after some chunks are written and then rerun computes only the unfinished
  chunks and writes every ``id_str`` exactly once.
- The same seed gives the same splits, the same first-epoch loss, the same weights and the same predictions.

TensorFlow is imported inside the fixtures (torchvision must be imported first; see ``conftest.py``).
A process that has started TensorFlow must not fork, so the SIGKILL tests run a fresh subprocess.
"""
import numpy as np
import pandas as pd
import pytest

from zoobot.shared import prediction_runner
from zoobot.shared.catalogs import split_catalog
from zoobot.shared.load_predictions import load

from .helpers import (PREDICT_CHUNK_SIZE, PREDICT_OPTIONS, RINGS, TRAIN_RUN, keras_tree, kill_when_ready,
                      use_chunk_size)

pytestmark = pytest.mark.tf


class Interrupted(Exception):
    """Stands in for a crash."""


@pytest.fixture(scope="module")
def tf_modules():
    import zoobot.tensorflow  # noqa: F401  (sets KERAS_BACKEND)
    import keras
    from zoobot.tensorflow.estimators.define_model import load_zoobot_model
    from zoobot.tensorflow.predictions.predict_on_catalog import predict
    from zoobot.tensorflow.training.train_with_keras import train

    class CrashAtEpochStart(keras.callbacks.Callback):
        def __init__(self, epoch):
            super().__init__()
            self.epoch = epoch

        def on_epoch_begin(self, epoch, logs=None):
            if epoch == self.epoch:
                raise Interrupted(f"crash at the start of epoch {self.epoch}")

    class RecordEpochs(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.epochs = []

        def on_epoch_begin(self, epoch, logs=None):
            self.epochs.append(epoch)

    return dict(keras=keras, load=load_zoobot_model, predict=predict, train=train,
                CrashAtEpochStart=CrashAtEpochStart, RecordEpochs=RecordEpochs)


def weights(tf_modules, path) -> list:
    return tf_modules["load"](path).get_weights()


def assert_same_weights(tf_modules, path_a, path_b, atol=1e-6) -> None:
    a, b = weights(tf_modules, path_a), weights(tf_modules, path_b)
    assert [w.shape for w in a] == [w.shape for w in b]
    worst = max(float(np.abs(x.astype(np.float64) - y).max()) for x, y in zip(a, b))
    assert worst <= atol, f"weights differ by up to {worst:.3g} ({path_a} vs {path_b})"


def train_losses(save_dir) -> dict:
    metrics = pd.read_csv(save_dir / "logs" / "metrics.csv").dropna(subset=["train/supervised_loss"])
    return dict(zip(metrics["epoch"].astype(int), metrics["train/supervised_loss"]))


@pytest.fixture(scope="module")
def catalog_file(rings_catalog, tmp_path_factory):
    path = tmp_path_factory.mktemp("tf_resume") / "catalog.parquet"
    rings_catalog.to_parquet(path)
    return path


@pytest.fixture(scope="module")
def uninterrupted(tf_reference_run):
    """The reference: 3 epochs in one go (shared with the checkpoint tests)."""
    return tf_reference_run


@pytest.fixture(scope="module")
def crashed_then_resumed(rings_catalog, tmp_path_factory, tf_modules):
    """A crash (exception) at the start of epoch 2, then ``resume=True``."""
    save_dir = tmp_path_factory.mktemp("tf_crashed")
    with pytest.raises(Interrupted):
        tf_modules["train"](save_dir, RINGS, catalog=rings_catalog,
                            extra_callbacks=[tf_modules["CrashAtEpochStart"](2)], **TRAIN_RUN)
    before = {"losses": train_losses(save_dir), "epoch0": weights(tf_modules, save_dir / "checkpoints" / "epoch=0.keras")}
    recorder = tf_modules["RecordEpochs"]()
    tf_modules["train"](save_dir, RINGS, catalog=rings_catalog, extra_callbacks=[recorder], **TRAIN_RUN)
    before["resumed_epochs"] = recorder.epochs
    return save_dir, before


# ---------------------------------------------------------------------------------------------- training

def test_crash_then_resume_ends_with_the_weights_of_an_uninterrupted_run(uninterrupted, crashed_then_resumed,
                                                                         tf_modules):
    reference, _ = uninterrupted
    save_dir, before = crashed_then_resumed
    assert before["resumed_epochs"] == [2]  # finished epochs are not repeated
    assert_same_weights(tf_modules, reference / "checkpoints" / "last.keras", save_dir / "checkpoints" / "last.keras")
    assert train_losses(save_dir) == pytest.approx(train_losses(reference), rel=1e-6)


@pytest.mark.slow  # a fresh TensorFlow process and two more trainings: ~30 s of CPU
def test_sigkill_mid_epoch_then_resume_ends_with_the_weights_of_an_uninterrupted_run(
        uninterrupted, rings_catalog, catalog_file, tmp_path, tf_modules):
    reference, _ = uninterrupted
    save_dir = tmp_path / "run"
    # killed after the first batch of epoch 1: only epoch 0 is complete
    kill_when_ready("train_until_killed.py", catalog_file, save_dir, tmp_path / "ready", 1,
                    marker=tmp_path / "ready")
    recorder = tf_modules["RecordEpochs"]()
    tf_modules["train"](save_dir, RINGS, catalog=rings_catalog, extra_callbacks=[recorder], **TRAIN_RUN)
    assert recorder.epochs == [1, 2]
    assert_same_weights(tf_modules, reference / "checkpoints" / "last.keras", save_dir / "checkpoints" / "last.keras")


# ---------------------------------------------------------------------------------------------- determinism

def test_same_seed_same_splits_first_epoch_loss_weights_and_predictions(uninterrupted, crashed_then_resumed,
                                                                        rings_catalog, tf_modules):
    """The crashed run trained epochs 0-1 with the same seed as the reference: they must agree exactly."""
    reference, model = uninterrupted
    save_dir, before = crashed_then_resumed
    for split in ("train", "val", "test"):
        ids = pd.read_parquet(save_dir / f"{split}_catalog.parquet")["id_str"].tolist()
        assert ids == pd.read_parquet(reference / f"{split}_catalog.parquet")["id_str"].tolist()
    expected = split_catalog(rings_catalog, seed=TRAIN_RUN["random_state"])[0]["id_str"].tolist()
    assert pd.read_parquet(reference / "train_catalog.parquet")["id_str"].tolist() == expected
    assert before["losses"][0] == train_losses(reference)[0]
    reference_epoch0 = weights(tf_modules, reference / "checkpoints" / "epoch=0.keras")
    for ours, theirs in zip(before["epoch0"], reference_epoch0):
        np.testing.assert_array_equal(ours, theirs)

    catalog = rings_catalog.iloc[:6]
    first = tf_modules["load"](reference / "checkpoints" / "epoch=0.keras")
    twin = tf_modules["load"](save_dir / "checkpoints" / "epoch=0.keras")
    np.testing.assert_array_equal(
        tf_modules["predict"](catalog, twin, test_time_dropout=False, datamodule_kwargs=PREDICT_OPTIONS),
        tf_modules["predict"](catalog, first, test_time_dropout=False, datamodule_kwargs=PREDICT_OPTIONS))


# ---------------------------------------------------------------------------------------------- prediction

def test_sigkill_mid_prediction_then_rerun_skips_finished_chunks_and_writes_each_id_once(
        rings_catalog, catalog_file, tmp_path, monkeypatch, tf_modules):
    model = keras_tree()
    model_file = tmp_path / "tree.keras"
    model.save(model_file)
    model = tf_modules["load"](model_file)
    save_loc = tmp_path / "preds.parquet"
    kill_when_ready("predict_until_killed.py", catalog_file, model_file, save_loc, tmp_path / "ready", 2,
                    marker=tmp_path / "ready")
    assert not save_loc.exists()
    finished = sorted(p.name for p in prediction_runner.partial_dir(save_loc).glob("chunk_*.npz"))
    assert finished == ["chunk_000000.npz", "chunk_000001.npz"]

    computed = []
    monkeypatch.setattr(prediction_runner, "run_chunked_prediction",
                        use_chunk_size(prediction_runner, PREDICT_CHUNK_SIZE, seen=computed))
    predictions = tf_modules["predict"](rings_catalog, model, save_loc=save_loc, test_time_dropout=False,
                                        datamodule_kwargs=PREDICT_OPTIONS)
    ids = rings_catalog["id_str"].tolist()
    n_done = 2 * PREDICT_CHUNK_SIZE
    assert computed == [ids[n_done:]]  # one pass over the rows of the unfinished chunks only
    table, stored, _, _ = load(save_loc)
    assert table["id_str"].tolist() == ids  # each id exactly once, in catalog order
    assert not prediction_runner.partial_dir(save_loc).exists()
    monkeypatch.undo()
    fresh = tf_modules["predict"](rings_catalog, model, test_time_dropout=False, datamodule_kwargs=PREDICT_OPTIONS)
    np.testing.assert_allclose(stored, fresh, rtol=1e-6)
    np.testing.assert_allclose(predictions, fresh, rtol=1e-6)
