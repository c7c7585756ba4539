"""Load pretrained encoders by name (PyTorch): registry names, ``hf-hub:``/``hf_hub:`` repos, ``local-dir:`` folders.

:func:`create_encoder` is the one entry point (re-exported by ``define_model``): a registry short name
(``'zoobot-encoder-convnext_nano'``), ``'hf-hub:owner/repo[@revision]'``, ``'local-dir:/folder'`` (a copied
Hub snapshot: no network), or an architecture (timm name, ``tiny_cnn``: randomly initialised, built by
:mod:`zoobot.pytorch.estimators.encoders`). Hub files are looked up in the Hugging Face cache at call time;
nothing touches the network when they are cached, and with ``HF_HUB_OFFLINE=1`` a missing file is a
``FileNotFoundError`` that lists the fixes. The cache helpers (:func:`hub_cache_dir`, :func:`hub_offline`,
:func:`cached_hub_snapshot`, :func:`download_hub_snapshot`) import neither torch nor timm. See
docs/pretrained_models.md.
"""
from __future__ import annotations

import json
import logging
import os
import pathlib
import warnings
from typing import TYPE_CHECKING

from zoobot.pytorch.estimators.encoders import (  # noqa: F401  (re-exported: checkpoints describe encoders here)
    encoder_architecture,
    encoder_build_kwargs,
    encoder_channels,
    encoder_input_size,
    get_encoder,
    check_channels,
    rebuild_encoder,
)
from zoobot.shared.hub import (  # noqa: F401  (re-exported: the documented place of the cache helpers)
    WEIGHT_FILES,
    registry_cfg as _registry_cfg,
    cached_hub_snapshot,
    download_hub_snapshot,
    hub_cache_dir,
    hub_offline,
    parse_encoder_name,
)
from zoobot.shared.validation import check_bool

if TYPE_CHECKING:  # torch/timm are imported where used: the Hub-cache helpers work without them
    from torch import nn

__all__ = [
    "create_encoder",
    "parse_encoder_name",
    "hub_cache_dir",
    "hub_offline",
    "cached_hub_snapshot",
    "download_hub_snapshot",
    "encoder_architecture",
    "encoder_channels",
    "encoder_input_size",
    "encoder_build_kwargs",
    "rebuild_encoder",
    "WEIGHT_FILES",
]

logger = logging.getLogger(__name__)

# ---------------------------------------------------------------------------------------------
# building encoders
# ---------------------------------------------------------------------------------------------

def _read_folder_config(folder: pathlib.Path) -> dict:
    config_file = folder / "config.json"
    if not config_file.is_file():
        raise FileNotFoundError(
            f"{folder} has no config.json. A 'local-dir:' encoder folder needs the timm files config.json "
            f"(keys 'architecture', 'num_classes', 'pretrained_cfg') and one of {list(WEIGHT_FILES)}, "
            "e.g. a copied Hugging Face snapshot."
        )
    with open(config_file, encoding="utf-8") as f:
        return json.load(f)


def _config_channels(config: dict) -> int | None:
    channels = (config.get("model_args") or {}).get("in_chans")
    if channels is None:
        cfg = config.get("pretrained_cfg", config)
        input_size = cfg.get("input_size")
        if input_size:
            channels = input_size[0]
    return int(channels) if channels is not None else None


def _from_folder(folder: pathlib.Path, pretrained: bool, channels: int | None, kwargs: dict,
                 registry_channels: int | None = None) -> nn.Module:
    """Build a timm encoder from a folder with config.json (+ weights when ``pretrained``)."""
    import timm

    if not folder.is_dir():
        raise FileNotFoundError(f"Encoder folder {folder} does not exist (from name 'local-dir:{folder}').")
    config = _read_folder_config(folder)
    native = _config_channels(config) or registry_channels or 3
    wanted = native if channels is None else int(channels)
    if pretrained and not any((folder / f).is_file() for f in WEIGHT_FILES):
        raise FileNotFoundError(f"{folder} has a config.json but none of the weight files {list(WEIGHT_FILES)}.")
    kwargs = {**kwargs, "num_classes": 0}
    model = timm.create_model(f"local-dir:{folder}", pretrained=pretrained, in_chans=native, **kwargs)
    if wanted != native:
        model = _adapt_input_channels(model, wanted, kwargs)
    return model


