"""Turn raw dict batches into model input
(docs/components/preprocessing.md). Alias: ``zoobot.tensorflow.estimators.preprocess``.

The raw datasets of :mod:`zoobot.tensorflow.data_utils` yield ``{'matrix': uint8 0-255, 'id_str',
<labels>}``. Models want ``(images float32 NHWC in [0, 1], labels float32 (B, n))``::

    from zoobot.tensorflow import preprocess

    config = preprocess.PreprocessingConfig(label_cols=['label'], input_size=64, normalise_from_uint8=True,
                                            make_greyscale=True, permute_channels=False)
    train = preprocess.preprocess_dataset(raw_train_dataset, config)

**The pixel-scale rule.** Whether to divide by 255 is decided by the static dtype of ``matrix``, at
call time, so images are never divided twice or not at all: uint8 needs
``normalise_from_uint8=True``; float needs ``normalise_from_uint8=False`` (e.g. FITS datasets, whose
pixels are already in [0, 1]). Any other combination raises
:class:`~zoobot.shared.errors.PixelScaleError` (E8) saying which flag to set.

Do not pass :class:`zoobot.tensorflow.datasets.GalaxyDataModule` output through this: it is already
model input.
"""
from __future__ import annotations

import copy as _copy
import dataclasses
import logging

import tensorflow as tf

from zoobot.shared.errors import CatalogError, ChannelMismatchError, PixelScaleError, format_examples
from zoobot.shared.validation import check_int

__all__ = ["PreprocessingConfig", "preprocess_dataset", "preprocess_batch"]

logger = logging.getLogger(__name__)
_logged_resizes: set = set()


@dataclasses.dataclass
class PreprocessingConfig:
    """How :func:`preprocess_dataset` turns raw batches into model input.

    Parameters
    ----------
    label_cols : list of str
        Keys of the raw batches stacked (in this order) into the labels, float32 (B, n). ``[]`` for
        unlabelled data: the dataset then yields ``(images, id_str)``.
    input_size : int
        Images are resized (bilinear, antialiased) to ``input_size`` x ``input_size`` if their size differs.
    normalise_from_uint8 : bool
        True: the raw ``matrix`` is uint8 0-255, divide by 255. False: it is already float in [0, 1].
        Checked against the dataset's dtype (E8).
    make_greyscale : bool
        Average R, G, B into one channel (shape (..., 1)).
    permute_channels : bool
        Randomly reorder the channels of each image (colour augmentation); not with ``make_greyscale``.
    input_channels : int, optional
        Channels of the raw images (upstream's name, informational); if given, checked against the data (E7).

    Raises
    ------
    ValueError
        ``make_greyscale`` and ``permute_channels`` both True; bad ``input_size``.

    Examples
    --------
    >>> config = PreprocessingConfig(label_cols=['label'], input_size=64, normalise_from_uint8=True,
    ...                              make_greyscale=True, permute_channels=False)
    >>> config.asdict()['input_size']
    64
    """

    label_cols: list
    input_size: int
    normalise_from_uint8: bool = True
    make_greyscale: bool = True
    permute_channels: bool = False
    input_channels: int | None = None

    def __post_init__(self):
        if isinstance(self.label_cols, str):
            self.label_cols = [self.label_cols]
        if self.label_cols is None:
            raise TypeError("label_cols must be a list of label keys (use [] for unlabelled data), got None.")
        self.label_cols = list(self.label_cols)
        check_int("input_size", self.input_size, minimum=1)
        if self.make_greyscale and self.permute_channels:
            raise ValueError(
                "make_greyscale=True and permute_channels=True cannot be combined: a greyscale image has one "
                "channel to permute. Set one of them to False."
            )
        if self.input_channels is not None and self.input_channels not in (1, 3):
            raise ValueError(f"input_channels must be 1, 3 or None, got {self.input_channels!r}.")

    def asdict(self) -> dict:
        """The settings as a plain dict (JSON-able)."""
        return dataclasses.asdict(self)

    def copy(self) -> "PreprocessingConfig":
        """An independent copy."""
        return _copy.deepcopy(self)


def preprocess_dataset(dataset: tf.data.Dataset, config: PreprocessingConfig) -> tf.data.Dataset:
    """Map raw dict batches to ``(images, labels)`` (or ``(images, id_str)`` when ``label_cols == []``).

    Parameters
    ----------
    dataset : tf.data.Dataset
        Elements are dicts with ``'matrix'`` (B, H, W, C) (or unbatched (H, W, C)), ``'id_str'`` and the
        label keys, as yielded by ``get_image_dataset`` / ``tfrecord_datasets.get_dataset``.
    config : PreprocessingConfig

    Returns
    -------
    tf.data.Dataset
        ``(images float32 NHWC in [0, 1], labels float32 (B, n))`` with labels in ``label_cols`` order
        (a 2-D label key contributes all its columns); ``(images, id_str)`` for ``label_cols == []``
        (just ``images`` if the dataset has no ``id_str``).

    Raises
    ------
    PixelScaleError
        (E8) the dtype of ``matrix`` disagrees with ``normalise_from_uint8`` (message says which to set).
    CatalogError
        (E1) a label key is missing (lists the keys present).
    ChannelMismatchError
        (E7) ``config.input_channels`` disagrees with the data.
    TypeError
        ``dataset`` is not a tf.data.Dataset of dicts with ``'matrix'``.

    Examples
    --------
    >>> train = preprocess_dataset(raw_train_dataset, config)  # doctest: +SKIP
    >>> images, labels = next(iter(train))  # doctest: +SKIP
    """
    if not isinstance(config, PreprocessingConfig):
        raise TypeError(f"config must be a PreprocessingConfig, got {type(config).__name__}.")
    if not isinstance(dataset, tf.data.Dataset):
        raise TypeError(f"dataset must be a tf.data.Dataset, got {type(dataset).__name__}.")
    spec = dataset.element_spec
    if not isinstance(spec, dict) or "matrix" not in spec:
        found = sorted(spec) if isinstance(spec, dict) else type(spec).__name__
        raise TypeError(
            f"preprocess_dataset expects dict elements with a 'matrix' key (raw zoobot datasets), got {found}. "
            "GalaxyDataModule output is already preprocessed: use it directly."
        )
    check_pixel_rule(spec["matrix"].dtype, config.normalise_from_uint8)
    missing = [col for col in config.label_cols if col not in spec]
    if missing:
        raise CatalogError(
            f"Label key(s) {format_examples(missing, limit=20)} (PreprocessingConfig.label_cols) are not in the "
            f"dataset. Keys present: {format_examples(sorted(spec), limit=40)}. Use one of these in label_cols "
            "(e.g. 'label' for get_image_dataset(labels=[...]))."
        )
    stored_channels = spec["matrix"].shape[-1]
    if config.input_channels is not None and stored_channels is not None and stored_channels != config.input_channels:
        raise ChannelMismatchError(
            f"PreprocessingConfig(input_channels={config.input_channels}) but the dataset's images have "
            f"{stored_channels} channels (matrix shape {spec['matrix'].shape}, NHWC). Set input_channels="
            f"{stored_channels} or None."
        )
    _log_resize_once(spec["matrix"].shape, config.input_size)
    return dataset.map(
        lambda batch: preprocess_batch(batch, config), num_parallel_calls=tf.data.AUTOTUNE, deterministic=True
    )


