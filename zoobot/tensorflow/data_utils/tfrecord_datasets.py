"""tf.data datasets read from TFRecord shards (docs/components/loading_data.md).

Shards are written by :class:`zoobot.tensorflow.data_utils.create_shards.ShardConfig`. Reading one
back::

    from zoobot.data_utils import tfrecord_datasets
    dataset = tfrecord_datasets.get_dataset(shard_config.train_tfrecord_locs(), ['ring'], batch_size=64, shuffle=True)

yields dict batches ``{'matrix': uint8 (B, size, size, C), 'id_str': string (B,), 'ring': float32 (B,)}``
of raw pixels; pass them through :func:`zoobot.tensorflow.preprocess.preprocess_dataset` before a model.

Order: with ``shuffle=False`` files are read in the order given and records in file order
(deterministic, for predictions). With ``shuffle=True`` the file order is shuffled (seeded), several
files are read at once, and records pass through a shuffle buffer.
Corrupt records stop the iteration with TensorFlow's ``DataLossError`` / ``InvalidArgumentError``:
nothing is skipped silently.
"""
from __future__ import annotations

import os
from typing import Sequence

import tensorflow as tf

from zoobot.shared.errors import CatalogError, format_examples
from zoobot.shared.validation import check_int

__all__ = ["get_dataset", "get_tfrecord_dataset", "load_tfrecords", "get_feature_spec", "inspect_first_record"]

#: Records held in the shuffle buffer (serialized, i.e. PNG-compressed) when ``shuffle=True``.
DEFAULT_SHUFFLE_BUFFER = 2000


def get_dataset(
    tfrecord_locs,
    label_cols=None,
    batch_size=None,
    shuffle=None,
    repeat=False,
    drop_remainder=False,
    *,
    seed=42,
    columns_to_save=None,
    shuffle_buffer_size=None,
) -> tf.data.Dataset:
    """A batched dataset of the images, ids and labels stored in TFRecord shards.

    (Over 80 lines only for its numpydoc of the upstream 1.x arguments; the body is checks, then one pipeline.)

    Parameters
    ----------
    tfrecord_locs : str, path-like or sequence of them
        Shard files, e.g. ``shard_config.train_tfrecord_locs()``.
    label_cols : list of str
        Saved columns to read as labels (``[]`` for unlabelled shards). Required; the keyword
        ``columns_to_save`` (upstream Zoobot's name) is accepted instead.
    batch_size : int
        Galaxies per batch. Required.
    shuffle : bool
        Shuffle file order and records (training), or read in order (evaluation). Required.
    repeat : bool
        Repeat forever.
    drop_remainder : bool
        Drop the last partial batch.
    seed : int, keyword-only
        Seed of the shuffles.
    columns_to_save : list of str, keyword-only
        Alias of ``label_cols``.
    shuffle_buffer_size : int, keyword-only, optional
        Records in the shuffle buffer; default ``max(2000, 4 * batch_size)``.

    Returns
    -------
    tf.data.Dataset
        Dict batches: ``'matrix'`` tf.uint8 (B, size, size, C), ``'id_str'`` tf.string (B,), and each
        label column as float32 (B,) whatever its stored dtype.

    Raises
    ------
    TypeError
        A required argument is missing, or both ``label_cols`` and ``columns_to_save`` are given.
    ValueError
        Empty ``tfrecord_locs``; bad ``batch_size``.
    FileNotFoundError
        (E5) shard files that do not exist.
    CatalogError
        (E1) a label column absent from the records (checked eagerly on the first record; the message
        lists the features found).

    Examples
    --------
    >>> from zoobot.data_utils import tfrecord_datasets
    >>> ds = tfrecord_datasets.get_dataset(train_records, ['ring'], 32, shuffle=True)  # doctest: +SKIP
    """
    label_cols = _resolve_label_cols(label_cols, columns_to_save)
    if batch_size is None:
        raise TypeError("get_dataset() missing required argument 'batch_size'.")
    check_int("batch_size", batch_size, minimum=1)
    if shuffle is None:
        raise TypeError("get_dataset() missing required argument 'shuffle' (True for training, False to keep order).")
    locs = _check_locs(tfrecord_locs)

    first = inspect_first_record(locs[0])
    missing = [col for col in label_cols if col not in first["features"]]
    if missing:
        raise CatalogError(
            f"Label column(s) {format_examples(missing, limit=20)} are not stored in the shards (first record of "
            f"{locs[0]!r}). Features found: {format_examples(sorted(first['features']), limit=60)}. Read only saved "
            "columns, or re-create the shards with these columns in columns_to_save."
        )
    for required in ("matrix", "id_str"):
        if required not in first["features"]:
            raise CatalogError(
                f"{locs[0]!r} holds no {required!r} feature, so it was not written by zoobot's ShardConfig. "
                f"Features found: {format_examples(sorted(first['features']), limit=60)}."
            )
    label_dtypes = {col: first["features"][col] for col in label_cols}
    feature_spec = get_feature_spec(label_cols, label_dtypes)
    channels = first["channels"]

    def parse(serialized):
        example = tf.io.parse_single_example(serialized, feature_spec)
        image = tf.io.decode_image(example["matrix"], channels=channels or 0, expand_animations=False)
        shape = tf.stack([example["height"], example["width"], example["channels"]])
        image = tf.reshape(image, tf.cast(shape, tf.int32))
        image.set_shape([first["height"], first["width"], channels])
        out = {"matrix": image, "id_str": example["id_str"]}
        for col in label_cols:
            out[col] = tf.cast(example[col], tf.float32)
        return out

    if shuffle_buffer_size is None:
        shuffle_buffer_size = max(DEFAULT_SHUFFLE_BUFFER, 4 * batch_size)
    dataset = load_tfrecords(locs, shuffle=shuffle, seed=seed)
    if shuffle:
        dataset = dataset.shuffle(shuffle_buffer_size, seed=seed, reshuffle_each_iteration=True)
    dataset = dataset.map(parse, num_parallel_calls=tf.data.AUTOTUNE, deterministic=not shuffle)
    if repeat:
        dataset = dataset.repeat()
    dataset = dataset.batch(batch_size, drop_remainder=drop_remainder)
    return dataset.prefetch(tf.data.AUTOTUNE)


