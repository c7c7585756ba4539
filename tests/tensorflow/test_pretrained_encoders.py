"""Zoobot's timm encoders in TensorFlow through keras-hub (issue 15), offline.

timm itself writes the encoder folders (``timm.models.save_for_hf``: random weights, perturbed
batch-norm statistics), which are then put in a local Hugging Face cache. The pooled features of the
PyTorch backend are the independent reference for the Keras encoder keras-hub builds.
"""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from tests.pytorch.hub_cache import cache_folder, offline_hub  # noqa: F401 (fixture)

pytestmark = [pytest.mark.torch, pytest.mark.tf]

ARCHITECTURES = ("efficientnet_b0", "resnet18")
TEST_OWNER = "zoobot-tests"


def _timm_folder(folder, architecture: str, channels: int = 3, seed: int = 0):
    """A timm folder of a seeded random ``architecture`` whose batch-norm statistics are far from (0, 1)."""
    import timm
    import torch

    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = timm.create_model(architecture, pretrained=False, num_classes=0, in_chans=channels)
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.uniform_(-0.5, 0.5)
                module.running_var.uniform_(0.5, 2.0)
                module.weight.data.uniform_(0.5, 1.5)
                module.bias.data.uniform_(-0.2, 0.2)
    timm.models.save_for_hf(model.eval(), str(folder), safe_serialization=True)
    return folder


@pytest.fixture(scope="module")
def fake_hf_home(tmp_path_factory):
    """Timm folders of both architectures, also cached as Hub repos (the registry's efficientnet_b0 too)."""
    root = tmp_path_factory.mktemp("timm_folders")
    home = root / "hf_home"
    for architecture in ARCHITECTURES:
        folder = _timm_folder(root / architecture, architecture)
        cache_folder(home, f"{TEST_OWNER}/encoder-{architecture}", folder)
    cache_folder(home, "mwalmsley/zoobot-encoder-efficientnet_b0", root / "efficientnet_b0")
    return home


@pytest.fixture(scope="module")
def images():
    return np.random.default_rng(0).uniform(size=(3, 32, 32, 3)).astype("float32")


def _pytorch_features(name, images):
    import torch

    from zoobot.pytorch.estimators.define_model import create_encoder

    encoder = create_encoder(name).eval()
    with torch.no_grad():
        return encoder(torch.from_numpy(images.transpose(0, 3, 1, 2).copy())).numpy()


@pytest.mark.parametrize("architecture", ARCHITECTURES)
def test_both_backends_give_the_same_features(architecture, offline_hub, images):  # noqa: F811
    from zoobot.tensorflow.estimators import define_model

    name = f"hf_hub:{TEST_OWNER}/encoder-{architecture}"
    expected = _pytorch_features(name, images)
    encoder = define_model.create_encoder(name)
    features = np.asarray(encoder(images, training=False))
    assert features.shape == expected.shape and np.abs(expected).max() > 0.05
    assert np.abs(features - expected).max() < 1e-4
    # a local folder gives the same encoder, as does a greyscale request (RGB filters summed, as PyTorch does)
    snapshot = next((offline_hub / "hub" / f"models--{TEST_OWNER}--encoder-{architecture}" / "snapshots").iterdir())
    local = define_model.create_encoder(f"local-dir:{snapshot}")
    np.testing.assert_array_equal(np.asarray(local(images, training=False)), features)
    grey = images[..., :1]
    grey_tf = define_model.create_encoder(f"local-dir:{snapshot}", channels=1)(grey, training=False)
    from zoobot.pytorch.estimators.define_model import create_encoder as torch_encoder
    import torch

    with torch.no_grad():
        grey_pt = torch_encoder(f"local-dir:{snapshot}", channels=1).eval()(
            torch.from_numpy(grey.transpose(0, 3, 1, 2).copy())).numpy()
    assert np.abs(np.asarray(grey_tf) - grey_pt).max() < 1e-4


def _values(variables) -> list:
    return [v.numpy().copy() for v in variables]


def _fit_a_few_steps(model, images, labels):
    model.compile()
    model.fit(images, labels, batch_size=4, epochs=1, verbose=0)


