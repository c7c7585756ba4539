"""zoobot.shared.plots: the numbers behind the figures, the figures themselves, and E12 without matplotlib."""
import struct
import sys

import numpy as np
import pandas as pd
import pytest

from zoobot.shared import plots, schemas
from zoobot.shared.errors import MissingDependencyError
from zoobot.shared.synthetic import make_synthetic_catalog


def _png_size(path):
    header = path.read_bytes()[:24]
    assert header[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", header[16:24])


def test_calibration_table_by_hand():
    y = [0, 0, 1, 1, 1, 0]
    p = [0.05, 0.15, 0.55, 0.65, 0.95, 0.95]
    table = plots.calibration_table(y, p, n_bins=2)
    assert table["count"].tolist() == [2, 4]
    assert table["observed_rate"].tolist() == [0.0, 0.75]
    assert table["mean_predicted"].tolist() == pytest.approx([0.1, 0.775])
    assert table["observed_err"][1] == pytest.approx(np.sqrt(0.75 * 0.25 / 4))
    # p = 1.0 falls in the last bin, not outside; empty bins have NaN rates
    edge = plots.calibration_table([1], [1.0], n_bins=4)
    assert edge["count"].tolist() == [0, 0, 0, 1] and np.isnan(edge["observed_rate"][0])


def test_calibration_table_is_sklearns_calibration_curve_with_empty_bins_kept():
    from sklearn.calibration import calibration_curve

    rng = np.random.default_rng(0)
    p = np.r_[rng.uniform(0, 0.4, 50), rng.uniform(0.8, 1.0, 50), [0.0, 0.2, 0.4, 1.0]]  # some on bin edges
    y = (rng.uniform(size=p.size) < p).astype(int)
    table = plots.calibration_table(y, p, n_bins=5)
    rate, mean_predicted = calibration_curve(y, p, n_bins=5)
    filled = table[table["count"] > 0]
    np.testing.assert_allclose(filled["observed_rate"], rate)
    np.testing.assert_allclose(filled["mean_predicted"], mean_predicted)
    assert table["count"].tolist() == [
        np.sum(p <= 0.2), np.sum((p > 0.2) & (p <= 0.4)), 0, np.sum((p > 0.6) & (p <= 0.8)), np.sum(p > 0.8)
    ]
    assert np.isnan(table["observed_rate"][2]) and table["count"].sum() == p.size


@pytest.mark.parametrize("y, p, message", [
    ([0, 2], [0.1, 0.2], "0/1 labels"),
    ([0, 1], [0.1, 1.2], "probabilities in \\[0, 1\\]"),
    ([0, 1, 1], [0.1, 0.2], "3 values but p_pred has 2"),
])
def test_calibration_table_rejects_bad_input(y, p, message):
    with pytest.raises(ValueError, match=message):
        plots.calibration_table(y, p)


def test_epoch_metrics_merges_train_and_validation_rows(tmp_path):
    path = tmp_path / "metrics.csv"
    pd.DataFrame({
        "epoch": [0, 0, 1, 1, np.nan],
        "step": [10, 10, 21, 21, 22],
        "train/supervised_loss": [np.nan, 5.0, np.nan, 4.0, np.nan],
        "validation/supervised_loss": [6.0, np.nan, 5.5, np.nan, np.nan],
    }).to_csv(path, index=False)
    merged = plots.epoch_metrics(path)
    assert merged.index.tolist() == [0, 1]
    assert merged["train/supervised_loss"].tolist() == [5.0, 4.0]
    assert merged["validation/supervised_loss"].tolist() == [6.0, 5.5]
    out = plots.plot_training_curves({"run": path}, tmp_path / "curves.png", title="t")
    assert _png_size(out)[0] > 300


def test_training_curves_need_a_loss_column(tmp_path):
    path = tmp_path / "metrics.csv"
    pd.DataFrame({"epoch": [0], "lr": [0.1]}).to_csv(path, index=False)
    with pytest.raises(ValueError, match="none of the loss columns"):
        plots.plot_training_curves({"run": path}, tmp_path / "curves.png")


def test_vote_fraction_and_grid_figures(tmp_path):
    schema = schemas.decals_dr5_ortho_schema
    catalog, cols = make_synthetic_catalog(tmp_path / "data", n_galaxies=12, image_size=32, progress=False)
    true = catalog[[f"{c}_true-prob" for c in cols]].to_numpy()
    rng = np.random.default_rng(0)
    predicted = np.clip(true + rng.normal(0, 0.05, true.shape), 0, 1)
    out = plots.plot_vote_fractions(true, predicted, schema, tmp_path / "fractions.png")
    width, height = _png_size(out)
    assert width > 1000 and height > 700  # 10 panels
    with pytest.raises(ValueError, match="Expected 34 answers"):
        plots.plot_vote_fractions(true[:, :5], predicted[:, :5], schema, tmp_path / "x.png")

    grid = plots.plot_galaxy_grid(catalog["file_loc"][:6], tmp_path / "grid.png", true_labels=[1, 0, 1, 0, 1, 0],
                                  predicted_probs=[0.9, 0.2, 0.4, 0.6, 0.5, 0.1], ncols=3)
    assert _png_size(grid)[0] > 400
    with pytest.raises(ValueError, match="true_labels has 2 entries for 6 images"):
        plots.plot_galaxy_grid(catalog["file_loc"][:6], tmp_path / "g.png", true_labels=[1, 0])
    with pytest.raises(ValueError, match="Unknown figure file extension '.gif'"):
        plots.plot_calibration([0, 1], [0.2, 0.8], tmp_path / "c.gif")


def test_missing_matplotlib_raises_e12(monkeypatch, tmp_path):
    for name in [m for m in sys.modules if m == "matplotlib" or m.startswith("matplotlib.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    with pytest.raises(MissingDependencyError, match=r'pip install "zoobot\[plots\]"'):
        plots.plot_calibration([0, 1], [0.2, 0.8], tmp_path / "c.png")