def _adapt_input_channels(model: nn.Module, channels: int, kwargs: dict) -> nn.Module:
    """Rebuild ``model`` for ``channels`` inputs, adapting its first convolution's pretrained weights.

    3 -> 1 sums the RGB filters (a greyscale image then gives what the RGB model gives on an image
    with three equal channels); 1 -> 3 repeats the filter divided by 3 (timm's ``adapt_input_conv``).
    """
    import timm
    from timm.models import adapt_input_conv

    architecture = encoder_architecture(model)
    first_conv = model.pretrained_cfg.get("first_conv")
    if not architecture or not first_conv:
        raise ValueError(
            f"Cannot adapt this encoder to {channels} input channels (unknown first layer); "
            "use images with the encoder's own channel count."
        )
    state = model.state_dict()
    key = f"{first_conv}.weight"
    state[key] = adapt_input_conv(channels, state[key])
    new_kwargs = {k: v for k, v in getattr(model, "_model_args", {}).items() if k not in ("in_chans",)}
    new_kwargs.update({k: v for k, v in kwargs.items() if k != "in_chans"})
    rebuilt = timm.create_model(architecture, pretrained=False, in_chans=channels, **new_kwargs)
    rebuilt.load_state_dict(state)
    rebuilt.pretrained_cfg = dict(model.pretrained_cfg)
    rebuilt.pretrained_cfg["input_size"] = (channels, *tuple(model.pretrained_cfg.get("input_size", (3, 224, 224)))[1:])
    logger.info("Adapted the first convolution %s to %d input channels", first_conv, channels)
    return rebuilt


def create_encoder(name: str, pretrained: bool = True, channels: int | None = None, **kwargs) -> nn.Module:
    """Create an encoder (``nn.Module``: images (B, C, H, W) in [0, 1] -> features (B, D)) from a name.

    Parameters
    ----------
    name : str
        A registry short name (``'zoobot-encoder-convnext_nano'``), ``'hf-hub:owner/repo'`` (legacy
        ``'hf_hub:owner/repo'``), ``'local-dir:/folder'``, a timm architecture (random init) or
        ``'tiny_cnn'``.
    pretrained : bool
        Load the pretrained weights (registry, ``hf-hub:`` and ``local-dir:`` names). With False
        only the architecture is built (its ``config.json`` is still needed for ``hf-hub:`` names,
        unless the registry knows the architecture). Plain timm names and ``tiny_cnn`` are always
        randomly initialised.
    channels : int, optional
        Input channels. Default: the pretrained model's (registry/config), else 3. A different
        count than the pretrained one adapts the first convolution (3 -> 1 sums the RGB filters).
    **kwargs
        Passed to ``timm.create_model`` (e.g. ``drop_path_rate``); ``num_classes`` is always 0.

    Returns
    -------
    torch.nn.Module
        timm models keep their ``pretrained_cfg`` (``architecture``, ``input_size``);
        ``num_features`` is the feature dimension.

    Raises
    ------
    ValueError
        (E13) unknown name or prefix.
    FileNotFoundError
        A ``hf-hub:`` encoder is not cached and cannot be downloaded (``HF_HUB_OFFLINE=1`` or no
        network): the message lists the fixes. A ``local-dir:`` folder is missing or incomplete.

    Examples
    --------
    >>> import torch
    >>> encoder = create_encoder('tiny_cnn', channels=1)
    >>> encoder(torch.zeros(2, 1, 32, 32)).shape
    torch.Size([2, 128])
    """
    pretrained = check_bool("pretrained", pretrained)
    if channels is not None:
        channels = check_channels(channels)
    kwargs.pop("num_classes", None)
    source, ident = parse_encoder_name(name)
    if source == "tiny_cnn":
        return get_encoder("tiny_cnn", channels=channels or 3)
    if source == "timm":
        if pretrained:
            warnings.warn(
                f"{name!r} is a timm architecture, not a pretrained Zoobot encoder: it is randomly initialised. "
                f"For Zoobot weights use a registry name (e.g. 'zoobot-encoder-convnext_nano') or 'hf-hub:owner/repo'; "
                "pass pretrained=False to silence this warning.",
                UserWarning,
                stacklevel=2,
            )
        return get_encoder(ident, channels=channels or 3, **kwargs)
    if source == "local-dir":
        folder = pathlib.Path(os.path.expanduser(ident))
        return _from_folder(folder, pretrained, channels, kwargs)
    return _from_hub(source, ident, pretrained, channels, kwargs)


def _from_hub(source: str, ident: str, pretrained: bool, channels: int | None, kwargs: dict) -> nn.Module:
    """A registry or ``hf-hub:`` encoder: from the cache, downloaded, or (not pretrained) its bare architecture."""
    registry_cfg = None
    if source == "registry":
        registry_cfg = _registry_cfg(ident)
        repo = str(registry_cfg.hub_id)
        for prefix in ("hf-hub:", "hf_hub:"):
            if repo.startswith(prefix):
                repo = repo[len(prefix):]
    else:
        repo = ident
        registry_cfg = _registry_cfg(f"hf-hub:{repo}")
    registry_channels = getattr(registry_cfg, "channels", None)
    if not pretrained:
        snapshot = cached_hub_snapshot(repo)
        if snapshot is None and registry_cfg is not None and getattr(registry_cfg, "architecture", None):
            return get_encoder(
                registry_cfg.architecture, channels=channels or registry_channels or 3, **kwargs
            )
        if snapshot is None:
            snapshot = download_hub_snapshot(repo)
        return _from_folder(snapshot, False, channels, kwargs, registry_channels)
    snapshot = download_hub_snapshot(repo)
    return _from_folder(snapshot, True, channels, kwargs, registry_channels)
