"""The evaluation image pipeline in numpy and Pillow, for models run with ONNX Runtime (docs/guides/onnx.md).

It computes what both backends' ``EvalTransform`` compute (docs/components/preprocessing.md):

1. :func:`zoobot.shared.images.load_image`, with JPEGs decoded at the largest reduction (Pillow
   ``draft``, 1/2, 1/4 or 1/8 inside the JPEG decoder) that still leaves the crop at least the model's
   input size;
2. channels: 3 -> 1 as the rounded mean of R, G and B, in integers (1 -> 3 repeats);
3. the centre crop keeping the area fraction ``mean(crop_scale_bounds)``, **on the uint8 pixels**: the
   pixels cropped away are never converted to floats;
4. uint8 / 255 -> float32, then an antialiased bilinear resize to the input size, per channel in
   Pillow's float mode (the filter torchvision's and TensorFlow's antialiased resize also use; they
   agree to ~1e-5 per pixel).

Pillow and numpy release the GIL while decoding, resizing and dividing, so :class:`BatchReader` reads
images with threads, not processes (docs/benchmarks.md, section "ONNX").
"""
from __future__ import annotations

import concurrent.futures
import dataclasses
import math
from typing import Iterator

import numpy as np

from zoobot.shared.errors import ChannelMismatchError, ImageLoadError
from zoobot.shared.images import fast_to_channels, load_image
from zoobot.shared.preprocessing import FitsScaling

__all__ = ["ImagePlan", "BatchReader", "prepare_image", "RECORDABLE_ERRORS"]

#: Per-image problems that ``on_bad_image='record'`` turns into NaN rows (as in both backends).
RECORDABLE_ERRORS = (ImageLoadError, ChannelMismatchError)
_DEFAULT_CROP = (0.7, 0.8)  # both backends' GalaxyDataModule default


@dataclasses.dataclass(frozen=True)
class ImagePlan:
    """How one image becomes model input.

    Parameters
    ----------
    channels : {1, 3}
    input_size : int
        Output side in pixels.
    crop_scale_bounds : (float, float)
        The training crop's area fractions; the centre crop keeps their mean.
    layout : {'NCHW', 'NHWC'}
        Axis order of the model input (per image: CHW or HWC).
    fits_scaling : FitsScaling, str or dict
        Scaling of FITS pixels (docs/components/preprocessing.md).

    Examples
    --------
    >>> ImagePlan(1, 224).min_source_size
    259
    """

    channels: int
    input_size: int
    crop_scale_bounds: tuple = _DEFAULT_CROP
    layout: str = "NCHW"
    fits_scaling: object = "percentile"

    def __post_init__(self):
        if self.channels not in (1, 3):
            raise ValueError(f"channels must be 1 or 3, got {self.channels!r}")
        low, high = (float(b) for b in self.crop_scale_bounds)
        if not 0 < low <= high <= 1:
            raise ValueError(f"crop_scale_bounds must satisfy 0 < low <= high <= 1, got {self.crop_scale_bounds!r}")
        object.__setattr__(self, "crop_scale_bounds", (low, high))
        object.__setattr__(self, "fits_scaling", FitsScaling.from_value(self.fits_scaling))

    @property
    def side_fraction(self) -> float:
        """Side of the centre crop as a fraction of the image side."""
        return math.sqrt(sum(self.crop_scale_bounds) / 2)

    @property
    def min_source_size(self) -> int:
        """Smallest decoded side whose crop still has ``input_size`` pixels (the JPEG ``draft`` request)."""
        return math.ceil(self.input_size / self.side_fraction)

    @property
    def shape(self) -> tuple:
        """Shape of one prepared image."""
        c, s = self.channels, self.input_size
        return (c, s, s) if self.layout == "NCHW" else (s, s, c)


def _resize_plane(plane: np.ndarray, size: int) -> np.ndarray:
    """Antialiased bilinear resize of one float32 plane to ``size`` x ``size`` (Pillow float mode)."""
    from PIL import Image

    if plane.shape == (size, size):
        return plane
    return np.asarray(Image.fromarray(plane).resize((size, size), Image.BILINEAR), dtype=np.float32)  # float32: mode F


