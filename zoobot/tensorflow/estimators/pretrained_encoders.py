"""Zoobot's pretrained timm encoders in Keras, through keras-hub.

The published Zoobot encoders are timm checkpoints (a folder, or a Hugging Face Hub repo, holding
``config.json`` with the timm ``architecture`` and ``model.safetensors``). keras-hub converts such
checkpoints for the EfficientNet, ResNet, MobileNet, DenseNet, CSPNet, VGG and HGNetV2 families:
:func:`load_timm_encoder` asks it (``keras_hub.models.Backbone.from_preset``) to build the Keras
backbone and port the weights, then adds the global average pooling timm applies, so the encoder
gives the same pooled features as the PyTorch twin (images NHWC float32 in [0, 1], no mean/std
normalisation inside, as in ``zoobot.pytorch``). ConvNeXt and MaxViT have no keras-hub converter:
:func:`check_tensorflow_architecture` refuses them with a message saying the PyTorch backend
loads them.

``define_model.create_encoder`` (and so the finetuning classes' ``name=``) calls this module for
``hf-hub:`` names, registry names and ``local-dir:`` folders in timm format. Nothing here downloads
a file that is already in the Hugging Face cache. See docs/pretrained_models.md.

Examples
--------
>>> check_tensorflow_architecture('resnet18')
'resnet'
>>> check_tensorflow_architecture('convnext_nano')
Traceback (most recent call last):
...
ValueError: ...
"""
from __future__ import annotations

import json
import pathlib

from zoobot.shared.errors import ChannelMismatchError, missing_dependency
from zoobot.shared.export import METADATA_FILE

__all__ = [
    "KERAS_HUB_FAMILIES",
    "KERAS_HUB_BLOCK_RULES",
    "keras_hub_block_family",
    "keras_hub_block_key",
    "ZOOBOT_METADATA_FILE",
    "check_tensorflow_architecture",
    "create_hub_encoder",
    "is_timm_folder",
    "load_timm_encoder",
    "hub_snapshot",
    "read_folder_metadata",
]

#: The timm families keras-hub converts (for messages; keras-hub itself decides each architecture).
KERAS_HUB_FAMILIES = ("EfficientNet", "ResNet", "MobileNet", "DenseNet", "CSPNet", "VGG", "HGNetV2")
#: The zoobot side file of an exported encoder folder (schema, channels, input size, preprocessing).
ZOOBOT_METADATA_FILE = METADATA_FILE
_WEIGHTS = "model.safetensors"


def _keras_hub():
    try:
        import keras_hub
    except ImportError:
        raise missing_dependency("keras_hub", "Loading pretrained timm encoders in TensorFlow",
                                 "tensorflow") from None
    return keras_hub


def check_tensorflow_architecture(architecture: str, where: str | None = None) -> str:
    """The keras-hub family of a timm ``architecture``, or a clear E13 error if keras-hub cannot convert it.

    keras-hub's own timm loader decides (its converter must accept the architecture's config).

    Parameters
    ----------
    architecture : str
        timm architecture name, e.g. ``'efficientnet_b0'``.
    where : str, optional
        The encoder name, for the message.

    Returns
    -------
    str
        The converter's family, e.g. ``'efficientnet'``, ``'resnet'``.

    Raises
    ------
    ValueError
        (E13) keras-hub has no converter for it (ConvNeXt, MaxViT, ViT, ...): the message names the
        families that work in TensorFlow and says that ``zoobot.pytorch`` loads it.
    """
    try:
        converter = _converter(architecture)
        converter.convert_backbone_config({"architecture": str(architecture), "pretrained_cfg": {},
                                           "num_features": 0})
    except (ValueError, KeyError, NotImplementedError):  # keras-hub words each refusal differently
        raise ValueError(
            f"The pretrained encoder {where or architecture!r} is a timm {architecture!r}, which zoobot.tensorflow "
            f"cannot load: keras-hub converts only the {', '.join(KERAS_HUB_FAMILIES)} families (and not every "
            f"variant of them). The PyTorch backend loads it: use zoobot.pytorch (e.g. "
            f"zoobot.pytorch.training.finetune.FinetuneableZoobotClassifier(name=...)), or pick a TensorFlow-"
            f"capable encoder (zoobot.shared.pretrained.list_pretrained(backend='tensorflow'))."
        ) from None
    return converter.__name__.rsplit(".", 1)[-1].removeprefix("convert_")


def _converter(architecture: str):
    """keras-hub's timm converter module for ``architecture`` (its loader raises ValueError if there is none).

    keras-hub exposes no public "which timm architectures" call, so its timm preset loader is asked.
    """
    _keras_hub()
    from keras_hub.src.utils.timm import preset_loader

    return preset_loader.TimmPresetLoader(None, {"architecture": str(architecture)}).converter