#: Upstream alias of :func:`get_dataset`.
get_tfrecord_dataset = get_dataset


def load_tfrecords(tfrecord_locs, shuffle=False, *, seed=42, cycle_length=None) -> tf.data.Dataset:
    """A dataset of serialized records (bytes) from TFRecord files.

    ``shuffle=False``: files in the order given, records in file order. ``shuffle=True``: the file
    order is shuffled (seeded, new order each epoch) and ``cycle_length`` files (default up to 8)
    are read in parallel and interleaved.
    """
    locs = _check_locs(tfrecord_locs)
    if not shuffle:
        return tf.data.TFRecordDataset(locs, buffer_size=8 * 1024 * 1024)
    files = tf.data.Dataset.from_tensor_slices(locs).shuffle(len(locs), seed=seed, reshuffle_each_iteration=True)
    return files.interleave(
        lambda loc: tf.data.TFRecordDataset(loc, buffer_size=8 * 1024 * 1024),
        cycle_length=cycle_length or min(len(locs), 8),
        num_parallel_calls=tf.data.AUTOTUNE,
        deterministic=False,
    )


def get_feature_spec(label_cols: Sequence[str], label_dtypes: dict | None = None) -> dict:
    """The ``tf.io.parse_single_example`` spec of a zoobot record with these label columns.

    Parameters
    ----------
    label_cols : sequence of str
        Saved columns to parse.
    label_dtypes : dict, optional
        Stored dtype per column, ``'int64'`` or ``'float32'`` (as in ``shard_config.json``); default
        float32 for every column.

    Examples
    --------
    >>> sorted(get_feature_spec(['ring'], {'ring': 'int64'}))
    ['channels', 'height', 'id_str', 'matrix', 'ring', 'width']
    """
    label_dtypes = label_dtypes or {}
    spec = {
        "matrix": tf.io.FixedLenFeature([], tf.string),
        "id_str": tf.io.FixedLenFeature([], tf.string),
        "height": tf.io.FixedLenFeature([], tf.int64),
        "width": tf.io.FixedLenFeature([], tf.int64),
        "channels": tf.io.FixedLenFeature([], tf.int64),
    }
    for col in label_cols:
        dtype = label_dtypes.get(col, "float32")
        if dtype not in ("int64", "float32"):
            raise ValueError(f"Label column {col!r} is stored as {dtype!r}; only int64 and float32 can be labels.")
        spec[col] = tf.io.FixedLenFeature([], tf.int64 if dtype == "int64" else tf.float32)
    return spec


def inspect_first_record(loc) -> dict:
    """Read the first record of one shard eagerly.

    Returns
    -------
    dict
        ``features``: {name: 'int64' | 'float32' | 'bytes'}, and ``height``, ``width``, ``channels``
        of its image (None if absent).

    Raises
    ------
    ValueError
        The file holds no records.
    tf.errors.DataLossError
        The first record is corrupt.
    """
    records = list(tf.data.TFRecordDataset([os.fspath(loc)]).take(1).as_numpy_iterator())
    if not records:
        raise ValueError(f"TFRecord file {os.fspath(loc)!r} holds no records; re-create the shards.")
    example = tf.train.Example.FromString(records[0])
    kinds = {"int64_list": "int64", "float_list": "float32", "bytes_list": "bytes"}
    features = {name: kinds.get(value.WhichOneof("kind"), "bytes") for name, value in example.features.feature.items()}

    def int_feature(name):
        feature = example.features.feature.get(name)
        return int(feature.int64_list.value[0]) if feature is not None and feature.int64_list.value else None

    return {
        "features": features,
        "height": int_feature("height"),
        "width": int_feature("width"),
        "channels": int_feature("channels"),
    }


def _resolve_label_cols(label_cols, columns_to_save) -> list[str]:
    if label_cols is not None and columns_to_save is not None:
        raise TypeError("Give label_cols or its alias columns_to_save, not both.")
    cols = label_cols if label_cols is not None else columns_to_save
    if cols is None:
        raise TypeError("get_dataset() missing required argument 'label_cols' (use [] for unlabelled shards).")
    if isinstance(cols, str):
        cols = [cols]
    cols = list(cols)
    bad = [c for c in cols if not isinstance(c, str)]
    if bad:
        raise TypeError(f"label_cols must be strings, got {format_examples(bad)}.")
    return cols


def _check_locs(tfrecord_locs) -> list[str]:
    if isinstance(tfrecord_locs, (str, os.PathLike)):
        tfrecord_locs = [tfrecord_locs]
    locs = [os.fspath(loc) for loc in tfrecord_locs]
    if not locs:
        raise ValueError(
            "tfrecord_locs is empty: no shard files to read. Check the shard folder, e.g. "
            "shard_config.train_tfrecord_locs() after shard_config.prepare_shards(...)."
        )
    missing = [loc for loc in locs if not os.path.isfile(loc)]
    if missing:
        raise FileNotFoundError(
            f"{len(missing)} of {len(locs)} TFRecord files do not exist, e.g. {format_examples(missing)} "
            f"(working directory {os.getcwd()!r})."
        )
    return locs
