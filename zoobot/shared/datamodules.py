"""What the two ``GalaxyDataModule`` classes share: loader settings, catalog splits, transform choice.

:class:`zoobot.pytorch.datasets.GalaxyDataModule` (DataLoaders) and
:class:`zoobot.tensorflow.datasets.GalaxyDataModule` (``tf.data`` pipelines) take the same arguments
and check them here, so that both backends refuse the same input with the same words; each keeps only
how it reads and batches images. See docs/components/loading_data.md.
"""
from __future__ import annotations

import math
import warnings
from typing import Callable

from zoobot.shared.catalogs import split_catalog, validate_catalog
from zoobot.shared.validation import available_cpus, check_int, is_int

__all__ = ["available_cpus", "loader_settings", "pair", "prepare_catalogs", "default_transform_pair",
           "check_transform_overrides", "check_crop_bounds", "check_crop_position", "check_size", "check_channels",
           "CentreCropGeometry"]


def loader_settings(batch_size, num_workers, prefetch_factor, stacklevel: int = 3) -> tuple[int, int, int | None]:
    """``(batch_size, num_workers, prefetch_factor)`` checked; more workers than cores are cut to the cores
    (one warning); no prefetching without workers.

    Examples
    --------
    >>> loader_settings(32, 0, 4)
    (32, 0, None)
    """
    batch_size = check_int("batch_size", batch_size, minimum=1)
    num_workers = check_int("num_workers", num_workers, minimum=0)
    prefetch_factor = check_int("prefetch_factor", prefetch_factor, minimum=0)
    cpus = available_cpus()
    if num_workers > cpus:
        warnings.warn(
            f"num_workers={num_workers} but only {cpus} CPU cores are available; using num_workers={cpus}.",
            UserWarning,
            stacklevel=stacklevel,
        )
        num_workers = cpus
    return batch_size, num_workers, (prefetch_factor if num_workers > 0 else None)


def pair(custom, what: str):
    """A custom transform given once (used for all splits) or as (train, test).

    Examples
    --------
    >>> pair(None, 'custom_torchvision_transform'), pair(abs, 'x') == (abs, abs)
    ((None, None), True)
    """
    if custom is None:
        return None, None
    if isinstance(custom, (tuple, list)):
        if len(custom) != 2:
            raise ValueError(f"{what} must be one transform or a (train, test) pair, got {len(custom)} items")
        return custom[0], custom[1]
    return custom, custom


def check_transform_overrides(train_transform, test_transform, custom_albumentation, custom_torchvision) -> None:
    """At most one way to override the default transforms."""
    given = [name for name, value in (("train_transform/test_transform", train_transform or test_transform),
                                      ("custom_albumentation_transform", custom_albumentation),
                                      ("custom_torchvision_transform", custom_torchvision)) if value is not None]
    if len(given) > 1:
        raise ValueError(f"Give at most one way to override the transforms; got {' and '.join(given)}.")


def default_transform_pair(train_class, eval_class, greyscale: bool, resize_after_crop: int, crop_scale_bounds,
                           crop_ratio_bounds, test_time_augmentation: bool):
    """``(train, eval)`` transforms of a backend's classes; with test-time augmentation eval is the train one."""
    channels = 1 if greyscale else 3
    train = train_class(channels, resize_after_crop, crop_scale_bounds, crop_ratio_bounds)
    if test_time_augmentation:
        return train, train
    return train, eval_class(channels, resize_after_crop, crop_scale_bounds)


def prepare_catalogs(catalog, fractions: tuple, train_catalog, val_catalog, test_catalog, predict_catalog, *,
                     label_cols: list, seed: int, check_valid_paths: bool,
                     check_files: Callable | None = None) -> tuple:
    """``(train, val, test, predict)`` catalogs, validated: one ``catalog`` split by ``id_str`` hash with
    ``fractions`` (train, val, test), or the explicit ones; never both.

    ``check_files(catalog)``, if given, is called on every validated catalog (the full one before a split).
    """
    explicit = {"train_catalog": train_catalog, "val_catalog": val_catalog, "test_catalog": test_catalog}
    given = [k for k, v in explicit.items() if v is not None]
    if catalog is not None and given:
        raise ValueError(
            f"Pass either catalog (split automatically with train/val/test_fraction) or explicit "
            f"train_catalog/val_catalog/test_catalog, not both: got catalog and {', '.join(given)}."
        )
    check_files = check_files or (lambda _: None)
    options = dict(label_cols=label_cols or None, label_kind="regression" if label_cols else None,
                   check_valid_paths=check_valid_paths)
    if catalog is not None:
        catalog = validate_catalog(catalog, name="catalog", **options)
        check_files(catalog)
        train, val, test = split_catalog(catalog, *fractions, seed=seed)
        explicit = {"train_catalog": train, "val_catalog": val, "test_catalog": test if len(test) else None}
    else:
        explicit = {name: None if cat is None else validate_catalog(cat, name=name, **options)
                    for name, cat in explicit.items()}
        for cat in explicit.values():
            if cat is not None:
                check_files(cat)
    if predict_catalog is not None:
        predict_catalog = validate_catalog(predict_catalog, label_cols=None, label_kind=None,
                                           check_valid_paths=check_valid_paths, name="predict_catalog")
        check_files(predict_catalog)
    return explicit["train_catalog"], explicit["val_catalog"], explicit["test_catalog"], predict_catalog


