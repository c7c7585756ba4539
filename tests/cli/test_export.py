"""``zoobot export``: a PyTorch model's encoder as a timm folder (issue 15), run as a user runs it.

What the folder gives in TensorFlow (features within 1e-4, finetuning) is tested in
tests/tensorflow/test_pretrained_encoders.py; here: the command, the files, the weights, the errors.
"""
import gzip
import json
import pathlib
import shutil

import pytest

from .conftest import describe, run_zoobot

pytestmark = pytest.mark.torch

FIXTURES = pathlib.Path(__file__).resolve().parents[1] / "fixtures"


@pytest.fixture(scope="module")
def resnet_tree_checkpoint(tmp_path_factory):
    """A resnet18 ZoobotTree trained for one epoch (2 steps) on 16 synthetic galaxies at 32 px."""
    from zoobot.pytorch.training import train_with_pytorch_lightning
    from zoobot.shared import schemas
    from zoobot.shared.synthetic import make_synthetic_catalog

    root = tmp_path_factory.mktemp("export_tree")
    votes, _ = make_synthetic_catalog(root / "votes", n_galaxies=16, schema=schemas.gz_rings_schema, image_size=32,
                                      progress=False)
    _, trainer = train_with_pytorch_lightning.train(
        save_dir=str(root / "run"), schema=schemas.gz_rings_schema, catalog=votes, model_architecture="resnet18",
        resize_size=32, batch_size=8, epochs=1, gpus=0, num_workers=0)
    return trainer.checkpoint_callback.best_model_path


def test_export_writes_a_timm_folder_with_the_trained_weights(resnet_tree_checkpoint, tmp_path):
    import timm
    import torch

    from zoobot.pytorch.training.finetune import load_pretrained_zoobot

    out = tmp_path / "encoder"
    result = run_zoobot("export", "--checkpoint", resnet_tree_checkpoint, "--out", out)
    assert result.returncode == 0, describe(result)
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "model.safetensors", "zoobot.json"]
    config = json.loads((out / "config.json").read_text())
    assert config["architecture"] == "resnet18" and config["model_args"]["in_chans"] == 1
    assert config["pretrained_cfg"]["mean"] == [0.0] and config["pretrained_cfg"]["std"] == [1.0]
    metadata = json.loads((out / "zoobot.json").read_text())
    assert metadata["input_size"] == 32 and metadata["channels"] == 1 and metadata["pixel_scale"] == "0-1"
    assert metadata["task"]["schema"]["name"] == "gz_rings"

    # timm itself reads the folder back, with the trained (not the initial) weights
    reloaded = timm.create_model(f"local-dir:{out}", pretrained=True, num_classes=0).state_dict()
    trained = load_pretrained_zoobot(resnet_tree_checkpoint).state_dict()
    assert reloaded.keys() == trained.keys()
    for key, value in trained.items():
        assert torch.equal(reloaded[key], value), key

    # in-process from here (the command's own function), to spare a start-up per check
    from zoobot.cli.export import export

    with pytest.raises(FileExistsError, match="already holds files.*--overwrite"):
        export(resnet_tree_checkpoint, out)
    assert export(resnet_tree_checkpoint, out, overwrite=True) == out


def test_export_refuses_an_encoder_that_is_not_timm(tmp_path):
    fixture = FIXTURES / "pytorch_zoobot_tree_tiny_cnn_32px.ckpt.gz"
    checkpoint = tmp_path / "tiny.ckpt"
    with gzip.open(fixture, "rb") as src, open(checkpoint, "wb") as dst:
        shutil.copyfileobj(src, dst)
    from zoobot.cli.export import export

    with pytest.raises(ValueError, match="tiny_cnn encoder, which is not a timm architecture.*--format onnx"):
        export(checkpoint, tmp_path / "out")


def test_export_onnx_dispatches_to_the_backend(resnet_tree_checkpoint, tmp_path):
    from zoobot.onnx import read_metadata

    out = tmp_path / "encoder.onnx"
    result = run_zoobot("export", "--checkpoint", resnet_tree_checkpoint, "--out", out, "--format", "onnx")
    assert result.returncode == 0, describe(result)
    assert read_metadata(out)["zoobot_backend"] == "pytorch"  # the PyTorch exporter wrote it


@pytest.mark.tf
def test_export_of_a_keras_model_is_a_folder_tensorflow_loads_by_name(tmp_path):
    """keras-hub writes no timm files: a .keras model exports encoder.keras + zoobot.json, loaded as local-dir:."""
    import numpy as np

    import zoobot.tensorflow  # noqa: F401
    from zoobot.cli.export import export
    from zoobot.tensorflow.estimators import define_model

    checkpoint = tmp_path / "tree.keras"
    with gzip.open(FIXTURES / "tensorflow_zoobot_tree_tiny_cnn_32px.keras.gz", "rb") as src, \
            open(checkpoint, "wb") as dst:
        shutil.copyfileobj(src, dst)
    out = export(checkpoint, tmp_path / "encoder")
    assert sorted(p.name for p in out.iterdir()) == ["encoder.keras", "zoobot.json"]
    metadata = json.loads((out / "zoobot.json").read_text())
    assert metadata["exported_from"]["backend"] == "tensorflow" and metadata["channels"] == 1
    images = np.random.default_rng(0).uniform(size=(2, 32, 32, 1)).astype("float32")
    expected = define_model.load_zoobot_model(checkpoint).encoder(images, training=False)
    loaded = define_model.create_encoder(f"local-dir:{out}")
    np.testing.assert_array_equal(np.asarray(loaded(images, training=False)), np.asarray(expected))
