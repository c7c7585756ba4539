"""The pretrained-encoder registry: names, normalisation, channels, errors."""
import dataclasses

import pytest

from zoobot.shared import pretrained
from zoobot.shared.pretrained import (
    DEFAULT_PRETRAINED,
    PretrainedCfg,
    get_pretrained_cfg,
    hub_id_for,
    list_pretrained,
    normalise_name,
)

FAMILY = {
    "convnext_pico", "convnext_nano", "convnext_tiny", "convnext_small", "convnext_base", "convnext_large",
    "maxvit_tiny_rw_224", "maxvit_small_tf_224", "maxvit_base_tf_224", "maxvit_large_tf_224",
    "efficientnet_b0", "tf_efficientnetv2_s", "resnet18", "resnet50", "resnet101",
}


def test_registry_covers_the_released_family():
    colour = list_pretrained(channels=3)
    assert {get_pretrained_cfg(n).architecture for n in colour} == FAMILY
    for name in colour:
        cfg = get_pretrained_cfg(name)
        assert cfg.hub_id == f"mwalmsley/{name}" and name == f"zoobot-encoder-{cfg.architecture}"
        assert (cfg.channels, cfg.input_size, cfg.pixel_scale) == (3, 224, "0-1")
        assert cfg.backend_files["pytorch"] in ("model.safetensors", "pytorch_model.bin")
        assert "Walmsley" in cfg.citation and cfg.licence
    assert DEFAULT_PRETRAINED == "zoobot-encoder-convnext_nano" and DEFAULT_PRETRAINED in colour
    assert sorted(list_pretrained()) == sorted(colour + list_pretrained(channels=1))


def test_greyscale_variants_are_single_channel():
    grey = list_pretrained(channels=1)
    assert "zoobot-encoder-greyscale-convnext_nano" in grey
    for name in grey:
        cfg = get_pretrained_cfg(name)
        assert cfg.channels == 1 and "greyscale" in name and cfg.architecture in FAMILY
    # the '-greyscale' suffix spelling is the same entry
    assert get_pretrained_cfg("zoobot-encoder-convnext_nano-greyscale") is get_pretrained_cfg(
        "zoobot-encoder-greyscale-convnext_nano")


@pytest.mark.parametrize("name", [
    "hf_hub:mwalmsley/zoobot-encoder-convnext_nano",
    "hf-hub:mwalmsley/zoobot-encoder-convnext_nano",
    "zoobot-encoder-convnext_nano",
    "mwalmsley/zoobot-encoder-convnext_nano",
    "hf-hub:MWalmsley/Zoobot-Encoder-ConvNeXt_Nano",
    "  zoobot-encoder-convnext_nano ",
])
def test_spellings_of_one_registry_model(name):
    assert normalise_name(name) == "hf-hub:mwalmsley/zoobot-encoder-convnext_nano"
    cfg = get_pretrained_cfg(name)
    assert cfg.name == "zoobot-encoder-convnext_nano" and cfg.architecture == "convnext_nano" and cfg.in_registry
    assert hub_id_for(name) == "mwalmsley/zoobot-encoder-convnext_nano"


def test_efficientnetv2_alias_and_timm_name():
    cfg = get_pretrained_cfg("zoobot-encoder-efficientnetv2_s")
    assert cfg.architecture == "tf_efficientnetv2_s" and cfg.name == "zoobot-encoder-tf_efficientnetv2_s"


def test_models_outside_the_registry():
    cfg = get_pretrained_cfg("hf_hub:someone/my-greyscale-encoder")
    assert normalise_name("hf_hub:someone/my-greyscale-encoder") == "hf-hub:someone/my-greyscale-encoder"
    assert (cfg.name, cfg.hub_id, cfg.architecture, cfg.channels) == (
        "hf-hub:someone/my-greyscale-encoder", "someone/my-greyscale-encoder", None, 1)
    assert not cfg.in_registry
    local = get_pretrained_cfg("local-dir:/models/encoder")
    assert normalise_name("local-dir:/models/encoder") == "local-dir:/models/encoder"
    assert local.hub_id is None and local.architecture is None and local.channels == 3
    assert str(local.local_dir) == "/models/encoder"
    assert hub_id_for("local-dir:/models/encoder") is None


def test_unknown_names_are_e13_with_suggestions():
    with pytest.raises(ValueError, match=r"Unknown pretrained model name 'zoobot-encoder-convnext_nanoo'.*"
                                         r"Did you mean 'zoobot-encoder-convnext_nano'.*hf-hub:<owner>/<repo>"):
        get_pretrained_cfg("zoobot-encoder-convnext_nanoo")
    with pytest.raises(ValueError, match="Unknown pretrained model name"):
        normalise_name("convnext_nano")  # a bare timm name is not a pretrained zoobot model
    with pytest.raises(ValueError, match="not a valid Hugging Face Hub name"):
        normalise_name("hf-hub:no-slash")
    with pytest.raises(ValueError, match="must be followed by a folder"):
        normalise_name("local-dir:")
    with pytest.raises(TypeError, match="must be a string"):
        normalise_name(None)
    with pytest.raises(ValueError, match="number of channels"):
        list_pretrained(channels=2)


def test_cfg_is_immutable():
    cfg = get_pretrained_cfg(DEFAULT_PRETRAINED)
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.channels = 1
    assert isinstance(cfg, PretrainedCfg)
    assert pretrained.get_pretrained_cfg() is cfg


@pytest.mark.torch
def test_registry_architectures_exist_in_timm():
    timm = pytest.importorskip("timm")
    available = set(timm.list_models())
    assert FAMILY <= available


def test_local_dir_config_reads_the_folder_record(tmp_path):
    """A timm folder's config.json, and the zoobot.json of `zoobot export` over it, fill in the record."""
    import json

    (tmp_path / "config.json").write_text(json.dumps({
        "architecture": "resnet18", "model_args": {"in_chans": 1}, "pretrained_cfg": {"input_size": [1, 224, 224]}}))
    cfg = get_pretrained_cfg(f"local-dir:{tmp_path}")
    assert (cfg.architecture, cfg.channels, cfg.input_size) == ("resnet18", 1, 224)
    (tmp_path / "zoobot.json").write_text(json.dumps({"architecture": "resnet18", "channels": 1, "input_size": 64}))
    assert get_pretrained_cfg(f"local-dir:{tmp_path}").input_size == 64
    (tmp_path / "zoobot.json").write_text("not json")
    assert get_pretrained_cfg(f"local-dir:{tmp_path}").input_size == 224
    missing = get_pretrained_cfg(f"local-dir:{tmp_path / 'missing'}")
    assert (missing.architecture, missing.channels, missing.input_size) == (None, 3, 224)
