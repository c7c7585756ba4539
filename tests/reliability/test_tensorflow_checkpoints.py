"""Checkpoints, TensorFlow backend (issue 8, api.md 4.2, E11): the twin of ``test_pytorch_checkpoints.py``.
``.keras`` files carry ``zoobot_version`` and ``format_version``; a newer format raises E11 naming the file
and both versions; a checkpoint or backup write that fails half-way (full disk) never leaves a torn file
that stops the run from resuming; the kept ``.keras`` and ``.hdf5`` files of this release still load.

TensorFlow is imported inside the fixtures (torchvision must be imported first; see ``conftest.py``).
"""
import json
import resource
import signal
import zipfile

import numpy as np
import pytest

import zoobot
from zoobot.shared import schemas
from zoobot.shared.errors import CheckpointVersionError
from zoobot.shared.load_predictions import load

from .helpers import RINGS, TRAIN_RUN
from ..fixtures import make_fixtures

pytestmark = pytest.mark.tf

NEWER = zoobot.FORMAT_VERSION + 1
EXPECTED = json.loads((make_fixtures.HERE / "expected_tensorflow.json").read_text())


@pytest.fixture(scope="module")
def tf_modules():
    import zoobot.tensorflow  # noqa: F401  (sets KERAS_BACKEND)
    import keras
    from zoobot.tensorflow.estimators.define_model import load_zoobot_model
    from zoobot.tensorflow.predictions.predict_on_catalog import predict
    from zoobot.tensorflow.training.train_with_keras import train

    class DiskFullFrom(keras.callbacks.Callback):
        """After the first batch of ``epoch`` no file may grow beyond ``limit`` bytes: the checkpoint and
        backup written at the end of that epoch fail half-way, as on a full disk or an exceeded quota."""

        def __init__(self, epoch, limit=64 * 1024):
            super().__init__()
            self.epoch, self.limit, self.current = epoch, limit, None

        def on_epoch_begin(self, epoch, logs=None):
            self.current = epoch

        def on_train_batch_end(self, batch, logs=None):
            if self.current == self.epoch:
                resource.setrlimit(resource.RLIMIT_FSIZE, (self.limit, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))

    return dict(keras=keras, load=load_zoobot_model, predict=predict, train=train, DiskFullFrom=DiskFullFrom)


def keras_config(path) -> dict:
    with zipfile.ZipFile(path) as archive:
        return json.loads(archive.read("config.json"))


def bump_format_version(path, target):
    """Copy a .keras file, claiming it was written by a newer zoobot with an incompatible format."""
    with zipfile.ZipFile(path) as source, zipfile.ZipFile(target, "w") as out:
        for item in source.infolist():
            data = source.read(item.filename)
            if item.filename == "config.json":
                config = json.loads(data)
                config["config"].update(format_version=NEWER, zoobot_version="9.0.0")
                data = json.dumps(config).encode()
            out.writestr(item, data)
    return target


def test_keras_checkpoints_carry_versions_and_a_newer_format_raises_e11(tf_reference_run, tmp_path, tf_modules):
    save_dir, _ = tf_reference_run
    files = sorted((save_dir / "checkpoints").glob("*.keras"))
    assert {f.name for f in files} == {"epoch=0.keras", "epoch=1.keras", "epoch=2.keras", "last.keras"}
    for path in files:
        config = keras_config(path)["config"]
        assert config["zoobot_version"] == zoobot.__version__ and config["format_version"] == zoobot.FORMAT_VERSION
        assert schemas.Schema.from_dict(config["schema"]) == RINGS
    assert not list((save_dir / "checkpoints").glob("*.tmp*"))

    newer = bump_format_version(save_dir / "checkpoints" / "last.keras", tmp_path / "newer.keras")
    with pytest.raises(CheckpointVersionError) as caught:
        tf_modules["load"](newer)
    message = str(caught.value)
    for part in (str(newer), "9.0.0", f"format_version {NEWER}", zoobot.__version__,
                 f"format_version {zoobot.FORMAT_VERSION}"):
        assert part in message, f"{part!r} not in: {message}"


@pytest.fixture
def restore_file_size_limit():
    limits = resource.getrlimit(resource.RLIMIT_FSIZE)
    handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # EFBIG errors instead of a killed process
    yield
    resource.setrlimit(resource.RLIMIT_FSIZE, limits)
    signal.signal(signal.SIGXFSZ, handler)


def test_a_checkpoint_write_that_fails_half_way_does_not_stop_the_run_from_resuming(
        rings_catalog, tmp_path, restore_file_size_limit, tf_modules):
    save_dir = tmp_path / "run"
    with pytest.raises(Exception, match=r"(?i)file too large|errno 27"):
        tf_modules["train"](save_dir, RINGS, catalog=rings_catalog, extra_callbacks=[tf_modules["DiskFullFrom"](1)],
                            **TRAIN_RUN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (resource.RLIM_INFINITY, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))
    for path in (save_dir / "checkpoints").glob("*.keras"):  # every file under its final name is complete
        tf_modules["load"](path)
    # the run resumes from the last complete epoch (0) and finishes
    model, trainer = tf_modules["train"](save_dir, RINGS, catalog=rings_catalog, **TRAIN_RUN)
    assert trainer.history.epoch == [1, 2]


# ---------------------------------------------------------------------------------------------- kept release files

def test_release_keras_zoobot_tree_still_loads_and_predicts_the_same(tmp_path, tf_modules):
    path = make_fixtures.gunzip("tensorflow_zoobot_tree_tiny_cnn_32px.keras.gz", tmp_path)
    assert keras_config(path)["config"]["format_version"] == EXPECTED["format_version"] == 1
    model = tf_modules["load"](path)
    assert model.schema == schemas.get_schema(make_fixtures.TREE_SCHEMA) and model.input_size == 32
    catalog = make_fixtures.catalog()
    assert catalog["id_str"].tolist() == EXPECTED["ids"]
    predictions = tf_modules["predict"](catalog, model, test_time_dropout=False,
                                        datamodule_kwargs=make_fixtures.PREDICT_OPTIONS)
    np.testing.assert_allclose(predictions[..., 0], EXPECTED["zoobot_tree"], rtol=1e-5, atol=1e-5)


def test_release_hdf5_predictions_still_load():
    ids, predictions, label_cols, metadata = load(make_fixtures.HERE / "predictions_tensorflow.hdf5")
    assert ids["id_str"].tolist() == EXPECTED["ids"]
    assert label_cols == schemas.get_schema(make_fixtures.TREE_SCHEMA).label_cols
    np.testing.assert_array_equal(predictions, np.asarray(EXPECTED["predictions_hdf5"], dtype=np.float32))
    assert metadata["format_version"] == 1 and metadata["zoobot_version"] == EXPECTED["zoobot_version"]
    assert metadata["backend"] == "tensorflow" and metadata["model_class"] == "ZoobotTree"
    assert metadata["n_samples"] == 2
