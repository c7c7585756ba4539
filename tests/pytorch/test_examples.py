"""The PyTorch training/prediction/representation examples and the DR5 replication script (api.md 5.1).

Every script's ``--help`` runs in a subprocess (cheap: heavy imports happen inside ``main()``). The seed
script ``train_model_on_catalog.py`` runs ``--smoke`` in a subprocess in the default suite; the other
``--smoke`` runs call ``main()`` in-process by default (same code path, without paying the imports
again) and run as subprocesses in the slow suite.
"""
import json
import pathlib
import runpy
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

ROOT = pathlib.Path(__file__).parents[2]
EXAMPLES = ROOT / "zoobot" / "pytorch" / "examples"
SCRIPTS = {
    "train_model_on_catalog": EXAMPLES / "train_model_on_catalog.py",
    "train_model": EXAMPLES / "train_model.py",
    "make_predictions": EXAMPLES / "make_predictions.py",
    "get_representations": EXAMPLES / "representations" / "get_representations.py",
    "replication": ROOT / "replication" / "pytorch" / "train_model_on_decals_dr5_splits.py",
}


def _run(name, *args, timeout=600):
    return subprocess.run([sys.executable, str(SCRIPTS[name]), *args], capture_output=True, text=True,
                          timeout=timeout, cwd=ROOT)


def _main(name):
    return runpy.run_path(str(SCRIPTS[name]), run_name="example")["main"]


def _smoke_args(name, tmp_path):
    if name in ("make_predictions",):
        return ["--smoke", "--save-loc", str(tmp_path / "predictions.parquet")]
    if name == "get_representations":
        return ["--smoke", "--save-loc", str(tmp_path / "representations.parquet")]
    return ["--smoke", "--save-dir", str(tmp_path)]


def _check_training_run(save_dir):
    save_dir = pathlib.Path(save_dir)
    assert (save_dir / "checkpoints" / "last.ckpt").is_file()
    config = json.loads((save_dir / "config.json").read_text())
    assert config["architecture_name"] == "tiny_cnn" and config["epochs"] == 1 and config["gpus"] == 0
    metrics = pd.read_csv(save_dir / "logs" / "metrics.csv")
    assert np.isfinite(metrics["validation/supervised_loss"].dropna()).all()


@pytest.mark.parametrize("name", list(SCRIPTS))
def test_help(name):
    result = _run(name, "--help", timeout=120)
    assert result.returncode == 0, result.stderr
    assert "--smoke" in result.stdout and "usage:" in result.stdout


def test_train_model_on_catalog_smoke_subprocess(tmp_path):
    result = _run("train_model_on_catalog", "--smoke", "--save-dir", str(tmp_path))
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Best checkpoint:" in result.stdout
    _check_training_run(tmp_path)
    # the split catalogs partition the synthetic catalog
    ids = [pd.read_parquet(tmp_path / f"{split}_catalog.parquet")["id_str"] for split in ("train", "val", "test")]
    assert sum(len(i) for i in ids) == 48 and len(set().union(*map(set, ids))) == 48


def test_train_model_smoke(tmp_path):
    _check_training_run(_main("train_model")(_smoke_args("train_model", tmp_path))["save_dir"])


def test_replication_smoke(tmp_path):
    out = _main("replication")(_smoke_args("replication", tmp_path))
    _check_training_run(out["save_dir"])
    assert np.isfinite(out["test_loss"])
    # benchmark-style splits: a held-out test set, the rest split 90/10
    sizes = [len(pd.read_parquet(tmp_path / f"{s}_catalog.parquet")) for s in ("train", "val", "test")]
    assert sizes == [43, 5, 12]


def test_make_predictions_smoke(tmp_path):
    out = _main("make_predictions")(_smoke_args("make_predictions", tmp_path))
    table = pd.read_parquet(out["predictions"])
    assert len(table) == 40 and "smooth-or-featured-dr5_smooth_concentration_2" in table.columns
    friendly = pd.read_parquet(out["summaries"][0])
    assert friendly["id_str"].tolist() == table["id_str"].tolist()
    assert friendly["smooth-or-featured-dr5_smooth_fraction"].between(0, 1).all()


def test_get_representations_smoke(tmp_path):
    out = _main("get_representations")(_smoke_args("get_representations", tmp_path))
    table = pd.read_parquet(out["representations"])
    assert table.shape == (24, 129) and table.columns[1] == "feat_0"
    pca = pd.read_parquet(out["pca"])
    assert pca.columns.tolist() == ["id_str", "feat_pca_0", "feat_pca_1", "feat_pca_2"]
    assert pca["id_str"].tolist() == table["id_str"].tolist()


@pytest.mark.slow
@pytest.mark.parametrize("name", ["train_model", "make_predictions", "get_representations",
                                  "replication"])
def test_smoke_subprocess(name, tmp_path):
    result = _run(name, *_smoke_args(name, tmp_path))
    assert result.returncode == 0, result.stderr[-3000:]
