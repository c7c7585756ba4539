"""PCA of representations against numpy's SVD."""
import numpy as np
import pandas as pd
import pytest

from zoobot.shared.compress_representations import create_pca_dataframe, create_pca_embedding

pytest.importorskip("sklearn")


def features(n=40, d=6, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, d)) @ np.diag([5, 3, 1, 0.5, 0.1, 0.01][:d])


def test_matches_svd_projection_up_to_sign():
    x = features()
    out = create_pca_embedding(x, 3)
    centred = x - x.mean(axis=0)
    _, _, vt = np.linalg.svd(centred, full_matrices=False)
    expected = centred @ vt[:3].T
    assert out.dtype == np.float32 and out.shape == (40, 3)
    for k in range(3):
        sign = np.sign(out[:, k] @ expected[:, k])
        np.testing.assert_allclose(out[:, k] * sign, expected[:, k], rtol=1e-4, atol=1e-4)


def test_nan_rows_are_excluded_and_stay_nan():
    x = features()
    with_nan = x.copy()
    with_nan[[3, 7]] = np.nan
    out = create_pca_embedding(with_nan, 2)
    assert np.isnan(out[[3, 7]]).all()
    reference = create_pca_embedding(np.delete(x, [3, 7], axis=0), 2)
    np.testing.assert_allclose(np.abs(np.delete(out, [3, 7], axis=0)), np.abs(reference), rtol=1e-5, atol=1e-5)


def test_dataframe_keeps_ids_and_plot_is_written(tmp_path):
    x = features(n=10, d=4)
    reps = pd.DataFrame(x, columns=[f"feat_{i}" for i in range(4)])
    reps.insert(0, "id_str", [f"g{i}" for i in range(10)])
    out = create_pca_dataframe(reps, 2, variance_plot_loc=tmp_path / "plots" / "variance.png")
    assert out.columns.tolist() == ["id_str", "feat_pca_0", "feat_pca_1"]
    assert out["id_str"].tolist() == reps["id_str"].tolist()
    assert (tmp_path / "plots" / "variance.png").stat().st_size > 1000


def test_bad_n_components():
    with pytest.raises(ValueError, match=r"n_components must be an integer in \[1, 6\].*got 7"):
        create_pca_embedding(features(), 7)
    with pytest.raises(ValueError, match="got 0"):
        create_pca_embedding(features(), 0)


def test_without_sklearn_is_e12(monkeypatch):
    import sys

    from zoobot.shared.errors import MissingDependencyError

    monkeypatch.setitem(sys.modules, "sklearn.decomposition", None)  # simulate an environment without sklearn
    with pytest.raises(MissingDependencyError, match=r'PCA of representations needs .*pip install "zoobot\[pca\]"'):
        create_pca_embedding(features(), 2)
