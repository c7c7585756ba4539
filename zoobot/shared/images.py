"""Reading galaxy images from disk, for both backends (docs/components/loading_data.md).

:func:`load_image` returns an HWC numpy array:

- ``.jpg``, ``.jpeg``, ``.png`` (Pillow): ``uint8``; greyscale files give 1 channel, colour files 3
  (alpha dropped, palette images expanded to RGB, 16-bit greyscale scaled to 0-255);
- ``.fits``, ``.fit``, ``.fits.gz`` (astropy, optional): ``float32`` in [0, 1] after ``fits_scaling``
  (an ``astropy.visualization`` interval and stretch, :class:`zoobot.shared.preprocessing.FitsScaling`);
  the first HDU with data is used; 2-D -> 1 channel, (C, H, W) with C in {1, 3} -> HWC; NaN -> 0
  (a file whose pixels are all NaN is an error, not a blank image).

:func:`to_channels` converts 1 <-> 3 channels (greyscale = unweighted mean of R, G, B).

Both backends turn these arrays into float32 [0, 1] tensors themselves (uint8 / 255).
"""
from __future__ import annotations

import logging
import os

import numpy as np

from zoobot.shared.errors import (
    ChannelMismatchError,
    ImageLoadError,
    PixelScaleError,
    missing_dependency,
)
from zoobot.shared.preprocessing import FitsScaling
from zoobot.shared.validation import is_int

__all__ = ["fast_to_channels", "load_image", "to_channels", "image_format", "minimum_decode_size", "warn_if_tiny", "reset_image_warnings",
           "IMAGE_EXTENSIONS", "FITS_SCALINGS", "MIN_IMAGE_SIDE"]

logger = logging.getLogger(__name__)

_PIL_EXTENSIONS = (".jpg", ".jpeg", ".png")
_FITS_EXTENSIONS = (".fits", ".fit", ".fits.gz", ".fit.gz")
#: File extensions :func:`load_image` reads.
IMAGE_EXTENSIONS = _PIL_EXTENSIONS + _FITS_EXTENSIONS
#: Named values of ``fits_scaling`` (a dict or :class:`~zoobot.shared.preprocessing.FitsScaling` also works).
FITS_SCALINGS = ("percentile", "minmax", "none", "asinh")
#: Images with a side shorter than this (pixels) warn: resized to the model's input, they hold no galaxy.
MIN_IMAGE_SIDE = 4
_logged_grey_to_colour = False
#: Kinds of odd image already warned about in this process (each kind warns once, naming its first file).
_warned: set = set()


def image_format(file_loc, *, id_str=None) -> str:
    """``'jpg'``, ``'png'`` or ``'fits'`` from a path's extension (case-insensitive).

    Raises
    ------
    ImageLoadError
        (E6) for any other extension.

    Examples
    --------
    >>> image_format('a/b/galaxy.FITS.gz')
    'fits'
    """
    name = os.fspath(file_loc).lower()
    if name.endswith(_FITS_EXTENSIONS):
        return "fits"
    if name.endswith((".jpg", ".jpeg")):
        return "jpg"
    if name.endswith(".png"):
        return "png"
    raise ImageLoadError(
        f"{_where(file_loc, id_str)}: unsupported extension; zoobot reads {', '.join(IMAGE_EXTENSIONS)}."
    )


def minimum_decode_size(output_size: int, min_crop_area_fraction: float = 1.0, max_aspect_ratio: float = 1.0) -> int:
    """The smallest full-image side from which a crop can be resized to ``output_size`` without upsampling.

    A crop keeping area fraction ``a`` with aspect ratio ``r`` has its shorter side equal to
    ``S * sqrt(a / r)`` for an ``S`` x ``S`` image, so ``S >= output_size / sqrt(a / r)``. Pass the
    result as ``load_image(..., target_size=...)``: JPEGs are then decoded at the largest reduction
    that loses nothing the transforms would keep.

    Parameters
    ----------
    output_size : int
        The model input side (e.g. 224).
    min_crop_area_fraction : float
        Smallest area fraction a crop keeps (e.g. ``crop_scale_bounds[0]``; 1 for no crop).
    max_aspect_ratio : float
        Largest aspect ratio of a crop, >= 1 (e.g. ``crop_ratio_bounds[1]``).

    Returns
    -------
    int

    Examples
    --------
    >>> minimum_decode_size(224, 0.7, 1.1)
    281
    """
    if not 0 < min_crop_area_fraction <= 1:
        raise ValueError(f"min_crop_area_fraction must be in (0, 1], got {min_crop_area_fraction!r}")
    ratio = max(float(max_aspect_ratio), 1.0 / float(max_aspect_ratio))
    return int(np.ceil(output_size / np.sqrt(min_crop_area_fraction / ratio) - 1e-9))


