"""Image transforms of the PyTorch data pipeline
(docs/components/loading_data.md), built on ``torchvision.transforms.v2``.

Every transform takes an HWC ``numpy`` array as :func:`zoobot.shared.images.load_image` returns it
(uint8 for jpg/png, float32 in [0, 1] for FITS) and returns a CHW float32 tensor in [0, 1].

- :class:`TrainTransform` (random): to channels -> rotation by a uniform 0-360 deg angle (bilinear,
  zero fill) -> random resized crop (area fraction ``crop_scale_bounds``, aspect ``crop_ratio_bounds``),
  centred on the image by default (``crop_position``), to ``resize_after_crop`` -> vertical flip with
  p = 0.5 -> float [0, 1].
- :class:`EvalTransform` (deterministic, for validation/test/predict): to channels -> centre crop keeping
  the area fraction ``mean(crop_scale_bounds)`` -> antialiased bilinear resize to ``resize_after_crop``.

Both transforms expose ``min_source_size``: the smallest source image side that still gives every crop
at least ``resize_after_crop`` pixels. :class:`~zoobot.pytorch.datasets.galaxy_dataset.GalaxyDataset`
passes it to ``load_image(target_size=...)``, so large JPEGs are decoded directly at a reduced scale.
For the same reason :class:`TrainTransform` first shrinks (antialiased) images that are larger than
``min_source_size`` before rotating them: the rotation, the costliest step, then runs on fewer pixels
while no crop is ever upsampled.

Examples
--------
>>> import numpy as np
>>> image = np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)
>>> EvalTransform(channels=1, resize_after_crop=32)(image).shape
torch.Size([1, 32, 32])
"""
from __future__ import annotations

import math
from typing import Callable

import numpy as np
import torch
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as TF

from zoobot.shared.datamodules import check_channels as _check_channels
from zoobot.shared.datamodules import CentreCropGeometry, check_crop_bounds, check_crop_position, default_transform_pair
from zoobot.shared.datamodules import check_size as _check_size
from zoobot.shared.images import fast_to_channels  # noqa: F401  (re-exported)

__all__ = [
    "TrainTransform",
    "EvalTransform",
    "CustomTransform",
    "image_to_tensor",
    "default_transforms",
    "check_crop_bounds",
    "fast_to_channels",
]

_BILINEAR = v2.InterpolationMode.BILINEAR


def image_to_tensor(image) -> torch.Tensor:
    """HWC array (uint8 or float in [0, 1]) or CHW tensor -> CHW float32 tensor in [0, 1].

    Examples
    --------
    >>> image_to_tensor(np.full((2, 2, 3), 255, dtype=np.uint8)).max().item()
    1.0
    """
    if isinstance(image, torch.Tensor):
        if image.dtype == torch.uint8:
            return image.to(torch.float32).div_(255.0)
        return image.to(torch.float32)
    array = np.asarray(image)
    if array.ndim == 2:
        array = array[:, :, None]
    if array.ndim != 3:
        raise ValueError(f"expected an HWC image, got an array of shape {array.shape}")
    # one pass that also copies: arrays from PIL are read-only, which torch.from_numpy warns about
    if array.dtype == np.uint8:
        array = np.divide(array, np.float32(255.0), dtype=np.float32)
    else:
        array = np.array(array, dtype=np.float32)
    return torch.from_numpy(array).permute(2, 0, 1)


