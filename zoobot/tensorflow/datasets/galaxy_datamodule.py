"""``GalaxyDataModule``: catalogs -> train/val/test/predict ``tf.data.Dataset`` pipelines
(docs/components/loading_data.md).

The twin of :class:`zoobot.pytorch.datasets.GalaxyDataModule`: the same arguments and defaults, the same
catalog validation and splits (:func:`zoobot.shared.catalogs.split_catalog` with ``seed``), the same
train and deterministic eval transforms (:mod:`zoobot.tensorflow.datasets.transforms`). Upstream Zoobot's
call works as written::

    datamodule = GalaxyDataModule(label_cols=['ring'], catalog=train_catalog, batch_size=32)

Batches are ``(images, labels)`` with images (B, H, W, C) float32 in [0, 1] (NHWC) and labels float32
((B,) for one label column, (B, n) for several); predict batches are ``(images, id_str)``. The output is
already model input: do not pass it through :func:`zoobot.tensorflow.preprocess.preprocess_dataset`.

Pipeline of each split: the catalog's paths and labels -> (train: seeded shuffle, new order each epoch)
-> read + decode inside the graph (``tf.io``; JPEGs at reduced scale when large; FITS through
``tf.numpy_function``) -> transform -> batch (train: drop the last partial batch) -> prefetch.
``num_workers`` sets ``num_parallel_calls`` of the decode/transform step (0: sequential) and
``prefetch_factor`` the number of batches prefetched (ignored when ``num_workers=0``, as in PyTorch).
"""
from __future__ import annotations

import logging
import os
from typing import Sequence

import numpy as np
import pandas as pd
import tensorflow as tf

from zoobot.shared.datamodules import (
    available_cpus,
    check_transform_overrides,
    loader_settings,
    pair,
    prepare_catalogs,
)
from zoobot.shared.errors import unknown_option_error
from zoobot.shared.preprocessing import FitsScaling, Preprocessing, training_record
from zoobot.tensorflow.data_utils.image_datasets import (
    check_image_headers,
    file_format_of,
    read_fits_file,
    read_image_file,
)
from zoobot.tensorflow.datasets.transforms import (CustomTransform, EvalTransform, TrainTransform, check_crop_bounds,
                                                   default_transforms)

__all__ = ["GalaxyDataModule", "available_cpus", "catalog_dataset", "catalog_labels"]

logger = logging.getLogger(__name__)

_STAGES = ("fit", "validate", "test", "predict", None)


def catalog_labels(catalog: pd.DataFrame, label_cols: Sequence[str]) -> np.ndarray:
    """The labels :func:`catalog_dataset` yields: float32, (N,) for one label column, (N, n) for several.

    Examples
    --------
    >>> catalog_labels(pd.DataFrame({'a': [1, 2], 'b': [3, 4]}), ['a']).tolist()
    [1.0, 2.0]
    """
    labels = catalog[list(label_cols)].to_numpy(dtype=np.float32)
    return labels[:, 0] if len(label_cols) == 1 else labels


