"""Chunked, resumable prediction: crash and resume, files, checks before compute."""
import numpy as np
import pandas as pd
import pytest

from zoobot.shared import load_predictions
from zoobot.shared.errors import CatalogError
from zoobot.shared.prediction_runner import partial_dir, run_chunked_prediction
from zoobot.shared.schemas import Schema

SCHEMA = Schema({"a": ["_x", "_y"], "b": ["_u", "_v"]}, {"a": None, "b": "a_x"}, name="tiny")


def catalog(n=23):
    return pd.DataFrame({"id_str": [f"g{i:03d}" for i in range(n)], "file_loc": [f"/img/g{i}.jpg" for i in range(n)],
                         "row": np.arange(n)})


class FakeModel:
    """predict_chunk stand-in: concentrations derived from each row's number, counts calls per chunk."""

    def __init__(self, crash_on_call=None, fail_ids=(), n_samples=2):
        self.calls = []
        self.crash_on_call = crash_on_call
        self.fail_ids = set(fail_ids)
        self.n_samples = n_samples

    def __call__(self, chunk):
        self.calls.append(chunk["id_str"].tolist())
        if self.crash_on_call is not None and len(self.calls) == self.crash_on_call:
            raise RuntimeError("simulated crash")
        assert list(chunk.index) == list(range(len(chunk)))
        rows = chunk["row"].to_numpy(dtype=np.float32)
        preds = 1 + rows[:, None, None] + np.arange(4)[None, :, None] + 0.5 * np.arange(self.n_samples)[None, None, :]
        failed = chunk[chunk["id_str"].isin(self.fail_ids)]
        failures = pd.DataFrame({"id_str": failed["id_str"], "file_loc": failed["file_loc"], "error": "broken"})
        return preds.astype(np.float32), failures


def expected(n=23, n_samples=2):
    rows = np.arange(n, dtype=np.float32)
    return 1 + rows[:, None, None] + np.arange(4)[None, :, None] + 0.5 * np.arange(n_samples)[None, None, :]


def test_in_memory_prediction_in_catalog_order():
    model = FakeModel()
    out = run_chunked_prediction(catalog(), model, label_cols=SCHEMA.label_cols, chunk_size=5, progress=False)
    np.testing.assert_array_equal(out, expected())
    assert [len(c) for c in model.calls] == [5, 5, 5, 5, 3]


def test_crash_then_resume_skips_finished_chunks(tmp_path):
    save_loc = tmp_path / "preds.parquet"
    crashing = FakeModel(crash_on_call=3)
    with pytest.raises(RuntimeError, match="simulated crash"):
        run_chunked_prediction(catalog(), crashing, save_loc, schema=SCHEMA, chunk_size=5, progress=False)
    folder = partial_dir(save_loc)
    assert sorted(p.name for p in folder.glob("chunk_*.npz")) == ["chunk_000000.npz", "chunk_000001.npz"]
    assert not save_loc.exists()

    resumed = FakeModel()
    out = run_chunked_prediction(catalog(), resumed, save_loc, schema=SCHEMA, chunk_size=5, progress=False)
    assert [c[0] for c in resumed.calls] == ["g010", "g015", "g020"]  # chunks 0 and 1 were not recomputed
    np.testing.assert_array_equal(out, expected())
    ids, loaded, label_cols, meta = load_predictions.load(save_loc)
    assert ids["id_str"].tolist() == catalog()["id_str"].tolist()  # each id once, catalog order
    assert ids["id_str"].is_unique
    np.testing.assert_array_equal(loaded, expected())
    assert label_cols == SCHEMA.label_cols and meta["n_samples"] == 2
    assert not folder.exists()


def test_changed_catalog_discards_unfinished_run(tmp_path):
    save_loc = tmp_path / "preds.csv"
    with pytest.raises(RuntimeError):
        run_chunked_prediction(catalog(), FakeModel(crash_on_call=2), save_loc, label_cols=SCHEMA.label_cols,
                               chunk_size=5, progress=False)
    other = catalog().iloc[::-1].reset_index(drop=True)  # same ids, another order
    model = FakeModel()
    with pytest.warns(UserWarning, match="different catalog or different settings; discarding it"):
        out = run_chunked_prediction(other, model, save_loc, label_cols=SCHEMA.label_cols, chunk_size=5,
                                     progress=False)
    assert len(model.calls) == 5
    np.testing.assert_array_equal(out, expected()[::-1])


