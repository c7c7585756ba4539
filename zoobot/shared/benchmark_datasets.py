"""Benchmark datasets with fixed splits, for comparing models with published results.

:func:`get_gz_decals_dr5_benchmark_dataset` gives the GZ DECaLS DR5 splits used by the replication
recipe ``replication/pytorch/train_model_on_decals_dr5_splits.py``: the dataset's own test set, and its
train set split 90 / 10 into train / validation exactly as ``sklearn.model_selection.train_test_split(
train_and_val, test_size=0.1, random_state=random_state)`` would (re-implemented with NumPy, so
scikit-learn is not needed and the split is the same with or without it).
"""
from __future__ import annotations

import math

import numpy as np

from zoobot.shared import datasets

__all__ = ["get_gz_decals_dr5_benchmark_dataset", "sklearn_style_split"]


def sklearn_style_split(catalog, test_size: float = 0.1, random_state: int = 42):
    """Split rows like ``sklearn.model_selection.train_test_split(catalog, test_size=..., random_state=...)``.

    Parameters
    ----------
    catalog : pandas.DataFrame
    test_size : float
        Fraction of rows in the second part (rounded up, as scikit-learn does).
    random_state : int
        Seed of ``numpy.random.RandomState`` (scikit-learn's generator).

    Returns
    -------
    (train, test) : tuple of pandas.DataFrame

    Raises
    ------
    ValueError
        If ``test_size`` is not in (0, 1) or either part would be empty.
    """
    if not 0.0 < float(test_size) < 1.0:
        raise ValueError(f"test_size must be in (0, 1), got {test_size!r}.")
    n = len(catalog)
    n_test = int(math.ceil(test_size * n))
    n_train = n - n_test
    if n_train <= 0 or n_test <= 0:
        raise ValueError(f"Cannot split {n} rows with test_size={test_size}: a part would be empty.")
    permutation = np.random.RandomState(random_state).permutation(n)
    test_idx, train_idx = permutation[:n_test], permutation[n_test:n_test + n_train]
    return catalog.iloc[train_idx].reset_index(drop=True), catalog.iloc[test_idx].reset_index(drop=True)


def get_gz_decals_dr5_benchmark_dataset(data_dir, random_state: int, download: bool, *, synthetic: bool = False):
    """The GZ DECaLS DR5 benchmark: schema and (train, val, test) catalogs.

    Parameters
    ----------
    data_dir : str or Path
        Where the dataset files are (or are downloaded to); see :func:`zoobot.shared.datasets.gz_decals_5`.
    random_state : int
        Seed of the 90 / 10 train / validation split of the dataset's train set.
    download : bool
        Download the files if they are not in ``data_dir``.
    synthetic : bool, keyword-only
        Use the generated offline stand-in (``gz_decals_5(..., synthetic=True)``), e.g. for smoke tests.

    Returns
    -------
    schema : zoobot.shared.schemas.Schema
        ``decals_dr5_ortho_schema``.
    (train_catalog, val_catalog, test_catalog) : tuple of pandas.DataFrame

    Raises
    ------
    RuntimeError, FileNotFoundError
        As :func:`zoobot.shared.datasets.gz_decals_5`.

    Examples
    --------
    >>> import tempfile
    >>> schema, (train, val, test) = get_gz_decals_dr5_benchmark_dataset(  # doctest: +SKIP
    ...     tempfile.mkdtemp(), random_state=42, download=False, synthetic=True)
    >>> schema.name, len(train), len(val), len(test)  # doctest: +SKIP
    ('decals_dr5_ortho', 540, 60, 150)
    """
    from zoobot.shared.schemas import decals_dr5_ortho_schema

    train_and_val, label_cols = datasets.gz_decals_5(data_dir, download=download, train=True, synthetic=synthetic)
    test, _ = datasets.gz_decals_5(data_dir, download=download, train=False, synthetic=synthetic)
    if list(label_cols) != list(decals_dr5_ortho_schema.label_cols):  # pragma: no cover - registry consistency
        raise RuntimeError("gz_decals_5 returned label columns that differ from decals_dr5_ortho_schema.")
    train, val = sklearn_style_split(train_and_val, test_size=0.1, random_state=random_state)
    return decals_dr5_ortho_schema, (train, val, test.reset_index(drop=True))
