"""Write a catalog of galaxy images into TFRecord shards (docs/components/loading_data.md).

Shards hold each galaxy's image already resized (PNG, lossless) with its ``id_str`` and saved
label columns, so training reads a few large files instead of many small images::

    shard_config = ShardConfig(shard_dir='directory/tfrecords', size=300)
    shard_config.prepare_shards(labelled_catalog, unlabelled_catalog, train_test_fraction=0.8,
                                columns_to_save=['ring'])
    train = tfrecord_datasets.get_dataset(shard_config.train_tfrecord_locs(), ['ring'], 64, shuffle=True)

It writes ``shard_config.json``, ``{train,val,test,unlabelled}_shards/s{size}_shard_{n}.tfrecord`` and
the split catalogs (parquet) into ``shard_dir``. Images are decoded and resized with Pillow in a pool of
threads; large JPEGs are decoded at a reduced scale (``draft`` mode).
"""
from __future__ import annotations

import collections
import concurrent.futures
import json
import logging
import os
import pathlib
import re
import shutil

import numpy as np
import pandas as pd
import tensorflow as tf

import zoobot
from zoobot.shared.console import progress_bar  # tqdm on a terminal, a line per 10 % in a log
from zoobot.shared.catalogs import split_catalog, validate_catalog
from zoobot.shared.errors import CatalogError, ImageLoadError, format_examples, unknown_option_error
from zoobot.tensorflow.data_utils import create_tfrecord
from zoobot.tensorflow.data_utils.image_datasets import check_image_headers, file_format_of
from zoobot.shared.validation import check_fraction, check_int, is_int

__all__ = ["ShardConfig", "load_shard_config", "write_catalog_to_tfrecord_shards", "load_image_for_shard"]

logger = logging.getLogger(__name__)

CONFIG_FILENAME = "shard_config.json"
_SPLITS = ("train", "val", "test", "unlabelled")
_SHARD_PATTERN = re.compile(r"^s(\d+)_shard_(\d+)\.tfrecord$")


class _DefaultFraction(float):
    """A float default that remembers it was not passed explicitly (so that
    ``train_test_fraction`` can refuse explicit ``val_fraction``/``test_fraction``)."""


_DEFAULT_VAL_FRACTION = _DefaultFraction(0.1)
_DEFAULT_TEST_FRACTION = _DefaultFraction(0.2)