def check_crop_bounds(crop_scale_bounds, crop_ratio_bounds) -> tuple[tuple[float, float], tuple[float, float]]:
    """Validate the crop area-fraction and aspect-ratio bounds; return them as float pairs.

    Examples
    --------
    >>> check_crop_bounds((0.7, 0.8), [0.9, 1.1])
    ((0.7, 0.8), (0.9, 1.1))
    """
    out = []
    for what, bounds, upper in (("crop_scale_bounds", crop_scale_bounds, 1.0),
                                ("crop_ratio_bounds", crop_ratio_bounds, math.inf)):
        try:
            low, high = (float(b) for b in bounds)
        except (TypeError, ValueError):
            raise ValueError(f"{what} must be a (low, high) pair of numbers, got {bounds!r}") from None
        if not 0 < low <= high <= upper:
            raise ValueError(f"{what} must satisfy 0 < low <= high{' <= 1' if upper == 1 else ''}, got {bounds!r}")
        out.append((low, high))
    return out[0], out[1]


#: Where the random training crop sits: ``"centre"`` (the default) keeps it on the image centre, as the
#: evaluation crop is, and draws only its area and aspect; ``"random"`` places it uniformly at random, as
#: torchvision's ``RandomResizedCrop`` (and upstream Zoobot) does. Survey cutouts are centred on the
#: galaxy, and the random offsets made the vote fractions 6-8 % worse at 64 px (see "Training
#: recipe and calibration" in the docs).
CROP_POSITIONS = ("centre", "random")


def check_crop_position(crop_position) -> str:
    """``"centre"`` or ``"random"`` (``"center"`` is accepted for ``"centre"``).

    Examples
    --------
    >>> check_crop_position("center")
    'centre'
    """
    value = "centre" if crop_position == "center" else crop_position
    if value not in CROP_POSITIONS:
        raise ValueError(f"crop_position must be 'centre' (the crop keeps the galaxy centred, the default) or "
                         f"'random' (torchvision's placement), got {crop_position!r}")
    return value


def check_size(resize_after_crop) -> int:
    """The output side of a transform in pixels: an integer >= 1."""
    return check_int("resize_after_crop", resize_after_crop, minimum=1)


def check_channels(channels) -> int:
    """1 (greyscale) or 3 (colour)."""
    if not is_int(channels) or channels not in (1, 3):
        raise ValueError(f"channels must be 1 (greyscale) or 3 (colour), got {channels!r}")
    return int(channels)


class CentreCropGeometry:
    """The deterministic centre crop of both backends' ``EvalTransform``: checked settings and crop size.

    The crop keeps the mean of the training ``crop_scale_bounds`` as its area fraction, so evaluation sees
    galaxies at the scale training did; ``min_source_size`` is the smallest image that needs no upsampling.

    Examples
    --------
    >>> g = CentreCropGeometry(channels=3, resize_after_crop=64, crop_scale_bounds=(0.7, 0.8))
    >>> round(g.side_fraction, 4), g.min_source_size
    (0.866, 74)
    """

    def __init__(self, channels: int = 1, resize_after_crop: int = 224, crop_scale_bounds=(0.7, 0.8)):
        self.channels = check_channels(channels)
        self.resize_after_crop = check_size(resize_after_crop)
        self.crop_scale_bounds, _ = check_crop_bounds(crop_scale_bounds, (1.0, 1.0))
        self.side_fraction = math.sqrt(sum(self.crop_scale_bounds) / 2)
        self.min_source_size = math.ceil(self.resize_after_crop / self.side_fraction)