def prepare_image(file_loc, plan: ImagePlan, id_str=None) -> np.ndarray:
    """One image as model input: float32 in [0, 1], shaped :attr:`ImagePlan.shape`.

    Raises
    ------
    ImageLoadError, ChannelMismatchError
        (E6, E7) from :func:`zoobot.shared.images.load_image`.

    Examples
    --------
    >>> prepare_image('galaxy.jpg', ImagePlan(channels=1, input_size=64)).shape  # doctest: +SKIP
    (1, 64, 64)
    """
    image = load_image(file_loc, plan.fits_scaling, id_str=id_str, target_size=plan.min_source_size)
    image = fast_to_channels(image, plan.channels)
    height, width = image.shape[:2]
    crop_h = max(round(height * plan.side_fraction), 1)
    crop_w = max(round(width * plan.side_fraction), 1)
    top, left = (height - crop_h) // 2, (width - crop_w) // 2
    crop = image[top:top + crop_h, left:left + crop_w]
    if crop.dtype == np.uint8:
        crop = np.divide(crop, np.float32(255.0), dtype=np.float32)
    else:
        crop = crop.astype(np.float32, copy=False)
    planes = [_resize_plane(np.ascontiguousarray(crop[:, :, c]), plan.input_size) for c in range(crop.shape[2])]
    return np.stack(planes, axis=0 if plan.layout == "NCHW" else 2)


class BatchReader:
    """Read a catalog's images into batches with a pool of threads, a few batches ahead of the model.

    Parameters
    ----------
    file_locs, id_strs : sequence
        One per row.
    plan : ImagePlan
    batch_size : int
    num_workers : int
        Reading threads (0: read in the calling thread).
    on_bad_image : {'record', 'raise'}
        'record': a failed image gives a zero image and its row is reported as failed.
    prefetch : int
        Batches read ahead.

    Yields
    ------
    (positions, images, errors)
        Row numbers (int64), float32 images ``(B, *plan.shape)``, and ``{position: error text}`` of the
        rows that failed.
    """

    def __init__(self, file_locs, id_strs, plan: ImagePlan, batch_size: int, num_workers: int,
                 on_bad_image: str = "record", prefetch: int = 2):
        self.file_locs, self.id_strs = list(file_locs), list(id_strs)
        self.plan, self.batch_size, self.num_workers = plan, int(batch_size), int(num_workers)
        self.on_bad_image, self.prefetch = on_bad_image, int(prefetch)

    def _read(self, start: int):
        stop = min(start + self.batch_size, len(self.file_locs))
        images = np.empty((stop - start,) + self.plan.shape, dtype=np.float32)
        errors = {}
        for i in range(start, stop):
            try:
                images[i - start] = prepare_image(self.file_locs[i], self.plan, self.id_strs[i])
            except RECORDABLE_ERRORS as err:
                if self.on_bad_image == "raise":
                    raise
                images[i - start] = 0.0
                errors[i] = f"{type(err).__name__}: {err}"
        return np.arange(start, stop, dtype=np.int64), images, errors

    def __iter__(self) -> Iterator[tuple]:
        starts = range(0, len(self.file_locs), self.batch_size)
        if self.num_workers == 0:
            yield from map(self._read, starts)
            return
        # one batch per task: each thread reads a whole batch, several batches are read at once
        with concurrent.futures.ThreadPoolExecutor(self.num_workers, thread_name_prefix="zoobot-onnx-read") as pool:
            pending = []
            starts = iter(starts)
            try:
                for start in starts:
                    pending.append(pool.submit(self._read, start))
                    if len(pending) > self.num_workers + self.prefetch - 1:
                        yield pending.pop(0).result()
                while pending:
                    yield pending.pop(0).result()
            finally:
                for future in pending:
                    future.cancel()
