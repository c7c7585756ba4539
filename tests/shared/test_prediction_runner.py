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
    """predict_rows stand-in: concentrations derived from each row's number, yielded in batches; records the
    rows of every call and the batches it yields."""

    def __init__(self, crash_on_batch=None, fail_ids=(), n_samples=2, batch_size=5, reverse=False):
        self.calls = []
        self.batches = 0
        self.crash_on_batch = crash_on_batch
        self.fail_ids = set(fail_ids)
        self.n_samples = n_samples
        self.batch_size = batch_size
        self.reverse = reverse

    def __call__(self, rows):
        self.calls.append(rows["id_str"].tolist())
        assert list(rows.index) == list(range(len(rows)))
        starts = list(range(0, len(rows), self.batch_size))
        for start in starts[::-1] if self.reverse else starts:
            self.batches += 1
            if self.crash_on_batch is not None and self.batches == self.crash_on_batch:
                raise RuntimeError("simulated crash")
            positions = np.arange(start, min(start + self.batch_size, len(rows)))
            batch = rows.iloc[positions]
            numbers = batch["row"].to_numpy(dtype=np.float32)
            preds = (1 + numbers[:, None, None] + np.arange(4)[None, :, None]
                     + 0.5 * np.arange(self.n_samples)[None, None, :])
            failed = batch[batch["id_str"].isin(self.fail_ids)]
            failures = pd.DataFrame({"id_str": failed["id_str"], "file_loc": failed["file_loc"], "error": "broken"})
            yield positions, preds.astype(np.float32), failures


def expected(n=23, n_samples=2):
    rows = np.arange(n, dtype=np.float32)
    return 1 + rows[:, None, None] + np.arange(4)[None, :, None] + 0.5 * np.arange(n_samples)[None, None, :]


def test_in_memory_prediction_in_catalog_order():
    model = FakeModel()
    out = run_chunked_prediction(catalog(), model, label_cols=SCHEMA.label_cols, chunk_size=5, progress=False)
    np.testing.assert_array_equal(out, expected())
    assert model.calls == [catalog()["id_str"].tolist()]  # one pass over all rows, whatever the chunk size


def test_crash_then_resume_skips_finished_chunks(tmp_path):
    save_loc = tmp_path / "preds.parquet"
    crashing = FakeModel(crash_on_batch=3)
    with pytest.raises(RuntimeError, match="simulated crash"):
        run_chunked_prediction(catalog(), crashing, save_loc, schema=SCHEMA, chunk_size=5, progress=False)
    folder = partial_dir(save_loc)
    assert sorted(p.name for p in folder.glob("chunk_*.npz")) == ["chunk_000000.npz", "chunk_000001.npz"]
    assert not save_loc.exists()

    resumed = FakeModel()
    out = run_chunked_prediction(catalog(), resumed, save_loc, schema=SCHEMA, chunk_size=5, progress=False)
    assert resumed.calls == [catalog()["id_str"].tolist()[10:]]  # chunks 0 and 1 were not recomputed
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
        run_chunked_prediction(catalog(), FakeModel(crash_on_batch=2), save_loc, label_cols=SCHEMA.label_cols,
                               chunk_size=5, progress=False)
    other = catalog().iloc[::-1].reset_index(drop=True)  # same ids, another order
    model = FakeModel()
    with pytest.warns(UserWarning, match="different catalog or different settings; discarding it"):
        out = run_chunked_prediction(other, model, save_loc, label_cols=SCHEMA.label_cols, chunk_size=5,
                                     progress=False)
    assert model.calls == [other["id_str"].tolist()]
    np.testing.assert_array_equal(out, expected()[::-1])


