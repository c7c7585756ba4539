"""Prediction files: round trips in every format, layout, metadata, failures and summary tables."""
import json

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

import zoobot
from zoobot.shared import load_predictions, save_predictions, stats
from zoobot.shared.errors import CatalogError
from zoobot.shared.schemas import Schema

SCHEMA = Schema({"a": ["_x", "_y"], "b": ["_u", "_v", "_w"]}, {"a": None, "b": "a_x"}, name="tiny")
IDS = ["g0", "007", "g2", "g3"]


def concentrations(n=4, samples=3, seed=0):
    return np.random.default_rng(seed).uniform(1, 101, size=(n, 5, samples)).astype(np.float32)


@pytest.mark.parametrize("ext", [".parquet", ".csv", ".hdf5", ".h5"])
def test_round_trip_every_format(tmp_path, ext):
    preds = concentrations()
    preds[2] = np.nan  # a failed row
    failures = pd.DataFrame({"id_str": ["g2"], "file_loc": ["/x/g2.jpg"], "error": ["ImageLoadError: truncated"]})
    metadata = {"model_class": "ZoobotTree", "test_time_dropout": True, "backend": "pytorch"}
    path = save_predictions.save(preds, IDS, SCHEMA.label_cols, tmp_path / f"preds{ext}", failures=failures,
                                 metadata=metadata, schema=SCHEMA)
    ids, loaded, label_cols, meta = load_predictions.load(path)
    assert ids["id_str"].tolist() == IDS  # order and leading zeros kept
    assert label_cols == SCHEMA.label_cols
    assert loaded.dtype == np.float32 and loaded.shape == (4, 5, 3)
    np.testing.assert_array_equal(loaded, preds)  # NaN == NaN positions too
    assert meta["n_samples"] == 3
    if ext != ".csv":
        assert meta["zoobot_version"] == zoobot.__version__ and meta["format_version"] == zoobot.FORMAT_VERSION
        assert meta["model_class"] == "ZoobotTree" and meta["test_time_dropout"] is True
        assert Schema.from_dict(meta["schema"]) == SCHEMA
    written_failures = pd.read_csv(tmp_path / "preds_failures.csv", dtype=str)
    assert written_failures.to_dict("records") == failures.to_dict("records")


def test_parquet_layout_and_metadata(tmp_path):
    preds = concentrations(samples=2)
    path = save_predictions.save(preds, IDS, SCHEMA.label_cols, tmp_path / "p.parquet", schema=SCHEMA,
                                 metadata={"test_time_augmentation": False})
    table = pd.read_parquet(path)
    assert list(table.columns[:4]) == ["id_str", "a_x_concentration_0", "a_x_concentration_1", "a_x_fraction"]
    assert len(table.columns) == 1 + 5 * 3
    np.testing.assert_allclose(table["b_w_fraction"], stats.vote_fractions(preds, SCHEMA)[:, 4], rtol=1e-6)
    raw = pq.read_schema(path).metadata
    for key in ("zoobot_version", "format_version", "schema", "n_samples", "kind", "test_time_augmentation"):
        assert key.encode() in raw
    assert json.loads(raw[b"kind"]) == "tree" and json.loads(raw[b"n_samples"]) == 2


def test_tree_fraction_without_schema_infers_questions_from_names(tmp_path):
    preds = concentrations()
    save_predictions.save(preds, IDS, SCHEMA.label_cols, tmp_path / "p.csv")
    table = pd.read_csv(tmp_path / "p.csv")
    np.testing.assert_allclose(table[[f"{c}_fraction" for c in SCHEMA.label_cols]],
                               stats.vote_fractions(preds, SCHEMA), rtol=1e-6)


