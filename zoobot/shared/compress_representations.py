"""Compress encoder representations with PCA (docs/components/predictions_and_representations.md).

Representations are tables of ``id_str`` and ``feat_0 .. feat_{d-1}``. :func:`create_pca_embedding`
reduces the feature matrix to ``n_components`` principal components (scikit-learn, optional);
:func:`create_pca_dataframe` does the same for a representations table and keeps the ids, naming
the new columns ``feat_pca_0 ..``. Rows with NaN features (images that failed to load) are left
out of the fit and stay NaN.
"""
from __future__ import annotations

import os

import numpy as np
import pandas as pd

from zoobot.shared.errors import missing_dependency
from zoobot.shared.validation import is_int

__all__ = ["create_pca_embedding", "create_pca_dataframe", "feature_columns"]


def feature_columns(representations: pd.DataFrame) -> list[str]:
    """The ``feat_<i>`` columns of a representations table, in index order.

    Examples
    --------
    >>> feature_columns(pd.DataFrame(columns=['id_str', 'feat_1', 'feat_0', 'feat_pca_0']))
    ['feat_0', 'feat_1']
    """
    cols = [c for c in representations.columns if isinstance(c, str) and c.startswith("feat_") and c[5:].isdigit()]
    return sorted(cols, key=lambda c: int(c[5:]))


def create_pca_embedding(features, n_components: int, variance_plot_loc=None) -> np.ndarray:
    """Project features onto their first ``n_components`` principal components.

    Parameters
    ----------
    features : array-like (n, d) or DataFrame
        A DataFrame uses its ``feat_<i>`` columns (or all numeric columns if there are none).
    n_components : int
        1 <= n_components <= min(finite rows, d).
    variance_plot_loc : str or path-like, optional
        If given, save a plot of the cumulative explained variance ratio there (needs matplotlib).

    Returns
    -------
    numpy.ndarray
        (n, n_components) float32; NaN rows for rows with any non-finite feature.

    Raises
    ------
    ValueError
        Bad ``n_components`` or too few finite rows.
    MissingDependencyError
        (E12) scikit-learn (or matplotlib for the plot) not installed.

    Examples
    --------
    >>> x = np.random.default_rng(0).normal(size=(50, 8))
    >>> create_pca_embedding(x, 3).shape
    (50, 3)
    """
    if isinstance(features, pd.DataFrame):
        cols = feature_columns(features) or features.select_dtypes("number").columns.tolist()
        features = features[cols].to_numpy()
    x = np.asarray(features, dtype=np.float64)
    if x.ndim != 2:
        raise ValueError(f"features must be 2-D (galaxy, feature), got shape {x.shape}")
    finite = np.isfinite(x).all(axis=1)
    n_finite = int(finite.sum())
    if not is_int(n_components) or not (
        1 <= n_components <= min(n_finite, x.shape[1])
    ):
        raise ValueError(
            f"n_components must be an integer in [1, {min(n_finite, x.shape[1])}] (rows with finite features: "
            f"{n_finite}, features: {x.shape[1]}), got {n_components!r}"
        )
    try:
        from sklearn.decomposition import PCA
    except ImportError:
        raise missing_dependency("scikit-learn", "PCA of representations", "pca") from None
    pca = PCA(n_components=int(n_components))
    out = np.full((x.shape[0], int(n_components)), np.nan, dtype=np.float32)
    out[finite] = pca.fit_transform(x[finite]).astype(np.float32)
    if variance_plot_loc is not None:
        _plot_variance(pca.explained_variance_ratio_, variance_plot_loc)
    return out


def create_pca_dataframe(representations: pd.DataFrame, n_components: int, variance_plot_loc=None) -> pd.DataFrame:
    """PCA of a representations table: ``id_str`` and ``feat_pca_0 .. feat_pca_{n-1}`` (float32), same rows.

    Examples
    --------
    >>> reps = pd.DataFrame({'id_str': ['a', 'b', 'c'], 'feat_0': [0., 1., 2.], 'feat_1': [1., 0., 1.]})
    >>> create_pca_dataframe(reps, 1).columns.tolist()
    ['id_str', 'feat_pca_0']
    """
    if "id_str" not in representations.columns:
        raise ValueError(f"representations need an id_str column; got {list(representations.columns)[:10]}")
    embedding = create_pca_embedding(representations, n_components, variance_plot_loc)
    out = pd.DataFrame(embedding, columns=[f"feat_pca_{i}" for i in range(embedding.shape[1])])
    out.insert(0, "id_str", representations["id_str"].astype(str).to_numpy())
    return out


def _plot_variance(ratio: np.ndarray, path) -> None:
    try:
        from matplotlib.figure import Figure
    except ImportError:
        raise missing_dependency("matplotlib", "The PCA variance plot", "plots") from None
    fig = Figure(figsize=(5, 3.5))  # no pyplot: no global state, works without a display
    ax = fig.add_subplot()
    components = np.arange(1, len(ratio) + 1)
    ax.plot(components, np.cumsum(ratio), marker="o")
    ax.set_xlabel("Number of components")
    ax.set_ylabel("Cumulative explained variance")
    ax.set_ylim(0, 1.02)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path)
