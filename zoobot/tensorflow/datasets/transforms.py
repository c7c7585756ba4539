"""Image transforms of the TensorFlow data pipeline, as TensorFlow graph ops.

The twin of :mod:`zoobot.pytorch.datasets.transforms`: the same steps, in the same order, with the same
parameters (docs/components/preprocessing.md describes them and the decisions behind them). Every
transform takes one HWC image tensor as decoded (uint8 for jpg/png, float32 in [0, 1] for FITS) and
returns an HWC float32 tensor in [0, 1] of shape ``(resize_after_crop, resize_after_crop, channels)``.

- :class:`TrainTransform` (random, stateless: ``transform(image, seed)``): to channels -> shrink large
  images -> rotation 0-360 deg -> random resized crop (centred by default, ``crop_position``) to
  ``resize_after_crop`` -> vertical flip.
- :class:`EvalTransform` (deterministic; validation, test, predict): centre crop keeping the area
  fraction ``mean(crop_scale_bounds)`` -> to channels -> antialiased resize (cropping the uint8 image
  first converts only the kept pixels; the result is the same).

Custom transforms are plain callables on tf tensors (:class:`CustomTransform`); they must be
``tf.function``-traceable because they run inside ``Dataset.map``.

Examples
--------
>>> import tensorflow as tf
>>> image = tf.zeros([64, 64, 3], tf.uint8)
>>> EvalTransform(channels=1, resize_after_crop=32)(image).shape
TensorShape([32, 32, 1])
"""
from __future__ import annotations

import math
from typing import Callable

import tensorflow as tf

from zoobot.shared.datamodules import check_channels as _check_channels
from zoobot.shared.datamodules import CentreCropGeometry, check_crop_bounds, check_crop_position, default_transform_pair
from zoobot.shared.datamodules import check_size as _check_size
from zoobot.shared.errors import unknown_option_error

__all__ = [
    "TrainTransform",
    "EvalTransform",
    "CustomTransform",
    "image_to_float",
    "to_channels",
    "default_transforms",
    "check_crop_bounds",
]

_CROP_TRIES = 10


def image_to_float(image: tf.Tensor) -> tf.Tensor:
    """uint8 (0-255) -> float32 / 255; float -> float32 unchanged.

    Examples
    --------
    >>> float(image_to_float(tf.constant([[[255]]], tf.uint8))[0, 0, 0])
    1.0
    """
    if image.dtype == tf.uint8:
        return tf.cast(image, tf.float32) / 255.0
    return tf.cast(image, tf.float32)


def to_channels(image: tf.Tensor, channels: int) -> tf.Tensor:
    """HWC image to 1 (mean of R, G, B; uint8 rounded back to uint8) or 3 channels (repeat); dtype kept."""
    have = image.shape[-1]
    if have == channels:
        return image
    if channels == 1:
        mean = tf.reduce_mean(tf.cast(image, tf.float32), axis=-1, keepdims=True)
        if image.dtype == tf.uint8:
            return tf.cast(tf.round(mean), tf.uint8)
        return tf.cast(mean, image.dtype)
    if channels == 3:
        if have not in (1, None):
            raise ValueError(f"cannot turn {have} channels into 3")
        return tf.tile(image[..., :1], [1, 1, 3])
    raise ValueError(f"channels must be 1 (greyscale) or 3 (colour), got {channels!r}")


def _resize(image: tf.Tensor, height, width) -> tf.Tensor:
    return tf.image.resize(image, tf.stack([height, width]), method="bilinear", antialias=True)


def _round_half_even(x: tf.Tensor) -> tf.Tensor:
    """Python's ``round`` on float64 tensors, as int32."""
    return tf.cast(tf.round(x), tf.int32)


