"""``GalaxyDataModule``: catalogs -> train/val/test/predict DataLoaders (docs/components/loading_data.md).

Upstream Zoobot's call works as written::

    datamodule = GalaxyDataModule(label_cols=['ring'], catalog=train_catalog, batch_size=32)

A single ``catalog`` is split by ``id_str`` hash (:func:`zoobot.shared.catalogs.split_catalog`, 70/10/20 by
default); or pass ``train_catalog``/``val_catalog``/``test_catalog`` yourself. Every catalog is validated
(:func:`zoobot.shared.catalogs.validate_catalog`) when the data module is built, before any model work.

Batches are ``(images, labels)`` with images (B, C, H, W) float32 in [0, 1] and labels float32; predict
batches are images only. Training batches are augmented (:class:`~zoobot.pytorch.datasets.transforms.TrainTransform`);
validation, test and predict batches are deterministic (:class:`~zoobot.pytorch.datasets.transforms.EvalTransform`)
unless ``test_time_augmentation=True``.
"""
from __future__ import annotations

import logging
import random
from typing import Sequence

import lightning as L
import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader, RandomSampler

from zoobot.pytorch.datasets.galaxy_dataset import GalaxyDataset
from zoobot.pytorch.datasets.transforms import CustomTransform, check_crop_bounds, default_transforms
from zoobot.shared.datamodules import (
    available_cpus,
    check_transform_overrides,
    loader_settings,
    pair,
    prepare_catalogs,
)
from zoobot.shared.errors import unknown_option_error
from zoobot.shared.preprocessing import FitsScaling, Preprocessing, training_record

__all__ = ["GalaxyDataModule", "EpochSeededRandomSampler", "available_cpus"]

logger = logging.getLogger(__name__)

_STAGES = ("fit", "validate", "test", "predict", None)


def _seed_worker(worker_id: int) -> None:
    """Seed numpy and random in each worker from its torch seed (itself derived from the loader's generator)."""
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    random.seed(seed)


