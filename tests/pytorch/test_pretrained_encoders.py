"""create_encoder: registry / hf-hub / hf_hub / local-dir / timm / tiny_cnn names, offline behaviour (api.md 1.7, 2.2)."""
import pytest
import torch

from tests.pytorch.hub_cache import (  # noqa: F401  (fixtures)
    DEFAULT_REPO,
    TINY_REPO,
    fake_hf_home,
    make_fake_hub_cache,
    offline_hub,
    saved_state_dict,
)
from zoobot.pytorch.estimators import define_model, pretrained_encoders
from zoobot.pytorch.estimators.pretrained_encoders import create_encoder, parse_encoder_name


def _snapshot(hf_home, repo=DEFAULT_REPO):
    return pretrained_encoders.cached_hub_snapshot(repo)


def _assert_same_weights(model, reference: dict):
    state = model.state_dict()
    assert set(state) == set(reference)
    for key, value in reference.items():
        assert torch.equal(state[key], value), key


def test_seed_hub_name_loads_cached_convnext_nano_offline(offline_hub):
    encoder = create_encoder("hf_hub:" + DEFAULT_REPO)
    _assert_same_weights(encoder, saved_state_dict(_snapshot(offline_hub)))
    assert encoder.num_features == 640
    assert pretrained_encoders.encoder_architecture(encoder) == "convnext_nano"
    assert encoder(torch.rand(2, 3, 32, 32)).shape == (2, 640)


def test_new_hub_spelling_loads_the_same(offline_hub):
    encoder = create_encoder("hf-hub:" + TINY_REPO)
    _assert_same_weights(encoder, saved_state_dict(_snapshot(offline_hub, TINY_REPO)))
    assert pretrained_encoders.encoder_input_size(encoder) == 224


def test_cached_files_are_used_without_network_even_when_online(offline_hub, monkeypatch):
    # online mode, but the files are cached: nothing may touch the network (sockets fail in offline_hub)
    from huggingface_hub import constants

    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    assert not pretrained_encoders.hub_offline()
    encoder = create_encoder("hf-hub:" + TINY_REPO)
    _assert_same_weights(encoder, saved_state_dict(_snapshot(offline_hub, TINY_REPO)))


def test_missing_encoder_offline_says_what_to_do(offline_hub):
    with pytest.raises(FileNotFoundError, match="HF_HUB_OFFLINE=1") as info:
        create_encoder("hf-hub:someone/zoobot-encoder-not-cached")
    message = str(info.value)
    assert "hf download someone/zoobot-encoder-not-cached" in message
    assert "huggingface-cli download" in message
    assert "local-dir:" in message
    assert str(offline_hub) in message  # names the cache it looked in


def test_local_dir_loads_weights(offline_hub):
    snapshot = _snapshot(offline_hub, TINY_REPO)
    encoder = create_encoder(f"local-dir:{snapshot}")
    _assert_same_weights(encoder, saved_state_dict(snapshot))


def test_local_dir_missing_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        create_encoder(f"local-dir:{tmp_path / 'nowhere'}")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no config.json"):
        create_encoder(f"local-dir:{tmp_path / 'empty'}")


def test_greyscale_adaptation_sums_rgb_filters(offline_hub):
    reference = saved_state_dict(_snapshot(offline_hub, TINY_REPO))
    encoder = create_encoder("hf-hub:" + TINY_REPO, channels=1)
    assert pretrained_encoders.encoder_channels(encoder) == 1
    assert torch.allclose(encoder.state_dict()["stem.0.weight"], reference["stem.0.weight"].sum(dim=1, keepdim=True))
    # a grey image through the adapted encoder = the same grey image repeated 3x through the RGB encoder
    rgb = create_encoder("hf-hub:" + TINY_REPO).eval()
    grey = torch.rand(2, 1, 32, 32)
    assert torch.allclose(encoder.eval()(grey), rgb(grey.expand(-1, 3, -1, -1)), atol=1e-5)