class _GalaxyTransform:
    """Shared parts: channel conversion, output shape, the load-size hint."""

    channels: int
    resize_after_crop: int
    min_source_size: int

    @property
    def output_shape(self) -> tuple[int, int, int]:
        """(H, W, C) of every output image."""
        return (self.resize_after_crop, self.resize_after_crop, self.channels)

    @staticmethod
    def _checked(image) -> tf.Tensor:
        image = tf.convert_to_tensor(image)
        if image.shape.rank != 3:
            raise ValueError(f"transforms take one HWC image, got shape {image.shape}")
        return image

    def _prepare(self, image: tf.Tensor) -> tf.Tensor:
        return self._to_float(self._checked(image))

    def _to_float(self, image: tf.Tensor) -> tf.Tensor:
        """``image_to_float(to_channels(image, channels))`` with one float conversion: the greyscale mean of a
        uint8 image, rounded as :func:`to_channels` rounds it, is divided by 255 directly (the same values)."""
        if image.dtype == tf.uint8 and self.channels == 1 and image.shape[-1] != 1:
            mean = tf.reduce_mean(tf.cast(image, tf.float32), axis=-1, keepdims=True)
            return tf.round(mean) / 255.0
        return image_to_float(to_channels(image, self.channels))

    def _finish(self, image: tf.Tensor) -> tf.Tensor:
        image = tf.clip_by_value(image, 0.0, 1.0)
        image.set_shape(self.output_shape)
        return image


