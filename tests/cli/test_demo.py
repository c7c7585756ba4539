"""``zoobot demo`` end to end with tiny settings, its cache, and the demo's metric helpers."""
import json
import pathlib
import re
import shlex
import struct

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from zoobot import demo
from zoobot.shared.catalogs import split_catalog

from .conftest import describe, run_zoobot

FIGURES = ("example_galaxies.png", "vote_fractions.png", "reliability.png", "calibration.png",
           "training_curves.png")
REPO = pathlib.Path(__file__).resolve().parents[2]


def _png_size(path):
    header = path.read_bytes()[:24]
    assert header[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    return struct.unpack(">II", header[16:24])


@pytest.fixture(scope="module")
def quick_demo(tmp_path_factory):
    """``zoobot demo --quick`` run once from a working directory, with a relative --save-dir."""
    cwd = tmp_path_factory.mktemp("demo_cwd")
    result = run_zoobot("demo", "--quick", "--n-galaxies", 60, "--save-dir", "demo", cwd=cwd)
    assert result.returncode == 0, describe(result)
    save_dir = cwd / "demo"
    return cwd, save_dir, result, json.loads((save_dir / "metrics.json").read_text())


def test_quick_demo_writes_report_figures_and_predictions(quick_demo):
    cwd, save_dir, result, metrics = quick_demo
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
    assert pd.read_parquet(save_dir / "data" / "rings" / "test_catalog.parquet")["id_str"].tolist() == \
        test["id_str"].tolist()
    ring_preds = pd.read_parquet(save_dir / "predictions" / "ring_predictions.parquet")
    assert ring_preds["id_str"].tolist() == test["id_str"].tolist()
    p_ring = ring_preds["ring_pred_mean"].to_numpy()
    assert ((p_ring >= 0) & (p_ring <= 1)).all()
    expected_accuracy = float(((p_ring >= 0.5).astype(int) == test["ring"].to_numpy()).mean())
    assert metrics["rings"]["accuracy"] == pytest.approx(expected_accuracy)
    assert metrics["rings"]["roc_auc"] == pytest.approx(roc_auc_score(test["ring"], p_ring))
    tree_test = pd.read_parquet(save_dir / "pretrained_tree_pytorch" / "test_catalog.parquet")
    tree_preds = pd.read_parquet(save_dir / "predictions" / "tree_predictions.parquet")
    assert tree_preds["id_str"].tolist() == tree_test["id_str"].tolist()


def _reach(true, schema):
    """Probability each question is asked, by walking the tree by hand (parents come before children)."""
    reach = np.ones((len(true), len(schema.questions)))
    for q, question in enumerate(schema.questions):
        if question.asked_after is not None:
            parent = schema.questions.index(question.asked_after.question)
            reach[:, q] = reach[:, parent] * true[:, question.asked_after.index]
    return reach


def test_quick_demo_reports_mae_ratio_and_coverage_against_the_truth(quick_demo):
    """The tree model's MAE, the average-galaxy baseline and the 90 % coverage, recomputed by hand."""
    from scipy import stats as scipy_stats

    from zoobot.shared import load_predictions, schemas

    _, save_dir, _, metrics = quick_demo
    schema = schemas.decals_dr5_ortho_schema
    tree_dir = save_dir / "pretrained_tree_pytorch"
    test = pd.read_parquet(tree_dir / "test_catalog.parquet")
    train = pd.read_parquet(tree_dir / "train_catalog.parquet")
    ids, concentrations, _, _ = load_predictions.load(save_dir / "predictions" / "tree_predictions.parquet")
    assert ids["id_str"].tolist() == test["id_str"].tolist()
    concentrations = np.asarray(concentrations, dtype=np.float64)
    true = test[[f"{c}_true-prob" for c in schema.label_cols]].to_numpy(dtype=np.float64)
    reach = _reach(true, schema)
    weights = np.concatenate([np.repeat(reach[:, [q]], len(question.answers), axis=1)
                              for q, question in enumerate(schema.questions)], axis=1)

    fractions, inside = np.empty_like(true), np.empty_like(true)
    for question in schema.questions:
        cols = slice(question.start_index, question.end_index + 1)
        alpha = concentrations[:, cols]  # (galaxy, answer, sample)
        total = alpha.sum(axis=1, keepdims=True)
        fractions[:, cols] = (alpha / total).mean(axis=2)
        cdf = scipy_stats.beta.cdf(true[:, cols, None], alpha, total - alpha).mean(axis=2)
        inside[:, cols] = (cdf >= 0.05) & (cdf <= 0.95)
    counts = train[schema.label_cols].to_numpy(dtype=np.float64)
    average = np.concatenate([counts[:, q.start_index:q.end_index + 1].sum(axis=0)
                              / counts[:, q.start_index:q.end_index + 1].sum() for q in schema.questions])
    mae = (weights * np.abs(fractions - true)).sum() / weights.sum()
    baseline = (weights * np.abs(average - true)).sum() / weights.sum()
    tree = metrics["tree"]
    assert tree["mae"] == pytest.approx(mae, rel=1e-4)
    assert tree["baseline_mae"] == pytest.approx(baseline, rel=1e-4)
    assert tree["mae_ratio"] == pytest.approx(mae / baseline, rel=1e-4)
    assert tree["coverage"] == pytest.approx((weights * inside).sum() / weights.sum(), abs=0.01)
    text = (save_dir / "report.md").read_text()
    assert f"**{tree['mae_ratio']:.2f} x** the baseline" in text
    assert f"hold the true probability **{tree['coverage'] * 100:.0f} %**" in text


def test_quick_demo_compares_pretrained_and_random_encoders_and_the_pixel_baseline(quick_demo):
    from zoobot.shared.metrics import ring_baseline_auc

    _, save_dir, result, metrics = quick_demo
    test = pd.read_parquet(save_dir / "data" / "rings" / "test_catalog.parquet")
    random_preds = pd.read_parquet(save_dir / "predictions" / "ring_predictions_random_encoder.parquet")
    assert random_preds["id_str"].tolist() == test["id_str"].tolist()
    p_random = random_preds["ring_pred_mean"].to_numpy()
    p_pretrained = pd.read_parquet(save_dir / "predictions" / "ring_predictions.parquet")["ring_pred_mean"].to_numpy()
    assert not np.allclose(p_random, p_pretrained)  # a different model, not the same one twice
    random = metrics["rings_random_encoder"]
    assert random["roc_auc"] == pytest.approx(roc_auc_score(test["ring"], p_random))
    assert random["accuracy"] == pytest.approx(float(((p_random >= 0.5) == test["ring"].to_numpy()).mean()))
    rings = pd.read_parquet(save_dir / "data" / "rings" / "catalog.parquet")
    assert metrics["rings_pixel_baseline_auc"] == pytest.approx(ring_baseline_auc(rings, "ring", seed=0))
    assert (save_dir / "finetuned_rings_random_encoder_pytorch" / "ring_classifier.ckpt").is_file()

    text = (save_dir / "report.md").read_text()
    assert "| metric | pretrained encoder | random encoder | pixel statistics | constant guess |" in text
    auc_row = f"| ROC AUC | {metrics['rings']['roc_auc']:.3f} | {random['roc_auc']:.3f} | " \
              f"{metrics['rings_pixel_baseline_auc']:.3f} | 0.500 |"
    assert auc_row in text
    assert "random encoder" in result.stdout

    # the same two classifiers finetuned on only few_labels of the training galaxies, scored from their files
    n = demo.QUICK_SETTINGS["few_labels"]
    few_aucs = [roc_auc_score(test["ring"], pd.read_parquet(
        save_dir / "predictions" / f"ring_predictions_{n}_labels{suffix}.parquet")["ring_pred_mean"])
        for suffix in ("", "_random_encoder")]
    assert [metrics["rings_few_labels"]["roc_auc"], metrics["rings_few_labels_random_encoder"]["roc_auc"]] == \
        pytest.approx(few_aucs)
    assert f"| ROC AUC, trained on only {n} galaxies | {few_aucs[0]:.3f} | {few_aucs[1]:.3f} | - | 0.500 |" in text
    assert (save_dir / f"finetuned_rings_{n}_labels_random_encoder_pytorch" / "ring_classifier.ckpt").is_file()


def test_quick_demo_report_points_at_real_docs_and_the_best_checkpoint(quick_demo):
    cwd, save_dir, _, _ = quick_demo
    text = (save_dir / "report.md").read_text()
    pages = re.findall(r"`(docs/[^`]+\.md)`", text)
    assert pages, "the report links no docs page"
    for page in pages:
        assert (REPO / page).is_file(), f"the report links {page}, which does not exist"
    best = save_dir / "finetuned_rings_pytorch" / "ring_classifier.ckpt"
    assert best.is_file()
    assert "--checkpoint demo/finetuned_rings_pytorch/ring_classifier.ckpt" in text
    assert "checkpoints/last.ckpt --" not in text and "last.ckpt`:" not in text
    # the classifier the demo evaluated is the best checkpoint: same validation loss as the best epoch's
    config = json.loads((save_dir / "finetuned_rings_pytorch" / "config.json").read_text())
    assert pathlib.Path(config["best_checkpoint"]).read_bytes() == best.read_bytes()
    # catalogs under exact, typeable paths
    for path in ("demo/data/votes/catalog.parquet", "demo/data/rings/catalog.parquet",
                 "demo/data/rings/test_catalog.parquet"):
        assert f"`{path}`" in text or f" {path} " in text, path
        assert (cwd / path).is_file()


def test_quick_demo_report_predict_command_runs_as_written(quick_demo):
    cwd, save_dir, _, _ = quick_demo
    text = (save_dir / "report.md").read_text()
    command = next(line for line in text.splitlines() if line.startswith("zoobot predict "))
    result = run_zoobot(*shlex.split(command)[1:], cwd=cwd)
    assert result.returncode == 0, describe(result)
    written = pd.read_parquet(cwd / "ring_predictions.parquet")
    expected = pd.read_parquet(save_dir / "predictions" / "ring_predictions.parquet")
    assert written["id_str"].tolist() == expected["id_str"].tolist()
    # p(ring) is the last class column, whatever the command line names the classes (class_1_ or ring_)
    p_ring = written.filter(like="_pred_mean").iloc[:, -1]
    np.testing.assert_allclose(p_ring, expected["ring_pred_mean"], atol=1e-5)


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
    with pytest.raises(ValueError, match="few_labels must be an integer >= 0 \\(0: no few-label comparison\\)"):
        demo.run_demo(tmp_path / "d", few_labels=-1)
    assert not any((tmp_path / name).exists() for name in "abcd")
    result = run_zoobot("demo", "--n-galaxies", 5)
    assert result.returncode == 2 and "--n-galaxies" in result.stderr


def test_roc_auc_is_nan_for_a_single_class_test_set():
    assert np.isnan(demo._roc_auc(np.array([1, 1, 1]), np.array([0.2, 0.5, 0.9])))


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