class ShardConfig:
    """Where and how to write TFRecord shards, and (after :meth:`prepare_shards`) what was written.

    Parameters
    ----------
    shard_dir : str or path-like
        Folder of the shards (created).
    size : int
        Images are stored ``size`` x ``size`` pixels (antialiased resize; non-square images are
        stretched).
    shard_size : int
        Galaxies per shard file.
    channels : {3, 1}
        3 = RGB, 1 = greyscale (unweighted mean of R, G, B).
    image_encoding : {'png', 'jpeg'}
        'png' is lossless (default); 'jpeg' (quality 95) is smaller but lossy.

    Attributes
    ----------
    train_dir, val_dir, test_dir, unlabelled_dir : str
        Shard folders of each split.
    config_save_loc : str
        ``shard_dir/shard_config.json``.
    labelled_catalog_loc, unlabelled_catalog_loc : str
        The catalogs as given (validated), as parquet; ``train_catalog_loc`` etc. hold the splits.
    columns_to_save, label_dtypes, split_fractions, seed, row_counts
        Filled by :meth:`prepare_shards` or :func:`load_shard_config`.

    Examples
    --------
    >>> shard_config = ShardConfig(shard_dir='directory/tfrecords', size=300)
    >>> shard_config.prepare_shards(labelled_catalog, unlabelled_catalog, train_test_fraction=0.8,
    ...                             columns_to_save=['ring'])  # doctest: +SKIP
    >>> shard_config.train_tfrecord_locs()  # doctest: +SKIP
    ['directory/tfrecords/train_shards/s300_shard_0.tfrecord']
    """

    def __init__(self, shard_dir, size, shard_size=4096, channels=3, image_encoding="png"):
        check_int("size", size, minimum=1)
        check_int("shard_size", shard_size, minimum=1)
        if not is_int(channels) or channels not in (1, 3):
            raise unknown_option_error("channels", channels, ["1", "3"])
        if image_encoding not in create_tfrecord.IMAGE_ENCODINGS:
            raise unknown_option_error("image_encoding", image_encoding, create_tfrecord.IMAGE_ENCODINGS)
        self.shard_dir = os.fspath(shard_dir)
        self.size = int(size)
        self.shard_size = int(shard_size)
        self.channels = int(channels)
        self.image_encoding = image_encoding

        self.train_dir = os.path.join(self.shard_dir, "train_shards")
        self.val_dir = os.path.join(self.shard_dir, "val_shards")
        self.test_dir = os.path.join(self.shard_dir, "test_shards")
        self.unlabelled_dir = os.path.join(self.shard_dir, "unlabelled_shards")
        self.config_save_loc = os.path.join(self.shard_dir, CONFIG_FILENAME)
        self.labelled_catalog_loc = os.path.join(self.shard_dir, "labelled_catalog.parquet")
        self.unlabelled_catalog_loc = os.path.join(self.shard_dir, "unlabelled_catalog.parquet")
        self.train_catalog_loc = os.path.join(self.shard_dir, "train_catalog.parquet")
        self.val_catalog_loc = os.path.join(self.shard_dir, "val_catalog.parquet")
        self.test_catalog_loc = os.path.join(self.shard_dir, "test_catalog.parquet")

        # filled by prepare_shards / load_shard_config
        self.columns_to_save: list[str] = []
        self.label_dtypes: dict[str, str] = {}
        self.split_fractions: dict[str, float] | None = None
        self.seed = 42
        self.row_counts: dict[str, int] = {}

    def __repr__(self) -> str:
        return (
            f"ShardConfig(shard_dir={self.shard_dir!r}, size={self.size}, shard_size={self.shard_size}, "
            f"channels={self.channels}, image_encoding={self.image_encoding!r})"
        )

    # --------------------------------------------------------------------------------------------
    def prepare_shards(
        self,
        labelled_catalog,
        unlabelled_catalog=None,
        columns_to_save=None,
        *,
        train_test_fraction=None,
        val_fraction=_DEFAULT_VAL_FRACTION,
        test_fraction=_DEFAULT_TEST_FRACTION,
        labelled_columns_to_save=None,
        overwrite=False,
        seed=42,
        num_workers=None,
    ) -> "ShardConfig":
        """Split ``labelled_catalog``, write train/val/test (and unlabelled) shards and the config.

        Parameters
        ----------
        labelled_catalog : pandas.DataFrame
            ``id_str``, ``file_loc`` and the ``columns_to_save`` (docs/components/loading_data.md).
        unlabelled_catalog : pandas.DataFrame, optional
            ``id_str``, ``file_loc``; written to unlabelled shards (image + ``id_str`` only).
        columns_to_save : list of str
            Label columns to store (``id_str`` is always stored); integer columns are stored as int64,
            floats as float. Alias ``labelled_columns_to_save``.
        train_test_fraction : float, keyword-only, optional
            [S] Train fraction ``f``; the held-out ``1 - f`` is written as **val** shards and no test
            shards are written. Cannot be combined with ``val_fraction``/``test_fraction``.
        val_fraction, test_fraction : float, keyword-only
            Otherwise the split is ``1 - val - test`` / ``val`` / ``test`` (default 0.7/0.1/0.2).
        overwrite : bool, keyword-only
            Replace the shards, catalogs and config of an existing ``shard_dir``.
        seed : int, keyword-only
            Seed of :func:`zoobot.shared.catalogs.split_catalog`.
        num_workers : int, keyword-only, optional
            Threads decoding images; default: the CPU count.

        Returns
        -------
        ShardConfig
            ``self``, with ``row_counts`` etc. filled in.

        Raises
        ------
        TypeError
            ``train_test_fraction`` combined with ``val_fraction``/``test_fraction``; both column
            arguments given; no column argument given.
        CatalogError, FileNotFoundError
            E1-E5 for either catalog, before anything is written.
        FileExistsError
            ``shard_dir`` already holds files and ``overwrite`` is False.
        ImageLoadError
            (E6) an image cannot be read (names ``id_str`` and ``file_loc``).
        """
        columns = _resolve_columns(columns_to_save, labelled_columns_to_save)
        fractions = _resolve_fractions(train_test_fraction, val_fraction, test_fraction)

        labelled, unlabelled = _validated_catalogs(labelled_catalog, unlabelled_catalog, columns)
        train, val, test = split_catalog(labelled, seed=seed, **{f"{k}_fraction": v for k, v in fractions.items()})
        self._prepare_folder(overwrite)

        self.columns_to_save = columns
        self.label_dtypes = {col: _stored_dtype(labelled[col]) for col in columns}
        self.split_fractions = fractions
        self.seed = int(seed)
        if train_test_fraction is not None:
            logger.info(
                "train_test_fraction=%s: writing train shards and the held-out %.3g as val shards; no test shards.",
                train_test_fraction, 1 - train_test_fraction,
            )

        labelled.to_parquet(self.labelled_catalog_loc, index=False)
        self._write_splits({"train": train, "val": val, "test": test, "unlabelled": unlabelled}, columns, num_workers)
        self.write()
        logger.info("Wrote shards to %s: %s", self.shard_dir, self.row_counts)
        return self

    def _write_splits(self, splits: dict, columns, num_workers) -> None:
        """Each split's catalog (parquet) and shards; ``row_counts`` filled in."""
        catalog_locs = {
            "train": self.train_catalog_loc, "val": self.val_catalog_loc,
            "test": self.test_catalog_loc, "unlabelled": self.unlabelled_catalog_loc,
        }
        self.row_counts = {}
        for split, catalog in splits.items():
            self.row_counts[split] = 0 if catalog is None else len(catalog)
            if catalog is None or len(catalog) == 0:
                continue
            catalog.to_parquet(catalog_locs[split], index=False)
            try:
                write_catalog_to_tfrecord_shards(
                    catalog,
                    self.size,
                    columns if split != "unlabelled" else [],
                    self._split_dir(split),
                    shard_size=self.shard_size,
                    channels=self.channels,
                    image_encoding=self.image_encoding,
                    num_workers=num_workers,
                    desc=f"{split} shards",
                )
            except ImageLoadError as err:
                raise ImageLoadError(
                    f"{err} The {split} shards in {self.shard_dir!r} are incomplete: fix or drop this galaxy, then "
                    "run prepare_shards again with overwrite=True."
                ) from err

    def _prepare_folder(self, overwrite: bool) -> None:
        root = pathlib.Path(self.shard_dir)
        if root.exists() and not root.is_dir():
            raise FileExistsError(f"shard_dir {self.shard_dir!r} exists and is not a folder.")
        if root.is_dir() and any(root.iterdir()):
            if not overwrite:
                raise FileExistsError(
                    f"shard_dir {self.shard_dir!r} is not empty ({format_examples(sorted(p.name for p in root.iterdir()))}). "
                    "Choose a new shard_dir, or pass overwrite=True to replace its shards, catalogs and config."
                )
            # remove only what prepare_shards writes, never unrelated files
            for split in _SPLITS:
                shutil.rmtree(self._split_dir(split), ignore_errors=True)
            for loc in (self.config_save_loc, self.labelled_catalog_loc, self.unlabelled_catalog_loc,
                        self.train_catalog_loc, self.val_catalog_loc, self.test_catalog_loc):
                if os.path.isfile(loc):
                    os.remove(loc)
        root.mkdir(parents=True, exist_ok=True)

    def _split_dir(self, split: str) -> str:
        return {"train": self.train_dir, "val": self.val_dir, "test": self.test_dir, "unlabelled": self.unlabelled_dir}[split]

    # --------------------------------------------------------------------------------------------
    def train_tfrecord_locs(self) -> list[str]:
        """Paths of the train shards, in shard order (``[]`` if none)."""
        return _shard_locs(self.train_dir, self.size)

    def val_tfrecord_locs(self) -> list[str]:
        """Paths of the val shards (with ``train_test_fraction``: the held-out galaxies)."""
        return _shard_locs(self.val_dir, self.size)

    def test_tfrecord_locs(self) -> list[str]:
        """Paths of the test shards (``[]`` with ``train_test_fraction``)."""
        return _shard_locs(self.test_dir, self.size)

    def unlabelled_tfrecord_locs(self) -> list[str]:
        """Paths of the unlabelled shards (``[]`` if no unlabelled catalog was given)."""
        return _shard_locs(self.unlabelled_dir, self.size)

    def ready(self) -> bool:
        """True if the config is written and every non-empty split has its shards."""
        if not os.path.isfile(self.config_save_loc):
            return False
        locs = {"train": self.train_tfrecord_locs, "val": self.val_tfrecord_locs,
                "test": self.test_tfrecord_locs, "unlabelled": self.unlabelled_tfrecord_locs}
        return all(len(locs[split]()) > 0 for split, n in self.row_counts.items() if n > 0)

    def to_dict(self) -> dict:
        """The JSON content of ``shard_config.json``; paths relative to ``shard_dir``."""
        catalogs = {"labelled": self.labelled_catalog_loc, "train": self.train_catalog_loc,
                    "val": self.val_catalog_loc, "test": self.test_catalog_loc,
                    "unlabelled": self.unlabelled_catalog_loc}
        return {
            **{"format_version": int(zoobot.FORMAT_VERSION), "zoobot_version": zoobot.__version__},
            "size": self.size,
            "channels": self.channels,
            "shard_size": self.shard_size,
            "image_encoding": self.image_encoding,
            "columns_to_save": list(self.columns_to_save),
            "label_dtypes": dict(self.label_dtypes),
            "split_fractions": self.split_fractions,
            "seed": self.seed,
            "split_dirs": {split: os.path.relpath(self._split_dir(split), self.shard_dir) for split in _SPLITS},
            "row_counts": {split: int(self.row_counts.get(split, 0)) for split in _SPLITS},
            "catalogs": {
                key: os.path.relpath(loc, self.shard_dir)
                for key, loc in catalogs.items()
                if key == "labelled" or self.row_counts.get(key, 0) > 0
            },
        }

    def write(self) -> str:
        """Write :meth:`to_dict` to ``config_save_loc``; returns the path."""
        os.makedirs(self.shard_dir, exist_ok=True)
        with open(self.config_save_loc, "w") as handle:
            json.dump(self.to_dict(), handle, indent=2)
        return self.config_save_loc


