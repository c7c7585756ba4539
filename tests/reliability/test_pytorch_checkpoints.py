"""Checkpoints, PyTorch backend (issue 8, api.md 4.2, E11): written atomically, loadable with
``weights_only=True``, stamped with ``zoobot_version`` and ``format_version``; an incompatible one raises
E11 naming the file and both versions; and the kept files of this release (``tests/fixtures``) still load
and predict what they predicted when they were written.
"""
import json
import re
import resource
import signal

import lightning as L
import numpy as np
import pandas as pd
import pytest
import torch

import zoobot
from zoobot.pytorch.estimators.define_model import ZoobotTree
from zoobot.pytorch.predictions.predict_on_catalog import predict
from zoobot.pytorch.training import finetune
from zoobot.pytorch.training import train_with_pytorch_lightning as twpl
from zoobot.shared import schemas
from zoobot.shared.errors import CheckpointVersionError
from zoobot.shared.load_predictions import load

from .helpers import RINGS, TRAIN_RUN, broken_checkpoints
from ..fixtures import make_fixtures

pytestmark = pytest.mark.torch
torch.set_num_threads(1)

NEWER = zoobot.FORMAT_VERSION + 1


def bump_format_version(path, target):
    """Copy a checkpoint, claiming it was written by a newer zoobot with an incompatible format."""
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    checkpoint.update(format_version=NEWER, zoobot_version="9.0.0")
    if "hyper_parameters" in checkpoint:
        checkpoint["hyper_parameters"].update(format_version=NEWER, zoobot_version="9.0.0")
    torch.save(checkpoint, target)
    return target


def assert_e11(caught, path) -> None:
    message = str(caught.value)
    for part in (str(path), "9.0.0", f"format_version {NEWER}", zoobot.__version__,
                 f"format_version {zoobot.FORMAT_VERSION}"):
        assert part in message, f"{part!r} not in: {message}"


# ---------------------------------------------------------------------------------------------- format

def test_training_checkpoints_load_with_weights_only_and_carry_versions(torch_reference_run):
    save_dir, _ = torch_reference_run
    files = sorted((save_dir / "checkpoints").glob("*.ckpt"))
    assert {f.name for f in files} == {"epoch=0.ckpt", "epoch=1.ckpt", "epoch=2.ckpt", "last.ckpt"}
    for path in files:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)  # no pickled code
        assert checkpoint["zoobot_version"] == zoobot.__version__
        assert checkpoint["format_version"] == zoobot.FORMAT_VERSION
        json.dumps(checkpoint["hyper_parameters"])  # JSON primitives only
        assert schemas.Schema.from_dict(checkpoint["hyper_parameters"]["schema"]) == RINGS
    assert not list((save_dir / "checkpoints").glob("*.tmp*"))


def test_finetuning_checkpoints_load_with_weights_only_and_carry_versions(rings_catalog, tmp_path):
    from zoobot.pytorch.datasets import GalaxyDataModule

    catalog = rings_catalog.assign(label=(rings_catalog["ring_yes"] > rings_catalog["ring_no"]).astype(int))
    torch.manual_seed(0)
    model = finetune.FinetuneableZoobotClassifier(name="tiny_cnn", num_classes=2)
    datamodule = GalaxyDataModule(["label"], catalog=catalog, batch_size=4, resize_after_crop=32, num_workers=0)
    trainer = finetune.get_trainer(tmp_path, accelerator="cpu", max_epochs=1, enable_progress_bar=False)
    trainer.fit(model, datamodule)
    best = trainer.checkpoint_callback.best_model_path
    checkpoint = torch.load(best, map_location="cpu", weights_only=True)
    hparams = checkpoint["hyper_parameters"]
    json.dumps(hparams)
    assert hparams["zoobot_version"] == zoobot.__version__ and hparams["format_version"] == zoobot.FORMAT_VERSION

    newer = bump_format_version(best, tmp_path / "newer.ckpt")
    with pytest.raises(CheckpointVersionError) as caught:
        finetune.FinetuneableZoobotClassifier.load_from_checkpoint(newer)
    assert_e11(caught, newer)


def test_a_newer_format_raises_e11_naming_the_file_and_both_versions(torch_reference_run, tmp_path):
    save_dir, _ = torch_reference_run
    newer = bump_format_version(save_dir / "checkpoints" / "last.ckpt", tmp_path / "newer.ckpt")
    with pytest.raises(CheckpointVersionError) as caught:
        ZoobotTree.load_from_checkpoint(newer)
    assert_e11(caught, newer)


def test_resuming_from_a_newer_format_raises_e11_naming_the_file(torch_reference_run, rings_catalog, tmp_path):
    save_dir, _ = torch_reference_run
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "config.json").write_text((save_dir / "config.json").read_text())
    last = bump_format_version(save_dir / "checkpoints" / "last.ckpt", run / "checkpoints" / "last.ckpt")
    with pytest.raises(CheckpointVersionError) as caught:
        twpl.train(run, RINGS, catalog=rings_catalog, **TRAIN_RUN)
    assert_e11(caught, last)


# ---------------------------------------------------------------------------------------------- atomic writes