@pytest.mark.parametrize("architecture,blocks", [
    pytest.param("efficientnet_b0", ["top", "block7", "block6", "block5", "block4", "block3", "block2", "block1", "stem"],
                 marks=pytest.mark.slow),  # about a minute on 2 cores
    ("resnet18", ["stack3", "stack2", "stack1", "stack0", "stem"]),
])
def test_finetuning_from_a_hub_name(architecture, blocks, offline_hub, images, tmp_path, monkeypatch):  # noqa: F811
    from zoobot.tensorflow.training import finetune

    x = np.concatenate([images] * 3)[:8]
    y = np.array([0, 1] * 4)
    name = f"hf_hub:{TEST_OWNER}/encoder-{architecture}"
    frozen = finetune.FinetuneableZoobotClassifier(name=name, num_classes=2, n_blocks=0, learning_rate=1e-2)
    assert [block.name for block in frozen.blocks] == blocks
    encoder_before = _values(frozen.encoder.weights)
    head_before = _values(frozen.head.weights)
    _fit_a_few_steps(frozen, x, y)
    for before, after in zip(encoder_before, frozen.encoder.weights):
        np.testing.assert_array_equal(before, after.numpy())  # bit-identical, BatchNorm statistics included
    assert any(not np.array_equal(b, a.numpy()) for b, a in zip(head_before, frozen.head.weights))

    # n_blocks=1 trains the top block only, at learning_rate; the block below it stays put
    top = finetune.FinetuneableZoobotClassifier(name=name, num_classes=2, n_blocks=1, lr_decay=0.5)
    assert [g["name"] for g in top.param_groups()] == ["head", f"encoder.{blocks[0]}"]
    lower = _values(top.blocks[1].variables())
    upper = _values(v for v in top.blocks[0].variables() if v.trainable)
    _fit_a_few_steps(top, x, y)
    for before, after in zip(lower, top.blocks[1].variables()):
        np.testing.assert_array_equal(before, after.numpy())
    assert any(not np.array_equal(b, a.numpy())
               for b, a in zip(upper, [v for v in top.blocks[0].variables() if v.trainable]))

    # the .keras file rebuilds the keras-hub encoder offline (HF_HOME emptied), with the finetuned weights
    path = tmp_path / "finetuned.keras"
    top.save(path)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "empty"))
    reloaded = finetune.FinetuneableZoobotClassifier.load_from_checkpoint(path)
    np.testing.assert_allclose(np.asarray(reloaded(x, training=False)), np.asarray(top(x, training=False)),
                               rtol=1e-5, atol=1e-6)
    assert [block.name for block in reloaded.blocks] == blocks


def test_always_train_batchnorm_updates_only_batchnorm(offline_hub, images):  # noqa: F811
    import keras

    from zoobot.tensorflow.training import finetune

    model = finetune.FinetuneableZoobotClassifier(name=f"hf_hub:{TEST_OWNER}/encoder-resnet18", num_classes=2,
                                                  n_blocks=0, always_train_batchnorm=True, learning_rate=1e-2)
    assert not model.encoder_is_frozen and model.feature_cache is None
    bn = [layer for layer in finetune._all_layers(model.encoder) if isinstance(layer, keras.layers.BatchNormalization)]
    convs = [layer for layer in finetune._all_layers(model.encoder) if isinstance(layer, keras.layers.Conv2D)]
    conv_before = _values(layer.kernel for layer in convs)
    bn_before = bn[0].moving_mean.numpy().copy()
    _fit_a_few_steps(model, np.concatenate([images] * 3)[:8], np.array([0, 1] * 4))
    assert not np.array_equal(bn_before, bn[0].moving_mean.numpy())
    for before, layer in zip(conv_before, convs):
        np.testing.assert_array_equal(before, layer.kernel.numpy())


def test_convnext_and_maxvit_are_refused_before_any_download(offline_hub):  # noqa: F811
    from zoobot.tensorflow.estimators import define_model

    for name in ("hf_hub:mwalmsley/zoobot-encoder-convnext_nano", "zoobot-encoder-maxvit_tiny_rw_224"):
        with pytest.raises(ValueError, match=r"cannot load: keras-hub converts only the EfficientNet, ResNet, "
                                             r"MobileNet.*The PyTorch backend loads it"):
            define_model.create_encoder(name)


def test_registry_backends_agree_with_keras_hub():
    from zoobot.shared import pretrained
    from zoobot.tensorflow.estimators.pretrained_encoders import check_tensorflow_architecture

    for name in pretrained.list_pretrained():
        cfg = pretrained.get_pretrained_cfg(name)
        try:
            check_tensorflow_architecture(cfg.architecture)
            loads = True
        except ValueError:
            loads = False
        assert ("tensorflow" in cfg.backends) == loads, name
        assert "pytorch" in cfg.backends
    assert "zoobot-encoder-greyscale-resnet18" in pretrained.list_pretrained(channels=1, backend="tensorflow")
    assert "zoobot-encoder-convnext_nano" not in pretrained.list_pretrained(backend="tensorflow")