def load_shard_config(loc) -> ShardConfig:
    """Read a ``shard_config.json`` (or the ``shard_dir`` holding one) back into a :class:`ShardConfig`.

    Paths are re-rooted at the folder the file is in now, so a shard folder can be moved or copied.

    Raises
    ------
    FileNotFoundError
        No config at ``loc``.
    CheckpointVersionError
        (E11) the config was written by a newer, incompatible zoobot format.

    Examples
    --------
    >>> shard_config = load_shard_config('directory/tfrecords')  # doctest: +SKIP
    >>> shard_config.train_tfrecord_locs()  # doctest: +SKIP
    """
    from zoobot.shared.checkpoints import check_format_version

    loc = pathlib.Path(loc)
    if loc.is_dir():
        loc = loc / CONFIG_FILENAME
    if not loc.is_file():
        raise FileNotFoundError(f"No shard config at {str(loc)!r}; write shards with ShardConfig.prepare_shards first.")
    with open(loc) as handle:
        saved = json.load(handle)
    check_format_version(saved, loc)
    root = loc.parent
    config = ShardConfig(
        root, saved["size"], shard_size=saved.get("shard_size", 4096), channels=saved.get("channels", 3),
        image_encoding=saved.get("image_encoding", "png"),
    )
    for split, rel in (saved.get("split_dirs") or {}).items():
        if split in _SPLITS:
            setattr(config, f"{split}_dir", os.fspath(root / rel))
    for key, rel in (saved.get("catalogs") or {}).items():
        setattr(config, f"{key}_catalog_loc", os.fspath(root / rel))
    config.columns_to_save = list(saved.get("columns_to_save", []))
    config.label_dtypes = dict(saved.get("label_dtypes", {}))
    config.split_fractions = saved.get("split_fractions")
    config.seed = saved.get("seed", 42)
    config.row_counts = dict(saved.get("row_counts", {}))
    return config


