"""tf.data datasets straight from image files (docs/components/loading_data.md) - no shards needed.

:func:`get_image_dataset` reads a list of ``.png`` / ``.jpg`` / ``.jpeg`` / ``.fits`` files and yields
dict batches::

    {'matrix': uint8 (B, S, S, 3), 'id_str': string (B,), 'label': float32 (B,) ...}

These are *raw* pixels (0-255, as stored). Turn them into model input (floats in [0, 1], greyscale
or colour, labels stacked) with :func:`zoobot.tensorflow.preprocess.preprocess_dataset`
and ``PreprocessingConfig(normalise_from_uint8=True)``.

PNG and JPEG files are read and decoded by TensorFlow ops inside the tf.data graph (parallel, no
Python per image). FITS files go through :func:`zoobot.shared.images.load_image` (astropy) inside
``tf.numpy_function`` and yield float32 [0, 1] ``matrix`` batches instead (so use
``normalise_from_uint8=False`` for them).

The decoding helpers at the bottom (:func:`read_image_file`, :func:`resize_image`) are also used by
:class:`zoobot.tensorflow.datasets.GalaxyDataModule`.
"""
from __future__ import annotations

import os
from typing import Sequence

import numpy as np
import pandas as pd
import tensorflow as tf

from zoobot.shared.catalogs import validate_catalog
from zoobot.shared.errors import ImageLoadError, format_examples, unknown_option_error
from zoobot.shared.validation import check_int

__all__ = [
    "get_image_dataset",
    "FILE_FORMATS",
    "file_format_of",
    "check_image_headers",
    "read_image_file",
    "read_fits_file",
    "resize_image",
]

#: Accepted ``file_format`` values and the file extensions each one reads.
FILE_FORMATS = {
    "png": (".png",),
    "jpg": (".jpg", ".jpeg"),
    "jpeg": (".jpg", ".jpeg"),
    "fits": (".fits", ".fit", ".fits.gz"),
}

_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
_JPEG_MAGIC = b"\xff\xd8\xff"