@pytest.mark.parametrize("architecture,expected", [
    ("mobilenetv3_small_100", ["stem", "block_0", "block_1", "block_2", "block_3", "block_4", "block_5"]),
    ("vgg11", ["block1", "block2", "block3", "block4", "block5"]),
    ("cspresnet50", ["stem", "stage_0", "stage_1", "stage_2", "stage_3"]),
])
def test_block_tables_cover_other_keras_hub_families(architecture, expected):
    """Every weight of a keras-hub backbone belongs to exactly one block, in input-to-head order."""
    from keras_hub.src.utils.timm import preset_loader

    from zoobot.tensorflow.training import finetune

    converter = preset_loader.TimmPresetLoader(None, {"architecture": architecture}).converter
    backbone = converter.backbone_cls(**converter.convert_backbone_config(
        {"architecture": architecture, "pretrained_cfg": {}, "num_features": 1024}))
    blocks = finetune.get_encoder_blocks(backbone)
    assert [block.name for block in blocks][::-1] == expected
    in_blocks = [id(v) for block in blocks for v in block.variables()]
    assert len(in_blocks) == len(set(in_blocks)) == len(backbone.weights)


# runs by default (about 15 s): the finetuning guide promises TensorFlow users this snippet works
def test_finetuning_guide_hub_snippet_runs_against_a_local_cache(offline_hub, tmp_path):  # noqa: F811
    """The TensorFlow hf_hub: block of docs/guides/finetuning.md, run as written, with the cache in HF_HOME."""
    from tests.docs.snippets import REPO, parse_page, script_for

    page = parse_page(REPO / "docs" / "guides" / "finetuning.md")
    blocks = [b for b in page.python_blocks() if "hf_hub:mwalmsley/zoobot-encoder-efficientnet_b0" in b.code
              and "zoobot.tensorflow" in b.code]
    assert len(blocks) == 1 and blocks[0].skip_reason is not None
    script = tmp_path / "snippet.py"
    script.write_text("import logging\nlogging.basicConfig(level=logging.INFO)\n" + script_for(blocks))
    env = dict(os.environ, HF_HOME=str(offline_hub), HF_HUB_OFFLINE="1", PYTHONWARNINGS="ignore::DeprecationWarning",
               ZOOBOT_SKIP_TORCHVISION_PREIMPORT="1")
    result = subprocess.run([sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True, env=env,
                            timeout=600)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    assert "feature replay: " in result.stderr  # the frozen keras-hub encoder ran once per image
    metrics = list((tmp_path / "results" / "finetune_rings_keras_hub").rglob("metrics.csv"))
    assert metrics and "finetuning/val_loss" in metrics[0].read_text()


def test_exported_zoobot_tree_encoder_finetunes_in_tensorflow(trained_torch_tree, tmp_path, images):
    """A ZoobotTree trained a few steps in PyTorch, exported, then loaded and finetuned in TensorFlow."""
    import torch

    from zoobot.pytorch.export import export_encoder
    from zoobot.pytorch.training.finetune import load_pretrained_zoobot
    from zoobot.tensorflow.training import finetune

    folder = export_encoder(trained_torch_tree, tmp_path / "export")
    metadata = json.loads((folder / "zoobot.json").read_text())
    assert (metadata["architecture"], metadata["channels"], metadata["input_size"]) == ("resnet18", 1, 32)
    assert metadata["task"]["schema"]["name"] == "gz_rings" and metadata["preprocessing"]
    grey = images[..., :1]
    with torch.no_grad():
        expected = load_pretrained_zoobot(trained_torch_tree).eval()(
            torch.from_numpy(grey.transpose(0, 3, 1, 2).copy())).numpy()
    model = finetune.FinetuneableZoobotClassifier(name=f"local-dir:{folder}", num_classes=2, n_blocks=0)
    assert (model.channels, model.input_size, model.architecture) == (1, 32, "resnet18")  # from zoobot.json
    assert np.abs(np.asarray(model.encoder(grey, training=False)) - expected).max() < 1e-4
    before = _values(model.encoder.weights)
    _fit_a_few_steps(model, np.concatenate([grey] * 3)[:8], np.array([0, 1] * 4))
    for b, a in zip(before, model.encoder.weights):
        np.testing.assert_array_equal(b, a.numpy())


@pytest.fixture(scope="module")
def trained_torch_tree(tmp_path_factory):
    """The best checkpoint of a resnet18 ZoobotTree trained for one epoch (3 steps) on 24 galaxies, 32 px."""
    from zoobot.pytorch.training import train_with_pytorch_lightning
    from zoobot.shared import schemas
    from zoobot.shared.synthetic import make_synthetic_catalog

    root = tmp_path_factory.mktemp("torch_tree")
    schema = schemas.gz_rings_schema
    votes, _ = make_synthetic_catalog(root / "votes", n_galaxies=24, schema=schema, image_size=32, progress=False)
    _, trainer = train_with_pytorch_lightning.train(
        save_dir=str(root / "run"), schema=schema, catalog=votes, model_architecture="resnet18", resize_size=32,
        batch_size=8, epochs=1, gpus=0, num_workers=0)
    return trainer.checkpoint_callback.best_model_path