def test_greyscale_snapshot_builds_one_channel_model(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    snapshot = make_fake_hub_cache(tmp_path, repo_id="owner/grey-encoder", architecture="test_resnet", channels=1)
    encoder = create_encoder("hf-hub:owner/grey-encoder")
    assert pretrained_encoders.encoder_channels(encoder) == 1
    _assert_same_weights(encoder, saved_state_dict(snapshot))


def test_timm_name_is_random_init_with_a_warning():
    with pytest.warns(UserWarning, match="randomly initialised"):
        encoder = create_encoder("test_resnet", channels=1)
    assert pretrained_encoders.encoder_channels(encoder) == 1
    assert pretrained_encoders.encoder_architecture(encoder) == "test_resnet"
    assert parse_encoder_name("efficientnet") == ("timm", "efficientnet_b0")  # the seed alias


def test_tiny_cnn_and_define_model_reexport():
    assert define_model.create_encoder("tiny_cnn", channels=1)(torch.rand(1, 1, 32, 32)).shape == (1, 128)
    assert create_encoder("tiny_cnn").blocks[0].conv.in_channels == 3


def test_unknown_names_raise_e13():
    with pytest.raises(ValueError, match="Unknown encoder name 'convnext_nanoo'.*Did you mean"):
        create_encoder("convnext_nanoo")
    with pytest.raises(ValueError, match="Unknown encoder name prefix"):
        create_encoder("s3:bucket/model")
    with pytest.raises(ValueError, match="owner/repo"):
        create_encoder("hf-hub:no-owner")
    with pytest.raises(TypeError, match="must be a string"):
        create_encoder(3)
    with pytest.raises(ValueError, match="channels must be 1"):
        create_encoder("tiny_cnn", channels=2)


def test_parse_encoder_name():
    assert parse_encoder_name("hf_hub:a/b@v1") == ("hf-hub", "a/b@v1")
    assert parse_encoder_name("local-dir:/x/y") == ("local-dir", "/x/y")
    assert parse_encoder_name("convnext_nano") == ("timm", "convnext_nano")


def test_rebuild_encoder_matches_architecture_and_kwargs():
    import timm

    vit = timm.create_model("test_vit", num_classes=0, img_size=64)
    kwargs = pretrained_encoders.encoder_build_kwargs(vit)
    assert kwargs == {"img_size": 64}
    rebuilt = pretrained_encoders.rebuild_encoder("test_vit", 3, kwargs)
    rebuilt.load_state_dict(vit.state_dict())  # same shapes (pos_embed depends on img_size)


def test_registry_short_name_resolves_to_its_hub_repo(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    assert parse_encoder_name("zoobot-encoder-resnet18") == ("registry", "zoobot-encoder-resnet18")
    snapshot = make_fake_hub_cache(tmp_path, repo_id="mwalmsley/zoobot-encoder-resnet18", architecture="resnet18")
    encoder = create_encoder("zoobot-encoder-resnet18")
    _assert_same_weights(encoder, saved_state_dict(snapshot))


def test_registry_name_without_weights_builds_the_architecture_offline(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HOME", str(tmp_path))  # empty cache
    encoder = create_encoder("zoobot-encoder-greyscale-resnet18", pretrained=False)
    assert pretrained_encoders.encoder_architecture(encoder) == "resnet18"
    assert pretrained_encoders.encoder_channels(encoder) == 1  # greyscale registry entry
    with pytest.raises(FileNotFoundError, match="zoobot-encoder-greyscale-resnet18"):
        create_encoder("zoobot-encoder-greyscale-resnet18")


def test_unreachable_hub_fails_at_once_without_blaming_hf_hub_offline(fake_hf_home, monkeypatch):
    import time

    from huggingface_hub import constants

    monkeypatch.setenv("HF_HOME", str(fake_hf_home))
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    for var in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy", "HTTP_PROXY", "http_proxy"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # the discard port: nothing listens there
    started = time.perf_counter()
    with pytest.raises(FileNotFoundError, match="the Hub cannot be reached") as info:
        create_encoder("hf-hub:someone/zoobot-encoder-not-cached")
    assert time.perf_counter() - started < 5  # not huggingface_hub's ~23 s of retries
    message = str(info.value)
    assert "HF_HUB_OFFLINE" not in message  # it was never set
    assert "name='local-dir:/path/to/folder'" in message and "--name" not in message  # a Python call
