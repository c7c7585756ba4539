"""The ``zoobot`` command line, run in subprocesses with tiny settings: outputs and exit codes (api.md 5.2)."""
import importlib.metadata
import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

import zoobot
from zoobot.shared import schemas
from zoobot.shared.load_predictions import load

from .conftest import IMAGE_SIZE, describe, run_zoobot

COMMANDS = ("demo", "train", "finetune", "predict", "representations", "evaluate", "shard", "schemas", "info")


def _error_lines(result) -> list:
    return [line for line in result.stderr.strip().splitlines() if line.strip()]


# ---------------------------------------------------------------------------------------------
# help, usage errors, framework-free start
# ---------------------------------------------------------------------------------------------

def test_help_lists_every_command_via_python_m():
    result = run_zoobot("--help")
    assert result.returncode == 0, describe(result)
    for command in COMMANDS:
        assert f"  {command} " in result.stdout, command
    version = run_zoobot("--version")
    assert version.returncode == 0 and zoobot.__version__ in version.stdout


def test_cli_imports_no_framework():
    code = ("import sys; from zoobot.cli import cli; "
            "print(sorted(m for m in ('torch', 'tensorflow', 'keras', 'lightning', 'matplotlib') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


@pytest.mark.parametrize("args, message", [
    (("--bogus",), "No such option '--bogus'"),
    (("nosuchcommand",), "No such command 'nosuchcommand'"),
    (("train", "--bogus"), "No such option '--bogus'"),
    (("predict", "--catalog"), "requires an argument"),
    (("--backend", "jax", "schemas"), "'jax' is not one of"),
])
def test_usage_errors_exit_2(args, message):
    result = run_zoobot(*args)
    assert result.returncode == 2, describe(result)
    assert message in result.stderr


def test_train_without_schema_is_a_usage_error(votes_catalog_csv, tmp_path):
    result = run_zoobot("train", "--catalog", votes_catalog_csv, "--save-dir", tmp_path / "run")
    assert result.returncode == 2, describe(result)
    assert "--schema" in result.stderr


# ---------------------------------------------------------------------------------------------
# schemas and info
# ---------------------------------------------------------------------------------------------

def test_schemas_lists_every_prebuilt_schema_with_counts():
    result = run_zoobot("schemas")
    assert result.returncode == 0, describe(result)
    lines = result.stdout.splitlines()
    names = set(schemas.list_schemas())
    rows = {line.split()[0]: line.split(None, 3)[1:] for line in lines[1:] if line.split()[:1] and
            line.split()[0] in names}
    assert set(rows) == names
    for name in ("decals_dr5_ortho", "gz_rings", "gz2_ortho"):
        schema = schemas.get_schema(name)
        assert rows[name][:2] == [str(schema.n_questions), str(schema.n_answers)]
    # every tree has a one-line description, and the listing says which to start from and what "ortho" means
    assert all(len(row) == 3 and len(row[2]) > 10 for row in rows.values()), rows
    assert "Start with decals_dr5_ortho" in result.stdout and "'ortho' trees" in result.stdout


def test_schemas_shows_one_tree_and_rejects_unknown_names():
    result = run_zoobot("schemas", "gz_rings")
    assert result.returncode == 0, describe(result)
    assert "ring_yes" in result.stdout and "ring_no" in result.stdout
    tree = run_zoobot("schemas", "decals_dr5_ortho")
    assert "has-spiral-arms-dr5  (asked after disk-edge-on-dr5_no)" in tree.stdout

    bad = run_zoobot("schemas", "decals_dr5_orth")
    assert bad.returncode == 1, describe(bad)
    lines = _error_lines(bad)
    assert len(lines) == 1 and lines[0].startswith("Error: ValueError: Unknown schema name 'decals_dr5_orth'")
    assert "decals_dr5_ortho" in lines[0]


def test_info_prints_versions():
    result = run_zoobot("info", "--no-devices")
    assert result.returncode == 0, describe(result)
    assert f"zoobot {zoobot.__version__} (format version {zoobot.FORMAT_VERSION})" in result.stdout
    for package in ("torch", "lightning", "numpy", "keras"):
        assert f"{package} {importlib.metadata.version(package)}" in result.stdout
    assert "backend pytorch: installed" in result.stdout


@pytest.mark.slow
def test_info_lists_devices_of_both_backends():
    result = run_zoobot("info")
    assert result.returncode == 0, describe(result)
    assert "backend pytorch: installed; devices: CPU only" in result.stdout
    assert "backend tensorflow: installed; devices: CPU only" in result.stdout


# ---------------------------------------------------------------------------------------------
# runtime errors: one line, exit 1; --debug shows the traceback
# ---------------------------------------------------------------------------------------------

def test_bad_catalog_gives_one_line_error_naming_the_column(votes_catalog_csv, tmp_path):
    catalog = pd.read_csv(votes_catalog_csv).drop(columns=["bar-dr5_weak"])
    bad = tmp_path / "bad.csv"
    catalog.to_csv(bad, index=False)
    args = ("train", "--catalog", bad, "--schema", "decals_dr5_ortho", "--save-dir", tmp_path / "run",
            "--architecture", "tiny_cnn", "--epochs", 1, "--gpus", 0)
    result = run_zoobot(*args)
    assert result.returncode == 1, describe(result)
    lines = _error_lines(result)
    assert len(lines) == 1, describe(result)
    assert lines[0].startswith("Error: CatalogError:")
    assert "bar-dr5_weak" in lines[0] and "--debug" in lines[0]
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "run" / "checkpoints").exists()  # failed before any training

    debug = run_zoobot("--debug", *args)
    assert debug.returncode == 1
    assert "Traceback (most recent call last)" in debug.stderr and "bar-dr5_weak" in debug.stderr