class TrainTransform(_GalaxyTransform):
    """Random augmentation for training: rotation 0-360 deg, random resized crop, vertical flip.

    Parameters
    ----------
    channels : {1, 3}
        Output channels (1 = mean of R, G, B).
    resize_after_crop : int
        Output side in pixels.
    crop_scale_bounds : (float, float)
        Area fraction of the crop, in (0, 1].
    crop_ratio_bounds : (float, float)
        Aspect ratio (width / height) of the crop.
    crop_position : {"centre", "random"}, default "centre"
        ``"centre"`` keeps each crop on the image centre, where the evaluation crop is and where survey
        cutouts put the galaxy: only its area and aspect are random. ``"random"`` places it uniformly at
        random, as torchvision's ``RandomResizedCrop`` and upstream Zoobot do (6-8 % worse vote fractions
        at 64 px; see "Training recipe and calibration" in the docs).

    Call ``transform(image, seed=None)``: ``seed`` a shape-[2] integer tensor (stateless randomness).

    Examples
    --------
    >>> image = tf.zeros((64, 64, 3), tf.uint8)
    >>> TrainTransform(channels=3, resize_after_crop=32, crop_position="random")(image, [1, 2]).shape
    TensorShape([32, 32, 3])
    """

    def __init__(self, channels: int = 1, resize_after_crop: int = 224, crop_scale_bounds=(0.7, 0.8),
                 crop_ratio_bounds=(0.9, 1.1), *, crop_position: str = "centre"):
        self.channels = _check_channels(channels)
        self.resize_after_crop = _check_size(resize_after_crop)
        self.crop_scale_bounds, self.crop_ratio_bounds = check_crop_bounds(crop_scale_bounds, crop_ratio_bounds)
        self.crop_position = check_crop_position(crop_position)
        (area_low, _), (ratio_low, ratio_high) = self.crop_scale_bounds, self.crop_ratio_bounds
        smallest_side = min(math.sqrt(area_low * ratio_low), math.sqrt(area_low / ratio_high), 1.0)
        self.min_source_size = math.ceil(self.resize_after_crop / smallest_side)

    def __call__(self, image: tf.Tensor, seed=None) -> tf.Tensor:
        if seed is None:
            seed = tf.random.uniform([2], maxval=2**31 - 1, dtype=tf.int64)
        seeds = tf.random.experimental.stateless_split(tf.cast(seed, tf.int64), num=3)
        x = self._prepare(image)
        x = self._shrink(x)
        x = self._rotate(x, seeds[0])
        x = self._random_resized_crop(x, seeds[1])
        flip = tf.random.stateless_uniform([], seed=seeds[2]) < 0.5
        x = tf.cond(flip, lambda: tf.reverse(x, axis=[0]), lambda: x)
        return self._finish(x)

    def _shrink(self, x: tf.Tensor) -> tf.Tensor:
        hw = tf.shape(x)[:2]
        short = tf.reduce_min(hw)

        def shrink():
            scale = self.min_source_size / tf.cast(short, tf.float64)
            new_hw = tf.maximum(_round_half_even(tf.cast(hw, tf.float64) * scale), 1)
            return _resize(x, new_hw[0], new_hw[1])

        return tf.cond(short > self.min_source_size, shrink, lambda: x)

    @staticmethod
    def _rotate(x: tf.Tensor, seed) -> tf.Tensor:
        angle = tf.random.stateless_uniform([], seed=seed, minval=0.0, maxval=2.0 * math.pi)
        height = tf.cast(tf.shape(x)[0], tf.float32)
        width = tf.cast(tf.shape(x)[1], tf.float32)
        cx, cy = (width - 1.0) / 2.0, (height - 1.0) / 2.0
        cos, sin = tf.cos(angle), tf.sin(angle)
        # maps each output pixel (x, y) to the input pixel it samples: rotation about the centre
        transform = tf.stack([
            cos, -sin, cx - cos * cx + sin * cy,
            sin, cos, cy - sin * cx - cos * cy,
            0.0, 0.0,
        ])[tf.newaxis]
        rotated = tf.raw_ops.ImageProjectiveTransformV3(
            images=x[tf.newaxis],
            transforms=transform,
            output_shape=tf.shape(x)[:2],
            fill_value=0.0,
            interpolation="BILINEAR",
            fill_mode="CONSTANT",
        )
        return rotated[0]

    def _random_resized_crop(self, x: tf.Tensor, seed) -> tf.Tensor:
        seeds = tf.random.experimental.stateless_split(seed, num=4)
        hw = tf.shape(x)[:2]
        height, width = hw[0], hw[1]
        area = tf.cast(height * width, tf.float64)
        (scale_low, scale_high), (ratio_low, ratio_high) = self.crop_scale_bounds, self.crop_ratio_bounds
        target_area = area * tf.random.stateless_uniform(
            [_CROP_TRIES], seed=seeds[0], minval=scale_low, maxval=scale_high, dtype=tf.float64)
        aspect = tf.exp(tf.random.stateless_uniform(
            [_CROP_TRIES], seed=seeds[1], minval=math.log(ratio_low), maxval=math.log(ratio_high), dtype=tf.float64))
        crop_w = _round_half_even(tf.sqrt(target_area * aspect))
        crop_h = _round_half_even(tf.sqrt(target_area / aspect))
        fits = (crop_w > 0) & (crop_w <= width) & (crop_h > 0) & (crop_h <= height)
        first = tf.argmax(tf.cast(fits, tf.int32), output_type=tf.int32)

        # fallback (no try fits): centre crop with the aspect clamped into the bounds
        in_ratio = tf.cast(width, tf.float64) / tf.cast(height, tf.float64)
        fallback_w = tf.where(
            in_ratio < ratio_low, width,
            tf.where(in_ratio > ratio_high, _round_half_even(tf.cast(height, tf.float64) * ratio_high), width))
        fallback_h = tf.where(
            in_ratio < ratio_low, _round_half_even(tf.cast(width, tf.float64) / ratio_low), height)
        any_fits = tf.reduce_any(fits)
        h = tf.where(any_fits, crop_h[first], fallback_h)
        w = tf.where(any_fits, crop_w[first], fallback_w)
        top, left = (height - h) // 2, (width - w) // 2  # the offset rule of EvalTransform's crop
        if self.crop_position == "random":
            random_top = tf.random.stateless_uniform([], seed=seeds[2], minval=0, maxval=height - h + 1, dtype=tf.int32)
            random_left = tf.random.stateless_uniform([], seed=seeds[3], minval=0, maxval=width - w + 1, dtype=tf.int32)
            top, left = tf.where(any_fits, random_top, top), tf.where(any_fits, random_left, left)
        crop = x[top:top + h, left:left + w]
        return _resize(crop, self.resize_after_crop, self.resize_after_crop)

    def __repr__(self) -> str:
        return (f"TrainTransform(channels={self.channels}, resize_after_crop={self.resize_after_crop}, "
                f"crop_scale_bounds={self.crop_scale_bounds}, crop_ratio_bounds={self.crop_ratio_bounds}, "
                f"crop_position={self.crop_position!r})")


