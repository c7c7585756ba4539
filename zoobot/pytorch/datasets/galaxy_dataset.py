"""A map-style ``torch`` Dataset of galaxy images listed in a catalog (docs/components/loading_data.md).

Each item is the image at ``catalog['file_loc']`` as a CHW float32 tensor in [0, 1], optionally with its
labels. The catalog columns are copied into numpy arrays at construction, so data-loader workers share
them without copying (no Python objects are touched per item).

Two extra modes serve prediction:

- ``return_index=True``: items are dicts ``{'image', 'index', 'id_str', 'failed'}`` (plus ``'label'`` when
  ``label_cols`` are given). ``index`` is the row position in the catalog, so predictions can be matched
  to galaxies whatever order or device they come back from.
- ``on_bad_image='record'``: an unreadable image does not stop the run; the item gets an all-zero image
  and ``failed=True`` (only visible with ``return_index=True``). Call :meth:`GalaxyDataset.describe_failure`
  on a failed index to get the error text (it retries the load in the calling process, so it works
  whatever worker hit the problem).

One extra mode serves fast finetuning of a frozen encoder (:mod:`zoobot.pytorch.training.feature_cache`):

- :meth:`GalaxyDataset.use_features`: items return a precomputed feature row ``features[index]`` in place
  of the image, with the same labels, and no file is opened. ``use_features(None)`` restores images.

Examples
--------
>>> import numpy as np, pandas as pd, tempfile, pathlib
>>> from PIL import Image
>>> folder = pathlib.Path(tempfile.mkdtemp())
>>> Image.fromarray(np.zeros((40, 40, 3), dtype=np.uint8)).save(folder / 'a.png')
>>> catalog = pd.DataFrame({'id_str': ['a'], 'file_loc': [str(folder / 'a.png')], 'ring': [1]})
>>> image, label = GalaxyDataset(catalog, label_cols=['ring'])[0]
>>> image.shape, label.shape
(torch.Size([3, 40, 40]), torch.Size([]))
"""
from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset

from zoobot.pytorch.datasets.transforms import image_to_tensor
from zoobot.shared.errors import ChannelMismatchError, ImageLoadError, unknown_option_error
from zoobot.shared.images import load_image

__all__ = ["GalaxyDataset"]

_ON_BAD_IMAGE = ("raise", "record")
# errors that concern one file and can be recorded instead of stopping a prediction run
_RECORDABLE = (ImageLoadError, ChannelMismatchError)


