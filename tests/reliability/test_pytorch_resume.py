"""Crash and resume, and determinism, PyTorch backend (issue 8).

- Training interrupted after some epochs - by an exception from a callback, and by a real SIGKILL of a
  training subprocess half-way through an epoch - and then resumed with ``resume=True`` ends with the
  same weights (deterministic CPU) as an uninterrupted run: ``last.ckpt`` carries everything needed.
- Prediction killed (SIGKILL) after some chunks are written and then rerun computes only the unfinished
  chunks and writes every ``id_str`` exactly once.
- The same seed gives the same splits, the same first-epoch loss, the same weights and the same predictions.

All runs share :data:`tests.reliability.helpers.TRAIN_RUN` (tiny_cnn, 32 px, 20 galaxies, 3 epochs).
"""
import json

import lightning as L
import numpy as np
import pandas as pd
import pytest
import torch

from zoobot.pytorch.predictions.predict_on_catalog import predict
from zoobot.pytorch.training import train_with_pytorch_lightning as twpl
from zoobot.shared import prediction_runner
from zoobot.shared.catalogs import split_catalog
from zoobot.shared.load_predictions import load

from .helpers import (PREDICT_CHUNK_SIZE, PREDICT_OPTIONS, RINGS, TRAIN_RUN, block_after_chunks, block_forever,
                      kill_forked_when_ready, torch_tree, use_chunk_size)

pytestmark = pytest.mark.torch
torch.set_num_threads(1)


class Interrupted(Exception):
    """Stands in for a crash."""


class CrashAtEpochStart(L.Callback):
    def __init__(self, epoch):
        self.epoch = epoch

    def on_train_epoch_start(self, trainer, pl_module):
        if trainer.current_epoch == self.epoch:
            raise Interrupted(f"crash at the start of epoch {self.epoch}")


class RecordEpochs(L.Callback):
    def __init__(self):
        self.epochs = []

    def on_train_epoch_start(self, trainer, pl_module):
        self.epochs.append(trainer.current_epoch)


def state(path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)["state_dict"]


def assert_same_weights(path_a, path_b, atol=1e-6) -> None:
    a, b = state(path_a), state(path_b)
    assert a.keys() == b.keys()
    worst = max(float((a[k].double() - b[k].double()).abs().max()) for k in a)
    assert worst <= atol, f"weights differ by up to {worst:.3g} ({path_a} vs {path_b})"


def train_losses(save_dir) -> dict:
    metrics = pd.read_csv(save_dir / "logs" / "metrics.csv").dropna(subset=["train/supervised_loss"])
    return dict(zip(metrics["epoch"].astype(int), metrics["train/supervised_loss"]))


class BlockMidEpoch(L.Callback):
    """In a child process: after the first batch of ``epoch``, signal the parent and wait to be killed."""

    def __init__(self, epoch, marker):
        self.epoch, self.marker = epoch, marker

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.current_epoch == self.epoch and batch_idx == 0:
            block_forever(self.marker)


def train_until_killed(save_dir, catalog, marker, epoch):
    twpl.train(save_dir, RINGS, catalog=catalog, extra_callbacks=[BlockMidEpoch(epoch, marker)], **TRAIN_RUN)


def predict_until_killed(catalog, model, save_loc, marker, n_chunks):
    prediction_runner.run_chunked_prediction = use_chunk_size(prediction_runner, PREDICT_CHUNK_SIZE)
    block_after_chunks(prediction_runner, n_chunks, marker)
    predict(catalog, model, save_loc=save_loc, test_time_dropout=False, datamodule_kwargs=PREDICT_OPTIONS)


@pytest.fixture(scope="module")
def uninterrupted(torch_reference_run):
    """The reference: 3 epochs in one go (shared with the checkpoint tests)."""
    return torch_reference_run


@pytest.fixture(scope="module")
def crashed_then_resumed(rings_catalog, tmp_path_factory):
    """A crash (exception) at the start of epoch 2, then ``resume=True``. Returns the folder and the
    per-epoch training losses / epoch=0 weights seen before the resume."""
    save_dir = tmp_path_factory.mktemp("torch_crashed")
    with pytest.raises(Interrupted):
        twpl.train(save_dir, RINGS, catalog=rings_catalog, extra_callbacks=[CrashAtEpochStart(2)], **TRAIN_RUN)
    before = {"losses": train_losses(save_dir), "epoch0": state(save_dir / "checkpoints" / "epoch=0.ckpt"),
              "last_epoch": torch.load(save_dir / "checkpoints" / "last.ckpt", weights_only=True)["epoch"]}
    recorder = RecordEpochs()
    twpl.train(save_dir, RINGS, catalog=rings_catalog, extra_callbacks=[recorder], **TRAIN_RUN)
    before["resumed_epochs"] = recorder.epochs
    return save_dir, before


# ---------------------------------------------------------------------------------------------- training