class EvalTransform(CentreCropGeometry, _GalaxyTransform):
    """Deterministic transform for validation, test and prediction: centre crop + antialiased resize.

    The crop keeps the area fraction ``mean(crop_scale_bounds)`` (the average training crop), so the
    galaxy appears at the scale the model saw in training.

    Parameters
    ----------
    channels : {1, 3}
    resize_after_crop : int
    crop_scale_bounds : (float, float)
        The training crop bounds; their mean is used.
    """

    def __call__(self, image: tf.Tensor, seed=None) -> tf.Tensor:  # seed accepted for a uniform call, unused
        x = self._checked(image)
        hw = tf.shape(x)[:2]
        crop_hw = tf.maximum(_round_half_even(tf.cast(hw, tf.float64) * self.side_fraction), 1)
        top, left = (hw[0] - crop_hw[0]) // 2, (hw[1] - crop_hw[1]) // 2
        # crop first: channels and the float conversion are per pixel, so only the kept pixels are converted
        crop = self._to_float(x[top:top + crop_hw[0], left:left + crop_hw[1]])
        return self._finish(_resize(crop, self.resize_after_crop, self.resize_after_crop))

    def __repr__(self) -> str:
        return (f"EvalTransform(channels={self.channels}, resize_after_crop={self.resize_after_crop}, "
                f"crop_scale_bounds={self.crop_scale_bounds})")


class CustomTransform:
    """Adapt a user transform to the pipeline's contract (HWC image tensor in, HWC float32 [0, 1] out).

    Parameters
    ----------
    transform : callable
        The user's transform; graph-compatible TensorFlow ops (it runs inside ``Dataset.map``).
    kind : {'raw', 'float'}
        'raw': called on the image exactly as decoded (HWC uint8 for jpg/png, float32 [0, 1] for
        FITS; 3 channels). 'float': called on the HWC float32 [0, 1] image converted to ``channels``
        (the TensorFlow counterpart of PyTorch's torchvision/albumentations hooks).
    channels : {1, 3} or None
        Channels given to 'float' transforms (None: as loaded).

    A uint8 result is divided by 255; a float result is taken as [0, 1].
    """

    _KINDS = ("raw", "float")

    def __init__(self, transform: Callable, kind: str = "raw", channels: int | None = None):
        if not callable(transform):
            raise TypeError(f"a custom transform must be callable, got {type(transform).__name__}")
        if kind not in self._KINDS:
            raise unknown_option_error("custom transform kind", kind, self._KINDS)
        self.transform, self.kind = transform, kind
        self.channels = None if channels is None else _check_channels(channels)
        self.min_source_size = None

    def __call__(self, image: tf.Tensor, seed=None) -> tf.Tensor:
        if self.kind == "float":
            image = image_to_float(image if self.channels is None else to_channels(image, self.channels))
        return image_to_float(tf.convert_to_tensor(self.transform(image)))

    def __repr__(self) -> str:
        return f"CustomTransform({self.transform!r}, kind={self.kind!r}, channels={self.channels})"


def default_transforms(greyscale: bool = False, resize_after_crop: int = 224, crop_scale_bounds=(0.7, 0.8),
                       crop_ratio_bounds=(0.9, 1.1), test_time_augmentation: bool = False):
    """The default (train, eval) transforms of :class:`~zoobot.tensorflow.datasets.GalaxyDataModule`.

    With ``test_time_augmentation=True`` the eval transform is the (random) train transform.

    Returns
    -------
    (TrainTransform, EvalTransform or TrainTransform)

    Examples
    --------
    >>> train, evaluate = default_transforms(greyscale=True, resize_after_crop=64)
    >>> evaluate.output_shape
    (64, 64, 1)
    """
    return default_transform_pair(TrainTransform, EvalTransform, greyscale, resize_after_crop, crop_scale_bounds,
                                  crop_ratio_bounds, test_time_augmentation)
