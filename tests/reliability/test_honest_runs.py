"""Reruns, errors and interruptions are honest (issue 12), checked as a user meets them: ``zoobot`` commands
run in subprocesses, in both backends, with exit codes, messages and files on disk.

- a model error in prediction stops the run with its own message; it is never recorded as unreadable images;
- one run per ``save_dir``: a different run is refused (``--overwrite`` replaces it), no ``-v1`` checkpoints,
  ``config.json`` only once training starts;
"""
import json

import pytest

from tests.cli.conftest import describe, run_zoobot

from .helpers import broken_checkpoints

BACKENDS = [pytest.param("pytorch", marks=pytest.mark.torch), pytest.param("tensorflow", marks=pytest.mark.tf)]
#: The same, with the TensorFlow run *slow*: for promises kept by shared code, which the PyTorch run already
#: checks in the default suite.
BACKENDS_TF_SLOW = [pytest.param("pytorch", marks=pytest.mark.torch),
                    pytest.param("tensorflow", marks=[pytest.mark.tf, pytest.mark.slow])]
QUIET = ("--num-workers", 0, "--batch-size", 8)


def predict(backend, catalog, checkpoint, save_loc, *extra):
    return run_zoobot("--backend", backend, "predict", "--catalog", catalog, "--checkpoint", checkpoint,
                      "--save-loc", save_loc, *QUIET, *extra)


# ---------------------------------------------------------------------------------------------- errors are errors

@pytest.mark.parametrize("backend", BACKENDS)
def test_a_model_error_stops_prediction_with_its_own_message_and_records_no_bad_images(
        backend, release_models, rings_catalog_csv, tmp_path):
    save_loc = tmp_path / "preds.parquet"
    # 8 px images are too small for tiny_cnn's four poolings: an error of the model, not of any image
    result = predict(backend, rings_catalog_csv, release_models[backend], save_loc, "--resize-size", 8)
    assert result.returncode == 1, describe(result)
    assert "could not be read" not in result.stderr, describe(result)
    assert "size" in result.stderr.lower(), describe(result)
    assert not save_loc.exists() and not (tmp_path / "preds_failures.csv").exists()


def train(backend, catalog, save_dir, *extra):
    return run_zoobot("--backend", backend, "train", "--catalog", catalog, "--schema", "gz_rings", "--save-dir",
                      save_dir, "--architecture", "tiny_cnn", "--resize-size", 32, "--epochs", 1, "--gpus", 0,
                      *QUIET, *extra)


def checkpoint_names(save_dir) -> list:
    return sorted(path.name for path in (save_dir / "checkpoints").iterdir())


# ---------------------------------------------------------------------------------------------- one run per save_dir

@pytest.mark.parametrize("backend", BACKENDS_TF_SLOW)
def test_a_different_run_into_a_used_save_dir_is_refused_and_overwrite_replaces_it(
        backend, rings_catalog_csv, tmp_path):
    save_dir = tmp_path / "run"
    first = train(backend, rings_catalog_csv, save_dir)
    assert first.returncode == 0, describe(first)
    names, config = checkpoint_names(save_dir), (save_dir / "config.json").read_text()

    # other arguments, and a fresh start asked for: both refused, before any training, naming the fix
    for extra in (("--batch-size", 4), ("--no-resume",)):
        refused = train(backend, rings_catalog_csv, save_dir, *extra)
        assert refused.returncode == 1, describe(refused)
        assert "--overwrite" in refused.stderr, describe(refused)
        assert checkpoint_names(save_dir) == names  # no last-v1 / epoch=0-v1 sibling
        assert (save_dir / "config.json").read_text() == config  # still describes last.*

    replaced = train(backend, rings_catalog_csv, save_dir, "--batch-size", 4, "--overwrite")
    assert replaced.returncode == 0, describe(replaced)
    assert checkpoint_names(save_dir) == names
    assert json.loads((save_dir / "config.json").read_text())["batch_size"] == 4


@pytest.mark.torch
def test_a_finetune_that_fails_while_set_up_writes_no_config(release_models, tmp_path):
    catalog = tmp_path / "rings.csv"
    _ring_labels(tmp_path, catalog)
    save_dir = tmp_path / "finetuned"
    result = run_zoobot("finetune", "--catalog", catalog, "--label-cols", "ring", "--checkpoint",
                        release_models["pytorch"], "--save-dir", save_dir, "--accelerator", "gpu", "--max-epochs", 1,
                        *QUIET)
    assert result.returncode == 1, describe(result)
    assert not (save_dir / "config.json").exists()


