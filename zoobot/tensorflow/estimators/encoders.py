"""Build and measure image encoders (TensorFlow): the one place that creates an encoder from an architecture.

An encoder maps images (B, H, W, C) float32 in [0, 1] to pooled features (B, D). :func:`get_encoder` builds a
Keras application of :data:`ENCODER_NAMES` (or ``tiny_cnn``), randomly initialised unless
``weights='imagenet'``, with its built-in input rescaling switched off or compensated, so that the first layer
sees the [0, 1] values. Pretrained Zoobot encoders (registry, ``hf-hub:``, ``local-dir:`` names) are loaded by
``create_encoder`` (:mod:`zoobot.tensorflow.estimators.define_model`). This module imports no other zoobot
estimator module except ``tiny_cnn``. See docs/how_the_code_fits_together.md.

Examples
--------
>>> get_encoder('tiny_cnn', channels=1).output_shape
(None, 128)
"""
from __future__ import annotations

import keras
import numpy as np

from zoobot.shared.errors import ChannelMismatchError, unknown_option_error
from zoobot.shared.zoobot_tree_args import check_channels
from zoobot.tensorflow.estimators import tiny_cnn

__all__ = ["ENCODER_NAMES", "get_encoder", "get_encoder_dim", "check_channels", "resolve_encoder_name"]

# zoobot name -> (keras.applications constructor, how its built-in preprocessing is switched off)
#   'rescaling': EfficientNet (v1) always adds Rescaling(1/255) + an (identity unless adapted)
#                Normalization; the Rescaling scale is set to 1.
#   'flag':      the constructor takes include_preprocessing=False.
#   None:        no built-in preprocessing (ResNet).
_KERAS_APPLICATIONS = {
    **{f"efficientnet_b{i}": (f"EfficientNetB{i}", "rescaling") for i in range(8)},
    **{f"efficientnetv2_b{i}": (f"EfficientNetV2B{i}", "flag") for i in range(4)},
    "efficientnetv2_s": ("EfficientNetV2S", "flag"),
    "efficientnetv2_m": ("EfficientNetV2M", "flag"),
    "efficientnetv2_l": ("EfficientNetV2L", "flag"),
    "resnet50": ("ResNet50", None),
    "resnet101": ("ResNet101", None),
    "resnet152": ("ResNet152", None),
    "convnext_tiny": ("ConvNeXtTiny", "flag"),
    "convnext_small": ("ConvNeXtSmall", "flag"),
    "convnext_base": ("ConvNeXtBase", "flag"),
    "convnext_large": ("ConvNeXtLarge", "flag"),
}

#: Every encoder name :func:`get_encoder` builds ('efficientnet' is accepted for
#: 'efficientnet_b0'; the deprecated 'resnet_detectron'/'resnet_torchvision' give 'resnet50').
ENCODER_NAMES = tuple(_KERAS_APPLICATIONS) + ("tiny_cnn",)


def resolve_encoder_name(architecture_name) -> str:
    """The :data:`ENCODER_NAMES` entry for ``architecture_name`` (``'efficientnet'`` -> ``'efficientnet_b0'``), else E13.

    Examples
    --------
    >>> resolve_encoder_name('efficientnet')
    'efficientnet_b0'
    """
    from zoobot.shared.training_config import resolve_architecture_name

    name = resolve_architecture_name(architecture_name)
    if name not in ENCODER_NAMES:
        raise unknown_option_error("TensorFlow encoder architecture", architecture_name, ENCODER_NAMES)
    return name