def test_crash_then_resume_ends_with_the_weights_of_an_uninterrupted_run(uninterrupted, crashed_then_resumed):
    reference, _ = uninterrupted
    save_dir, before = crashed_then_resumed
    assert before["last_epoch"] == 1
    assert before["resumed_epochs"] == [2]  # finished epochs are not repeated
    assert_same_weights(reference / "checkpoints" / "last.ckpt", save_dir / "checkpoints" / "last.ckpt")
    assert train_losses(save_dir) == pytest.approx(train_losses(reference), rel=1e-6)


def test_sigkill_mid_epoch_then_resume_ends_with_the_weights_of_an_uninterrupted_run(
        uninterrupted, rings_catalog, tmp_path):
    reference, _ = uninterrupted
    save_dir = tmp_path / "run"
    # a child process is SIGKILLed after the first batch of epoch 1: only epoch 0 is complete
    kill_forked_when_ready(train_until_killed, save_dir, rings_catalog, tmp_path / "ready", 1,
                           marker=tmp_path / "ready")
    last = torch.load(save_dir / "checkpoints" / "last.ckpt", weights_only=True)
    assert last["epoch"] == 0
    recorder = RecordEpochs()
    twpl.train(save_dir, RINGS, catalog=rings_catalog, extra_callbacks=[recorder], **TRAIN_RUN)
    assert recorder.epochs == [1, 2]
    assert_same_weights(reference / "checkpoints" / "last.ckpt", save_dir / "checkpoints" / "last.ckpt")


# ---------------------------------------------------------------------------------------------- determinism

def test_same_seed_same_splits_first_epoch_loss_weights_and_predictions(uninterrupted, crashed_then_resumed,
                                                                        rings_catalog):
    """The crashed run trained epochs 0-1 with the same seed as the reference: they must agree exactly."""
    reference, model = uninterrupted
    save_dir, before = crashed_then_resumed
    for split in ("train", "val", "test"):
        ids = pd.read_parquet(save_dir / f"{split}_catalog.parquet")["id_str"].tolist()
        assert ids == pd.read_parquet(reference / f"{split}_catalog.parquet")["id_str"].tolist()
    expected = split_catalog(rings_catalog, seed=TRAIN_RUN["random_state"])[0]["id_str"].tolist()
    assert pd.read_parquet(reference / "train_catalog.parquet")["id_str"].tolist() == expected
    assert before["losses"][0] == train_losses(reference)[0]  # bitwise on the CPU
    reference_epoch0 = state(reference / "checkpoints" / "epoch=0.ckpt")
    for key, value in before["epoch0"].items():
        assert torch.equal(value, reference_epoch0[key]), key

    twin = torch_tree()
    twin.load_state_dict(before["epoch0"])
    first = torch_tree()
    first.load_state_dict(reference_epoch0)
    catalog = rings_catalog.iloc[:6]
    np.testing.assert_array_equal(predict(catalog, twin, test_time_dropout=False, datamodule_kwargs=PREDICT_OPTIONS),
                                  predict(catalog, first, test_time_dropout=False, datamodule_kwargs=PREDICT_OPTIONS))
    # MC dropout samples too, given the same torch seed
    torch.manual_seed(3)
    sampled = predict(catalog, model, n_samples=3, datamodule_kwargs=PREDICT_OPTIONS)
    torch.manual_seed(3)
    np.testing.assert_array_equal(predict(catalog, model, n_samples=3, datamodule_kwargs=PREDICT_OPTIONS), sampled)


# ---------------------------------------------------------------------------------------------- prediction

def test_sigkill_mid_prediction_then_rerun_skips_finished_chunks_and_writes_each_id_once(
        rings_catalog, tmp_path, monkeypatch):
    model = torch_tree()
    save_loc = tmp_path / "preds.parquet"
    # a child process is SIGKILLed once two chunks of 4 rows are written
    kill_forked_when_ready(predict_until_killed, rings_catalog, model, save_loc, tmp_path / "ready", 2,
                           marker=tmp_path / "ready")
    assert not save_loc.exists()
    finished = sorted(p.name for p in prediction_runner.partial_dir(save_loc).glob("chunk_*.npz"))
    assert finished == ["chunk_000000.npz", "chunk_000001.npz"]

    computed = []
    monkeypatch.setattr(prediction_runner, "run_chunked_prediction",
                        use_chunk_size(prediction_runner, PREDICT_CHUNK_SIZE, seen=computed))
    predictions = predict(rings_catalog, model, save_loc=save_loc, test_time_dropout=False,
                          datamodule_kwargs=PREDICT_OPTIONS)
    ids = rings_catalog["id_str"].tolist()
    n_done = 2 * PREDICT_CHUNK_SIZE
    assert computed == [ids[n_done:]]  # one pass over the rows of the unfinished chunks only
    table, stored, _, metadata = load(save_loc)
    assert table["id_str"].tolist() == ids  # each id exactly once, in catalog order
    assert not prediction_runner.partial_dir(save_loc).exists()
    monkeypatch.undo()
    fresh = predict(rings_catalog, model, test_time_dropout=False, datamodule_kwargs=PREDICT_OPTIONS)
    np.testing.assert_allclose(stored, fresh, rtol=1e-6)
    np.testing.assert_allclose(predictions, fresh, rtol=1e-6)
    assert json.loads(json.dumps(metadata))["n_samples"] == 1