class DiskFullFrom(L.Callback):
    """From the validation of ``epoch`` on, no file may grow beyond ``limit`` bytes: the checkpoint written
    at the end of that epoch fails half-way, as on a full disk or an exceeded quota."""

    def __init__(self, epoch, limit=64 * 1024):
        self.epoch, self.limit = epoch, limit

    def on_validation_start(self, trainer, pl_module):
        if trainer.current_epoch == self.epoch and not trainer.sanity_checking:
            soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
            resource.setrlimit(resource.RLIMIT_FSIZE, (self.limit, hard))


@pytest.fixture
def restore_file_size_limit():
    limits = resource.getrlimit(resource.RLIMIT_FSIZE)
    handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # EFBIG errors instead of a killed process
    yield
    resource.setrlimit(resource.RLIMIT_FSIZE, limits)
    signal.signal(signal.SIGXFSZ, handler)


def test_a_checkpoint_write_that_fails_half_way_leaves_the_previous_one_intact(
        torch_reference_run, rings_catalog, tmp_path, restore_file_size_limit):
    reference, _ = torch_reference_run
    save_dir = tmp_path / "run"
    with pytest.raises(OSError, match=r"(?i)file too large"):
        twpl.train(save_dir, RINGS, catalog=rings_catalog, extra_callbacks=[DiskFullFrom(1)], **TRAIN_RUN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (resource.RLIM_INFINITY, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))
    for path in (save_dir / "checkpoints").glob("*.ckpt"):  # every file under its final name is complete
        assert torch.load(path, map_location="cpu", weights_only=True)["epoch"] == 0, path.name
    # and the run resumes from it as if nothing had happened
    twpl.train(save_dir, RINGS, catalog=rings_catalog, **TRAIN_RUN)
    last = torch.load(save_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert last["epoch"] == 2


# ---------------------------------------------------------------------------------------------- kept release files

EXPECTED = json.loads((make_fixtures.HERE / "expected_pytorch.json").read_text())


def test_release_zoobot_tree_checkpoint_still_loads_and_predicts_the_same(tmp_path):
    path = make_fixtures.gunzip("pytorch_zoobot_tree_tiny_cnn_32px.ckpt.gz", tmp_path)
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    assert checkpoint["format_version"] == EXPECTED["format_version"] == 1
    model = ZoobotTree.load_from_checkpoint(path)
    assert model.schema == schemas.get_schema(make_fixtures.TREE_SCHEMA) and model.input_size == 32
    catalog = make_fixtures.catalog()
    assert catalog["id_str"].tolist() == EXPECTED["ids"]
    predictions = predict(catalog, model, test_time_dropout=False, datamodule_kwargs=make_fixtures.PREDICT_OPTIONS)
    np.testing.assert_allclose(predictions[..., 0], EXPECTED["zoobot_tree"], rtol=1e-5, atol=1e-5)


def test_release_finetuned_classifier_checkpoint_still_loads_and_predicts_the_same(tmp_path):
    path = make_fixtures.gunzip("pytorch_finetuned_classifier_tiny_cnn_32px.ckpt.gz", tmp_path)
    torch.load(path, map_location="cpu", weights_only=True)
    model = finetune.FinetuneableZoobotClassifier.load_from_checkpoint(path)
    assert model.num_classes == 2
    predictions = predict(make_fixtures.catalog(), model, datamodule_kwargs=make_fixtures.PREDICT_OPTIONS)
    np.testing.assert_allclose(predictions[..., 0], EXPECTED["finetuned_classifier"], rtol=1e-5, atol=1e-6)


def test_release_parquet_predictions_still_load(tmp_path):
    ids, predictions, label_cols, metadata = load(make_fixtures.HERE / "predictions_pytorch.parquet")
    assert ids["id_str"].tolist() == EXPECTED["ids"]
    assert label_cols == schemas.get_schema(make_fixtures.TREE_SCHEMA).label_cols
    np.testing.assert_array_equal(predictions, np.asarray(EXPECTED["predictions_parquet"], dtype=np.float32))
    assert metadata["format_version"] == 1 and metadata["zoobot_version"] == EXPECTED["zoobot_version"]
    assert metadata["backend"] == "pytorch" and metadata["model_class"] == "ZoobotTree" and metadata["n_samples"] == 2
    table = pd.read_parquet(make_fixtures.HERE / "predictions_pytorch.parquet")
    assert table.columns[:4].tolist() == ["id_str", f"{label_cols[0]}_concentration_0",
                                          f"{label_cols[0]}_concentration_1", f"{label_cols[0]}_fraction"]


@pytest.mark.parametrize("kind", ["empty", "truncated", "text", "keras"])
def test_loading_an_unreadable_checkpoint_names_the_file_and_the_cause(kind, release_models, tmp_path):
    """Issue 12.8, through the Python API: ZoobotTree.load_from_checkpoint and the finetuning encoder loader."""
    from zoobot.pytorch.training.finetune import load_pretrained_zoobot

    path, cause = broken_checkpoints(tmp_path, release_models)[kind]
    for load in (ZoobotTree.load_from_checkpoint, load_pretrained_zoobot):
        with pytest.raises(ValueError, match=re.escape(cause)) as caught:
            load(path)
        assert str(path) in str(caught.value)
