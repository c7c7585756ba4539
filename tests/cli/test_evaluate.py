"""``zoobot evaluate`` end to end: a catalog and a predictions file written here, run as a user runs it."""
import numpy as np
import pandas as pd
import pytest

from tests.cli.conftest import describe, run_zoobot
from zoobot.shared import metrics, schemas
from zoobot.shared.save_predictions import save

SCHEMA = schemas.decals_dr5_ortho_schema


@pytest.fixture(scope="module")
def predictions(votes_catalog_csv, tmp_path_factory):
    """Two-sample concentrations near the truth for 30 of the 40 galaxies, in another order; one failed."""
    catalog = pd.read_csv(votes_catalog_csv, dtype={"id_str": str})
    rng = np.random.default_rng(0)
    rows = rng.permutation(len(catalog))[:30]
    truth = metrics.true_probabilities(catalog.iloc[rows], SCHEMA)
    alpha = np.stack([truth * 15 + 0.2, truth * 25 + 0.1], axis=2)
    alpha[4] = np.nan
    path = tmp_path_factory.mktemp("predictions") / "preds.parquet"
    save(alpha, catalog["id_str"].iloc[rows].tolist(), SCHEMA.label_cols, path, schema=SCHEMA)
    return path, catalog.iloc[rows].reset_index(drop=True), alpha


def test_evaluate_prints_the_table_writes_it_and_plots(votes_catalog_csv, predictions, tmp_path):
    path, expected_catalog, alpha = predictions
    table_loc, plot_loc = tmp_path / "table.csv", tmp_path / "reliability.png"
    result = run_zoobot("evaluate", "--catalog", votes_catalog_csv, "--predictions", path, "--train-catalog",
                        votes_catalog_csv, "--plot", plot_loc, "--save-table", table_loc)
    assert result.returncode == 0, describe(result)
    assert "30 galaxies, schema decals_dr5_ortho, 2 sample(s)" in result.stdout
    for word in ("bar-dr5", "pooled", "constant_dirichlet", "train_mean", "truth MAE", "NLL DirMult"):
        assert word in result.stdout, word
    assert plot_loc.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    written = pd.read_csv(table_loc)
    train = pd.read_csv(votes_catalog_csv, dtype={"id_str": str})
    expected = metrics.evaluate_predictions(expected_catalog, alpha, SCHEMA, train_catalog=train)
    pd.testing.assert_frame_equal(written, expected, check_dtype=False)
    assert written.set_index(["question", "predictor"]).loc[("pooled", "model"), "n_galaxies"] == 29


def test_evaluate_reads_csv_predictions_without_metadata(votes_catalog_csv, predictions, tmp_path):
    path, _, _ = predictions
    csv = tmp_path / "preds.csv"
    pd.read_parquet(path).to_csv(csv, index=False)
    result = run_zoobot("evaluate", "--catalog", votes_catalog_csv, "--predictions", csv)
    assert result.returncode == 0, describe(result)
    assert "schema decals_dr5_ortho" in result.stdout and "train_mean" not in result.stdout


def test_evaluate_names_predicted_galaxies_missing_from_the_catalog(votes_catalog_csv, predictions, tmp_path):
    path, _, _ = predictions
    short = tmp_path / "short.csv"
    pd.read_csv(votes_catalog_csv).iloc[:5].to_csv(short, index=False)
    result = run_zoobot("evaluate", "--catalog", short, "--predictions", path)
    assert result.returncode == 1, describe(result)
    assert "predicted galaxies are not in the catalog" in result.stderr
    wrong = run_zoobot("evaluate", "--catalog", votes_catalog_csv, "--predictions", path, "--schema", "gz2")
    assert wrong.returncode == 1 and "not the label columns of schema 'gz2'" in wrong.stderr, describe(wrong)