def get_image_dataset(
    image_paths,
    file_format,
    requested_img_size,
    batch_size,
    labels=None,
    check_valid_paths=True,
    shuffle=False,
    drop_remainder=False,
    *,
    id_strs=None,
    seed=42,
) -> tf.data.Dataset:
    """A batched dataset of raw images (and labels) read from image files.

    (Over 80 lines only for its numpydoc of the upstream 1.x arguments; the body is checks, then one pipeline.)

    Parameters
    ----------
    image_paths : sequence of str or path-like
        One image file per galaxy.
    file_format : {'png', 'jpg', 'jpeg', 'fits', None}
        The format of every file (each path's extension must agree), or ``None`` to read each file by
        its own extension. PNG and JPEG may be mixed; FITS cannot be mixed with them (its pixels are
        floats, theirs uint8).
    requested_img_size : int
        Images are resized (bilinear, antialiased) to ``requested_img_size`` x ``requested_img_size``
        when their size differs; uint8 results are rounded back to uint8. Non-square images are
        stretched to the square.
    batch_size : int
        Galaxies per batch.
    labels : None, sequence of numbers, 2-D array, or sequence of dicts, optional
        A list / 1-D array gives key ``'label'`` float32 (B,); a 2-D array gives ``'label'`` float32
        (B, n); a list of dicts (same keys in every dict) gives one float32 (B,) key per dict key.
    check_valid_paths : bool
        Check before building the dataset that every file exists (E5) and starts like a PNG / JPEG
        file (E6). Set False to skip the (one small read per file) check for huge lists.
    shuffle : bool
        Shuffle the galaxies (seeded; a new order each epoch).
    drop_remainder : bool
        Drop the last partial batch.
    id_strs : sequence of str, keyword-only, optional
        Ids for the ``'id_str'`` key; default: the paths themselves.
    seed : int, keyword-only
        Seed of the shuffle.

    Returns
    -------
    tf.data.Dataset
        Dict batches: ``'matrix'`` tf.uint8 (B, S, S, 3) (float32 in [0, 1] for FITS), ``'id_str'``
        tf.string (B,), and the label key(s).

    Raises
    ------
    ValueError
        (E13) unknown ``file_format``, or paths whose extension disagrees with it; lengths of
        ``labels`` / ``id_strs`` that differ from the number of paths; bad sizes.
    FileNotFoundError
        (E5) missing files, when ``check_valid_paths``.
    ImageLoadError
        (E6) files that are not PNG/JPEG, when ``check_valid_paths``. Without the check, such a file
        stops the iteration with a ``tf.errors.InvalidArgumentError`` naming the file.

    Examples
    --------
    >>> from zoobot.data_utils import image_datasets
    >>> ds = image_datasets.get_image_dataset(paths, file_format='png', requested_img_size=64,
    ...                                       batch_size=16, labels=labels)  # doctest: +SKIP
    >>> batch = next(iter(ds))  # doctest: +SKIP
    >>> batch['matrix'].dtype, batch['label'].shape  # doctest: +SKIP
    (tf.uint8, TensorShape([16]))
    """
    paths = _as_path_list(image_paths)
    size = check_int("requested_img_size", requested_img_size, minimum=1)
    batch_size = check_int("batch_size", batch_size, minimum=1)
    formats = _resolve_formats(paths, file_format)
    is_fits = formats[0] == "fits"

    if id_strs is None:
        ids = list(paths)
    else:
        ids = [str(i) for i in _as_list(id_strs, "id_strs")]
        if len(ids) != len(paths):
            raise ValueError(f"id_strs has {len(ids)} entries but image_paths has {len(paths)}; give one id per path.")
    label_columns = _label_columns(labels, len(paths))

    if check_valid_paths:
        validate_catalog(
            pd.DataFrame({"id_str": ids, "file_loc": paths}),
            label_kind=None,
            check_valid_paths=True,
            name="image_paths",
        )
        if not is_fits:
            check_image_headers(paths, ids)

    columns = {"file_loc": paths, "id_str": ids, **label_columns}
    dataset = tf.data.Dataset.from_tensor_slices(columns)
    if shuffle:
        dataset = dataset.shuffle(len(paths), seed=seed, reshuffle_each_iteration=True)

    def load(element):
        if is_fits:
            image = read_fits_file(element["file_loc"], element["id_str"], channels=3)
            image = resize_image(image, size)
        else:
            image = read_image_file(element["file_loc"], element["id_str"], channels=3)
            image = resize_image(image, size)
        return {**element, "matrix": image}

    def drop_path(element):
        return {key: value for key, value in element.items() if key != "file_loc"}

    dataset = dataset.map(load, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    dataset = dataset.map(drop_path)
    dataset = dataset.batch(batch_size, drop_remainder=drop_remainder)
    return dataset.prefetch(tf.data.AUTOTUNE)


# ------------------------------------------------------------------------------------------------
# argument checks
# ------------------------------------------------------------------------------------------------

def _as_list(values, name) -> list:
    if isinstance(values, (str, bytes, os.PathLike)):
        raise TypeError(f"{name} must be a sequence (e.g. a list), got a single {type(values).__name__}: {values!r}.")
    if isinstance(values, (pd.Series, pd.Index, np.ndarray)):
        return list(values.tolist())
    try:
        return list(values)
    except TypeError:
        raise TypeError(f"{name} must be a sequence (e.g. a list), got {type(values).__name__}.") from None


def _as_path_list(image_paths) -> list[str]:
    paths = _as_list(image_paths, "image_paths")
    if not paths:
        raise ValueError("image_paths is empty: give at least one image file.")
    bad = [p for p in paths if not isinstance(p, (str, os.PathLike))]
    if bad:
        raise TypeError(f"image_paths must hold str or path-like entries, got e.g. {format_examples(bad)}.")
    return [os.fspath(p) for p in paths]


def file_format_of(path: str) -> str | None:
    """The format ('png', 'jpg', 'fits') a path's extension names, or None if unknown.

    Examples
    --------
    >>> file_format_of('a/b.JPEG'), file_format_of('c.fits.gz'), file_format_of('d.tif')
    ('jpg', 'fits', None)
    """
    lower = str(path).lower()
    for fmt in ("png", "jpg", "fits"):
        if lower.endswith(FILE_FORMATS[fmt]):
            return fmt
    return None


def _resolve_formats(paths: list[str], file_format) -> list[str]:
    """One format per path, checked against ``file_format`` (E13)."""
    accepted = [*FILE_FORMATS, None]
    if file_format is not None and (not isinstance(file_format, str) or file_format.lower() not in FILE_FORMATS):
        raise unknown_option_error("file_format", file_format, [repr(a) if a is None else a for a in accepted])
    formats = [file_format_of(p) for p in paths]
    if file_format is None:
        unknown = [p for p, f in zip(paths, formats) if f is None]
        if unknown:
            raise ValueError(
                f"{len(unknown)} of {len(paths)} image paths have an unsupported extension, e.g. "
                f"{format_examples(unknown)}. Accepted extensions: "
                f"{format_examples(sorted({e for exts in FILE_FORMATS.values() for e in exts}))}."
            )
    else:
        expected = "jpg" if file_format.lower() == "jpeg" else file_format.lower()
        disagree = [p for p, f in zip(paths, formats) if f != expected]
        if disagree:
            raise ValueError(
                f"file_format={file_format!r} (extensions {format_examples(FILE_FORMATS[file_format.lower()])}), "
                f"but {len(disagree)} of {len(paths)} image paths have another extension, e.g. "
                f"{format_examples(disagree)}. Pass the right file_format, or file_format=None to read each "
                "file by its own extension."
            )
    n_fits = sum(f == "fits" for f in formats)
    if 0 < n_fits < len(paths):
        examples = [p for p, f in zip(paths, formats) if f == "fits"]
        raise ValueError(
            f"{n_fits} of {len(paths)} image paths are FITS (e.g. {format_examples(examples, limit=3)}) and the "
            "others PNG/JPEG. FITS pixels are floats and PNG/JPEG pixels uint8, so one dataset cannot mix them: "
            "make one dataset per kind."
        )
    return formats


def _label_columns(labels, n: int) -> dict:
    """The label keys of each element (label forms: docs/components/loading_data.md), as float32 arrays."""
    if labels is None:
        return {}
    if isinstance(labels, pd.DataFrame):
        labels = labels.to_numpy()
    labels = _as_list(labels, "labels") if not isinstance(labels, np.ndarray) else labels
    if len(labels) != n:
        raise ValueError(f"labels has {len(labels)} entries but image_paths has {n}; give one label per image.")
    if not isinstance(labels, np.ndarray) and all(isinstance(item, dict) for item in labels):
        keys = list(labels[0])
        different = [i for i, item in enumerate(labels) if list(item) != keys]
        if different:
            raise ValueError(
                f"Every label dict needs the same keys {keys}, but entries {format_examples(different)} differ "
                f"(e.g. {list(labels[different[0]])})."
            )
        reserved = [k for k in keys if k in ("matrix", "id_str", "file_loc")]
        if reserved:
            raise ValueError(f"Label keys {reserved} clash with the dataset's own keys; rename them.")
        return {key: _float_array([item[key] for item in labels], f"labels[...][{key!r}]") for key in keys}
    array = _float_array(labels, "labels")
    if array.ndim not in (1, 2):
        raise ValueError(f"labels must be 1-D (one value per image) or 2-D (n values per image), got shape {array.shape}.")
    return {"label": array}


def _float_array(values, name) -> np.ndarray:
    try:
        return np.asarray(values, dtype=np.float32)
    except (TypeError, ValueError) as err:
        raise TypeError(f"{name} must be numeric: {err}") from None


def check_image_headers(paths: Sequence[str], ids: Sequence[str] | None = None) -> None:
    """E6 before any decoding: every file must start like a PNG or JPEG file.

    Reads the first 8 bytes of each file (cheap), so empty files, HTML error pages saved as .jpg
    and other formats are reported with their ``id_str`` and path instead of failing mid-epoch.

    Raises
    ------
    ImageLoadError
        Listing how many files are bad and up to 5 ``(id_str, file_loc)`` with what was found.
    """
    ids = list(paths) if ids is None else list(ids)
    bad = []
    for ident, path in zip(ids, paths):
        try:
            with open(path, "rb") as handle:
                head = handle.read(8)
        except OSError as err:
            bad.append((ident, path, f"cannot be opened: {err}"))
            continue
        if not (head.startswith(_PNG_MAGIC) or head.startswith(_JPEG_MAGIC)):
            what = "is empty" if not head else f"does not start like a PNG or JPEG file (first bytes {head!r})"
            bad.append((ident, path, what))
    if bad:
        examples = "; ".join(f"id_str {i!r}, file_loc {p!r}: {why}" for i, p, why in bad[:5])
        raise ImageLoadError(
            f"{len(bad)} of {len(paths)} image files cannot be decoded as PNG/JPEG: {examples}. "
            "Re-download or remove these images (FITS files need a .fits extension)."
        )


# ------------------------------------------------------------------------------------------------
# decoding inside the tf.data graph (shared with zoobot.tensorflow.datasets)
# ------------------------------------------------------------------------------------------------

def read_image_file(file_loc, id_str=None, channels: int = 3, min_size: int | None = None) -> tf.Tensor:
    """Read and decode one PNG/JPEG file with TensorFlow ops (graph-safe): uint8 (H, W, channels).

    ``channels`` 3 gives RGB (greyscale files are repeated), 1 the mean of R, G, B rounded to uint8
    (TF's own greyscale decoding uses luminance weights, so it is not used). ``min_size``: JPEGs are
    decoded at the largest reduction (1/2, 1/4, 1/8, inside the decoder) that keeps both sides at
    least ``min_size`` - the twin of ``zoobot.shared.images.load_image(target_size=...)``.
    A file that is not PNG/JPEG stops the iteration with an error naming ``file_loc`` and ``id_str`` (E6).
    """
    contents = tf.io.read_file(file_loc)
    is_png = tf.equal(tf.strings.substr(contents, 0, 8), _PNG_MAGIC)
    is_jpeg = tf.equal(tf.strings.substr(contents, 0, 3), _JPEG_MAGIC)
    message = ["ImageLoadError (E6): file_loc", file_loc, "id_str", file_loc if id_str is None else id_str,
               "is not a PNG or JPEG image (empty, truncated or another format)."]
    with tf.control_dependencies([tf.debugging.Assert(tf.logical_or(is_png, is_jpeg), message)]):
        contents = tf.identity(contents)
    if min_size is None:
        image = tf.io.decode_image(contents, channels=3, expand_animations=False)
    else:
        image = tf.cond(is_jpeg, lambda: _decode_jpeg_reduced(contents, int(min_size)),
                        lambda: tf.io.decode_png(contents, channels=3))
    image.set_shape([None, None, 3])
    image = _warn_if_tiny(image, file_loc, file_loc if id_str is None else id_str)
    if channels == 1:
        image = tf.cast(tf.round(tf.reduce_mean(tf.cast(image, tf.float32), axis=-1, keepdims=True)), tf.uint8)
    elif channels != 3:
        raise ValueError(f"channels must be 1 or 3, got {channels!r}.")
    return image


def _warn_if_tiny(image: tf.Tensor, file_loc, id_str) -> tf.Tensor:
    """``image``, after :func:`zoobot.shared.images.warn_if_tiny` when a side is under ``MIN_IMAGE_SIDE`` pixels
    (Python runs only for such images; the warning shows once per process)."""
    from zoobot.shared import images

    def warn(shape, path, ident):
        path, ident = (np.asarray(v).item() for v in (path, ident))  # 0-d arrays of bytes
        images.warn_if_tiny(shape, *(v.decode() if isinstance(v, bytes) else str(v) for v in (path, ident)))
        return np.int32(0)

    shape = tf.shape(image)
    tiny = tf.reduce_min(shape[:2]) < images.MIN_IMAGE_SIDE
    done = tf.cond(tiny, lambda: tf.numpy_function(warn, [shape, file_loc, id_str], tf.int32, stateful=True),
                   lambda: tf.constant(0, tf.int32))
    with tf.control_dependencies([done]):
        return tf.identity(image)


def _decode_jpeg_reduced(contents: tf.Tensor, min_size: int) -> tf.Tensor:
    """Decode a JPEG at 1/1, 1/2, 1/4 or 1/8 scale: the smallest whose short side stays >= ``min_size``."""
    short = tf.reduce_min(tf.io.extract_jpeg_shape(contents)[:2])
    ratios = (1, 2, 4, 8)
    # index of the largest ratio r with short >= r * min_size (Pillow's draft rule; 0 if none)
    usable = tf.stack([short >= r * min_size for r in ratios])
    index = tf.reduce_max(tf.where(usable, tf.range(len(ratios)), 0))
    branches = [lambda r=r: tf.io.decode_jpeg(contents, channels=3, ratio=r) for r in ratios]
    return tf.switch_case(index, branches)


def read_fits_file(file_loc, id_str=None, channels: int = 3, fits_scaling: str = "percentile") -> tf.Tensor:
    """Read one FITS file through :func:`zoobot.shared.images.load_image`: float32 (H, W, channels) in [0, 1].

    Runs Python (astropy) via ``tf.numpy_function``; errors carry the shared loader's message (E6/E7/E12).
    """

    def load(path, ident):
        from zoobot.shared import images

        path = path.decode() if isinstance(path, bytes) else str(path)
        ident = ident.decode() if isinstance(ident, bytes) else str(ident)
        image = images.load_image(path, fits_scaling=fits_scaling, id_str=ident)
        if image.dtype == np.uint8:  # a PNG/JPEG routed here: same scale as FITS
            image = image.astype(np.float32) / 255.0
        return np.ascontiguousarray(images.to_channels(image, channels), dtype=np.float32)

    ident = file_loc if id_str is None else id_str
    image = tf.numpy_function(load, [file_loc, ident], tf.float32, stateful=False)
    image.set_shape([None, None, channels])
    return image


def resize_image(image: tf.Tensor, size: int) -> tf.Tensor:
    """Resize (bilinear, antialiased) to ``size`` x ``size`` only if needed; keeps the dtype.

    uint8 input is rounded back to uint8; float input is clipped to [0, 1].
    """
    dtype = image.dtype

    def do_resize():
        resized = tf.image.resize(image, [size, size], method="bilinear", antialias=True)
        if dtype == tf.uint8:
            return tf.cast(tf.clip_by_value(tf.round(resized), 0.0, 255.0), tf.uint8)
        return tf.cast(tf.clip_by_value(resized, 0.0, 1.0), dtype)

    static = image.shape[-3:-1]
    if static.is_fully_defined():
        resized = image if tuple(static) == (size, size) else do_resize()
    else:
        same = tf.reduce_all(tf.equal(tf.shape(image)[-3:-1], size))
        resized = tf.cond(same, lambda: image, do_resize)
    resized.set_shape(image.shape[:-3].concatenate([size, size]).concatenate(image.shape[-1:]))
    return resized