def _input_shape_argument(architecture: str) -> str:
    """The keras-hub backbone's name for its input shape (``image_shape``, or ``input_shape`` for EfficientNet)."""
    import inspect

    backbone_cls = _converter(architecture).backbone_cls
    parameters = inspect.signature(backbone_cls.__init__).parameters
    return "input_shape" if "input_shape" in parameters else "image_shape"


def is_timm_folder(folder) -> bool:
    """True if ``folder`` holds a timm ``config.json`` (with ``architecture``) and ``model.safetensors``."""
    folder = pathlib.Path(folder)
    return (folder / "config.json").is_file() and (folder / _WEIGHTS).is_file() and \
        "architecture" in _read_json(folder / "config.json")


def _read_json(path: pathlib.Path) -> dict:
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, json.JSONDecodeError) as err:
        raise ValueError(f"{path} is not readable JSON ({type(err).__name__}: {err}).") from err
    return data if isinstance(data, dict) else {}


def read_folder_metadata(folder) -> dict:
    """The zoobot side file of an exported folder (``zoobot.json``), or ``{}`` for a plain timm folder."""
    path = pathlib.Path(folder) / ZOOBOT_METADATA_FILE
    return _read_json(path) if path.is_file() else {}


def _config_channels(config: dict) -> int:
    channels = (config.get("model_args") or {}).get("in_chans")
    if channels is None:
        input_size = (config.get("pretrained_cfg") or {}).get("input_size")
        channels = input_size[0] if input_size else 3
    return int(channels)


def hub_snapshot(repo: str) -> pathlib.Path:
    """The local folder of a Hub repo (``owner/repo[@revision]``): the cached snapshot, else downloaded.

    The same cache lookup as the PyTorch backend (cached files never touch the network; offline or
    unreachable: a ``FileNotFoundError`` with the ways out).
    """
    from zoobot.shared.hub import download_hub_snapshot

    snapshot = download_hub_snapshot(repo)
    if not (snapshot / _WEIGHTS).is_file():
        raise FileNotFoundError(
            f"hf-hub:{repo} has no {_WEIGHTS} (only older PyTorch weight files), which keras-hub needs. "
            "Use zoobot.pytorch for it, or save it again with timm.models.save_for_hf(..., safe_serialization=True)."
        )
    return snapshot


def create_hub_encoder(repo: str, cfg=None, pretrained: bool = True, channels: int | None = None):
    """The Keras encoder of a Hub repo in timm format (``owner/repo[@revision]``), via the local cache.

    ``cfg`` is the repo's :class:`zoobot.shared.pretrained.PretrainedCfg`: when it knows the
    architecture, an architecture keras-hub cannot convert is refused before anything is downloaded.
    """
    architecture = getattr(cfg, "architecture", None)
    if architecture:
        check_tensorflow_architecture(architecture, f"hf-hub:{repo}")
    return load_timm_encoder(hub_snapshot(repo), channels, name=f"hf-hub:{repo}", load_weights=pretrained)


def load_timm_encoder(folder, channels: int | None = None, name: str | None = None, load_weights: bool = True):
    """A Keras encoder (images (B, H, W, C) in [0, 1] -> pooled features (B, D)) from a timm folder.

    Parameters
    ----------
    folder : path-like
        Holds ``config.json`` (timm keys: ``architecture``, ``pretrained_cfg``, ``model_args``) and
        ``model.safetensors``, e.g. saved by ``timm.models.save_for_hf`` or ``zoobot export``.
    channels : int, optional
        Input channels; default the checkpoint's. Another count adapts the first convolution as the
        PyTorch backend does (3 -> 1 sums the RGB filters; 1 -> 3 repeats the filter divided by 3).
    name : str, optional
        The encoder name the user gave, for messages.
    load_weights : bool, default True
        False builds the architecture with random weights.

    Returns
    -------
    keras.Model
        ``Input -> keras-hub backbone -> GlobalAveragePooling2D``, named ``'<architecture>_keras_hub'``;
        the backbone keeps keras-hub's layer names (so the finetuning block tables find its blocks).

    Raises
    ------
    FileNotFoundError
        Not a timm folder.
    ValueError
        (E13) an architecture keras-hub cannot convert (see :func:`check_tensorflow_architecture`).
    """
    import keras

    folder = pathlib.Path(folder).expanduser()
    where = name or f"local-dir:{folder}"
    if not is_timm_folder(folder):
        raise FileNotFoundError(
            f"{where}: {folder} is not a timm encoder folder (it needs config.json with an 'architecture' key and "
            f"{_WEIGHTS}; save one with timm.models.save_for_hf(model, folder, safe_serialization=True) or "
            "`zoobot export --checkpoint CKPT --out DIR`), nor a Keras folder with encoder.keras."
        )
    config = _read_json(folder / "config.json")
    architecture = str(config["architecture"])
    check_tensorflow_architecture(architecture, where)
    native = _config_channels(config)
    shape_argument = _input_shape_argument(architecture)
    backbone = _keras_hub().models.Backbone.from_preset(str(folder), load_weights=load_weights,
                                                          **{shape_argument: (None, None, native)})
    if channels is not None and int(channels) != native:
        backbone = _adapt_input_channels(backbone, native, int(channels), where, shape_argument)
    inputs = keras.Input(shape=(None, None, backbone.input_shape[-1]), name="image")
    pooled = keras.layers.GlobalAveragePooling2D(name="avg_pool")(backbone(inputs))
    return keras.Model(inputs, pooled, name=f"{architecture}_keras_hub")