class GalaxyDataset(Dataset):
    """Images (and labels) of the galaxies in a catalog.

    Parameters
    ----------
    catalog : pandas.DataFrame
        Columns ``file_loc``, ``id_str`` (optional; the row number is used if absent) and ``label_cols``.
    label_cols : list of str, optional
        Label columns; labels are float32 of shape () for one column, (n,) for several.
    transform : callable, optional
        Called on the HWC array from :func:`~zoobot.shared.images.load_image`; must return a CHW float
        tensor. Default: convert to CHW float32 [0, 1] without resizing. A transform with a
        ``min_source_size`` attribute (the zoobot transforms) lets JPEGs decode at reduced scale.
    target_transform : callable, optional
        Called on the label tensor.
    return_index : bool, keyword-only, default False
        Return dicts ``{'image', 'index', 'id_str', 'failed'[, 'label']}`` instead of tuples.
    on_bad_image : {'raise', 'record'}, keyword-only, default 'raise'
        'raise': an unreadable image raises :class:`~zoobot.shared.errors.ImageLoadError` (E6) naming its
        ``id_str``. 'record': return a zero image with ``failed=True`` instead.
    fits_scaling : str, keyword-only, default 'percentile'
        Passed to ``load_image`` for FITS files.

    Raises
    ------
    CatalogError
        (E1) ``file_loc`` or a label column is missing.
    """

    def __init__(self, catalog: pd.DataFrame, label_cols: Sequence[str] | None = None,
                 transform: Callable | None = None, target_transform: Callable | None = None, *,
                 return_index: bool = False, on_bad_image: str = "raise", fits_scaling: str = "percentile"):
        from zoobot.shared.errors import CatalogError

        if not isinstance(catalog, pd.DataFrame):
            raise TypeError(f"catalog must be a pandas DataFrame, got {type(catalog).__name__}")
        if isinstance(label_cols, str):
            label_cols = [label_cols]
        label_cols = list(label_cols) if label_cols else []
        missing = [c for c in ["file_loc", *label_cols] if c not in catalog.columns]
        if missing:
            raise CatalogError(
                f"catalog is missing column(s) {missing} (file_loc: the image paths; the others: label columns). "
                f"Columns present: {list(catalog.columns)[:20]}"
            )
        if on_bad_image not in _ON_BAD_IMAGE:
            raise unknown_option_error("on_bad_image", on_bad_image, _ON_BAD_IMAGE)
        # fixed-width UTF-8 byte arrays: no per-item Python objects shared with workers, and a quarter of the
        # memory of numpy's 4-byte-per-character str arrays (100k paths of 100 characters: 10 MB, not 40 MB)
        self.file_locs = _utf8_array(catalog["file_loc"].astype(str))
        ids = catalog["id_str"].astype(str) if "id_str" in catalog.columns else map(str, range(len(catalog)))
        self.id_strs = _utf8_array(ids)
        self.label_cols = label_cols
        self.labels = catalog[label_cols].to_numpy(dtype=np.float32) if label_cols else None
        self.transform = transform
        self.target_transform = target_transform
        self.return_index = bool(return_index)
        self.on_bad_image = on_bad_image
        self.fits_scaling = fits_scaling
        self._target_size = getattr(transform, "min_source_size", None)
        self._blank = None
        self.features = None

    def use_features(self, features: torch.Tensor | None) -> None:
        """Serve ``features[index]`` instead of loading and transforming image ``index`` (None: images again).

        Labels, ``return_index`` items and the dataset length are unchanged; no file is touched while
        features are in use. Data-loader workers started before this call keep the old mode.

        Parameters
        ----------
        features : Tensor (len(self), D) or None
            One row per catalog row, in catalog order.

        Raises
        ------
        ValueError
            ``features`` does not have one row per catalog row.
        """
        if features is not None:
            if not isinstance(features, torch.Tensor) or features.ndim < 1 or features.shape[0] != len(self):
                shape = tuple(features.shape) if isinstance(features, torch.Tensor) else type(features).__name__
                raise ValueError(f"use_features needs one feature row per catalog row ({len(self)}), got {shape}")
        self.features = features

    @property
    def features_mode(self) -> bool:
        """True while items carry precomputed features instead of images (see :meth:`use_features`)."""
        return self.features is not None

    def __len__(self) -> int:
        return len(self.file_locs)

    def _id_str(self, index: int) -> str:
        """The ``id_str`` of item ``index``."""
        return self.id_strs[index].decode("utf-8", "surrogateescape")

    def _load(self, index: int):
        file_loc = self.file_locs[index].decode("utf-8", "surrogateescape")
        return load_image(file_loc, self.fits_scaling, id_str=self._id_str(index),
                          target_size=self._target_size)

    def _blank_image(self) -> torch.Tensor:
        """All-zero image of the transform's output shape (for 'record' mode)."""
        if self._blank is None:
            shape = getattr(self.transform, "output_shape", None)
            if shape is not None:
                self._blank = torch.zeros(shape, dtype=torch.float32)
            elif self.transform is None:
                raise ImageLoadError(
                    "on_bad_image='record' needs a transform with a fixed output size (so a blank image can stand in "
                    "for unreadable files); pass e.g. zoobot.pytorch.datasets.transforms.EvalTransform"
                )
            else:
                self._blank = torch.zeros_like(self.transform(np.zeros((256, 256, 3), dtype=np.uint8)))
        return self._blank.clone()

    def __getitem__(self, index: int):
        index = int(index)
        failed = False
        if self.features is not None:
            x = self.features[index]
        else:
            try:
                image = self._load(index)
            except _RECORDABLE:
                if self.on_bad_image == "raise":
                    raise
                failed = True
                image = None
            if failed:
                x = self._blank_image()
            else:
                x = self.transform(image) if self.transform is not None else image_to_tensor(image)
        label = None
        if self.labels is not None:
            label = torch.tensor(self.labels[index])
            if label.shape[0] == 1:
                label = label[0]
            if self.target_transform is not None:
                label = self.target_transform(label)
        if self.return_index:
            item = {"image": x, "index": torch.tensor(index, dtype=torch.int64), "id_str": self._id_str(index),
                    "failed": torch.tensor(failed)}
            if label is not None:
                item["label"] = label
            return item
        if label is not None:
            return x, label
        return x

    def describe_failure(self, index: int) -> str:
        """The error text of loading item ``index`` ('' if it loads now).

        Used after a prediction run in 'record' mode to fill the failures table.
        """
        try:
            self._load(int(index))
        except Exception as err:  # noqa: BLE001 - the text is what the caller wants
            return f"{type(err).__name__}: {err}"
        return ""

    def __repr__(self) -> str:
        return (f"GalaxyDataset({len(self)} galaxies, label_cols={self.label_cols}, transform={self.transform!r}, "
                f"return_index={self.return_index}, on_bad_image={self.on_bad_image!r}"
                f"{', features_mode=True' if self.features_mode else ''})")


def _utf8_array(values) -> np.ndarray:
    """A fixed-width bytes array of the UTF-8 encodings of ``values`` (str)."""
    return np.array([value.encode("utf-8", "surrogateescape") for value in values], dtype=np.bytes_)