def test_changed_metadata_is_a_different_run(tmp_path):
    save_loc = tmp_path / "preds.hdf5"
    with pytest.raises(RuntimeError):
        run_chunked_prediction(catalog(), FakeModel(crash_on_call=2), save_loc, label_cols=SCHEMA.label_cols,
                               chunk_size=5, metadata={"n_samples": 2}, progress=False)
    with pytest.warns(UserWarning, match="discarding it"):
        run_chunked_prediction(catalog(), FakeModel(), save_loc, label_cols=SCHEMA.label_cols, chunk_size=5,
                               metadata={"n_samples": 3}, progress=False)


def test_failures_are_nan_listed_and_warned_once(tmp_path):
    save_loc = tmp_path / "out" / "preds.parquet"
    model = FakeModel(fail_ids={"g002", "g017"})
    with pytest.warns(UserWarning, match=r"2 of 23 images could not be read.*preds_failures.csv") as record:
        out = run_chunked_prediction(catalog(), model, save_loc, schema=SCHEMA, chunk_size=5, summary=True,
                                     progress=False)
    assert len(record) == 1
    assert np.isnan(out[[2, 17]]).all() and np.isfinite(np.delete(out, [2, 17], axis=0)).all()
    failures = pd.read_csv(tmp_path / "out" / "preds_failures.csv")
    assert failures["id_str"].tolist() == ["g002", "g017"] and failures["file_loc"].tolist() == ["/img/g2.jpg", "/img/g17.jpg"]
    friendly = pd.read_parquet(tmp_path / "out" / "preds_friendly.parquet")
    advanced = pd.read_parquet(tmp_path / "out" / "preds_advanced.parquet")
    assert friendly["id_str"].tolist() == catalog()["id_str"].tolist() and len(advanced) == 23


def test_checks_before_any_compute(tmp_path):
    model = FakeModel()
    with pytest.raises(ValueError, match="Unknown predictions file extension"):
        run_chunked_prediction(catalog(), model, tmp_path / "p.txt", label_cols=SCHEMA.label_cols)
    with pytest.raises(CatalogError, match="missing 1 required column.*'id_str'"):
        run_chunked_prediction(catalog().drop(columns="id_str"), model, label_cols=SCHEMA.label_cols)
    duplicated = catalog()
    duplicated.loc[3, "id_str"] = "g000"
    with pytest.raises(CatalogError, match=r"1 duplicated id_str value\(s\) \(2 rows\), e.g. 'g000'"):
        run_chunked_prediction(duplicated, model, tmp_path / "p.parquet", label_cols=SCHEMA.label_cols)
    with pytest.raises(CatalogError, match="is empty"):
        run_chunked_prediction(catalog(0), model, label_cols=SCHEMA.label_cols)
    with pytest.raises(ValueError, match="expected width 4, got width 3"):
        run_chunked_prediction(catalog(), model, label_cols=SCHEMA.label_cols[:3], schema=SCHEMA)
    with pytest.raises(ValueError, match="summary=True needs"):
        run_chunked_prediction(catalog(), model, label_cols=SCHEMA.label_cols, summary=True)
    with pytest.raises(ValueError, match="chunk_size must be a positive integer"):
        run_chunked_prediction(catalog(), model, label_cols=SCHEMA.label_cols, chunk_size=0)
    assert model.calls == []
    assert not list(tmp_path.iterdir())


def test_wrong_prediction_shape_is_reported():
    def bad(chunk):
        return np.ones((len(chunk), 3, 1)), None

    with pytest.raises(ValueError, match=r"shape \(5, 3, 1\) for rows 0-4; expected \(5, 4, n_samples\)"):
        run_chunked_prediction(catalog(), bad, label_cols=SCHEMA.label_cols, chunk_size=5, progress=False)