class EpochSeededRandomSampler(RandomSampler):
    """Random order of a training epoch, a function of ``(seed, epoch)`` only.

    A ``RandomSampler`` with a persistent generator draws each epoch's order from the state the
    previous epochs left behind, so a run resumed from a checkpoint at epoch k would see another
    order than the uninterrupted run. Here epoch ``e`` is always shuffled by a generator seeded
    from ``(seed, e)``. Lightning calls :meth:`set_epoch` before every epoch (including the first
    epoch of a resumed run); in a plain loop the epoch counts up by one per ``iter()``.

    Parameters
    ----------
    data_source : sized
        The dataset.
    seed : int
        The data module's seed.

    Examples
    --------
    >>> sampler = EpochSeededRandomSampler(range(5), seed=0)
    >>> sampler.set_epoch(3)
    >>> first = list(sampler)
    >>> sampler.set_epoch(3)
    >>> list(sampler) == first
    True
    """

    def __init__(self, data_source, seed: int = 42):
        super().__init__(data_source)
        self.seed = int(seed)
        self._next_epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Shuffle the next ``iter()`` as epoch ``epoch``."""
        self._next_epoch = int(epoch)

    def __iter__(self):
        # a generator function: the epoch is read when the first index is drawn, i.e. after Lightning's
        # set_epoch even if the DataLoader iterator was created earlier
        epoch, self._next_epoch = self._next_epoch, self._next_epoch + 1
        generator = torch.Generator().manual_seed((self.seed * 1_000_003 + epoch) % 2**63)
        yield from torch.randperm(len(self.data_source), generator=generator).tolist()


class GalaxyDataModule(L.LightningDataModule):
    """Lightning data module of galaxy images and labels from catalogs.

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
        Albumentations-style transform, called as ``t(image=hwc_array)['image']`` (after the greyscale
        conversion) instead of the default pipeline.
    custom_torchvision_transform : callable or (train, test), optional
        Called on a CHW float [0, 1] tensor (after the greyscale conversion) instead of the default pipeline.
    batch_size : int, default 256
    use_memory : bool, default False
        Not implemented (raises NotImplementedError).
    num_workers : int, default 4
        Loader worker processes; more than the available cores are capped (with a warning).
    prefetch_factor : int, default 4
        Batches prefetched per worker (ignored when ``num_workers=0``).
    seed : int, default 42
        Seeds the split, the training shuffle and the worker RNGs.
    train_transform, test_transform : callable, optional (keyword-only)
        Replace the default transforms: called on the loaded HWC array (uint8 for jpg/png, float32 for
        FITS); return a CHW float tensor in [0, 1] (an HWC array is converted). For fast finetuning of a
        frozen encoder pass a deterministic one, ``train_transform=EvalTransform(channels=3,
        resize_after_crop=224)``: each image is then encoded once per fit and never read again
        (:mod:`zoobot.pytorch.training.feature_cache`).
    test_time_augmentation : bool, default False (keyword-only)
        Use the random training transform for validation/test/predict too.
    check_valid_paths : bool, default True (keyword-only)
        Check every ``file_loc`` exists when the data module is built (E5).
    fits_scaling : str, dict or FitsScaling, default 'percentile' (keyword-only)
        How FITS pixels are scaled to [0, 1] (:data:`zoobot.shared.preprocessing.FITS_SCALINGS`;
        docs/components/preprocessing.md). JPEG/PNG pixels are always divided by 255.

    Raises
    ------
    ValueError
        ``catalog`` together with explicit splits; bad fractions, crop bounds, sizes; conflicting transforms.
    CatalogError
        (E1-E4) invalid catalogs; ``FileNotFoundError`` (E5) missing files.
    NotImplementedError
        ``use_memory=True``.

    Examples
    --------
    >>> from zoobot.shared.synthetic import make_synthetic_catalog  # doctest: +SKIP
    >>> catalog, label_cols = make_synthetic_catalog('data', n_galaxies=50, label='ring')  # doctest: +SKIP
    >>> dm = GalaxyDataModule(label_cols, catalog=catalog, batch_size=8, num_workers=0)  # doctest: +SKIP
    >>> dm.setup('fit')  # doctest: +SKIP
    >>> images, labels = next(iter(dm.train_dataloader()))  # doctest: +SKIP
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
        super().__init__()
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
            kind = "albumentations" if custom_albumentation is not None else "torchvision"
            custom_train, custom_test = pair(custom_albumentation if custom_albumentation is not None
                                              else custom_torchvision, f"custom_{kind}_transform")
            return (CustomTransform(custom_train, kind, self.channels),
                    CustomTransform(custom_test, kind, self.channels))
        train = default_train if train_transform is None else CustomTransform(train_transform, "array")
        test = default_eval if test_transform is None else CustomTransform(test_transform, "array")
        return train, test

    def _prepare_catalogs(self, catalog, train_fraction, val_fraction, test_fraction, train_catalog, val_catalog,
                          test_catalog, predict_catalog, check_valid_paths):
        return prepare_catalogs(
            catalog, (train_fraction, val_fraction, test_fraction), train_catalog, val_catalog, test_catalog,
            predict_catalog, label_cols=self.label_cols, seed=self.seed, check_valid_paths=check_valid_paths,
        )

    # ------------------------------------------------------------------ Lightning API
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
            if split == "train":
                self.train_dataset = GalaxyDataset(self.train_catalog, self.label_cols, self.train_transform,
                                                   fits_scaling=self.fits_scaling)
            elif split == "predict":
                self.predict_dataset = GalaxyDataset(self.predict_catalog, None, self.test_transform,
                                                     fits_scaling=self.fits_scaling)
            else:
                setattr(self, f"{split}_dataset", GalaxyDataset(getattr(self, f"{split}_catalog"), self.label_cols,
                                                                self.test_transform, fits_scaling=self.fits_scaling))

    def _loader(self, dataset, shuffle: bool = False, drop_last: bool = False, persistent: bool = True) -> DataLoader:
        workers = self.num_workers
        # the shuffle depends on (seed, epoch) only, so a resumed run sees the same orders as an uninterrupted one;
        # the loader's own generator only seeds the worker processes
        sampler = EpochSeededRandomSampler(dataset, self.seed) if shuffle else None
        return DataLoader(
            dataset,
            batch_size=self.batch_size,
            sampler=sampler,
            drop_last=drop_last,
            num_workers=workers,
            prefetch_factor=self.prefetch_factor if workers > 0 else None,
            persistent_workers=persistent and workers > 0,
            pin_memory=torch.cuda.is_available(),
            worker_init_fn=_seed_worker if workers > 0 else None,
            generator=torch.Generator().manual_seed(self.seed),
        )

    def _dataset(self, split: str) -> GalaxyDataset:
        dataset = getattr(self, f"{split}_dataset")
        if dataset is None:
            self.setup({"train": "fit", "val": "validate", "test": "test", "predict": "predict"}[split])
            dataset = getattr(self, f"{split}_dataset")
        return dataset

    def train_dataloader(self) -> DataLoader:
        """Shuffled, augmented batches; the last partial batch is dropped (unless it is the only batch)."""
        dataset = self._dataset("train")
        drop_last = len(dataset) > self.batch_size
        if not drop_last:
            logger.info("Training set (%d) is not larger than batch_size (%d): one partial batch per epoch.",
                        len(dataset), self.batch_size)
        return self._loader(dataset, shuffle=True, drop_last=drop_last)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self._dataset("val"))

    def test_dataloader(self) -> DataLoader:
        return self._loader(self._dataset("test"))

    def predict_dataloader(self) -> DataLoader:
        """Batches of images only (upstream-compatible), in ``predict_catalog`` order."""
        return self._loader(self._dataset("predict"))

    def encoding_dataloader(self, split: str) -> DataLoader:
        """One pass over a split's own dataset in catalog order, for computing per-row features once.

        Same dataset (loading, transform, failure handling), ``batch_size`` and ``num_workers`` as the
        split's usual loader, but never shuffled or truncated, and its workers stop after the pass. Used by
        the finetuning models' feature replay (:mod:`zoobot.pytorch.training.feature_cache`).

        Parameters
        ----------
        split : {'train', 'val', 'test', 'predict'}
        """
        if split not in ("train", "val", "test", "predict"):
            raise unknown_option_error("split", split, ["train", "val", "test", "predict"])
        return self._loader(self._dataset(split), persistent=False)

    def restore_images(self) -> None:
        """Put every dataset back into image mode (undo :meth:`GalaxyDataset.use_features`)."""
        for split in ("train", "val", "test", "predict"):
            dataset = getattr(self, f"{split}_dataset", None)
            if isinstance(dataset, GalaxyDataset) and dataset.features_mode:
                dataset.use_features(None)

    def on_exception(self, exception: BaseException) -> None:
        """Lightning hook: a fit that failed leaves no dataset serving precomputed features."""
        self.restore_images()

    def predict_dataloader_with_ids(self, on_bad_image: str = "record") -> DataLoader:
        """Predict batches as dicts ``{'image', 'index', 'id_str', 'failed'}`` in ``predict_catalog`` order.

        ``index`` is the row position in ``predict_catalog``; with ``on_bad_image='record'`` unreadable images
        become zero images with ``failed=True`` (``loader.dataset.describe_failure(index)`` gives the error).
        Used by :func:`zoobot.pytorch.predictions.predict_on_catalog.predict` to match rows by ``id_str``.
        """
        if self.predict_catalog is None:
            raise ValueError("predict_dataloader_with_ids needs predict_catalog, which was not given")
        dataset = GalaxyDataset(self.predict_catalog, None, self.test_transform, return_index=True,
                                on_bad_image=on_bad_image, fits_scaling=self.fits_scaling)
        return self._loader(dataset)

    def preprocessing_record(self) -> Preprocessing:
        """What a model trained on this data module should remember (:mod:`zoobot.shared.preprocessing`).

        The size is the evaluation transform's when it is one of zoobot's, else ``resize_after_crop``;
        the image formats are those of the training catalog.
        """
        return training_record(self)

    def __repr__(self) -> str:
        sizes = {split: None if getattr(self, f"{split}_catalog") is None else len(getattr(self, f"{split}_catalog"))
                 for split in ("train", "val", "test", "predict")}
        return (f"{type(self).__name__}(label_cols={self.label_cols[:3]}{'...' if len(self.label_cols) > 3 else ''}, "
                f"sizes={sizes}, batch_size={self.batch_size}, channels={self.channels}, "
                f"resize_after_crop={self.resize_after_crop})")