def catalog_dataset(
    catalog: pd.DataFrame,
    transform,
    label_cols: Sequence[str] | None = None,
    *,
    batch_size: int,
    shuffle: bool = False,
    drop_remainder: bool = False,
    with_ids: bool = False,
    seed: int = 42,
    num_parallel_calls: int | None = tf.data.AUTOTUNE,
    prefetch: int | None = tf.data.AUTOTUNE,
    fits_scaling="percentile",
    private_threads: int | None = None,
) -> tf.data.Dataset:
    """A batched dataset of the catalog's images (transformed) with labels or ids.

    (Over 80 lines only for its numpydoc; the body builds one pipeline.)

    Parameters
    ----------
    catalog : pandas.DataFrame
        ``file_loc``, ``id_str`` and ``label_cols`` (already validated).
    transform : callable
        ``transform(image, seed)`` -> HWC float32 [0, 1], e.g. a :mod:`~zoobot.tensorflow.datasets.transforms`
        class. Its ``min_source_size`` (if any) lets large JPEGs decode at reduced scale.
    label_cols : list of str, optional
        Labels yielded next to the images (float32, (B,) for one column, (B, n) for several).
    batch_size : int, keyword-only
    shuffle, drop_remainder : bool, keyword-only
    with_ids : bool, keyword-only
        Yield ``(images, id_str)`` instead of labels (prediction).
    seed : int, keyword-only
        Seeds the shuffle and the per-image augmentation seeds (``tf.data.Dataset.random``; new ones each epoch).
    num_parallel_calls, prefetch : int or None, keyword-only
        Parallel decode/transform calls (None: sequential) and prefetched batches (None: no prefetch).
    fits_scaling : str, dict or FitsScaling, keyword-only
        How FITS pixels are scaled (:data:`zoobot.shared.preprocessing.FITS_SCALINGS`).
    private_threads : int, keyword-only, optional
        Run the pipeline on its own pool of this many threads (each map call single-threaded), so that
        decoding never occupies the threads that dispatch the model's ops (prediction; see
        docs/benchmarks.md). None: TensorFlow's shared pools.

    Returns
    -------
    tf.data.Dataset
        ``(images, labels)``, ``(images, id_str)`` or ``images`` batches.
    """
    file_locs = catalog["file_loc"].map(os.fspath).astype(str).to_numpy()
    columns = {"file_loc": file_locs, "id_str": catalog["id_str"].astype(str).to_numpy()}
    label_cols = list(label_cols or [])
    if label_cols and not with_ids:
        columns["label"] = catalog_labels(catalog, label_cols)
    python_loader = any(file_format_of(p) == "fits" for p in file_locs)
    min_size = getattr(transform, "min_source_size", None)

    dataset = tf.data.Dataset.from_tensor_slices(columns)
    if shuffle:
        dataset = dataset.shuffle(len(catalog), seed=seed, reshuffle_each_iteration=True)
    seeds = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True).batch(2)
    dataset = tf.data.Dataset.zip((dataset, seeds))

    def load_and_transform(element, image_seed):
        if python_loader:  # any FITS: every file through zoobot.shared.images (float32 [0, 1])
            image = read_fits_file(element["file_loc"], element["id_str"], channels=3, fits_scaling=fits_scaling)
        else:
            image = read_image_file(element["file_loc"], element["id_str"], channels=3, min_size=min_size)
        image = transform(image, image_seed)
        if with_ids:
            return image, element["id_str"]
        if "label" in element:
            return image, element["label"]
        return image

    if num_parallel_calls is None:
        dataset = dataset.map(load_and_transform)
    else:
        dataset = dataset.map(load_and_transform, num_parallel_calls=num_parallel_calls, deterministic=True)
    dataset = dataset.batch(batch_size, drop_remainder=drop_remainder)
    if prefetch:
        dataset = dataset.prefetch(prefetch)
    autotuned = tf.data.AUTOTUNE in (num_parallel_calls, prefetch)
    return dataset.with_options(_pipeline_options(private_threads, autotuned))


def _pipeline_options(private_threads: int | None, autotuned: bool) -> tf.data.Options:
    """Options of a catalog pipeline: its own pool of ``private_threads`` threads (each map call single-threaded)
    when given; the autotuner only where a setting is ``AUTOTUNE``.

    Without anything to tune, the autotuner still costs time at the end of every pass: deleting the iterator
    waits for its sleep, whose period doubles from 10 ms, so a pass over the data (an epoch, a validation
    run, a prediction) ended up to one doubling late: 0.3 s after 0.4 s passes, 1.5 s and 9.5 s after 9 s
    prediction calls (docs/benchmarks.md, section 3c).
    """
    options = tf.data.Options()
    if private_threads:
        options.threading.private_threadpool_size = int(private_threads)
        options.threading.max_intra_op_parallelism = 1
    if not autotuned:
        options.autotune.enabled = False
    return options