def test_generic_layout(tmp_path):
    preds = np.arange(12, dtype=np.float32).reshape(3, 2, 2)
    path = save_predictions.save(preds, ["a", "b", "c"], ["class_0", "class_1"], tmp_path / "c.parquet", kind="generic")
    table = pd.read_parquet(path)
    assert list(table.columns) == ["id_str", "class_0_pred_0", "class_0_pred_1", "class_0_pred_mean",
                                   "class_1_pred_0", "class_1_pred_1", "class_1_pred_mean"]
    assert table["class_1_pred_mean"].tolist() == [2.5, 6.5, 10.5]
    ids, loaded, cols, meta = load_predictions.load(path)
    assert cols == ["class_0", "class_1"] and meta["kind"] == "generic"
    np.testing.assert_array_equal(loaded, preds)


def test_two_dimensional_predictions_are_one_sample(tmp_path):
    path = save_predictions.save(np.ones((2, 1)), ["a", "b"], ["prediction"], tmp_path / "r.csv", kind="generic")
    assert load_predictions.load(path)[1].shape == (2, 1, 1)


def test_failed_ids_are_written_as_nan_and_stale_failures_removed(tmp_path):
    preds = concentrations()
    failures = pd.DataFrame({"id_str": ["g3"], "file_loc": ["g3.jpg"], "error": ["bad"]})
    save_predictions.save(preds, IDS, SCHEMA.label_cols, tmp_path / "p.parquet", failures=failures)
    loaded = load_predictions.load(tmp_path / "p.parquet")[1]
    assert np.isnan(loaded[3]).all() and np.isfinite(loaded[:3]).all()
    assert np.isfinite(preds).all()  # the caller's array is untouched
    save_predictions.save(preds, IDS, SCHEMA.label_cols, tmp_path / "p.parquet")
    assert not (tmp_path / "p_failures.csv").exists()


def test_save_errors(tmp_path):
    preds = concentrations()
    with pytest.raises(ValueError, match=r"Unknown predictions file extension .*'.txt'.*'.parquet', '.csv', '.hdf5', '.h5'"):
        save_predictions.save(preds, IDS, SCHEMA.label_cols, tmp_path / "p.txt")
    with pytest.raises(ValueError, match="Unknown kind 'trees'"):
        save_predictions.save(preds, IDS, SCHEMA.label_cols, tmp_path / "p.csv", kind="trees")
    with pytest.raises(ValueError, match="expected width 5 label_cols, got width 4"):
        save_predictions.save(preds, IDS, SCHEMA.label_cols[:4], tmp_path / "p.csv")
    with pytest.raises(ValueError, match="Got 3 id_str for 4 rows"):
        save_predictions.save(preds, IDS[:3], SCHEMA.label_cols, tmp_path / "p.csv")
    with pytest.raises(CatalogError, match=r"1 duplicated id_str value\(s\), e.g. 'g0'"):
        save_predictions.save(preds, ["g0", "g0", "a", "b"], SCHEMA.label_cols, tmp_path / "p.csv")
    assert not list(tmp_path.iterdir())  # nothing half-written


def test_aliases_are_save():
    assert save_predictions.predictions_to_hdf5 is save_predictions.save
    assert save_predictions.predictions_to_csv is save_predictions.save


def test_load_errors(tmp_path):
    with pytest.raises(ValueError, match="Unknown predictions file extension"):
        load_predictions.load(tmp_path / "x.json")
    with pytest.raises(FileNotFoundError, match="missing.parquet"):
        load_predictions.load(tmp_path / "missing.parquet")
    pd.DataFrame({"id_str": ["a"], "x": [1.0]}).to_csv(tmp_path / "plain.csv", index=False)
    with pytest.raises(ValueError, match="has no prediction columns"):
        load_predictions.load(tmp_path / "plain.csv")


# ------------------------------------------------------------------ summaries
def expected_summary(preds):
    fractions = stats.vote_fractions(preds, SCHEMA)
    asked_b = fractions[:, 0]  # b is asked after a_x
    asked = np.column_stack([np.ones(len(preds)), np.ones(len(preds)), asked_b, asked_b, asked_b])
    return fractions, asked