def test_missing_image_is_reported_before_predicting(votes_catalog_csv, trained_tree, tmp_path):
    save_dir, _ = trained_tree
    catalog = pd.read_csv(votes_catalog_csv)
    catalog.loc[0, "file_loc"] = str(tmp_path / "nowhere.jpg")
    bad = tmp_path / "missing.csv"
    catalog.to_csv(bad, index=False)
    result = run_zoobot("predict", "--catalog", bad, "--checkpoint", save_dir / "checkpoints" / "last.ckpt",
                        "--save-loc", tmp_path / "preds.parquet")
    assert result.returncode == 1, describe(result)
    lines = _error_lines(result)
    assert len(lines) == 1 and lines[0].startswith("Error: FileNotFoundError:")
    # the command line's option, not the Python-only check_valid_paths=False (issue 12.7)
    assert "nowhere.jpg" in lines[0] and "--skip-missing" in lines[0] and "check_valid_paths" not in lines[0]
    assert not (tmp_path / "preds.parquet").exists()


# ---------------------------------------------------------------------------------------------
# train -> predict / representations / finetune
# ---------------------------------------------------------------------------------------------

def test_train_writes_checkpoints_metrics_and_config(trained_tree):
    save_dir, result = trained_tree
    assert result.returncode == 0, describe(result)
    assert (save_dir / "checkpoints" / "last.ckpt").is_file()
    best = result.stdout.split("Best checkpoint: ")[1].split()[0]
    # a name to type (README: --checkpoint results/run/best.ckpt), the same file as the best epoch's checkpoint
    assert pathlib.Path(best) == save_dir / "best.ckpt"
    epochs = [p for p in (save_dir / "checkpoints").glob("epoch=*.ckpt")]
    assert any(p.samefile(best) for p in epochs)
    # the test split's metrics, printed and saved
    test_metrics = json.loads((save_dir / "test_metrics.json").read_text())
    assert np.isfinite(test_metrics["test/supervised_loss"])
    assert f"test/supervised_loss {test_metrics['test/supervised_loss']:.4f}" in result.stdout
    metrics = pd.read_csv(save_dir / "logs" / "metrics.csv")
    assert np.isfinite(metrics["validation/supervised_loss"].dropna()).all()
    config = json.loads((save_dir / "config.json").read_text())
    assert config["backend"] == "pytorch" and config["resize_after_crop"] == IMAGE_SIZE
    for split in ("train", "val", "test"):
        assert (save_dir / f"{split}_catalog.parquet").is_file()


def test_predict_writes_every_id_and_consistent_fractions(votes_catalog_csv, trained_tree, tmp_path):
    save_dir, _ = trained_tree
    save_loc = tmp_path / "preds.parquet"
    args = ("predict", "--catalog", votes_catalog_csv, "--checkpoint", save_dir / "checkpoints" / "last.ckpt",
            "--save-loc", save_loc, "--n-samples", 2, "--batch-size", 16, "--num-workers", 0, "--summary")
    result = run_zoobot(*args)
    assert result.returncode == 0, describe(result)
    catalog = pd.read_csv(votes_catalog_csv, dtype={"id_str": str})
    ids, concentrations, label_cols, metadata = load(save_loc)
    schema = schemas.decals_dr5_ortho_schema
    assert ids["id_str"].tolist() == catalog["id_str"].tolist()
    assert label_cols == schema.label_cols
    assert concentrations.shape == (len(catalog), schema.n_answers, 2)
    # train()'s head floor is 0.1 and predict applies the calibration scale (issue 13): positive, bounded
    assert ((concentrations > 0) & (concentrations < 101)).all()
    # the fraction columns are the mean over samples of alpha / sum(alpha) within each question
    table = pd.read_parquet(save_loc)
    start, end = schema.question_index_groups[0]
    block = concentrations[:, start:end + 1, :]
    expected = (block / block.sum(axis=1, keepdims=True)).mean(axis=2)
    np.testing.assert_allclose(table[[f"{c}_fraction" for c in schema.label_cols[start:end + 1]]].to_numpy(),
                               expected, rtol=1e-5)
    friendly = pd.read_parquet(tmp_path / "preds_friendly.parquet")
    advanced = pd.read_parquet(tmp_path / "preds_advanced.parquet")
    assert friendly["id_str"].tolist() == catalog["id_str"].tolist() and len(advanced) == len(catalog)