class GalaxyDataModule:
    """Data module of galaxy images and labels from catalogs, as ``tf.data`` pipelines.

    Parameters
    ----------
    label_cols : list of str or None
        Label columns (e.g. ``['ring']`` or ``schema.label_cols``); None or [] for prediction only.
    catalog : DataFrame, optional
        One catalog to split into train/val/test by ``id_str`` hash with ``seed``.
    train_fraction, val_fraction, test_fraction : float
        Split fractions for ``catalog`` (sum 1).
    train_catalog, val_catalog, test_catalog : DataFrame, optional
        Explicit splits (instead of ``catalog``).
    predict_catalog : DataFrame, optional
        Galaxies to predict (``id_str``, ``file_loc``; no labels needed).
    greyscale : bool, default False
        Average R, G, B into one channel (for 1-channel models).
    crop_scale_bounds : (float, float), default (0.7, 0.8)
        Area fraction of the random training crop; eval crops keep the mean.
    crop_ratio_bounds : (float, float), default (0.9, 1.1)
        Aspect-ratio range of the random training crop.
    resize_after_crop : int, default 224
        Output image side in pixels.
    custom_albumentation_transform : callable or (train, test), optional
        A callable on tf tensors: called on the HWC float32 [0, 1] image (after the greyscale conversion)
        instead of the default pipeline; must return HWC float [0, 1] (or uint8) and be graph-compatible.
    custom_torchvision_transform : callable or (train, test), optional
        As ``custom_albumentation_transform`` (both names kept for a signature identical to PyTorch's).
    batch_size : int, default 256
    use_memory : bool, default False
        Not implemented (raises NotImplementedError).
    num_workers : int, default 4
        ``num_parallel_calls`` of the decode/transform step (0: sequential); more than the available
        cores are capped (with a warning).
    prefetch_factor : int, default 4
        Batches prefetched (ignored when ``num_workers=0``).
    seed : int, default 42
        Seeds the split, the training shuffle and the augmentations.
    train_transform, test_transform : callable, optional (keyword-only)
        Replace the default transforms: called on the decoded HWC tensor (uint8 for jpg/png, float32 [0, 1]
        for FITS); return HWC float [0, 1] (or uint8).
    test_time_augmentation : bool, default False (keyword-only)
        Use the random training transform for validation/test/predict too.
    check_valid_paths : bool, default True (keyword-only)
        Check every ``file_loc`` exists (E5) and starts like a PNG/JPEG file (E6) when the data module is built.
    fits_scaling : str, dict or FitsScaling, default 'percentile' (keyword-only)
        How FITS pixels are scaled to [0, 1] (:data:`zoobot.shared.preprocessing.FITS_SCALINGS`;
        docs/components/preprocessing.md). JPEG/PNG pixels are always divided by 255.

    Raises
    ------
    ValueError
        ``catalog`` together with explicit splits; bad fractions, crop bounds, sizes; conflicting transforms.
    CatalogError
        (E1-E4) invalid catalogs; ``FileNotFoundError`` (E5) missing files; ``ImageLoadError`` (E6).
    NotImplementedError
        ``use_memory=True``.

    Examples
    --------
    >>> from zoobot.shared.synthetic import make_synthetic_catalog  # doctest: +SKIP
    >>> catalog, label_cols = make_synthetic_catalog('data', n_galaxies=50, label='ring')  # doctest: +SKIP
    >>> dm = GalaxyDataModule(label_cols, catalog=catalog, batch_size=8)  # doctest: +SKIP
    >>> dm.setup('fit')  # doctest: +SKIP
    >>> images, labels = next(iter(dm.train_dataloader()))  # doctest: +SKIP
    >>> images.shape  # doctest: +SKIP
    TensorShape([8, 224, 224, 3])
    """

    def __init__(
        self,
        label_cols: Sequence[str] | None,
        catalog: pd.DataFrame | None = None,
        train_fraction: float = 0.7,
        val_fraction: float = 0.1,
        test_fraction: float = 0.2,
        train_catalog: pd.DataFrame | None = None,
        val_catalog: pd.DataFrame | None = None,
        test_catalog: pd.DataFrame | None = None,
        predict_catalog: pd.DataFrame | None = None,
        greyscale: bool = False,
        crop_scale_bounds=(0.7, 0.8),
        crop_ratio_bounds=(0.9, 1.1),
        resize_after_crop: int = 224,
        custom_albumentation_transform=None,
        custom_torchvision_transform=None,
        batch_size: int = 256,
        use_memory: bool = False,
        num_workers: int = 4,
        prefetch_factor: int = 4,
        seed: int = 42,
        *,
        train_transform=None,
        test_transform=None,
        test_time_augmentation: bool = False,
        check_valid_paths: bool = True,
        fits_scaling="percentile",
    ):
        if use_memory:
            raise NotImplementedError(
                "use_memory=True (caching decoded images in RAM) is not implemented; use num_workers > 0 and "
                "prefetch_factor to keep the model fed instead."
            )
        if isinstance(label_cols, str):
            label_cols = [label_cols]
        self.label_cols = list(label_cols) if label_cols else []
        batch_size, num_workers, self.prefetch_factor = loader_settings(batch_size, num_workers, prefetch_factor)
        self.batch_size = int(batch_size)
        self.seed = int(seed)
        self.greyscale = bool(greyscale)
        self.crop_scale_bounds, self.crop_ratio_bounds = check_crop_bounds(crop_scale_bounds, crop_ratio_bounds)
        self.resize_after_crop = resize_after_crop
        self.test_time_augmentation = bool(test_time_augmentation)
        self.check_valid_paths = bool(check_valid_paths)
        self.fits_scaling = FitsScaling.from_value(fits_scaling)

        self.num_workers = num_workers

        self.train_transform, self.test_transform = self._choose_transforms(
            train_transform, test_transform, custom_albumentation_transform, custom_torchvision_transform
        )
        self.train_catalog, self.val_catalog, self.test_catalog, self.predict_catalog = self._prepare_catalogs(
            catalog, train_fraction, val_fraction, test_fraction, train_catalog, val_catalog, test_catalog,
            predict_catalog, check_valid_paths,
        )
        self.train_dataset = self.val_dataset = self.test_dataset = self.predict_dataset = None

    # ------------------------------------------------------------------ construction helpers
    @property
    def channels(self) -> int:
        """Channels of the images this data module yields with the default transforms."""
        return 1 if self.greyscale else 3

    def _choose_transforms(self, train_transform, test_transform, custom_albumentation, custom_torchvision):
        check_transform_overrides(train_transform, test_transform, custom_albumentation, custom_torchvision)
        default_train, default_eval = default_transforms(
            self.greyscale, self.resize_after_crop, self.crop_scale_bounds, self.crop_ratio_bounds,
            self.test_time_augmentation,
        )
        if custom_albumentation is not None or custom_torchvision is not None:
            kind = "albumentation" if custom_albumentation is not None else "torchvision"
            custom_train, custom_test = pair(custom_albumentation if custom_albumentation is not None
                                              else custom_torchvision, f"custom_{kind}_transform")
            return (CustomTransform(custom_train, "float", self.channels),
                    CustomTransform(custom_test, "float", self.channels))
        return self._as_pipeline_transform(train_transform, default_train), \
            self._as_pipeline_transform(test_transform, default_eval)

    @staticmethod
    def _as_pipeline_transform(transform, default):
        """zoobot's own transforms run as they are (a ``TrainTransform`` then gets the pipeline's per-image
        seeds, so a ``seed`` reproduces its augmentations); other callables are wrapped."""
        if transform is None:
            return default
        if isinstance(transform, (TrainTransform, EvalTransform)):
            return transform
        return CustomTransform(transform, "raw")

    def _prepare_catalogs(self, catalog, train_fraction, val_fraction, test_fraction, train_catalog, val_catalog,
                          test_catalog, predict_catalog, check_valid_paths):
        return prepare_catalogs(
            catalog, (train_fraction, val_fraction, test_fraction), train_catalog, val_catalog, test_catalog,
            predict_catalog, label_cols=self.label_cols, seed=self.seed, check_valid_paths=check_valid_paths,
            check_files=lambda cat: self._check_headers(cat, check_valid_paths),
        )

    @staticmethod
    def _check_headers(catalog, check_valid_paths) -> None:
        """E6 up front for PNG/JPEG files that are not images (cheap: 8 bytes per file)."""
        if catalog is None or not check_valid_paths:
            return
        paths = catalog["file_loc"].map(os.fspath).tolist()
        is_pil = [file_format_of(p) in ("png", "jpg") for p in paths]
        if any(is_pil):
            check_image_headers([p for p, ok in zip(paths, is_pil) if ok],
                                [i for i, ok in zip(catalog["id_str"], is_pil) if ok])

    # ------------------------------------------------------------------ Lightning-style API
    def prepare_data(self) -> None:
        """Nothing to download (kept for the Lightning-style interface)."""

    def setup(self, stage: str | None = None) -> None:
        """Build the datasets a stage needs: 'fit' (train + val), 'validate' (val), 'test', 'predict', or None
        (train + val + test, and predict if given).

        Raises
        ------
        ValueError
            If a catalog the stage needs was not given, naming it.
        """
        if stage not in _STAGES:
            raise unknown_option_error("stage", stage, [s for s in _STAGES if s])
        needs = {"fit": ("train", "val"), "validate": ("val",), "test": ("test",), "predict": ("predict",),
                 None: ("train", "val", "test")}[stage]
        missing = [f"{split}_catalog" for split in needs if getattr(self, f"{split}_catalog") is None]
        if missing:
            raise ValueError(
                f"setup({stage!r}) needs {', '.join(missing)}, which was not given to GalaxyDataModule "
                "(pass catalog= to split one catalog automatically, or the explicit split catalogs; "
                "predict_catalog= for prediction)."
            )
        if stage is None and self.predict_catalog is not None:
            needs = needs + ("predict",)
        for split in needs:
            setattr(self, f"{split}_dataset", self._build(split))

    def _build(self, split: str) -> tf.data.Dataset:
        catalog = getattr(self, f"{split}_catalog")
        train = split == "train"
        drop_remainder = train and len(catalog) > self.batch_size
        if train and not drop_remainder:
            logger.info("Training set (%d) is not larger than batch_size (%d): one partial batch per epoch.",
                        len(catalog), self.batch_size)
        return catalog_dataset(
            catalog,
            self.train_transform if train else self.test_transform,
            None if split == "predict" else self.label_cols,
            batch_size=self.batch_size,
            shuffle=train,
            drop_remainder=drop_remainder,
            with_ids=split == "predict",
            seed=self.seed,
            num_parallel_calls=self.num_workers or None,
            prefetch=self.prefetch_factor,
            fits_scaling=self.fits_scaling,
            # prediction: decoding on its own threads, off the model's op-dispatch (inter-op) threads
            private_threads=max(1, self.num_workers) if split == "predict" else None,
        )

    def preprocessing_record(self) -> Preprocessing:
        """What a model trained on this data module should remember (:mod:`zoobot.shared.preprocessing`).

        The size is the evaluation transform's when it is one of zoobot's, else ``resize_after_crop``;
        the image formats are those of the training catalog.
        """
        return training_record(self)

    def _dataset(self, split: str) -> tf.data.Dataset:
        dataset = getattr(self, f"{split}_dataset")
        if dataset is None:
            self.setup({"train": "fit", "val": "validate", "test": "test", "predict": "predict"}[split])
            dataset = getattr(self, f"{split}_dataset")
        return dataset

    def train_dataloader(self) -> tf.data.Dataset:
        """Shuffled, augmented ``(images, labels)`` batches; the last partial batch is dropped (unless it is the
        only batch)."""
        return self._dataset("train")

    def val_dataloader(self) -> tf.data.Dataset:
        """Deterministic ``(images, labels)`` batches of the val split, in catalog order."""
        return self._dataset("val")

    def test_dataloader(self) -> tf.data.Dataset:
        """Deterministic ``(images, labels)`` batches of the test split, in catalog order."""
        return self._dataset("test")

    def predict_dataloader(self) -> tf.data.Dataset:
        """``(images, id_str)`` batches in ``predict_catalog`` order."""
        return self._dataset("predict")

    def __repr__(self) -> str:
        sizes = {split: None if getattr(self, f"{split}_catalog") is None else len(getattr(self, f"{split}_catalog"))
                 for split in ("train", "val", "test", "predict")}
        return (f"{type(self).__name__}(label_cols={self.label_cols[:3]}{'...' if len(self.label_cols) > 3 else ''}, "
                f"sizes={sizes}, batch_size={self.batch_size}, channels={self.channels}, "
                f"resize_after_crop={self.resize_after_crop})")
