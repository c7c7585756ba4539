"""The finetuning examples (api.md 5.1): each has main(), --help and an offline --smoke run.

--help runs in a subprocess for every example (cheap: heavy imports happen inside main()). Default
suite: the seed walkthrough's --smoke in a subprocess, and the full-tree example's main(['--smoke'])
in-process (same code path, without paying the imports again). Slow suite: every other --smoke, in
process and in subprocesses.
"""
import pathlib
import runpy
import subprocess
import sys

import pandas as pd
import pytest

EXAMPLES = pathlib.Path(__file__).parents[2] / "zoobot" / "pytorch" / "examples" / "finetuning"
NAMES = ["finetune_binary_classification", "finetune_counts_full_tree", "finetune_multiclass_classification",
         "finetune_regression"]


def _run(name, *args, timeout=600):
    return subprocess.run([sys.executable, str(EXAMPLES / f"{name}.py"), *args], capture_output=True, text=True,
                          timeout=timeout)


def _main(name):
    return runpy.run_path(str(EXAMPLES / f"{name}.py"), run_name="example")["main"]


@pytest.mark.parametrize("name", NAMES)
def test_help(name):
    result = _run(name, "--help", timeout=120)
    assert result.returncode == 0, result.stderr
    assert "--smoke" in result.stdout and "--save-dir" in result.stdout and "--encoder" in result.stdout


def test_binary_classification_smoke_subprocess(tmp_path):
    result = _run("finetune_binary_classification", "--smoke", "--data-dir", str(tmp_path / "data"),
                  "--save-dir", str(tmp_path / "save"))
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Test accuracy:" in result.stdout
    predictions = pd.read_csv(tmp_path / "save" / "test_predictions.csv")
    assert predictions.columns[0] == "id_str" and "ring_pred_0" in predictions.columns
    assert predictions["ring_pred_0"].between(0, 1).all()
    assert (tmp_path / "save" / "checkpoints" / "last.ckpt").is_file()
    metrics = pd.read_csv(tmp_path / "save" / "logs" / "metrics.csv")
    assert metrics["finetuning/val_loss"].notna().any()


@pytest.fixture(scope="module")
def shared_data(tmp_path_factory):
    """One folder for the synthetic vote catalogs, generated once for the three tree-based examples."""
    return tmp_path_factory.mktemp("example_data")


def test_counts_full_tree_smoke(shared_data, tmp_path):
    out = _main("finetune_counts_full_tree")(["--smoke", "--data-dir", str(shared_data), "--save-dir",
                                              str(tmp_path)])
    friendly = pd.read_parquet(out["summaries"][0])
    assert "smooth-or-featured-dr5_smooth_fraction" in friendly.columns
    predictions = pd.read_parquet(out["predictions"])
    assert "smooth-or-featured-dr5_smooth_concentration_0" in predictions.columns
    assert len(predictions) == len(friendly)


@pytest.mark.slow  # the classifier/regressor paths are covered by test_finetune.py in the default suite
def test_multiclass_smoke(shared_data, tmp_path):
    out = _main("finetune_multiclass_classification")(["--smoke", "--data-dir", str(shared_data), "--save-dir",
                                                       str(tmp_path)])
    assert out["num_classes"] == 3 and 0 <= out["accuracy"] <= 1
    predictions = pd.read_csv(out["predictions"])
    probability_columns = [f"class_{i}_pred_0" for i in range(3)]
    assert (predictions[probability_columns].sum(axis=1) - 1).abs().max() < 1e-5


@pytest.mark.slow
def test_regression_smoke(shared_data, tmp_path):
    out = _main("finetune_regression")(["--smoke", "--data-dir", str(shared_data), "--save-dir", str(tmp_path)])
    predictions = pd.read_csv(out["predictions"])
    assert predictions["smooth_fraction_pred_0"].between(0, 1).all()  # unit_interval sigmoid
    assert out["rmse"] < 1


@pytest.mark.slow
@pytest.mark.parametrize("name", NAMES[1:])
def test_smoke_subprocess(name, tmp_path):
    result = _run(name, "--smoke", "--data-dir", str(tmp_path / "data"), "--save-dir", str(tmp_path / "save"))
    assert result.returncode == 0, result.stderr[-3000:]
    assert (tmp_path / "save" / "checkpoints" / "last.ckpt").is_file()
