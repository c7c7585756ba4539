"""Build, measure and describe image encoders (PyTorch): the one place that creates an encoder from an architecture.

An encoder maps images (B, C, H, W) float32 in [0, 1] to pooled features (B, D). :func:`get_encoder` builds a
randomly initialised timm model (or ``tiny_cnn``); :func:`rebuild_encoder` does the same from what a checkpoint
recorded (:func:`encoder_architecture`, :func:`encoder_channels`, :func:`encoder_build_kwargs`). Pretrained
weights (registry, ``hf-hub:``, ``local-dir:`` names) are loaded by
:mod:`zoobot.pytorch.estimators.pretrained_encoders`, which builds on this module; this module imports no
other zoobot estimator module, so every other module can import it. See docs/how_the_code_fits_together.md.

Examples
--------
>>> import torch
>>> encoder = get_encoder('tiny_cnn', channels=1)
>>> encoder(torch.zeros(2, 1, 32, 32)).shape
torch.Size([2, 128])
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from zoobot.shared.errors import unknown_option_error
from zoobot.shared.validation import is_int
from zoobot.shared.zoobot_tree_args import check_channels

if TYPE_CHECKING:  # torch and timm are imported where used: describing an encoder's record needs neither
    from torch import nn

__all__ = [
    "get_encoder",
    "get_pytorch_encoder",
    "get_encoder_dim",
    "check_channels",
    "is_convnet",
    "encoder_architecture",
    "encoder_channels",
    "encoder_input_size",
    "encoder_build_kwargs",
    "rebuild_encoder",
]


def get_encoder(architecture_name: str = "efficientnet_b0", channels: int = 1, **kwargs) -> nn.Module:
    """A randomly initialised image encoder returning pooled features (B, encoder_dim).

    Parameters
    ----------
    architecture_name : str, default 'efficientnet_b0'
        Any timm model name (``timm.list_models()``), ``'efficientnet'`` (= ``efficientnet_b0``), or
        ``'tiny_cnn'`` (the small test encoder of :mod:`~zoobot.pytorch.estimators.tiny_cnn`).
    channels : int, default 1
        Input channels: 1 (greyscale) or 3 (RGB).
    **kwargs
        Passed to ``timm.create_model`` (e.g. ``drop_path_rate=0.2``). ``num_classes=0`` (pooled
        features, no classifier) and ``pretrained=False`` are fixed; for pretrained weights use
        :func:`zoobot.pytorch.estimators.pretrained_encoders.create_encoder`.

    Returns
    -------
    torch.nn.Module
        ``encoder(x)`` maps (B, C, H, W) float [0, 1] to (B, encoder_dim); ``encoder.num_features``
        is ``encoder_dim``.

    Raises
    ------
    ValueError
        (E13) unknown architecture name, with close matches; ``pretrained`` or ``num_classes`` in
        ``kwargs``.
    ChannelMismatchError
        (E7) ``channels`` not 1 or 3.

    Examples
    --------
    >>> get_encoder('tiny_cnn', channels=3).num_features
    128
    """
    from zoobot.shared.training_config import resolve_architecture_name

    channels = check_channels(channels)
    name = resolve_architecture_name(architecture_name)
    for fixed in ("pretrained", "num_classes", "in_chans"):
        if fixed in kwargs:
            raise ValueError(
                f"get_encoder fixes {fixed!r} (random init, pooled features, in_chans=channels); remove it "
                "from timm_kwargs. For pretrained weights use create_encoder(name, pretrained=True)."
            )
    if name == "tiny_cnn":
        from zoobot.pytorch.estimators.tiny_cnn import TinyCNN

        if kwargs:
            raise ValueError(f"tiny_cnn takes no timm_kwargs, got {sorted(kwargs)}")
        return TinyCNN(channels=channels)
    import timm

    if not timm.is_model(name):
        raise unknown_option_error(
            "architecture_name", architecture_name, ["tiny_cnn", "efficientnet", *timm.list_models()]
        )
    return timm.create_model(name, pretrained=False, num_classes=0, in_chans=channels, **kwargs)


#: The name of :func:`get_encoder` in the upstream documentation (same object, not deprecated).
get_pytorch_encoder = get_encoder


def get_encoder_dim(encoder: nn.Module, channels: int = 3) -> int:
    """Dimension of the pooled features of ``encoder``.

    Uses ``encoder.num_features`` (timm convention) when present, else runs one 224 x 224 probe
    image through the encoder.

    Parameters
    ----------
    encoder : torch.nn.Module
        Maps (B, C, H, W) to (B, D).
    channels : int, default 3
        Channels of the probe image.

    Returns
    -------
    int

    Examples
    --------
    >>> get_encoder_dim(get_encoder('tiny_cnn'))
    128
    """
    import torch

    dim = getattr(encoder, "num_features", None)
    if is_int(dim) and dim > 0:
        return int(dim)
    param = next(iter(encoder.parameters()), None)
    device = param.device if param is not None else torch.device("cpu")
    was_training = encoder.training
    encoder.eval()
    try:
        with torch.no_grad():
            out = encoder(torch.zeros(1, channels, 224, 224, device=device))
    finally:
        encoder.train(was_training)
    if out.ndim != 2:
        raise ValueError(
            f"encoder output has shape {tuple(out.shape)}; zoobot needs pooled features (B, D). "
            "Create timm encoders with num_classes=0."
        )
    return int(out.shape[1])


def is_convnet(encoder: nn.Module) -> bool:
    """True for encoders with several 2-D convolutions, which run faster in channels_last memory format."""
    from torch import nn

    n_conv = sum(isinstance(m, nn.Conv2d) and m.kernel_size != (1, 1) for m in encoder.modules())
    return n_conv >= 3


# ---------------------------------------------------------------------------------------------
# describing an encoder (what a checkpoint needs to rebuild it without downloading)
# ---------------------------------------------------------------------------------------------

def _unwrap(encoder: nn.Module) -> nn.Module:
    return getattr(encoder, "_orig_mod", encoder)  # torch.compile wrapper


def encoder_architecture(encoder: nn.Module) -> str | None:
    """The architecture name that rebuilds ``encoder`` with random weights, or None for custom modules.

    ``'tiny_cnn'`` for :class:`~zoobot.pytorch.estimators.tiny_cnn.TinyCNN`, the timm architecture
    (``pretrained_cfg['architecture']``) for timm models, None otherwise.

    Examples
    --------
    >>> encoder_architecture(get_encoder('tiny_cnn'))
    'tiny_cnn'
    """
    encoder = _unwrap(encoder)
    from zoobot.pytorch.estimators.tiny_cnn import TinyCNN

    if isinstance(encoder, TinyCNN):
        return "tiny_cnn"
    cfg = getattr(encoder, "pretrained_cfg", None) or getattr(encoder, "default_cfg", None)
    if isinstance(cfg, dict) and cfg.get("architecture"):
        import timm

        architecture = str(cfg["architecture"])
        if timm.is_model(architecture):
            return architecture
    return None


def encoder_channels(encoder: nn.Module, default: int = 3) -> int:
    """Input channels of ``encoder``: the ``in_channels`` of its first convolution (or ``default``)."""
    from torch import nn

    encoder = _unwrap(encoder)
    for module in encoder.modules():
        if isinstance(module, nn.modules.conv._ConvNd):
            return int(module.in_channels)
    cfg = getattr(encoder, "pretrained_cfg", None) or {}
    if cfg.get("input_size"):
        return int(cfg["input_size"][0])
    return default


def encoder_input_size(encoder: nn.Module, default: int = 224) -> int:
    """Image size the encoder was pretrained at (``pretrained_cfg['input_size'][-1]``), else ``default``."""
    cfg = getattr(_unwrap(encoder), "pretrained_cfg", None) or {}
    if cfg.get("input_size"):
        return int(cfg["input_size"][-1])
    return default


def encoder_build_kwargs(encoder: nn.Module) -> dict:
    """The JSON-primitive timm keyword arguments needed to rebuild ``encoder`` (e.g. ``img_size``).

    Taken from timm's record of the ``create_model`` keywords, without ``num_classes``/``in_chans``
    (stored separately) and without values that are not JSON primitives.
    """
    args = getattr(_unwrap(encoder), "_model_args", None) or {}
    out = {}
    for key, value in args.items():
        if key in ("num_classes", "in_chans", "pretrained_cfg", "pretrained_cfg_overlay", "cache_dir"):
            continue
        if _is_json_primitive(value):
            out[key] = list(value) if isinstance(value, tuple) else value
    return out


def _is_json_primitive(value) -> bool:
    if value is None or isinstance(value, (bool, int, float, str)):
        return True
    if isinstance(value, (list, tuple)):
        return all(_is_json_primitive(v) for v in value)
    if isinstance(value, dict):
        return all(isinstance(k, str) and _is_json_primitive(v) for k, v in value.items())
    return False


def rebuild_encoder(architecture: str, channels: int, build_kwargs: dict | None = None) -> nn.Module:
    """Build a randomly initialised encoder of a known architecture (no network): used to load checkpoints.

    Parameters
    ----------
    architecture : str
        ``'tiny_cnn'`` or a timm architecture, as returned by :func:`encoder_architecture`.
    channels : int
        Input channels.
    build_kwargs : dict, optional
        timm keywords from :func:`encoder_build_kwargs`.
    """
    build_kwargs = dict(build_kwargs or {})
    build_kwargs.pop("num_classes", None)
    if architecture == "tiny_cnn":
        return get_encoder("tiny_cnn", channels=channels)
    return get_encoder(architecture, channels=channels, **build_kwargs)