def load_image(file_loc, fits_scaling: str = "percentile", *, id_str=None, target_size=None) -> np.ndarray:
    """Read one image into an HWC array.

    Parameters
    ----------
    file_loc : str or path-like
        A .jpg/.jpeg/.png/.fits/.fit/.fits.gz file.
    fits_scaling : {'percentile', 'minmax', 'none', 'asinh'}, dict or FitsScaling
        FITS only: 'percentile' maps the 0.5 and 99.5 percentiles of the finite pixels (all
        channels together, so colours keep their ratios) to 0 and 1 and clips; 'minmax' maps
        min/max to 0/1; 'asinh' is 'percentile' then an asinh stretch (a=0.1); 'none' requires
        values already in [0, 1] (else E8). Other intervals and stretches:
        :class:`~zoobot.shared.preprocessing.FitsScaling` (docs/components/preprocessing.md).
    id_str : str, keyword-only, optional
        The galaxy's id, named in error messages.
    target_size : int or (height, width), keyword-only, optional
        Speed hint for JPEGs: decode at the largest reduction (1/2, 1/4 or 1/8, done inside the JPEG
        decoder, several times faster) that keeps **both sides at least** ``target_size``. The
        result is therefore *not* resized to exactly ``target_size``: callers still crop/resize,
        and should pass the smallest full-image size they need (e.g. the model input divided by the
        square root of the crop's area fraction). Ignored for PNG and FITS.

    Returns
    -------
    numpy.ndarray
        (H, W, C) with C in {1, 3}: uint8 for jpg/png, float32 in [0, 1] for FITS.

    Raises
    ------
    ImageLoadError
        (E6) missing, unreadable, truncated or unsupported file, or a FITS file whose pixels are all NaN;
        names ``id_str`` and ``file_loc``.
    ChannelMismatchError
        (E7) a FITS cube whose channel count is not 1 or 3.
    PixelScaleError
        (E8) ``fits_scaling='none'`` with values outside [0, 1].
    MissingDependencyError
        (E12) FITS without astropy installed.
    ValueError
        (E13) unknown ``fits_scaling``.

    Examples
    --------
    >>> image = load_image('galaxy.jpg', target_size=224)  # doctest: +SKIP
    >>> image.dtype, image.shape[2]  # doctest: +SKIP
    (dtype('uint8'), 3)
    """
    fits_scaling = FitsScaling.from_value(fits_scaling)
    if target_size is not None:
        target_size = _as_hw(target_size)
    fmt = image_format(file_loc, id_str=id_str)
    if not os.path.isfile(file_loc):
        raise ImageLoadError(f"{_where(file_loc, id_str)}: no such file (working directory {os.getcwd()!r}).")
    if fmt == "fits":
        image = _load_fits(file_loc, fits_scaling, id_str)
    else:
        image = _load_pil(file_loc, id_str, target_size)
    warn_if_tiny(image.shape, file_loc, id_str)
    return image


def warn_if_tiny(shape, file_loc, id_str=None) -> None:
    """Warn (once per process, naming the first such file) about an image with a side under :data:`MIN_IMAGE_SIDE`.

    A 1x1 cutout is resized to the model's input size like any other image, so it is predicted on without an
    error; it holds no galaxy, though.

    Examples
    --------
    >>> warn_if_tiny((64, 64, 3), 'galaxy.png')  # no warning
    """
    height, width = (int(side) for side in shape[:2])
    if min(height, width) >= MIN_IMAGE_SIDE:
        return
    _warn_once("tiny", f"{_who(file_loc, id_str)} is only {height}x{width} pixels: it is resized to the model's "
                       "input size like any other image, but holds no galaxy to measure. Check the cutouts "
                       "(further images this small are not warned about).")