def test_summary_tables_from_file(tmp_path):
    preds = concentrations(n=6, seed=3)
    preds[0, 0], preds[0, 1] = 90, 2  # a_x likely: b asked
    preds[1, 0], preds[1, 1] = 2, 90  # a_x unlikely: b hidden in the friendly table
    preds[5] = np.nan
    ids = [f"id{i}" for i in range(6)]
    path = save_predictions.save(preds, ids, SCHEMA.label_cols, tmp_path / "p.hdf5", schema=SCHEMA)
    friendly, advanced = load_predictions.predictions_to_summary(path, SCHEMA)
    on_disk_friendly = pd.read_parquet(tmp_path / "p_friendly.parquet")
    on_disk_advanced = pd.read_parquet(tmp_path / "p_advanced.parquet")
    pd.testing.assert_frame_equal(on_disk_friendly, friendly, check_dtype=False)
    pd.testing.assert_frame_equal(on_disk_advanced, advanced, check_dtype=False)

    fractions, asked = expected_summary(preds)
    assert friendly.columns.tolist() == ["id_str"] + [f"{c}_fraction" for c in SCHEMA.label_cols]
    assert friendly["id_str"].tolist() == ids
    values = friendly.iloc[:, 1:].to_numpy()
    expected_friendly = np.where(asked >= 0.5, fractions, np.nan)
    np.testing.assert_allclose(values, expected_friendly, rtol=1e-5)
    assert np.isfinite(values[0]).all() and np.isnan(values[1, 2:]).all() and np.isfinite(values[1, :2]).all()
    assert np.isnan(values[5]).all()

    assert advanced.columns.tolist()[:5] == ["id_str", "a_x_fraction", "a_x_90pc-lower", "a_x_90pc-upper",
                                             "a_x_proportion-asked"]
    assert (advanced.dtypes.iloc[1:] == np.float32).all()
    lower, upper = stats.get_confidence_intervals(preds, SCHEMA, 0.9)
    np.testing.assert_allclose(advanced["b_v_90pc-lower"], lower[:, 3], rtol=1e-5)
    np.testing.assert_allclose(advanced["b_v_90pc-upper"], upper[:, 3], rtol=1e-5)
    np.testing.assert_allclose(advanced["b_w_proportion-asked"], asked[:, 4], rtol=1e-5)


def test_summary_from_array_and_upstream_alias(tmp_path):
    preds = concentrations()
    friendly, _ = load_predictions.predictions_to_summary(preds, SCHEMA, tmp_path / "s.parquet", id_str=IDS)
    assert (tmp_path / "s_friendly.parquet").exists() and (tmp_path / "s_advanced.parquet").exists()
    assert friendly["id_str"].tolist() == IDS
    with pytest.raises(ValueError, match="needs id_str"):
        load_predictions.predictions_to_summary(preds, SCHEMA)
    save_predictions.save(preds, IDS, SCHEMA.label_cols, tmp_path / "u.hdf5")
    load_predictions.prediction_hdf5_to_summary_parquet(tmp_path / "u.hdf5", tmp_path / "out" / "u1.parquet", SCHEMA)
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "out" / "u1_friendly.parquet"), friendly)


def test_summary_rejects_other_schema(tmp_path):
    other = Schema({"c": ["_p", "_q"]}, {"c": None}, name="other")
    path = save_predictions.save(np.ones((1, 2, 1)), ["x"], other.label_cols, tmp_path / "o.parquet")
    with pytest.raises(ValueError, match="not the label columns of schema 'tiny' \\(expected width 5, got width 2"):
        load_predictions.predictions_to_summary(path, SCHEMA)


def test_hdf5_without_h5py_is_e12(tmp_path, monkeypatch):
    import sys

    from zoobot.shared.errors import MissingDependencyError

    monkeypatch.setitem(sys.modules, "h5py", None)  # simulate an environment without h5py
    with pytest.raises(MissingDependencyError, match=r'pip install "zoobot\[hdf5\]"'):
        save_predictions.save(concentrations(), IDS, SCHEMA.label_cols, tmp_path / "p.hdf5")