def get_encoder(architecture_name: str = "efficientnet_b0", channels: int = 1, **kwargs) -> keras.Model:
    """Build an encoder: images (B, H, W, C) float32 in [0, 1] -> pooled features (B, dim).

    Parameters
    ----------
    architecture_name : str, default 'efficientnet_b0'
        One of :data:`ENCODER_NAMES`: ``efficientnet_b0..b7``, ``efficientnetv2_b0..b3/s/m/l``,
        ``resnet50/101/152``, ``convnext_tiny/small/base/large``, ``tiny_cnn``. ``'efficientnet'``
        means ``efficientnet_b0``.
    channels : int, default 1
        Input channels, 1 (greyscale) or 3 (RGB).
    **kwargs
        Passed to the ``keras.applications`` constructor (e.g. ``drop_connect_rate`` for
        EfficientNet). ``input_shape`` may be ``(H, W)`` or ``(H, W, C)`` (default: any size).
        ``weights`` defaults to None (random init); ``weights='imagenet'`` downloads Keras'
        ImageNet weights (needs ``channels=3``) and compensates their built-in preprocessing so the
        model still takes [0, 1] inputs.

    Returns
    -------
    keras.Model
        Functional model with the application's layer names (``stem_conv``, ``block1a_...``,
        ``top_conv`` ...), global-average pooled. Pooled dims equal timm's for the same names
        (efficientnet_b0: 1280, resnet50: 2048, convnext_tiny: 768, tiny_cnn: 128).

    Raises
    ------
    ValueError
        (E13) unknown architecture (the message lists :data:`ENCODER_NAMES`).
    ChannelMismatchError
        (E7) channels not 1 or 3, or ImageNet weights with 1 channel.

    Examples
    --------
    >>> encoder = get_encoder('tiny_cnn', channels=1)
    >>> encoder.output_shape
    (None, 128)
    """
    name = resolve_encoder_name(architecture_name)
    channels = check_channels(channels)
    kwargs = dict(kwargs)
    input_shape = kwargs.pop("input_shape", None)
    spatial = (None, None) if input_shape is None else tuple(input_shape)[:2]
    if name == "tiny_cnn":
        if kwargs:
            raise TypeError(f"tiny_cnn takes no extra arguments, got {sorted(kwargs)}")
        return tiny_cnn.get_tiny_cnn(channels=channels, input_shape=spatial)

    return _keras_application(name, channels, spatial, kwargs)


def _keras_application(name: str, channels: int, spatial: tuple, kwargs: dict) -> keras.Model:
    """The pooled Keras application ``name``, taking [0, 1] pixels (random init, or compensated ImageNet weights)."""
    constructor_name, preprocessing = _KERAS_APPLICATIONS[name]
    constructor = getattr(keras.applications, constructor_name)
    weights = kwargs.pop("weights", None)
    imagenet = weights == "imagenet"
    if imagenet and channels != 3:
        raise ChannelMismatchError(
            f"ImageNet weights for {name} expect 3-channel (RGB) input but channels={channels}. "
            "Fix: pass channels=3 (color=True), or train from random initialisation (weights=None)."
        )
    if imagenet and preprocessing is None:
        raise ValueError(
            f"weights='imagenet' for {name} needs Keras' caffe-style input preprocessing, which zoobot does not "
            "add (zoobot models take [0, 1] inputs). Use an EfficientNet or ConvNeXt for ImageNet weights, or "
            "weights=None."
        )
    if preprocessing == "flag":
        # keep the preprocessing the ImageNet weights were trained with; drop it otherwise
        kwargs.setdefault("include_preprocessing", imagenet)
    model = constructor(
        include_top=False,
        weights=weights,
        input_shape=(*spatial, channels),
        pooling="avg",
        **kwargs,
    )
    if imagenet:
        # the application expects 0-255 pixels and rescales/normalises them itself: feed it 255 x [0, 1]
        inputs = keras.Input(shape=(*spatial, channels), name="image")
        outputs = model(keras.layers.Rescaling(255.0, name="from_unit_interval")(inputs))
        return keras.Model(inputs, outputs, name=f"{name}_imagenet")
    if preprocessing == "rescaling":
        _disable_input_rescaling(model, name)
    return model


def _disable_input_rescaling(model: keras.Model, name: str) -> None:
    """Set the built-in ``Rescaling(1/255)`` of a Keras application to the identity."""
    for layer in model.layers[:6]:
        if isinstance(layer, keras.layers.Rescaling) and np.allclose(np.asarray(layer.scale, dtype=float), 1 / 255.0):
            layer.scale = 1.0
            layer.offset = 0.0
            return
    raise RuntimeError(  # a future Keras changed the stem: fail loudly rather than rescale silently
        f"Could not find the Rescaling(1/255) layer at the input of the Keras {name}; the installed Keras "
        f"{keras.__version__} builds it differently. Please report this to the zoobot developers."
    )


def get_encoder_dim(encoder, channels: int = 3) -> int:
    """Pooled feature dimension of an encoder (from its output shape, else a probe on 64 px zeros).

    Examples
    --------
    >>> get_encoder_dim(get_encoder('tiny_cnn', channels=1))
    128
    """
    shape = getattr(encoder, "output_shape", None)
    if shape is not None and not isinstance(shape, list) and shape[-1] is not None:
        return int(shape[-1])
    probe = encoder(np.zeros((1, 64, 64, channels), dtype="float32"), training=False)
    return int(probe.shape[-1])