# ------------------------------------------------------------------------------------------------
# writing
# ------------------------------------------------------------------------------------------------

def write_catalog_to_tfrecord_shards(
    df,
    img_size,
    columns_to_save,
    save_dir,
    shard_size=1000,
    *,
    channels=3,
    image_encoding="png",
    num_workers=None,
    desc="writing shards",
) -> list[str]:
    """Write every galaxy of ``df`` into ``save_dir/s{img_size}_shard_{n}.tfrecord`` (n from 0).

    (Over 80 lines only for its numpydoc; the body is one check-then-write loop.)

    Parameters
    ----------
    df : pandas.DataFrame
        ``id_str``, ``file_loc`` and ``columns_to_save``; rows are written in this order.
    img_size : int
        Stored image size (antialiased resize).
    columns_to_save : list of str
        Columns stored next to the image (int64 for integer columns, float for float columns).
    save_dir : str or path-like
        Output folder (created).
    shard_size : int
        Galaxies per file.
    channels : {3, 1}, keyword-only
        Stored channels (1 = mean of R, G, B).
    image_encoding : {'png', 'jpeg'}, keyword-only
    num_workers : int, keyword-only, optional
        Decoding threads (default: CPU count).
    desc : str, keyword-only
        Label of the progress bar.

    Returns
    -------
    list of str
        The shard paths, in order.

    Raises
    ------
    CatalogError
        (E1) missing columns.
    ImageLoadError
        (E6) an unreadable image, naming ``id_str`` and ``file_loc``.
    """
    columns_to_save = [c for c in columns_to_save if c != "id_str"]
    missing = [c for c in ["id_str", "file_loc", *columns_to_save] if c not in df.columns]
    if missing:
        raise CatalogError(
            f"Catalog to shard is missing column(s) {format_examples(missing)} (id_str, file_loc and columns_to_save "
            f"are written). Columns present: {format_examples(list(df.columns), limit=20)}."
        )
    reserved = [c for c in columns_to_save if c in create_tfrecord.RESERVED_FEATURES]
    if reserved:
        raise ValueError(f"columns_to_save may not include {reserved}: these names hold the image. Rename the columns.")
    check_int("shard_size", shard_size, minimum=1)
    os.makedirs(save_dir, exist_ok=True)

    ids = df["id_str"].astype(str).tolist()
    file_locs = df["file_loc"].tolist()
    label_values = {col: df[col].tolist() for col in columns_to_save}

    def encode(i):
        matrix = load_image_for_shard(file_locs[i], img_size, channels, id_str=ids[i])
        return create_tfrecord.encode_image(matrix, image_encoding), matrix.shape

    locs = []
    workers = num_workers or os.cpu_count() or 1
    with concurrent.futures.ThreadPoolExecutor(max_workers=workers) as pool, \
            progress_bar(len(df), desc=desc, unit="galaxy", disable=len(df) == 0) as progress:
        results = _ordered_map(pool, encode, range(len(df)), window=max(64, 16 * workers))
        for start in range(0, len(df), int(shard_size)):
            loc = os.path.join(os.fspath(save_dir), f"s{img_size}_shard_{len(locs)}.tfrecord")
            with tf.io.TFRecordWriter(loc) as writer:
                for i in range(start, min(start + int(shard_size), len(df))):
                    encoded, shape = next(results)
                    features = {"id_str": ids[i], **{col: label_values[col][i] for col in columns_to_save}}
                    writer.write(create_tfrecord.example_from_encoded(encoded, shape, **features))
                    progress.update(1)
            locs.append(loc)
    return locs