def check_pixel_rule(dtype: tf.DType, normalise_from_uint8: bool) -> None:
    """E8 unless (uint8 and ``normalise_from_uint8``) or (float and not ``normalise_from_uint8``)."""
    dtype = tf.as_dtype(dtype)
    if dtype == tf.uint8 and not normalise_from_uint8:
        raise PixelScaleError(
            "The dataset's 'matrix' is uint8 (0-255) but PreprocessingConfig(normalise_from_uint8=False) would pass "
            "those values on unchanged; zoobot models expect floats in [0, 1]. Fix: set normalise_from_uint8=True "
            "(divide by 255)."
        )
    if dtype.is_floating and normalise_from_uint8:
        raise PixelScaleError(
            f"The dataset's 'matrix' is already {dtype.name} (floats in [0, 1], e.g. FITS images) but "
            "PreprocessingConfig(normalise_from_uint8=True) would divide it by 255 again; zoobot models expect "
            "floats in [0, 1]. Fix: set normalise_from_uint8=False."
        )
    if not (dtype == tf.uint8 or dtype.is_floating):
        raise PixelScaleError(
            f"The dataset's 'matrix' has dtype {dtype.name}; expected uint8 0-255 (normalise_from_uint8=True) or "
            "floats in [0, 1] (normalise_from_uint8=False). Fix: convert the images to one of these first."
        )


def preprocess_batch(batch: dict, config: PreprocessingConfig):
    """Preprocess one dict batch (graph-safe); see :func:`preprocess_dataset`."""
    images = batch["matrix"]
    if config.normalise_from_uint8:
        images = tf.cast(images, tf.float32) / 255.0
    else:
        images = tf.cast(images, tf.float32)
    size = config.input_size
    static_hw = images.shape[-3:-1]
    if not (static_hw.is_fully_defined() and tuple(static_hw) == (size, size)):
        resized = tf.image.resize(images, [size, size], method="bilinear", antialias=True)
        if static_hw.is_fully_defined():
            images = tf.clip_by_value(resized, 0.0, 1.0)
        else:
            same = tf.reduce_all(tf.equal(tf.shape(images)[-3:-1], size))
            images = tf.cond(same, lambda: images, lambda: tf.clip_by_value(resized, 0.0, 1.0))
            images.set_shape(images.shape[:-3].concatenate([size, size]).concatenate(images.shape[-1:]))
    if config.make_greyscale:
        images = tf.reduce_mean(images, axis=-1, keepdims=True)
    elif config.permute_channels:
        images = _permute_channels(images)

    if not config.label_cols:
        return (images, batch["id_str"]) if "id_str" in batch else images
    parts = []
    for col in config.label_cols:
        label = tf.cast(batch[col], tf.float32)
        # one column per key: (B,) -> (B, 1); a 2-D key (B, n) contributes n columns
        parts.append(label[..., tf.newaxis] if label.shape.rank == images.shape.rank - 3 else label)
    labels = parts[0] if len(parts) == 1 else tf.concat(parts, axis=-1)
    return images, labels


def _permute_channels(images: tf.Tensor) -> tf.Tensor:
    """A random channel order per image."""
    channels = tf.shape(images)[-1]
    if images.shape.rank == 3:
        return tf.gather(images, tf.random.shuffle(tf.range(channels)), axis=-1)
    order = tf.argsort(tf.random.uniform(tf.stack([tf.shape(images)[0], channels])), axis=-1)
    return tf.gather(images, order, axis=-1, batch_dims=1)


def _log_resize_once(shape: tf.TensorShape, size: int) -> None:
    hw = shape[-3:-1]
    if hw.is_fully_defined() and tuple(hw) == (size, size):
        return
    key = (tuple(hw.as_list()) if hw.rank is not None else None, size)
    if key in _logged_resizes:
        return
    _logged_resizes.add(key)
    if hw.is_fully_defined():
        logger.info("preprocess_dataset: resizing images from %sx%s to input_size %s.", hw[0], hw[1], size)
    else:
        logger.info("preprocess_dataset: images of unknown size will be resized to input_size %s where they differ.", size)
