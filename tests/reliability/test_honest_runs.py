"""Reruns, errors and interruptions are honest (issue 12), checked as a user meets them: ``zoobot`` commands
run in subprocesses, in both backends, with exit codes, messages and files on disk.

- a model error in prediction stops the run with its own message; it is never recorded as unreadable images;
"""
import pytest

from tests.cli.conftest import describe, run_zoobot

BACKENDS = [pytest.param("pytorch", marks=pytest.mark.torch), pytest.param("tensorflow", marks=pytest.mark.tf)]
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