def _ordered_map(pool, fn, items, window: int):
    """``pool.map`` that keeps at most ``window`` results in flight (flat memory), in order."""
    pending = collections.deque()
    items = iter(items)
    for item in items:
        pending.append(pool.submit(fn, item))
        if len(pending) >= window:
            break
    while pending:
        yield pending.popleft().result()
        for item in items:
            pending.append(pool.submit(fn, item))
            break


def load_image_for_shard(file_loc, size: int, channels: int = 3, *, id_str=None) -> np.ndarray:
    """Load one image as uint8 (size, size, channels) for a shard.

    Reads with :func:`zoobot.shared.images.load_image` (JPEGs decoded at a reduced scale when at least
    twice ``size``; FITS scaled to [0, 1], then to 0-255), resizes with Pillow's antialiased bilinear
    filter, and converts channels with :func:`zoobot.shared.images.to_channels` (greyscale = mean of
    R, G, B).

    Raises
    ------
    ImageLoadError
        (E6) naming ``id_str`` and ``file_loc``.
    """
    from PIL import Image

    from zoobot.shared import images

    image = images.load_image(file_loc, id_str=id_str, target_size=size)
    if image.dtype != np.uint8:  # FITS: floats in [0, 1]
        image = np.round(np.clip(image, 0.0, 1.0) * 255.0).astype(np.uint8)
    if image.shape[:2] != (size, size):
        pil = Image.fromarray(image[:, :, 0] if image.shape[2] == 1 else image)
        image = np.asarray(pil.resize((size, size), Image.BILINEAR), dtype=np.uint8)
        if image.ndim == 2:
            image = image[:, :, None]
    return images.to_channels(image, channels)


