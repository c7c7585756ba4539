"""A fake local Hugging Face cache holding a timm-format Zoobot encoder, for offline tests.

:func:`make_fake_hub_cache` writes, under ``hf_home``, exactly the layout ``huggingface_hub`` uses::

    hf_home/hub/models--mwalmsley--zoobot-encoder-convnext_nano/
        refs/main                       (the snapshot hash)
        snapshots/<hash>/config.json    (timm keys: architecture, num_classes, num_features, pretrained_cfg)
        snapshots/<hash>/model.safetensors

with a randomly initialised (seeded) timm encoder, so that
``FinetuneableZoobotClassifier(name='hf_hub:mwalmsley/zoobot-encoder-convnext_nano', ...)`` runs
offline exactly as the documentation writes it. Tests compare the loaded weights with
:func:`saved_state_dict` to prove the weights came from the cache (not a random init).
"""
from __future__ import annotations

import hashlib
import json
import pathlib

import pytest

DEFAULT_REPO = "mwalmsley/zoobot-encoder-convnext_nano"
#: A second cached repo with timm's tiny ``test_convnext`` (200k parameters) for cheaper tests.
TINY_REPO = "zoobot-tests/encoder-test_convnext"


def repo_folder(hf_home, repo_id: str = DEFAULT_REPO) -> pathlib.Path:
    return pathlib.Path(hf_home) / "hub" / ("models--" + repo_id.replace("/", "--"))


def _new_snapshot(hf_home, repo_id: str, seed_text: str) -> pathlib.Path:
    """An empty snapshot folder of ``repo_id``, which ``refs/main`` points to."""
    commit = hashlib.sha1(seed_text.encode()).hexdigest()
    folder = repo_folder(hf_home, repo_id)
    snapshot = folder / "snapshots" / commit
    snapshot.mkdir(parents=True, exist_ok=True)
    (folder / "refs").mkdir(exist_ok=True)
    (folder / "refs" / "main").write_text(commit)
    return snapshot


def make_fake_hub_cache(hf_home, repo_id: str = DEFAULT_REPO, architecture: str = "convnext_nano",
                        channels: int = 3, seed: int = 0) -> pathlib.Path:
    """Write a cached snapshot of ``repo_id`` holding a seeded random ``architecture``; return the snapshot folder."""
    import safetensors.torch
    import timm
    import torch

    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = timm.create_model(architecture, pretrained=False, num_classes=0, in_chans=channels)
    cfg = dict(model.pretrained_cfg)
    pretrained_cfg = {
        "tag": "zoobot-test",
        "custom_load": False,
        "input_size": [channels, 224, 224],
        "fixed_input_size": False,
        "interpolation": "bicubic",
        "crop_pct": 1.0,
        "crop_mode": "center",
        "mean": [0.0] * channels,
        "std": [1.0] * channels,
        "num_classes": 0,
        "first_conv": cfg.get("first_conv"),
        "classifier": cfg.get("classifier"),
    }
    config = {"architecture": architecture, "num_classes": 0, "num_features": int(model.num_features),
              "pretrained_cfg": pretrained_cfg}
    snapshot = _new_snapshot(hf_home, repo_id, f"{repo_id}-{architecture}-{channels}-{seed}")
    (snapshot / "config.json").write_text(json.dumps(config, indent=2))
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    safetensors.torch.save_file(state, str(snapshot / "model.safetensors"))
    return snapshot


def saved_state_dict(snapshot) -> dict:
    """The weights stored in a snapshot folder."""
    import safetensors.torch

    return safetensors.torch.load_file(str(pathlib.Path(snapshot) / "model.safetensors"))


@pytest.fixture(scope="session")
def fake_hf_home(tmp_path_factory):
    """A session-wide HF_HOME folder with the default Zoobot convnext_nano encoder cached."""
    home = tmp_path_factory.mktemp("hf_home")
    make_fake_hub_cache(home)
    make_fake_hub_cache(home, repo_id=TINY_REPO, architecture="test_convnext")
    return home


@pytest.fixture
def offline_hub(fake_hf_home, monkeypatch):
    """Point HF_HOME at the fake cache, force offline mode and make any socket connection fail."""
    import socket

    monkeypatch.setenv("HF_HOME", str(fake_hf_home))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.delenv("HUGGINGFACE_HUB_CACHE", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")

    real_connect = socket.socket.connect

    def no_network(sock, address, *args, **kwargs):
        if sock.family in (socket.AF_INET, socket.AF_INET6):
            raise AssertionError(f"a test tried to open a network connection to {address}")
        return real_connect(sock, address, *args, **kwargs)

    monkeypatch.setattr(socket.socket, "connect", no_network)
    return fake_hf_home


def cache_folder(hf_home, repo_id: str, folder) -> pathlib.Path:
    """Put the files of a timm folder (e.g. written by ``timm.models.save_for_hf``) in the cache as ``repo_id``."""
    import shutil

    folder = pathlib.Path(folder)
    snapshot = _new_snapshot(hf_home, repo_id, f"{repo_id}-{folder}")
    for path in folder.iterdir():
        shutil.copy2(path, snapshot / path.name)
    return snapshot