def test_changed_metadata_is_a_different_run(tmp_path):
    save_loc = tmp_path / "preds.hdf5"
    with pytest.raises(RuntimeError):
        run_chunked_prediction(catalog(), FakeModel(crash_on_batch=2), save_loc, label_cols=SCHEMA.label_cols,
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
    with pytest.raises(ValueError, match="chunk_size must be >= 1, got 0"):
        run_chunked_prediction(catalog(), model, label_cols=SCHEMA.label_cols, chunk_size=0)
    assert model.calls == []
    assert not list(tmp_path.iterdir())


def test_wrong_prediction_shape_is_reported():
    def bad(rows):
        yield np.arange(5), np.ones((5, 3, 1)), None

    with pytest.raises(ValueError, match=r"shape \(5, 3, 1\) for 5 rows \(first id_str \['g000'\]\); "
                                         r"expected \(5, 4, n_samples\)"):
        run_chunked_prediction(catalog(), bad, label_cols=SCHEMA.label_cols, chunk_size=5, progress=False)


def test_rows_returned_twice_or_never_are_errors():
    def twice(rows):
        yield np.arange(3), np.ones((3, 4, 1)), None
        yield np.array([2]), np.ones((1, 4, 1)), None

    with pytest.raises(ValueError, match="returned row 'g002' twice"):
        run_chunked_prediction(catalog(), twice, label_cols=SCHEMA.label_cols, progress=False)

    def lost(rows):
        yield np.arange(len(rows) - 2), np.ones((len(rows) - 2, 4, 1)), None

    with pytest.raises(RuntimeError, match=r"no prediction for 2 of 23 rows, e.g. id_str 'g021', 'g022'"):
        run_chunked_prediction(catalog(), lost, label_cols=SCHEMA.label_cols, progress=False)


def expected_parquet_table(n=23, n_samples=2):
    """The predictions file built by hand (api.md 4.4): id_str, then per label column its concentration samples
    and the vote fraction (alpha / sum of the question's alphas, averaged over samples), all float32."""
    values = expected(n, n_samples).astype(np.float64)
    columns = {"id_str": [f"g{i:03d}" for i in range(n)]}
    for q, (first, last) in enumerate(SCHEMA.question_index_groups):
        totals = values[:, first:last + 1, :].sum(axis=1)
        for a in range(first, last + 1):
            col = SCHEMA.label_cols[a]
            for k in range(n_samples):
                columns[f"{col}_concentration_{k}"] = values[:, a, k].astype(np.float32)
            columns[f"{col}_fraction"] = (values[:, a, :] / totals).mean(axis=1).astype(np.float32)
    return pd.DataFrame(columns)


def test_parquet_is_streamed_one_row_group_per_chunk_and_equals_the_one_piece_file(tmp_path):
    import pyarrow.parquet as pq

    save_loc = tmp_path / "preds.parquet"
    # batches of 3 rows, last batch first: chunks of 5 complete out of order and across batches
    model = FakeModel(batch_size=3, reverse=True)
    out = run_chunked_prediction(catalog(), model, save_loc, schema=SCHEMA, chunk_size=5,
                                 metadata={"model_class": "Fake", "backend": "none"}, progress=False)
    np.testing.assert_array_equal(out, expected())
    parquet = pq.ParquetFile(save_loc)
    assert parquet.metadata.num_row_groups == 5
    assert [parquet.metadata.row_group(i).num_rows for i in range(5)] == [5, 5, 5, 5, 3]
    table = pd.read_parquet(save_loc)
    want = expected_parquet_table()
    assert list(table.columns) == list(want.columns)
    assert (table.dtypes.drop("id_str") == np.float32).all()
    pd.testing.assert_frame_equal(table.drop(columns="id_str"), want.drop(columns="id_str"), rtol=1e-6)
    assert table["id_str"].tolist() == want["id_str"].tolist()
    meta = {k.decode(): v for k, v in parquet.schema_arrow.metadata.items()}
    assert {"pandas", "model_class", "backend", "schema", "zoobot_version", "format_version", "kind",
            "n_samples"} <= set(meta) and meta["model_class"] == b'"Fake"' and meta["n_samples"] == b"2"


@pytest.mark.parametrize("suffix", [".csv", ".hdf5"])
def test_csv_and_hdf5_are_streamed_and_load_back(tmp_path, suffix):
    save_loc = tmp_path / f"preds{suffix}"
    with pytest.warns(UserWarning, match="1 of 23 images could not be read"):
        run_chunked_prediction(catalog(), FakeModel(batch_size=4, fail_ids={"g007"}), save_loc, schema=SCHEMA,
                               chunk_size=5, progress=False)
    ids, loaded, label_cols, meta = load_predictions.load(save_loc)
    want = expected()
    want[7] = np.nan
    assert ids["id_str"].tolist() == catalog()["id_str"].tolist() and label_cols == SCHEMA.label_cols
    np.testing.assert_array_equal(loaded, want)
    assert meta["n_samples"] == 2
    if suffix == ".csv":
        text = save_loc.read_text().splitlines()
        assert len(text) == 24 and text.count(text[0]) == 1  # one header line, 23 rows
        table = pd.read_csv(save_loc)
        np.testing.assert_allclose(table.drop(columns="id_str").to_numpy(),
                                   expected_parquet_table().drop(columns="id_str").to_numpy()
                                   * np.where(np.arange(23) == 7, np.nan, 1)[:, None], rtol=1e-6)
    assert pd.read_csv(tmp_path / "preds_failures.csv")["id_str"].tolist() == ["g007"]


def test_summary_tables_written_chunk_by_chunk_equal_those_of_the_whole_array(tmp_path):
    import pyarrow.parquet as pq

    save_loc = tmp_path / "preds.parquet"
    run_chunked_prediction(catalog(), FakeModel(batch_size=7), save_loc, schema=SCHEMA, chunk_size=5, summary=True,
                           progress=False)
    friendly, advanced = load_predictions.predictions_to_summary(expected(), SCHEMA, id_str=catalog()["id_str"])
    for want, name in ((friendly, "preds_friendly.parquet"), (advanced, "preds_advanced.parquet")):
        assert pq.ParquetFile(tmp_path / name).metadata.num_row_groups == 5
        pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / name), want)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["preds.parquet", "preds_advanced.parquet",
                                                          "preds_friendly.parquet"]


