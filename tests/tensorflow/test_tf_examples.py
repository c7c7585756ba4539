"""The TensorFlow examples and the DR5 replication script run as users run them: in a subprocess.

``--help`` of every script runs in the default suite (no framework is imported before argument
parsing); every ``--smoke`` run (synthetic galaxies, tiny_cnn, 1 epoch, CPU) is marked slow.
"""
import os
import pathlib
import subprocess
import sys

import pandas as pd
import pytest

import zoobot

REPO = pathlib.Path(zoobot.__file__).resolve().parents[1]
SCRIPTS = {
    "train_model": REPO / "zoobot" / "tensorflow" / "examples" / "train_model.py",
    "train_model_on_shards": REPO / "zoobot" / "tensorflow" / "examples" / "train_model_on_shards.py",
    "make_predictions": REPO / "zoobot" / "tensorflow" / "examples" / "make_predictions.py",
    "replication_dr5": REPO / "replication" / "tensorflow" / "train_model_on_decals_dr5_splits.py",
}


def run(script, *args, timeout=600):
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "CUDA_VISIBLE_DEVICES": ""}
    return subprocess.run([sys.executable, str(script), *args], capture_output=True, text=True, timeout=timeout,
                          env=env, cwd=REPO)


@pytest.mark.parametrize("name", sorted(SCRIPTS))
def test_help(name):
    result = run(SCRIPTS[name], "--help", timeout=120)
    assert result.returncode == 0, result.stderr
    assert "--smoke" in result.stdout and "usage:" in result.stdout


@pytest.mark.parametrize("name", sorted(SCRIPTS))
def test_missing_arguments_are_a_usage_error(name):
    result = run(SCRIPTS[name], timeout=120)
    assert result.returncode == 2
    assert "--smoke" in result.stderr


@pytest.mark.slow
@pytest.mark.parametrize("name", ["train_model", "train_model_on_shards", "replication_dr5"])
def test_training_smoke(name, tmp_path):
    result = run(SCRIPTS[name], "--smoke", "--save-dir", str(tmp_path))
    assert result.returncode == 0, result.stderr[-4000:]
    assert "Best checkpoint:" in result.stdout
    assert (tmp_path / "checkpoints" / "last.keras").is_file()
    metrics = pd.read_csv(tmp_path / "logs" / "metrics.csv")
    assert {"train/supervised_loss", "validation/supervised_loss"} <= set(metrics.columns)


@pytest.mark.slow
def test_make_predictions_smoke(tmp_path):
    result = run(SCRIPTS["make_predictions"], "--smoke", "--save-dir", str(tmp_path))
    assert result.returncode == 0, result.stderr[-4000:]
    table = pd.read_parquet(tmp_path / "predictions.parquet")
    assert len(table) == 24 and "smooth-or-featured-dr5_smooth_concentration_2" in table.columns
    assert (tmp_path / "predictions_friendly.parquet").is_file()
    assert (tmp_path / "predictions_advanced.parquet").is_file()
