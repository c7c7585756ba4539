"""``zoobot demo`` end to end with tiny settings, its cache, and the demo's metric helpers."""
import json
import struct

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from zoobot import demo
from zoobot.shared.catalogs import split_catalog

from .conftest import describe, run_zoobot

FIGURES = ("example_galaxies.png", "vote_fractions.png", "calibration.png", "training_curves.png")


def _png_size(path):
    header = path.read_bytes()[:24]
    assert header[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    return struct.unpack(">II", header[16:24])


def test_quick_demo_writes_report_figures_and_predictions(tmp_path):
    save_dir = tmp_path / "demo"
    result = run_zoobot("demo", "--quick", "--n-galaxies", 60, "--save-dir", save_dir)
    assert result.returncode == 0, describe(result)
    report = save_dir / "report.md"
    assert f"Report: {report}" in result.stdout
    text = report.read_text()
    for name in FIGURES:
        assert f"](figures/{name})" in text, name
        width, height = _png_size(save_dir / "figures" / name)
        assert width >= 300 and height >= 300, (name, width, height)

    # every held-out ring galaxy has a prediction, matched by id_str
    rings = pd.read_parquet(save_dir / "data" / "rings" / "catalog.parquet")
    _, _, test = split_catalog(rings, seed=0)
    ring_preds = pd.read_parquet(save_dir / "predictions" / "ring_predictions.parquet")
    assert ring_preds["id_str"].tolist() == test["id_str"].tolist()
    p_ring = ring_preds["ring_pred_mean"].to_numpy()
    assert ((p_ring >= 0) & (p_ring <= 1)).all()
    metrics = json.loads((save_dir / "metrics.json").read_text())
    expected_accuracy = float(((p_ring >= 0.5).astype(int) == test["ring"].to_numpy()).mean())
    assert metrics["rings"]["accuracy"] == pytest.approx(expected_accuracy)
    tree_test = pd.read_parquet(save_dir / "pretrained_tree_pytorch" / "test_catalog.parquet")
    tree_preds = pd.read_parquet(save_dir / "predictions" / "tree_predictions.parquet")
    assert tree_preds["id_str"].tolist() == tree_test["id_str"].tolist()



@pytest.mark.slow
def test_demo_rerun_reuses_the_cached_pretrained_model(tmp_path):
    save_dir = tmp_path / "demo"
    first = run_zoobot("demo", "--quick", "--n-galaxies", 40, "--save-dir", save_dir)
    assert first.returncode == 0, describe(first)
    checkpoint = save_dir / "pretrained_tree_pytorch" / "tree_model.ckpt"
    modified = checkpoint.stat().st_mtime_ns
    again = run_zoobot("demo", "--quick", "--n-galaxies", 40, "--save-dir", save_dir)
    assert again.returncode == 0, describe(again)
    assert "Pretrained tree model: reusing" in again.stdout
    assert checkpoint.stat().st_mtime_ns == modified
    assert "Reused a decision-tree model" in (save_dir / "report.md").read_text()
    # other settings: trained again
    changed = run_zoobot("demo", "--quick", "--n-galaxies", 40, "--n-pretrain", 120, "--save-dir", save_dir)
    assert changed.returncode == 0, describe(changed)
    assert "Pretraining a tiny_cnn decision-tree model on 120 galaxies" in changed.stdout


def test_demo_rejects_bad_settings_before_any_work(tmp_path):
    with pytest.raises(ValueError, match="Unknown backend 'jax'"):
        demo.run_demo(tmp_path / "a", backend="jax")
    with pytest.raises(ValueError, match="n_galaxies must be an integer >= 30"):
        demo.run_demo(tmp_path / "b", n_galaxies=5)
    with pytest.raises(TypeError, match="unknown settings \\['epochs'\\]"):
        demo.run_demo(tmp_path / "c", epochs=3)
    assert not any((tmp_path / name).exists() for name in "abc")
    result = run_zoobot("demo", "--n-galaxies", 5)
    assert result.returncode == 2 and "--n-galaxies" in result.stderr


@pytest.mark.parametrize("seed", range(5))
def test_roc_auc_matches_scikit_learn(seed):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, size=80)
    p = np.round(rng.uniform(size=80) * 0.6 + 0.4 * y, 1)  # rounded: many ties
    assert demo._roc_auc(y, p) == pytest.approx(roc_auc_score(y, p))


def test_ring_metrics_by_hand():
    y = np.array([1, 1, 0, 0, 0])
    p = np.array([0.9, 0.4, 0.6, 0.1, 0.2])
    m = demo._ring_metrics(y, p)
    assert (m["true_positives"], m["false_positives"], m["false_negatives"], m["true_negatives"]) == (1, 1, 1, 2)
    assert m["accuracy"] == pytest.approx(3 / 5)
    assert m["majority_accuracy"] == pytest.approx(3 / 5)
    assert m["brier"] == pytest.approx(np.mean((p - y) ** 2))
    assert m["roc_auc"] == pytest.approx(5 / 6)  # pairs (pos, neg) ordered right: 0.9>all, 0.4>0.1,0.2


def test_grid_selection_balances_classes_and_sorts_by_probability():
    y = np.array([1] * 3 + [0] * 30)
    p = np.linspace(0, 1, len(y))
    chosen = demo._grid_selection(y, p, n=16, seed=0)
    assert len(chosen) == 16 and len(set(chosen)) == 16
    assert y[chosen].sum() == 3  # every ring, the rest filled with non-rings
    assert (np.diff(p[chosen]) <= 0).all()


@pytest.mark.slow
def test_quick_demo_with_tensorflow(tmp_path):
    save_dir = tmp_path / "demo_tf"
    result = run_zoobot("--backend", "tensorflow", "demo", "--quick", "--n-galaxies", 40, "--save-dir", save_dir)
    assert result.returncode == 0, describe(result)
    assert (save_dir / "pretrained_tree_tensorflow" / "tree_model.keras").is_file()
    metrics = json.loads((save_dir / "metrics.json").read_text())
    assert metrics["backend"] == "tensorflow" and metrics["skipped"] == []
    for name in FIGURES:
        assert _png_size(save_dir / "figures" / name)[0] >= 300