class _GalaxyTransform:
    """Shared parts: channel conversion, output shape, the load-size hint."""

    channels: int
    resize_after_crop: int
    min_source_size: int

    @property
    def output_shape(self) -> tuple[int, int, int]:
        """(C, H, W) of every output image."""
        return (self.channels, self.resize_after_crop, self.resize_after_crop)

    def _to_tensor(self, image) -> torch.Tensor:
        if isinstance(image, torch.Tensor):  # already CHW
            x = image_to_tensor(image)
            if x.shape[0] != self.channels:
                x = x.mean(dim=0, keepdim=True) if self.channels == 1 else x.expand(3, -1, -1)
            return x
        return image_to_tensor(fast_to_channels(np.asarray(image), self.channels))


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

    Examples
    --------
    >>> image = np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)
    >>> TrainTransform(channels=3, resize_after_crop=32, crop_position="random")(image).shape
    torch.Size([3, 32, 32])
    """

    def __init__(self, channels: int = 1, resize_after_crop: int = 224, crop_scale_bounds=(0.7, 0.8),
                 crop_ratio_bounds=(0.9, 1.1), *, crop_position: str = "centre"):
        self.channels = _check_channels(channels)
        self.resize_after_crop = _check_size(resize_after_crop)
        self.crop_scale_bounds, self.crop_ratio_bounds = check_crop_bounds(crop_scale_bounds, crop_ratio_bounds)
        self.crop_position = check_crop_position(crop_position)
        (area_low, _), (ratio_low, ratio_high) = self.crop_scale_bounds, self.crop_ratio_bounds
        # smallest crop side as a fraction of the image side (width sqrt(a r), height sqrt(a / r))
        smallest_side = min(math.sqrt(area_low * ratio_low), math.sqrt(area_low / ratio_high), 1.0)
        self.min_source_size = math.ceil(self.resize_after_crop / smallest_side)
        self._rotate = v2.RandomRotation(degrees=(0.0, 360.0), interpolation=_BILINEAR, fill=0)
        self._flip = v2.RandomVerticalFlip(p=0.5)

    def __call__(self, image) -> torch.Tensor:
        x = self._to_tensor(image)
        height, width = x.shape[-2:]
        if min(height, width) > self.min_source_size:
            # shrink once so the rotation runs on fewer pixels; no crop falls below resize_after_crop
            scale = self.min_source_size / min(height, width)
            x = TF.resize(x, [max(round(height * scale), 1), max(round(width * scale), 1)],
                          interpolation=_BILINEAR, antialias=True)
        return self._flip(self._random_resized_crop(self._rotate(x)))

    def _random_resized_crop(self, x: torch.Tensor) -> torch.Tensor:
        # torchvision's RandomResizedCrop rule for the size (and, with crop_position="random", the place)
        top, left, height, width = v2.RandomResizedCrop.get_params(
            x, list(self.crop_scale_bounds), list(self.crop_ratio_bounds))
        if self.crop_position == "centre":  # the offset rule of EvalTransform's crop
            top, left = (x.shape[-2] - height) // 2, (x.shape[-1] - width) // 2
        size = [self.resize_after_crop, self.resize_after_crop]
        return TF.resized_crop(x, top, left, height, width, size, interpolation=_BILINEAR, antialias=True)

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

    def __call__(self, image) -> torch.Tensor:
        x = self._to_tensor(image)
        height, width = x.shape[-2:]
        crop_h = max(round(height * self.side_fraction), 1)
        crop_w = max(round(width * self.side_fraction), 1)
        top, left = (height - crop_h) // 2, (width - crop_w) // 2
        return TF.resized_crop(x, top, left, crop_h, crop_w, [self.resize_after_crop, self.resize_after_crop],
                               interpolation=_BILINEAR, antialias=True)

    def __repr__(self) -> str:
        return (f"EvalTransform(channels={self.channels}, resize_after_crop={self.resize_after_crop}, "
                f"crop_scale_bounds={self.crop_scale_bounds})")


class CustomTransform:
    """Adapt a user transform to the pipeline's contract (HWC array in, CHW float [0, 1] tensor out).

    Parameters
    ----------
    transform : callable
        The user's transform.
    kind : {'array', 'torchvision', 'albumentations'}
        'array': called on the loaded HWC array (uint8 or float); 'torchvision': called on a CHW float
        tensor in [0, 1] with ``channels`` channels; 'albumentations': called as
        ``transform(image=hwc_array)['image']`` on the array converted to ``channels``.
    channels : {1, 3} or None
        Channels given to 'torchvision'/'albumentations' transforms (None: as loaded).
    """

    _KINDS = ("array", "torchvision", "albumentations")

    def __init__(self, transform: Callable, kind: str = "array", channels: int | None = None):
        if not callable(transform):
            raise TypeError(f"a custom transform must be callable, got {type(transform).__name__}")
        if kind not in self._KINDS:
            from zoobot.shared.errors import unknown_option_error

            raise unknown_option_error("custom transform kind", kind, self._KINDS)
        self.transform, self.kind = transform, kind
        self.channels = None if channels is None else _check_channels(channels)

    def __call__(self, image) -> torch.Tensor:
        if self.kind == "array":
            out = self.transform(image)
        elif self.kind == "albumentations":
            array = np.asarray(image) if self.channels is None else fast_to_channels(np.asarray(image), self.channels)
            out = self.transform(image=array)["image"]
        else:
            array = np.asarray(image) if self.channels is None else fast_to_channels(np.asarray(image), self.channels)
            out = self.transform(image_to_tensor(array))
        if isinstance(out, torch.Tensor):
            return out if out.dtype.is_floating_point else image_to_tensor(out)
        return image_to_tensor(out)  # HWC array or PIL image

    def __repr__(self) -> str:
        return f"CustomTransform({self.transform!r}, kind={self.kind!r}, channels={self.channels})"


def default_transforms(greyscale: bool = False, resize_after_crop: int = 224, crop_scale_bounds=(0.7, 0.8),
                       crop_ratio_bounds=(0.9, 1.1), test_time_augmentation: bool = False):
    """The default (train, eval) transforms of :class:`~zoobot.pytorch.datasets.GalaxyDataModule`.

    With ``test_time_augmentation=True`` the eval transform is the (random) train transform.

    Returns
    -------
    (TrainTransform, EvalTransform or TrainTransform)

    Examples
    --------
    >>> train, evaluate = default_transforms(greyscale=True, resize_after_crop=64)
    >>> evaluate.output_shape
    (1, 64, 64)
    """
    return default_transform_pair(TrainTransform, EvalTransform, greyscale, resize_after_crop, crop_scale_bounds,
                                  crop_ratio_bounds, test_time_augmentation)