# ------------------------------------------------------------------------------------------------
# argument helpers
# ------------------------------------------------------------------------------------------------

def _resolve_columns(columns_to_save, labelled_columns_to_save) -> list[str]:
    if columns_to_save is not None and labelled_columns_to_save is not None:
        raise TypeError("Give columns_to_save or its alias labelled_columns_to_save, not both.")
    columns = columns_to_save if columns_to_save is not None else labelled_columns_to_save
    if columns is None:
        raise TypeError(
            "prepare_shards() needs columns_to_save: the label columns to store with each image, e.g. "
            "columns_to_save=['ring'] (use [] to store images and id_str only)."
        )
    if isinstance(columns, str):
        columns = [columns]
    columns = [c for c in columns if c != "id_str"]
    if "file_loc" in columns:
        raise ValueError("file_loc is read to find each image but not stored; remove it from columns_to_save.")
    reserved = [c for c in columns if c in create_tfrecord.RESERVED_FEATURES]
    if reserved:
        raise ValueError(f"columns_to_save may not include {reserved}: these names hold the image. Rename the columns.")
    return list(dict.fromkeys(columns))


def _resolve_fractions(train_test_fraction, val_fraction, test_fraction) -> dict:
    explicit = [
        name for name, value in (("val_fraction", val_fraction), ("test_fraction", test_fraction))
        if not isinstance(value, _DefaultFraction)
    ]
    if train_test_fraction is not None:
        if explicit:
            raise TypeError(
                f"train_test_fraction cannot be combined with {' and '.join(explicit)}: either give "
                "train_test_fraction=f (train f, the rest written as val shards, no test shards) or "
                "val_fraction/test_fraction (train is the rest)."
            )
        f = check_fraction("train_test_fraction", train_test_fraction, allow_zero=False, allow_one=False)
        return {"train": f, "val": round(1.0 - f, 12), "test": 0.0}
    val_fraction, test_fraction = float(val_fraction), float(test_fraction)
    if not (0 <= val_fraction < 1 and 0 <= test_fraction < 1 and val_fraction + test_fraction < 1):
        raise ValueError(
            f"val_fraction ({val_fraction}) and test_fraction ({test_fraction}) must be in [0, 1) and sum to less than "
            "1 (train gets the rest)."
        )
    return {"train": 1.0 - val_fraction - test_fraction, "val": val_fraction, "test": test_fraction}


def _validated_catalogs(labelled_catalog, unlabelled_catalog, columns):
    """Both catalogs checked (E1-E5, and E6 for files that are not PNG/JPEG at all) before anything is written."""
    labelled = validate_catalog(
        labelled_catalog, label_cols=columns, label_kind="regression", check_valid_paths=True,
        name="labelled_catalog", label_description="columns_to_save",
    )
    unlabelled = None
    if unlabelled_catalog is not None:
        unlabelled = validate_catalog(
            unlabelled_catalog, label_kind=None, check_valid_paths=True, name="unlabelled_catalog"
        )
    for catalog in (labelled, unlabelled):
        if catalog is not None:
            _check_headers(catalog)
    return labelled, unlabelled


def _check_headers(catalog: pd.DataFrame) -> None:
    paths = catalog["file_loc"].map(os.fspath).tolist()
    is_pil = [file_format_of(p) in ("png", "jpg") for p in paths]
    if any(is_pil):
        check_image_headers([p for p, ok in zip(paths, is_pil) if ok],
                            [i for i, ok in zip(catalog["id_str"], is_pil) if ok])


def _stored_dtype(column: pd.Series) -> str:
    if pd.api.types.is_bool_dtype(column) or pd.api.types.is_integer_dtype(column):
        return "int64"
    return "float32"


def _shard_locs(folder: str, size: int) -> list[str]:
    if not os.path.isdir(folder):
        return []
    found = []
    for name in os.listdir(folder):
        match = _SHARD_PATTERN.match(name)
        if match and int(match.group(1)) == size:
            found.append((int(match.group(2)), os.path.join(folder, name)))
    return [loc for _, loc in sorted(found)]