@pytest.mark.slow
def test_predict_without_dropout_is_deterministic(votes_catalog_csv, trained_tree, tmp_path):
    save_dir, _ = trained_tree
    first, second = tmp_path / "a.parquet", tmp_path / "b.parquet"
    for loc in (first, second):
        run = run_zoobot("predict", "--catalog", votes_catalog_csv, "--checkpoint",
                         save_dir / "checkpoints" / "last.ckpt", "--save-loc", loc, "--no-test-time-dropout",
                         "--num-workers", 0)
        assert run.returncode == 0, describe(run)
    np.testing.assert_array_equal(load(first)[1], load(second)[1])


def test_representations_and_pca(votes_catalog_csv, trained_tree, tmp_path):
    save_dir, _ = trained_tree
    save_loc = tmp_path / "reps.parquet"
    result = run_zoobot("representations", "--catalog", votes_catalog_csv, "--checkpoint",
                        save_dir / "checkpoints" / "last.ckpt", "--save-loc", save_loc, "--num-workers", 0,
                        "--pca", 3)
    assert result.returncode == 0, describe(result)
    catalog = pd.read_csv(votes_catalog_csv, dtype={"id_str": str})
    reps = pd.read_parquet(save_loc)
    assert reps["id_str"].tolist() == catalog["id_str"].tolist()
    assert [c for c in reps.columns if c != "id_str"] == [f"feat_{i}" for i in range(128)]  # tiny_cnn: 128
    assert np.isfinite(reps.drop(columns="id_str").to_numpy()).all()
    pca = pd.read_parquet(tmp_path / "reps_pca.parquet")
    assert pca.columns.tolist() == ["id_str", "feat_pca_0", "feat_pca_1", "feat_pca_2"]
    # the first component carries at least as much variance as the later ones
    variances = pca.drop(columns="id_str").var().to_numpy()
    assert variances[0] >= variances[1] >= variances[2]


def test_finetune_from_checkpoint_then_predict(rings_catalog_csv, trained_tree, tmp_path):
    tree_dir, _ = trained_tree
    save_dir = tmp_path / "rings"
    result = run_zoobot(
        "finetune", "--catalog", rings_catalog_csv, "--label-cols", "ring", "--task", "classification",
        "--checkpoint", tree_dir / "checkpoints" / "last.ckpt", "--save-dir", save_dir, "--max-epochs", 1,
        "--batch-size", 8, "--accelerator", "cpu", "--num-workers", 0, "--learning-rate", 1e-3,
    )
    assert result.returncode == 0, describe(result)
    best = result.stdout.split("Best checkpoint: ")[1].split()[0]
    config = json.loads((save_dir / "config.json").read_text())
    assert config["resize_after_crop"] == IMAGE_SIZE  # read from the tree run's config.json
    test_preds = pd.read_parquet(save_dir / "test_predictions.parquet")
    probabilities = test_preds[["not_ring_pred_0", "ring_pred_0"]].to_numpy()  # named after the label
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-5)

    preds = tmp_path / "ring_preds.csv"
    run = run_zoobot("predict", "--catalog", rings_catalog_csv, "--checkpoint", best, "--save-loc", preds,
                     "--num-workers", 0)
    assert run.returncode == 0, describe(run)
    table = pd.read_csv(preds, dtype={"id_str": str})
    assert table["id_str"].tolist() == pd.read_csv(rings_catalog_csv, dtype={"id_str": str})["id_str"].tolist()
    # the checkpoint remembers the label it was trained on: ring_pred_mean, not class_1_pred_mean
    np.testing.assert_allclose(table["not_ring_pred_mean"] + table["ring_pred_mean"], 1.0, rtol=1e-5)


def test_finetune_rejects_bad_class_labels_before_training(rings_catalog_csv, trained_tree, tmp_path):
    tree_dir, _ = trained_tree
    catalog = pd.read_csv(rings_catalog_csv)
    catalog.loc[:2, "ring"] = 2
    bad = tmp_path / "bad_rings.csv"
    catalog.to_csv(bad, index=False)
    result = run_zoobot("finetune", "--catalog", bad, "--label-cols", "ring", "--checkpoint",
                        tree_dir / "checkpoints" / "last.ckpt", "--save-dir", tmp_path / "run", "--max-epochs", 1)
    assert result.returncode == 1, describe(result)
    lines = _error_lines(result)
    assert len(lines) == 1 and "class labels" in lines[0] and "num_classes=2" in lines[0], lines
    assert not (tmp_path / "run").exists()