def _adapt_input_channels(backbone, native: int, channels: int, where: str, shape_argument: str):
    """The same backbone for ``channels`` inputs, its first convolution adapted (the others copied)."""
    import numpy as np

    if channels not in (1, 3):
        raise ChannelMismatchError(f"channels must be 1 or 3, got {channels!r}")
    config = dict(backbone.get_config(), **{shape_argument: (None, None, channels)})
    adapted = type(backbone).from_config(config)
    changed = 0
    for target, source in zip(adapted.weights, backbone.weights):
        value = np.asarray(source)
        if tuple(target.shape) != value.shape:  # the first convolution: (kh, kw, C_in, C_out)
            if channels == 1:
                value = value.sum(axis=2, keepdims=True)
            else:
                value = np.repeat(value, channels, axis=2) / channels
            changed += 1
        target.assign(value)
    if changed != 1:
        raise ChannelMismatchError(
            f"{where} takes {native}-channel images and its first layer could not be adapted to {channels} channels "
            f"({changed} weights differ). Fix: use {native}-channel images."
        )
    return adapted


# ---------------------------------------------------------------------------------------------
# finetuning blocks of keras-hub backbones (the block tables of zoobot.tensorflow.training.finetune)
# ---------------------------------------------------------------------------------------------

#: keras-hub backbone class -> (stem pattern or None, numbered pattern, block-name template). Blocks,
#: input side first: ``stem`` (order 0), then one per number the pattern captures (a DenseNet
#: transition joins the stack before it). Layers matching neither join the block before them.
#: keras-hub's EfficientNet keeps the Keras application's layer names, so the EfficientNet table
#: (``stem``, ``block1`` .. ``block7``, ``top``) covers it. HGNetV2 has no table (n_blocks 0 or -1).
KERAS_HUB_BLOCK_RULES = {
    "ResNetBackbone": (r"^(conv1|pool1)_", r"^stack(\d+)_", "stack{}"),
    "DenseNetBackbone": (r"^(conv1_|pool1$)", r"^(?:stack|transition)(\d+)_", "stack{}"),
    "CSPNetBackbone": (r"^csp_stem", r"^stage_(\d+)_", "stage_{}"),
    "VGGBackbone": (None, r"^block(\d+)_", "block{}"),
    "MobileNetBackbone": (r"^input_", r"^block_(\d+)_", "block_{}"),
}
_FAMILY_PREFIX = "keras_hub:"


def keras_hub_block_family(model) -> str | None:
    """``'keras_hub:<BackboneClass>'`` for a keras-hub backbone with a block table, else None."""
    name = type(model).__name__
    return _FAMILY_PREFIX + name if name in KERAS_HUB_BLOCK_RULES else None


def keras_hub_block_key(family: str, layer_name: str):
    """``(order, block name)`` of a layer of a keras-hub backbone (see :data:`KERAS_HUB_BLOCK_RULES`), or None.

    Examples
    --------
    >>> keras_hub_block_key('keras_hub:ResNetBackbone', 'stack2_block1_2_conv')
    (3, 'stack2')
    >>> keras_hub_block_key('keras_hub:ResNetBackbone', 'conv1_bn')
    (0, 'stem')
    """
    import re

    stem, numbered, template = KERAS_HUB_BLOCK_RULES[family[len(_FAMILY_PREFIX):]]
    if stem is not None and re.search(stem, layer_name):
        return 0, "stem"
    if match := re.search(numbered, layer_name):
        return int(match.group(1)) + 1, template.format(match.group(1))
    return None