def _warn_once(kind: str, message: str) -> None:
    import warnings

    if kind in _warned:
        return
    _warned.add(kind)
    warnings.warn(message, UserWarning, stacklevel=3)


def reset_image_warnings() -> None:
    """Let each kind of odd image (tiny, constant FITS) warn again (they warn once per process)."""
    _warned.clear()


def _who(file_loc, id_str) -> str:
    who = f"id_str {str(id_str)!r}, " if id_str is not None else ""
    return f"The image of {who}file_loc {str(os.fspath(file_loc))!r}"


def _where(file_loc, id_str) -> str:
    who = f"id_str {str(id_str)!r}, " if id_str is not None else ""  # str: numpy strings repr as np.str_('...')
    return f"Could not load the image of {who}file_loc {str(os.fspath(file_loc))!r}"


def _as_hw(size) -> tuple[int, int]:
    if is_int(size):
        height = width = int(size)
    else:
        try:
            height, width = (int(s) for s in size)
        except (TypeError, ValueError):
            raise ValueError(f"target_size must be an int or (height, width), got {size!r}") from None
    if height < 1 or width < 1:
        raise ValueError(f"target_size must be positive, got {size!r}")
    return height, width


def _load_pil(file_loc, id_str, target_size) -> np.ndarray:
    from PIL import Image

    try:
        with Image.open(file_loc) as img:
            if target_size is not None and img.format == "JPEG":
                # draft() takes (width, height) and keeps both sides >= the request
                img.draft(img.mode, (target_size[1], target_size[0]))
            img.load()
            return _pil_to_array(img)
    except ImageLoadError:
        raise
    except Exception as err:  # PIL raises OSError, SyntaxError, ValueError... for bad files
        raise ImageLoadError(f"{_where(file_loc, id_str)}: {type(err).__name__}: {err}") from err


def _pil_to_array(img) -> np.ndarray:
    mode = img.mode
    if mode == "L":
        return np.asarray(img, dtype=np.uint8)[:, :, None]
    if mode == "RGB":
        return np.asarray(img, dtype=np.uint8)
    if mode in ("LA", "1"):
        return np.asarray(img.convert("L"), dtype=np.uint8)[:, :, None]
    if mode.startswith("I"):  # 16/32-bit greyscale PNG
        values = np.asarray(img).astype(np.float64)
        top = 65535.0 if values.max(initial=0) > 255 or mode.startswith("I;16") else 255.0
        return np.clip(np.round(values * (255.0 / top)), 0, 255).astype(np.uint8)[:, :, None]
    if mode == "F":
        raise ValueError("32-bit float PNG/JPEG images are not supported; save them as FITS or 8-bit")
    # RGBA, P, PA, CMYK, YCbCr, LAB, RGBX, HSV ... -> RGB (alpha dropped)
    return np.asarray(img.convert("RGB"), dtype=np.uint8)


def _load_fits(file_loc, fits_scaling, id_str) -> np.ndarray:
    try:
        from astropy.io import fits
    except ImportError:
        raise missing_dependency("astropy", "Reading FITS images", "fits") from None
    try:
        with fits.open(file_loc, memmap=False) as hdul:
            data = next((hdu.data for hdu in hdul if hdu.data is not None and np.size(hdu.data) > 0), None)
            if data is None:
                raise ValueError(f"none of its {len(hdul)} HDU(s) holds image data")
            data = np.array(data, dtype=np.float64)  # native byte order, a copy outside the file
    except ImageLoadError:
        raise
    except Exception as err:
        raise ImageLoadError(f"{_where(file_loc, id_str)}: {type(err).__name__}: {err}") from err

    if data.ndim == 2:
        data = data[:, :, None]
    elif data.ndim == 3:
        if data.shape[0] not in (1, 3):
            raise ChannelMismatchError(
                f"{_where(file_loc, id_str)}: a FITS cube must be (channels, height, width) with 1 or 3 channels, "
                f"got shape {data.shape} (expected C in {{1, 3}}, got C={data.shape[0]}). Save it as 2-D or "
                "(3, H, W); the model's channels are set with greyscale= / color=."
            )
        data = np.moveaxis(data, 0, -1)
    else:
        raise ImageLoadError(
            f"{_where(file_loc, id_str)}: FITS data of shape {data.shape} is not an image (expected 2-D or (C, H, W))."
        )

    finite = np.isfinite(data)
    if not finite.any():
        # NaN -> 0 would turn it into a blank image that the model predicts on without complaint
        raise ImageLoadError(
            f"{_where(file_loc, id_str)}: all {data.size} pixels are NaN or infinite, so the file holds no image "
            "data. Re-make the cutout, or drop this galaxy from the catalog."
        )
    values = data[finite]
    if values.min() == values.max():
        _warn_once("constant", f"{_who(file_loc, id_str)} is a FITS image whose pixels all equal {values.min():.6g}: "
                               "it is blank after scaling, so the model predicts on no galaxy. Check the cutouts "
                               "(further constant FITS images are not warned about).")
    if fits_scaling.interval == "none":
        values = data[finite]
        if values.size and (values.min() < -1e-3 or values.max() > 1 + 1e-3):
            raise PixelScaleError(
                f"{_where(file_loc, id_str)}: fits_scaling='none' expects floats in [0, 1], but the pixels span "
                f"[{values.min():.4g}, {values.max():.4g}]. Use fits_scaling='percentile' or 'minmax'."
            )
    scaled = fits_scaling.apply(data)
    return scaled.astype(np.float32)