# ---------------------------------------------------------------------------------------------
# shard (TensorFlow only)
# ---------------------------------------------------------------------------------------------

def test_shard_needs_the_tensorflow_backend(rings_catalog_csv, tmp_path):
    result = run_zoobot("shard", "--catalog", rings_catalog_csv, "--shard-dir", tmp_path / "shards",
                        "--columns", "ring")
    assert result.returncode == 2, describe(result)
    assert "--backend tensorflow" in result.stderr
    assert not (tmp_path / "shards").exists()


def test_shard_writes_tfrecords_with_tensorflow(rings_catalog_csv, tmp_path):
    shard_dir = tmp_path / "shards"
    result = run_zoobot("--backend", "tensorflow", "shard", "--catalog", rings_catalog_csv, "--shard-dir", shard_dir,
                        "--size", IMAGE_SIZE, "--columns", "ring", "--shard-size", 16)
    assert result.returncode == 0, describe(result)
    config = json.loads((shard_dir / "shard_config.json").read_text())
    assert config["size"] == IMAGE_SIZE and config["columns_to_save"] == ["ring"]
    written = sorted(shard_dir.glob("*_shards/*.tfrecord"))
    assert written and all(p.stat().st_size > 0 for p in written)
    n_rows = sum(len(pd.read_parquet(shard_dir / f"{split}_catalog.parquet")) for split in ("train", "val", "test"))
    assert n_rows == len(pd.read_csv(rings_catalog_csv))


@pytest.mark.slow
def test_tensorflow_train_predict_and_representations(votes_catalog_csv, tmp_path):
    save_dir = tmp_path / "keras_run"
    trained = run_zoobot("--backend", "tensorflow", "train", "--catalog", votes_catalog_csv, "--schema",
                         "decals_dr5_ortho", "--save-dir", save_dir, "--architecture", "tiny_cnn", "--resize-size",
                         IMAGE_SIZE, "--epochs", 1, "--batch-size", 8, "--num-workers", 0, "--gpus", 0)
    assert trained.returncode == 0, describe(trained)
    best = trained.stdout.split("Best checkpoint: ")[1].split()[0]
    assert best.endswith(".keras")
    preds = tmp_path / "keras_preds.parquet"
    predicted = run_zoobot("--backend", "tensorflow", "predict", "--catalog", votes_catalog_csv, "--checkpoint", best,
                           "--save-loc", preds, "--num-workers", 0)
    assert predicted.returncode == 0, describe(predicted)
    catalog = pd.read_csv(votes_catalog_csv, dtype={"id_str": str})
    assert load(preds)[0]["id_str"].tolist() == catalog["id_str"].tolist()
    reps = tmp_path / "keras_reps.parquet"
    represented = run_zoobot("--backend", "tensorflow", "representations", "--catalog", votes_catalog_csv,
                             "--checkpoint", best, "--save-loc", reps, "--num-workers", 0)
    assert represented.returncode == 0, describe(represented)
    assert pd.read_parquet(reps).shape == (len(catalog), 1 + 128)
    # a Keras model with the PyTorch backend is refused with the fix
    wrong = run_zoobot("predict", "--catalog", votes_catalog_csv, "--checkpoint", best, "--save-loc", preds)
    assert wrong.returncode == 1 and "--backend tensorflow" in wrong.stderr


def test_unreachable_hub_name_fails_at_once_with_the_cli_spelling(rings_catalog_csv, tmp_path):
    import time

    env_overrides = {"HF_ENDPOINT": "http://127.0.0.1:9", "HF_HOME": str(tmp_path / "empty_hf_home")}
    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "HTTPS_PROXY", "https_proxy",
                                                             "ALL_PROXY", "all_proxy", "HTTP_PROXY", "http_proxy")}
    env.update(env_overrides, PYTHONWARNINGS="ignore::DeprecationWarning")
    started = time.perf_counter()
    result = subprocess.run([sys.executable, "-m", "zoobot", "finetune", "--catalog", str(rings_catalog_csv),
                             "--label-cols", "ring", "--name", "hf-hub:someone/zoobot-encoder-not-cached",
                             "--save-dir", str(tmp_path / "run")], capture_output=True, text=True, env=env,
                            timeout=300)
    assert result.returncode == 1, describe(result)
    assert "the Hub cannot be reached" in result.stderr
    assert "--name local-dir:/path/to/folder" in result.stderr and "name='" not in result.stderr
    assert "HF_HUB_OFFLINE" not in result.stderr
    assert time.perf_counter() - started < 60  # start-up included; no ~23 s of retries