def test_release_free_memory_runs_on_glibc_and_is_a_no_op_without_malloc_trim(monkeypatch):
    import ctypes
    import sys

    from zoobot.shared import prediction_runner

    monkeypatch.setattr(prediction_runner, "_MALLOC_TRIM", None)
    if sys.platform.startswith("linux"):  # glibc here
        assert prediction_runner.release_free_memory() is True

    def no_libc(*args, **kwargs):
        raise OSError("no C library")

    monkeypatch.setattr(prediction_runner, "_MALLOC_TRIM", None)
    monkeypatch.setattr(ctypes, "CDLL", no_libc)
    assert prediction_runner.release_free_memory() is False
    assert prediction_runner.release_free_memory() is False  # looked up once, remembered


def test_an_existing_predictions_file_is_replaced_with_a_warning_not_silently(tmp_path):
    save_loc = tmp_path / "preds.parquet"
    run_chunked_prediction(catalog(60), FakeModel(), label_cols=SCHEMA.label_cols, save_loc=save_loc, progress=False)
    with pytest.warns(UserWarning, match=r"Replacing the existing predictions file .*preds.parquet with the 12 rows"):
        run_chunked_prediction(catalog(12), FakeModel(), label_cols=SCHEMA.label_cols, save_loc=save_loc,
                               progress=False)
    assert len(pd.read_parquet(save_loc)) == 12


def test_predict_arguments_are_checked_before_the_model_with_one_wording():
    """Both backends' predict() check their arguments here (issue 14.1): shared/validation's wording."""
    from zoobot.shared.prediction_runner import (
        ModelSpec, check_predict_arguments, datamodule_options, resolve_label_cols)

    ok = dict(n_samples=2, save_loc="p.parquet", datamodule_kwargs=None, trainer_kwargs={"accelerator": "cpu"},
              test_time_dropout=None, test_time_augmentation=0, on_bad_image="record", chunk_size=8, shard="1/4")
    args = check_predict_arguments(**ok)
    assert (args.n_samples, args.chunk_size, args.datamodule_kwargs, args.test_time_augmentation) == (2, 8, {}, False)
    assert args.shard is not None and args.trainer_kwargs == {"accelerator": "cpu"}
    bad = [({"n_samples": True}, TypeError, "n_samples must be an integer, got bool: True"),
           ({"n_samples": 0}, ValueError, "n_samples must be >= 1, got 0"),
           ({"chunk_size": 2.0}, TypeError, "chunk_size must be an integer, got float: 2.0"),
           ({"test_time_dropout": "yes"}, TypeError, "test_time_dropout must be True or False, got str: 'yes'"),
           ({"on_bad_image": "skip"}, ValueError, "Unknown on_bad_image 'skip'"),
           ({"save_loc": "p.txt"}, ValueError, r"Unknown predictions file extension .* '\.txt'"),
           ({"datamodule_kwargs": [1]}, TypeError, "datamodule_kwargs must be a dict or None, got list")]
    for change, error, match in bad:
        with pytest.raises(error, match=match):
            check_predict_arguments(**{**ok, **change})

    spec = ModelSpec(None, "tree", "tree", list(SCHEMA.label_cols), 1, 64, SCHEMA)
    assert resolve_label_cols(None, spec) == SCHEMA.label_cols
    with pytest.raises(ValueError, match="label_cols has width 1 but the model .schema 'tiny'. predicts 4 outputs"):
        resolve_label_cols("ring", spec)
    options = datamodule_options(spec, {"batch_size": 4}, True, "NHWC")
    assert (options["greyscale"], options["resize_after_crop"], options["batch_size"]) == (True, 64, 4)
    with pytest.raises(ValueError, match="may not set 'label_cols'"):
        datamodule_options(spec, {"label_cols": ["x"]}, False, "NHWC")


class SwallowingModel(FakeModel):
    """A model whose library swallows the Interrupted of a SIGTERM that arrives during batch 2 (a bare
    ``except:``), as third-party code can."""

    def __call__(self, rows):
        import os
        import signal

        for number, batch in enumerate(super().__call__(rows), start=1):
            if number == 2:
                try:
                    os.kill(os.getpid(), signal.SIGTERM)
                    for _ in range(1000):  # the handler runs between bytecodes, inside this try
                        pass
                except BaseException:  # noqa: BLE001 - the library's bare except under test
                    pass
            yield batch


def test_a_signal_whose_exception_was_swallowed_still_stops_prediction_keeping_finished_chunks(tmp_path):
    """docs/reliability.md: SIGTERM stops a run even when a library swallowed the exception it raised; the run
    stops at the next batch, never finishing silently with exit 0, and the chunks finished before it stay."""
    from zoobot.shared import interrupts

    save_loc = tmp_path / "preds.parquet"
    model = SwallowingModel(batch_size=5)
    with pytest.raises(interrupts.Interrupted, match="SIGTERM"):
        with interrupts.raise_on_signals():
            run_chunked_prediction(catalog(23), model, save_loc=save_loc, label_cols=["a_x", "a_y", "b_u", "b_v"],
                                   chunk_size=5, progress=False)
    assert model.batches == 2  # stopped before the third batch
    assert not save_loc.exists() and sorted(p.name for p in partial_dir(save_loc).glob("chunk_*")) == [
        "chunk_000000.npz", "chunk_000001.npz"]
    interrupts.reset()