def to_channels(image: np.ndarray, channels: int) -> np.ndarray:
    """Convert an HWC image to 1 or 3 channels.

    3 -> 1: the unweighted mean of R, G and B (uint8 input is rounded back to uint8; float input
    keeps its dtype). 1 -> 3: the channel is repeated (logged once per process). Same count: the
    image itself. A 2-D (H, W) image counts as 1 channel.

    Parameters
    ----------
    image : numpy.ndarray
        (H, W, C) or (H, W).
    channels : {1, 3}

    Returns
    -------
    numpy.ndarray
        (H, W, channels), same dtype as ``image``.

    Raises
    ------
    ValueError
        If ``channels`` is not 1 or 3.
    ChannelMismatchError
        (E7) if the image has neither 1 nor 3 channels.

    Examples
    --------
    >>> rgb = np.array([[[0, 30, 60]]], dtype=np.uint8)
    >>> to_channels(rgb, 1)[0, 0]
    array([30], dtype=uint8)
    """
    global _logged_grey_to_colour
    if not is_int(channels) or channels not in (1, 3):
        raise ValueError(f"channels must be 1 (greyscale) or 3 (colour), got {channels!r}")
    image = np.asarray(image)
    if image.ndim == 2:
        image = image[:, :, None]
    if image.ndim != 3 or image.shape[2] not in (1, 3):
        raise ChannelMismatchError(
            f"Expected an image with 1 or 3 channels in HWC layout, got shape {image.shape} "
            f"(C={image.shape[-1] if image.ndim else None}). Images must be greyscale or RGB; choose the model's "
            "channels with greyscale= / color=."
        )
    have = image.shape[2]
    if have == channels:
        return image
    if channels == 1:
        grey = image.mean(axis=2, keepdims=True, dtype=np.float64)
        if np.issubdtype(image.dtype, np.integer):
            return np.round(grey).astype(image.dtype)
        return grey.astype(image.dtype)
    if not _logged_grey_to_colour:
        logger.info("Greyscale images are repeated to 3 channels for a colour model.")
        _logged_grey_to_colour = True
    return np.repeat(image, 3, axis=2)


def fast_to_channels(image: np.ndarray, channels: int) -> np.ndarray:
    """:func:`zoobot.shared.images.to_channels` with a fast path for uint8 RGB -> grey.

    The rounded mean ``round((R + G + B) / 3)`` equals ``(R + G + B + 1) // 3`` exactly (a sum of integers
    divided by 3 never ends in .5), computed in uint16 without a float64 copy: about 10x faster, same values.

    Examples
    --------
    >>> rgb = np.array([[[0, 30, 61]]], dtype=np.uint8)
    >>> int(fast_to_channels(rgb, 1)[0, 0, 0]) == int(to_channels(rgb, 1)[0, 0, 0])
    True
    """
    if channels == 1 and image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3:
        total = image[:, :, 0].astype(np.uint16)
        total += image[:, :, 1]
        total += image[:, :, 2]
        total += 1
        total //= 3
        return total.astype(np.uint8)[:, :, None]
    return to_channels(image, channels)