def _ring_labels(root, path):
    from zoobot.shared.synthetic import make_synthetic_catalog

    catalog, _ = make_synthetic_catalog(root / "images", n_galaxies=20, image_size=32, label="ring", seed=4,
                                        ring_fraction=0.5, progress=False)
    catalog.to_csv(path, index=False)


# ---------------------------------------------------------------------------------------------- signals

def start_zoobot(*args):
    """``python -m zoobot ARGS`` started in the background (stdout/stderr to pipes)."""
    import os
    import subprocess
    import sys

    env = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONWARNINGS="ignore")
    env.pop("ZOOBOT_DEBUG", None)
    return subprocess.Popen([sys.executable, "-m", "zoobot", *map(str, args)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)


def signal_when(process, ready, signum, timeout=300):
    """Send ``signum`` once ``ready()`` is true; returns ``(returncode, stderr)``."""
    import time

    deadline = time.monotonic() + timeout
    try:
        while not ready():
            assert process.poll() is None, f"exited ({process.returncode}) first:\n{process.stderr.read()[-3000:]}"
            assert time.monotonic() < deadline, "never got ready"
            time.sleep(0.1)
        process.send_signal(signum)
        _, stderr = process.communicate(timeout=300)  # a handler waits for the C++ call it arrived in
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    return process.returncode, stderr


@pytest.mark.parametrize("signum, code", [("SIGTERM", 143), pytest.param("SIGINT", 130, marks=pytest.mark.slow)])
@pytest.mark.parametrize("backend", BACKENDS)
def test_a_signal_during_training_exits_with_128_plus_the_signal_and_says_where_to_resume(
        backend, signum, code, rings_catalog_csv, tmp_path):
    import signal

    save_dir = tmp_path / "run"
    last = save_dir / "checkpoints" / ("last.ckpt" if backend == "pytorch" else "last.keras")
    process = start_zoobot("--backend", backend, "train", "--catalog", rings_catalog_csv, "--schema", "gz_rings",
                           "--save-dir", save_dir, "--architecture", "tiny_cnn", "--resize-size", 32, "--epochs",
                           500, "--patience", 500, "--gpus", 0, *QUIET)
    returncode, stderr = signal_when(process, last.is_file, getattr(signal, signum))  # after the first epoch
    assert returncode == code, stderr[-3000:]
    assert "interrupted at epoch" in stderr and "rerun the same command to resume" in stderr, stderr[-3000:]
    assert last.is_file() and (save_dir / "config.json").is_file()  # the finished epochs stay resumable


@pytest.fixture(scope="module")
def slow_catalog_csv(rings_catalog, tmp_path_factory):
    """30000 rows (the same 20 images under new ids): at one image per batch, slow enough to be interrupted."""
    many = rings_catalog.iloc[[i % len(rings_catalog) for i in range(30000)]].copy()
    many["id_str"] = [f"g{i}" for i in range(len(many))]
    path = tmp_path_factory.mktemp("slow_catalog") / "many.csv"
    many.to_csv(path, index=False)
    return path


def start_slow_prediction(backend, catalog, checkpoint, save_loc):
    return start_zoobot("--backend", backend, "predict", "--catalog", catalog, "--checkpoint", checkpoint,
                        "--save-loc", save_loc, "--num-workers", 0, "--batch-size", 1)


@pytest.mark.parametrize("backend", BACKENDS_TF_SLOW)
def test_sigterm_during_prediction_exits_143_keeping_the_finished_rows(backend, release_models, slow_catalog_csv,
                                                                       tmp_path):
    import signal

    save_loc = tmp_path / "preds.parquet"
    partial = tmp_path / "preds.parquet.partial"
    process = start_slow_prediction(backend, slow_catalog_csv, release_models[backend], save_loc)
    returncode, stderr = signal_when(process, lambda: (partial / "manifest.json").is_file(), signal.SIGTERM)
    assert returncode == 143, stderr[-3000:]
    assert "interrupted at row" in stderr and "rerun the same command to resume" in stderr, stderr[-3000:]
    assert (partial / "manifest.json").is_file() and not save_loc.exists()


# ---------------------------------------------------------------------------------------------- one writer per save_loc

@pytest.mark.parametrize("backend", BACKENDS_TF_SLOW)
def test_a_second_prediction_to_the_same_save_loc_is_refused_naming_the_first_ones_pid(
        backend, release_models, slow_catalog_csv, rings_catalog_csv, tmp_path):
    import signal

    save_loc = tmp_path / "preds.parquet"
    partial = tmp_path / "preds.parquet.partial"
    first = start_slow_prediction(backend, slow_catalog_csv, release_models[backend], save_loc)
    second = {}

    def second_prediction_ran():
        # another catalog: before the lock, it deleted the first one's partial folder
        second["result"] = predict(backend, rings_catalog_csv, release_models[backend], save_loc)
        return True

    signal_when(first, lambda: (partial / "manifest.json").is_file() and second_prediction_ran(), signal.SIGTERM)
    result = second["result"]
    assert result.returncode == 1, describe(result)
    assert f"PID {first.pid}" in result.stderr, describe(result)
    assert first.returncode == 143  # the first one was still running, undisturbed, when it was stopped
    assert (partial / "manifest.json").is_file()


# ---------------------------------------------------------------------------------------------- checkpoint errors

@pytest.mark.torch
@pytest.mark.parametrize("kind", ["empty"] + [pytest.param(k, marks=pytest.mark.slow) for k in ("truncated", "text",
                                                                                                  "keras")])
def test_an_unreadable_checkpoint_is_named_with_its_cause(kind, release_models, rings_catalog_csv, tmp_path):
    path, cause = broken_checkpoints(tmp_path, release_models)[kind]
    result = predict("pytorch", rings_catalog_csv, path, tmp_path / "preds.parquet")
    assert result.returncode == 1, describe(result)
    assert str(path) in result.stderr and cause in result.stderr, describe(result)
    assert "Aborted" not in result.stderr


# ---------------------------------------------------------------------------------------------- --skip-missing

@pytest.mark.parametrize("backend", BACKENDS_TF_SLOW)
def test_the_cli_predicts_around_missing_files_with_skip_missing(backend, release_models, rings_catalog, tmp_path):
    import pandas as pd

    catalog = rings_catalog.copy()
    catalog.loc[3, "file_loc"] = str(tmp_path / "gone.png")
    path = tmp_path / "catalog.csv"
    catalog.to_csv(path, index=False)
    save_loc = tmp_path / "preds.parquet"

    refused = predict(backend, path, release_models[backend], save_loc)
    assert refused.returncode == 1 and "--skip-missing" in refused.stderr, describe(refused)
    assert "check_valid_paths" not in refused.stderr  # a Python argument means nothing on the command line

    result = predict(backend, path, release_models[backend], save_loc, "--skip-missing")
    assert result.returncode == 0, describe(result)
    table = pd.read_parquet(save_loc)
    assert table["id_str"].tolist() == catalog["id_str"].tolist()
    failures = pd.read_csv(tmp_path / "preds_failures.csv")
    assert failures["id_str"].tolist() == [catalog["id_str"][3]]


# ---------------------------------------------------------------------------------------------- smaller ones (item 9)

@pytest.mark.parametrize("kind, fragment", [("empty", "is empty (0 bytes)"), ("latin1", "not UTF-8"),
                                            ("semicolons", "separated by semicolons")])
def test_an_unreadable_csv_catalog_is_named_with_the_fix(kind, fragment, rings_catalog, tmp_path):
    path = tmp_path / f"{kind}.csv"
    if kind == "empty":
        path.write_bytes(b"")
    elif kind == "latin1":
        catalog = rings_catalog.copy()
        catalog["note"] = "Müller's galaxy"
        path.write_bytes(catalog.to_csv(index=False).encode("latin-1"))  # ü is one byte, 0xfc: not UTF-8
    else:
        rings_catalog.to_csv(path, index=False, sep=";")
    result = run_zoobot("predict", "--catalog", path, "--checkpoint", path, "--save-loc", tmp_path / "p.parquet")
    assert result.returncode == 1, describe(result)
    assert str(path) in result.stderr and fragment in result.stderr, describe(result)


def test_non_numeric_labels_are_shown_with_their_rows_not_the_first_rows(rings_catalog, tmp_path):
    catalog = rings_catalog.copy().astype({"ring_yes": object})
    catalog.loc[7, "ring_yes"] = "12a"
    path = tmp_path / "catalog.csv"
    catalog.to_csv(path, index=False)
    result = train("pytorch", path, tmp_path / "run")
    assert result.returncode == 1, describe(result)
    assert f"('{catalog['id_str'][7]}', '12a')" in result.stderr, describe(result)
    assert catalog["id_str"][0] not in result.stderr


@pytest.mark.torch
def test_an_existing_predictions_file_is_not_replaced_silently(release_models, rings_catalog_csv, tmp_path):
    save_loc = tmp_path / "preds.parquet"
    save_loc.write_bytes(b"earlier predictions")
    refused = predict("pytorch", rings_catalog_csv, release_models["pytorch"], save_loc)
    assert refused.returncode == 1 and "--overwrite" in refused.stderr, describe(refused)
    assert save_loc.read_bytes() == b"earlier predictions"
    replaced = predict("pytorch", rings_catalog_csv, release_models["pytorch"], save_loc, "--overwrite")
    assert replaced.returncode == 0, describe(replaced)


@pytest.mark.torch
def test_the_non_integer_votes_warning_is_shown_once(rings_catalog, tmp_path):
    catalog = rings_catalog.copy()
    catalog["ring_yes"] = catalog["ring_yes"] + 0.5
    path = tmp_path / "fractions.csv"
    catalog.to_csv(path, index=False)
    result = train("pytorch", path, tmp_path / "run")
    assert result.returncode == 0, describe(result)
    assert result.stderr.count("are not whole numbers") == 1, describe(result)


@pytest.mark.torch
@pytest.mark.parametrize("call", ["train", "get_trainer", "max_epochs"])
def test_no_save_dir_and_endless_epochs_are_refused_pytorch(call, rings_catalog):
    from zoobot.pytorch.training import finetune, train_with_pytorch_lightning as twpl

    from .helpers import RINGS, TRAIN_RUN

    with pytest.raises(ValueError, match="working directory" if call != "max_epochs" else "max_epochs must be >= 1"):
        if call == "train":
            twpl.train("", RINGS, catalog=rings_catalog, **TRAIN_RUN)
        elif call == "get_trainer":
            finetune.get_trainer("", accelerator="cpu")
        else:
            finetune.get_trainer("out", accelerator="cpu", max_epochs=-1)


def test_image_errors_show_plain_strings_not_numpy_reprs(tmp_path):
    import numpy as np

    from zoobot.shared.errors import ImageLoadError
    from zoobot.shared.images import load_image

    with pytest.raises(ImageLoadError) as caught:
        load_image(np.str_(str(tmp_path / "gone.png")), id_str=np.str_("g1"))
    assert "np.str_" not in str(caught.value) and "'g1'" in str(caught.value)


@pytest.mark.tf
@pytest.mark.parametrize("call", ["train", "get_trainer"])
def test_no_save_dir_is_refused_tensorflow(call, rings_catalog):
    import zoobot.tensorflow  # noqa: F401
    from zoobot.tensorflow.training import finetune, train_with_keras

    from .helpers import RINGS, TRAIN_RUN

    with pytest.raises(ValueError, match="working directory"):
        if call == "train":
            train_with_keras.train("", RINGS, catalog=rings_catalog, **TRAIN_RUN)
        else:
            finetune.get_trainer("", accelerator="cpu")


# ---------------------------------------------------------------------------------------------- finetune resumes

@pytest.mark.slow
@pytest.mark.torch
def test_a_stopped_finetune_resumes_to_the_weights_of_an_uninterrupted_one(release_models, tmp_path):
    """``zoobot finetune`` rerun in its save_dir with the same arguments continues from ``last.ckpt`` (a stopped
    run is simulated by one that ended after 1 of 3 epochs: max_epochs may change on resumption)."""
    import torch

    catalog = tmp_path / "rings.csv"
    _ring_labels(tmp_path, catalog)

    def finetune(save_dir, epochs):
        result = run_zoobot("finetune", "--catalog", catalog, "--label-cols", "ring", "--checkpoint",
                            release_models["pytorch"], "--save-dir", save_dir, "--max-epochs", epochs, "--n-blocks",
                            -1, "--learning-rate", 1e-3, "--accelerator", "cpu", *QUIET)
        assert result.returncode == 0, describe(result)
        return result

    finetune(tmp_path / "whole", 3)
    finetune(tmp_path / "stopped", 1)
    resumed = finetune(tmp_path / "stopped", 3)
    assert "Resuming" in resumed.stdout, describe(resumed)
    whole = torch.load(tmp_path / "whole" / "checkpoints" / "last.ckpt", weights_only=True)
    again = torch.load(tmp_path / "stopped" / "checkpoints" / "last.ckpt", weights_only=True)
    assert (whole["epoch"], whole["global_step"]) == (again["epoch"], again["global_step"])
    for key, value in whole["state_dict"].items():
        torch.testing.assert_close(again["state_dict"][key], value, rtol=0, atol=0, msg=key)


@pytest.mark.slow
@pytest.mark.tf
def test_a_stopped_tensorflow_finetune_resumes_to_the_weights_of_an_uninterrupted_one(release_models, tmp_path):
    """The TensorFlow twin: ``zoobot --backend tensorflow finetune`` rerun in its save_dir continues from
    ``last.keras`` (weights, optimizer state, epoch, early stopping, best checkpoints), to exactly the weights
    and optimizer state of an uninterrupted run on the CPU (before: refused unless --overwrite)."""
    import io
    import zipfile

    import h5py
    import numpy as np
    import pandas as pd

    catalog = tmp_path / "rings.csv"
    _ring_labels(tmp_path, catalog)

    def finetune(save_dir, epochs):
        result = run_zoobot("--backend", "tensorflow", "finetune", "--catalog", catalog, "--label-cols", "ring",
                            "--checkpoint", release_models["tensorflow"], "--save-dir", save_dir, "--max-epochs",
                            epochs, "--n-blocks", -1, "--learning-rate", 1e-3, "--accelerator", "cpu", *QUIET)
        assert result.returncode == 0, describe(result)
        return result

    def arrays(save_dir) -> dict:
        """Every array of last.keras (model weights and optimizer variables), by name."""
        with zipfile.ZipFile(save_dir / "checkpoints" / "last.keras") as archive:
            store = h5py.File(io.BytesIO(archive.read("model.weights.h5")), "r")
        found = {}
        store.visititems(lambda name, item: found.__setitem__(name, item[()]) if isinstance(item, h5py.Dataset)
                         else None)
        return found

    finetune(tmp_path / "whole", 3)
    finetune(tmp_path / "stopped", 1)
    resumed = finetune(tmp_path / "stopped", 3)
    assert "Resuming" in resumed.stdout, describe(resumed)
    whole, again = arrays(tmp_path / "whole"), arrays(tmp_path / "stopped")
    assert sorted(whole) == sorted(again) and any("optimizer" in name for name in whole)
    for name, value in whole.items():
        np.testing.assert_array_equal(again[name], value, err_msg=name)
    # metrics.csv: each training epoch once, with the uninterrupted run's values (test rows aside)
    epochs = [pd.read_csv(tmp_path / name / "logs" / "metrics.csv").dropna(subset=["finetuning/train_loss"])
              for name in ("whole", "stopped")]
    assert epochs[1]["epoch"].tolist() == [0, 1, 2]
    pd.testing.assert_frame_equal(epochs[1].reset_index(drop=True), epochs[0].reset_index(drop=True))
    assert checkpoint_names(tmp_path / "stopped") == checkpoint_names(tmp_path / "whole")


@pytest.mark.slow
@pytest.mark.parametrize("backend", BACKENDS)
def test_sigterm_during_finetuning_exits_143_and_says_where_to_resume(backend, release_models, tmp_path):
    import signal

    catalog = tmp_path / "rings.csv"
    _ring_labels(tmp_path, catalog)
    save_dir = tmp_path / "finetuned"
    last = save_dir / "checkpoints" / ("last.ckpt" if backend == "pytorch" else "last.keras")
    process = start_zoobot("--backend", backend, "finetune", "--catalog", catalog, "--label-cols", "ring",
                           "--checkpoint", release_models[backend], "--save-dir", save_dir, "--max-epochs", 500,
                           "--patience", 500, "--accelerator", "cpu", *QUIET)
    returncode, stderr = signal_when(process, last.is_file, signal.SIGTERM)
    assert returncode == 143, stderr[-3000:]
    assert "interrupted at epoch" in stderr and "rerun the same command to resume" in stderr, stderr[-3000:]
    assert (save_dir / "config.json").is_file()


@pytest.mark.torch
def test_a_finetune_on_a_single_class_warns_before_any_model_work(release_models, rings_catalog, tmp_path):
    catalog = rings_catalog[["id_str", "file_loc"]].assign(ring=1)
    path = tmp_path / "one_class.csv"
    catalog.to_csv(path, index=False)
    result = run_zoobot("finetune", "--catalog", path, "--label-cols", "ring", "--checkpoint", release_models["pytorch"],
                        "--save-dir", tmp_path / "run", "--max-epochs", 1, "--accelerator", "cpu", *QUIET)
    assert "cannot learn from one class" in result.stderr, describe(result)
