"""Chunked, resumable prediction over a catalog, shared by both backends.

Each backend's ``predict_on_catalog.predict`` checks its arguments with :func:`check_predict_arguments` and
:func:`plan_prediction`, and does the model work in a ``predict_rows`` generator;
:func:`run_chunked_prediction` does everything else: it checks the catalog before any compute, skips the
chunks an interrupted run already stored in ``<save_loc>.partial/`` (same fingerprint only), calls
``predict_rows`` **once** on all unfinished rows (one data pipeline for the whole call), stores each chunk
as soon as it is complete, and at the end writes the final file chunk by chunk (failed images as NaN rows
listed in ``<stem>_failures.csv``). The steps, the fingerprint and the memory it needs:
docs/components/predictions_and_representations.md.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import pathlib
import shutil
import warnings
from typing import Callable, Iterable, Mapping, Sequence

import numpy as np
import pandas as pd

from zoobot.shared import interrupts, save_predictions
from zoobot.shared.save_predictions import partial_dir  # noqa: F401  (re-exported)
from zoobot.shared.console import progress_bar
from zoobot.shared.catalogs import validate_catalog
from zoobot.shared.errors import ChannelMismatchError, format_examples
from zoobot.shared.validation import available_cpus, check_bool, check_choice, check_int

__all__ = ["run_chunked_prediction", "partial_dir", "repeat_rows", "PassCollector", "release_free_memory",
           "SaveLocInUseError", "ModelSpec", "PredictArguments", "check_predict_arguments", "resolve_label_cols",
           "requested_dropout", "datamodule_options", "resume_key", "PredictionPlan", "plan_prediction"]

_MANIFEST = "manifest.json"
#: Shortest interval between two trims of the C heap during a prediction (:func:`release_free_memory`).
_TRIM_SECONDS = 0.1
_FAILURE_COLUMNS = ["id_str", "file_loc", "error"]


def run_chunked_prediction(
    catalog: pd.DataFrame,
    predict_rows: Callable[[pd.DataFrame], Iterable[tuple]],
    save_loc=None,
    label_cols: Sequence[str] | None = None,
    kind: str = "tree",
    metadata: Mapping | None = None,
    chunk_size: int = 4096,
    schema=None,
    summary: bool = False,
    *,
    resume_key=None,
    progress: bool = True,
    shard=None,
) -> np.ndarray:
    """Predict a catalog with one call of ``predict_rows``, storing it chunk by chunk (resumable), and
    write the predictions file. (Long only for its numpydoc; the body is a dozen lines.)

    Over 80 lines only for its numpydoc; the body is 8 lines.

    Parameters
    ----------
    catalog : pandas.DataFrame
        Needs ``id_str`` (unique); other columns (``file_loc``, ...) are passed to ``predict_rows``.
    predict_rows : callable
        ``predict_rows(rows) -> iterable of (positions, predictions, failures)``. ``rows``: a DataFrame of
        the rows still to predict (fresh 0..k-1 index). Per batch, in any order: ``positions`` the row
        numbers in ``rows``; ``predictions`` float32 (len(positions), outputs, samples) with every sample
        of those rows; ``failures`` a DataFrame ``id_str, file_loc, error`` (or None) of those rows whose
        image could not be read (their rows are set to NaN here in any case). Every row must come back
        exactly once.
    save_loc : str or path-like, optional
        ``.parquet``, ``.csv``, ``.hdf5`` or ``.h5``. None: predict in memory only (no resume).
    label_cols : sequence of str, optional
        One name per output; default ``schema.label_cols``.
    kind : {'tree', 'generic'}
        File layout (see :func:`zoobot.shared.save_predictions.save`).
    metadata : mapping, optional
        Written into the file and part of the resume fingerprint (include ``n_samples``,
        ``model_class``, ...).
    chunk_size : int
        Rows per stored chunk (and per row group of a parquet file).
    schema : Schema, optional
        For tree fractions, the file's metadata and the summary tables.
    summary : bool
        Also write ``<stem>_friendly.parquet`` and ``<stem>_advanced.parquet`` (needs ``schema``,
        ``kind='tree'`` and ``save_loc``).
    resume_key : JSON-able, keyword-only, optional
        Anything else that must match for finished chunks to be reused (e.g. the checkpoint path
        and its modification time).
    progress : bool, keyword-only
        Show a progress bar over rows.
    shard : zoobot.shared.sharding.Shard, keyword-only, optional
        Predict only this part of the catalog (a stable hash of ``id_str``), into the part file
        ``<stem>.part-R-of-N<suffix>`` of ``save_loc``; an empty part writes an empty file
        (docs/guides/scaling_out.md).

    Returns
    -------
    numpy.ndarray
        (galaxies, outputs, samples) float32 in catalog order; NaN rows for failed images.

    Raises
    ------
    CatalogError
        E1 (no ``id_str``), E4 (empty catalog), E3 (duplicate ids).
    ValueError
        E13 (unknown extension or kind); E10 (``label_cols`` vs schema or predictions width); bad
        ``chunk_size``; ``summary`` without what it needs; a ``predict_rows`` result of the wrong shape,
        a row returned twice.
    RuntimeError
        If ``predict_rows`` ends without returning every row.

    Warns
    -----
    UserWarning
        When images failed (one summary), or an unfinished run with a different fingerprint is discarded.

    Examples
    --------
    >>> def predict_rows(rows):
    ...     for start in range(0, len(rows), 2):  # batches of 2 rows
    ...         positions = np.arange(start, min(start + 2, len(rows)))
    ...         yield positions, np.ones((len(positions), 1, 1), dtype=np.float32), None
    >>> cat = pd.DataFrame({'id_str': ['a', 'b', 'c']})
    >>> run_chunked_prediction(cat, predict_rows, label_cols=['x'], kind='generic', chunk_size=2,
    ...                        progress=False).shape
    (3, 1, 1)
    """
    catalog, label_cols = _check_run_arguments(catalog, save_loc, label_cols, kind, chunk_size, schema, summary)
    if shard is not None:
        catalog, save_loc, metadata = _take_part(catalog, save_loc, metadata, shard)
        if not len(catalog):
            return _write_empty(save_loc, label_cols, kind, metadata, schema)
    with _PartialLock(save_loc):  # one writer per save_loc: a second is refused, naming the first one's PID
        return _run(catalog, predict_rows, save_loc, label_cols, kind, metadata, chunk_size, schema, summary,
                    resume_key, progress)


def _check_run_arguments(catalog, save_loc, label_cols, kind, chunk_size, schema, summary):
    """Every check of :func:`run_chunked_prediction` before any compute; returns the checked catalog and
    ``label_cols``."""
    if save_loc is not None:
        save_predictions.prediction_format(save_loc)  # E13
    check_choice("kind", kind, save_predictions.KINDS)
    catalog = validate_catalog(catalog, label_cols=None, require_file_loc=False, label_kind=None)  # E1, E4, E3
    if label_cols is None:
        if schema is None:
            raise ValueError("run_chunked_prediction needs label_cols (one name per model output) or a schema.")
        label_cols = schema.label_cols
    label_cols = [str(c) for c in label_cols]
    if schema is not None and list(schema.label_cols) != label_cols:
        raise ValueError(
            f"label_cols do not match schema {schema.name!r}: expected width {len(schema.label_cols)}, "
            f"got width {len(label_cols)}."
        )
    check_int("chunk_size", chunk_size, minimum=1)
    if summary and (schema is None or kind != "tree" or save_loc is None):
        raise ValueError("summary=True needs a tree model's schema, kind='tree' and a save_loc to write next to.")
    return catalog, label_cols


def _run(catalog, predict_rows, save_loc, label_cols, kind, metadata, chunk_size, schema, summary, resume_key,
         progress) -> np.ndarray:
    chunks = _Chunks(catalog["id_str"], int(chunk_size), len(label_cols))
    folder = None
    if save_loc is not None:
        fingerprint = _fingerprint(catalog, chunk_size, label_cols, kind, metadata, resume_key)
        # noted before the folder exists: a signal from here on reports the folder that keeps finished chunks
        interrupts.note_rows(0, chunks.n_rows, partial_dir(save_loc))
        folder = _open_partial_dir(partial_dir(save_loc), fingerprint, chunks.n_rows, chunk_size, label_cols)
        chunks.load_finished(folder)

    # ---- one pass of the backend over every row still to predict
    todo = chunks.unfinished_rows()
    done = chunks.n_rows - len(todo)  # rows whose chunks are stored (what an interrupted run keeps)
    interrupts.note_rows(done, chunks.n_rows, folder)
    # a tqdm bar on a terminal, one line per 10 % in a log file
    bar = progress_bar(chunks.n_rows, initial=done, unit="galaxy", desc="Predicting", disable=not progress)
    try:
        if len(todo):
            # all rows: a copy-on-write view, no copy of a catalog that may hold millions of paths
            rows = (catalog.reset_index(drop=True) if len(todo) == chunks.n_rows
                    else catalog.iloc[todo].reset_index(drop=True))
            _collect(predict_rows(rows), rows, todo, chunks, folder, bar, done)
            chunks.check_complete(todo, rows)
    finally:
        bar.close()

    predictions, failures = chunks.predictions, chunks.all_failures()
    if save_loc is not None:
        _write_files(predictions, chunks, save_loc, label_cols, kind, metadata, schema, summary, failures)
        shutil.rmtree(folder, ignore_errors=True)
    if len(failures):
        where = (
            f"listed in {save_predictions.failures_path(save_loc)}" if save_loc is not None else "not saved anywhere"
        )
        warnings.warn(
            f"{len(failures)} of {chunks.n_rows} images could not be read; their predictions are NaN ({where}). "
            f"First: {format_examples(list(failures[['id_str', 'error']].itertuples(index=False, name=None)), 3)}",
            UserWarning,
            stacklevel=3,
        )
    return predictions


def _collect(results, rows, todo, chunks: "_Chunks", folder, bar, done: int) -> None:
    """Take every batch of the backend's ``results`` into ``chunks``, storing each chunk as it completes.

    The C heap (and Arrow's pool) is trimmed before the first batch and after every batch (at most every
    :data:`_TRIM_SECONDS`): the batches' large freed buffers would otherwise pile up between trims, and
    the peak memory of a run grew with its length (docs/benchmarks.md, section 3b).
    """
    import time

    release_free_memory()  # what the catalog checks freed, before the loader and the model allocate
    last_trim = time.monotonic()
    try:
        for result in results:
            positions, batch_predictions, batch_failures = _checked_batch(result, rows, chunks.n_outputs)
            for index in chunks.add(todo[positions], batch_predictions, batch_failures):
                if folder is not None:
                    _write_chunk(folder, index, *chunks.contents(index))
                done += len(chunks.rows(index))
                interrupts.note_rows(done, chunks.n_rows, folder)
            if time.monotonic() - last_trim >= _TRIM_SECONDS:
                release_free_memory()
                last_trim = time.monotonic()
            bar.update(len(positions))
            interrupts.stop_if_signalled()  # a signal whose exception a library swallowed stops the run here
    finally:  # a generator's loader and model state are released now, not when it is collected
        if callable(getattr(results, "close", None)):
            results.close()


class SaveLocInUseError(FileExistsError):
    """Another process is writing predictions to the same ``save_loc`` (it holds ``<save_loc>.partial.lock``)."""


class _PartialLock:
    """An exclusive lock on ``<save_loc>.partial``: the file ``<save_loc>.partial.lock``, locked with ``flock`` and
    holding the writer's PID. The operating system releases it when its process ends, even by SIGKILL, so a
    killed run never blocks the rerun. Nothing is locked without a ``save_loc``, or where ``fcntl`` is missing
    (Windows)."""

    def __init__(self, save_loc):
        self.path = None if save_loc is None else partial_dir(save_loc).with_name(partial_dir(save_loc).name + ".lock")
        self.fd = None

    def __enter__(self):
        try:
            import fcntl
        except ImportError:  # pragma: no cover - not POSIX
            return self
        if self.path is None:
            return self
        self.path.parent.mkdir(parents=True, exist_ok=True)
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                holder = os.read(fd, 100).decode(errors="replace").strip() or "unknown"
                os.close(fd)
                save_loc = self.path.with_name(self.path.name[: -len(".partial.lock")])
                raise SaveLocInUseError(
                    f"{save_loc} is being written by another zoobot prediction (PID {holder}, lock file {self.path}). "
                    "Wait for it to finish, or write to another save_loc."
                ) from None
            try:
                same = os.stat(self.path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)  # the holder removed the file while we waited for it: lock the new one
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self.fd = fd
        return self

    def __exit__(self, *exc):
        if self.fd is not None:
            self.path.unlink(missing_ok=True)  # still holding the lock: nobody else has it open and locked
            os.close(self.fd)
            self.fd = None
        return False


def _take_part(catalog, save_loc, metadata, shard):
    """The rows, file and metadata of one part of a sharded prediction."""
    from zoobot.shared import sharding

    part = sharding.select_part(catalog, shard)
    metadata = sharding.part_metadata(metadata, shard, len(catalog))
    return part, (sharding.part_path(save_loc, shard) if save_loc is not None else None), metadata


def _write_empty(save_loc, label_cols, kind, metadata, schema) -> np.ndarray:
    """An empty part: a file of no rows, so that the merge knows it is done."""
    empty = np.empty((0, len(label_cols), int(metadata.get("n_samples", 1))), dtype=np.float32)
    if save_loc is not None:
        with save_predictions.PredictionWriter(save_loc, label_cols, 0, empty.shape[2], kind, metadata,
                                               schema=schema) as writer:
            writer.write(empty, [])
            writer.close()
    return empty


class _Chunks:
    """The predictions of every row, and which rows of each chunk have come back.

    The ids stay in the catalog's own column storage (Arrow strings with pandas 3): Python strings are made
    for one chunk at a time (:meth:`ids_of`), never for the whole catalog, so the memory of a run grows
    with the catalog only by its predictions (docs/benchmarks.md, section 3c).
    """

    def __init__(self, ids: pd.Series, chunk_size: int, n_outputs: int):
        self._ids = pd.Series(ids).array  # positional, no copy
        self.chunk_size, self.n_outputs = chunk_size, n_outputs
        self.n_rows = len(self._ids)
        self.starts = list(range(0, self.n_rows, chunk_size))
        self.missing = np.array([len(self.rows(i)) for i in range(len(self.starts))])  # rows not yet back
        self.received = np.zeros(self.n_rows, dtype=bool)
        self.failures = {}  # chunk index -> list of DataFrames
        self.predictions = None  # (rows, outputs, samples) float32, made when the number of samples is known

    def rows(self, index: int) -> range:
        return range(self.starts[index], min(self.starts[index] + self.chunk_size, self.n_rows))

    def ids_of(self, rows) -> list:
        """The ``id_str`` (Python str) of ``rows``: a ``range`` or an array of row numbers."""
        if isinstance(rows, range):
            return [str(i) for i in self._ids[rows.start : rows.stop]]
        return [str(i) for i in self._ids[np.asarray(rows, dtype=np.int64)]]

    def load_finished(self, folder) -> None:
        """Take over the chunks an interrupted run stored."""
        for index in range(len(self.starts)):
            rows = self.rows(index)
            stored = _read_chunk(folder, index, self.ids_of(rows), self.n_outputs)
            if stored is not None:
                self._store(np.arange(rows.start, rows.stop), stored[0])
                self.failures[index] = [stored[1]]
                self.missing[index] = 0

    def unfinished_rows(self) -> np.ndarray:
        return np.flatnonzero(~self.received)

    def add(self, rows: np.ndarray, predictions: np.ndarray, failures: pd.DataFrame) -> list:
        """Store the predictions of some rows; returns the chunks this completes."""
        if self.received[rows].any() or len(np.unique(rows)) != len(rows):
            twice = rows[self.received[rows]] if self.received[rows].any() else rows
            raise ValueError(f"predict_rows returned row {self.ids_of(twice[:1])[0]!r} twice; each row must come once.")
        self._store(rows, predictions)
        if len(failures):
            where = pd.Index(self.ids_of(rows), dtype=object).get_indexer(failures["id_str"])
            if (where < 0).any():
                raise ValueError(
                    f"predict_rows listed failures for ids not in the same batch: "
                    f"{format_examples(failures['id_str'][where < 0].tolist())}"
                )
            self.predictions[rows[where]] = np.nan
            for index, part in failures.groupby(rows[where] // self.chunk_size, sort=True):
                self.failures.setdefault(int(index), []).append(part)
        touched, counts = np.unique(rows // self.chunk_size, return_counts=True)
        self.missing[touched] -= counts
        return [int(i) for i in touched[self.missing[touched] == 0]]

    def _store(self, rows: np.ndarray, predictions: np.ndarray) -> None:
        if self.predictions is None:
            self.predictions = np.empty((self.n_rows,) + predictions.shape[1:], dtype=np.float32)
        elif predictions.shape[2] != self.predictions.shape[2]:
            raise ValueError(
                f"predict_rows returned {predictions.shape[2]} samples for row {self.ids_of(rows[:1])[0]!r} but "
                f"{self.predictions.shape[2]} before; every row must have the same number of samples."
            )
        self.predictions[rows] = predictions
        self.received[rows] = True

    def contents(self, index: int):
        """``(predictions, ids, failures)`` of a chunk."""
        rows = self.rows(index)
        return self.predictions[rows.start : rows.stop], self.ids_of(rows), self.chunk_failures(index)

    def chunk_failures(self, index: int) -> pd.DataFrame:
        parts = self.failures.get(index, [])
        if not parts:
            return pd.DataFrame(columns=_FAILURE_COLUMNS)
        failures = pd.concat(parts, ignore_index=True)
        order = pd.Index(self.ids_of(self.rows(index)), dtype=object)
        return failures.iloc[np.argsort(order.get_indexer(failures["id_str"]), kind="stable")].reset_index(drop=True)

    def all_failures(self) -> pd.DataFrame:
        parts = [self.chunk_failures(i) for i in sorted(self.failures)]
        parts = [p for p in parts if len(p)]
        return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=_FAILURE_COLUMNS)

    def check_complete(self, todo: np.ndarray, rows: pd.DataFrame) -> None:
        lost = np.flatnonzero(~self.received[todo])
        if len(lost):
            raise RuntimeError(
                f"predict_rows returned no prediction for {len(lost)} of {len(todo)} rows, e.g. id_str "
                f"{format_examples(rows['id_str'].iloc[lost[:5]].tolist())}."
            )


def _write_files(predictions, chunks: _Chunks, save_loc, label_cols, kind, metadata, schema, summary, failures):
    """The predictions file (and summary tables) written chunk by chunk, each moved into place at the end."""
    from zoobot.shared.load_predictions import predictions_to_summary, summary_paths

    if os.path.exists(save_loc):  # never replace earlier predictions silently (the CLI refuses without --overwrite)
        warnings.warn(f"Replacing the existing predictions file {save_loc} with the {chunks.n_rows} rows of this "
                      "prediction; give another save_loc to keep it.", UserWarning, stacklevel=4)
    writer = save_predictions.PredictionWriter(
        save_loc, label_cols, chunks.n_rows, predictions.shape[2], kind, metadata, schema=schema
    )
    tables = []
    if summary:
        for loc in summary_paths(save_loc):
            tables.append((save_predictions.ParquetAppender(loc.with_name(f".{loc.name}.tmp")), loc))
    with writer:
        try:
            for index in range(len(chunks.starts)):
                chunk_predictions, ids, _ = chunks.contents(index)
                writer.write(chunk_predictions, ids)
                if summary:  # per-row statistics, so chunk by chunk
                    friendly, advanced = predictions_to_summary(chunk_predictions, schema, None, id_str=ids)
                    tables[0][0].write(friendly)
                    tables[1][0].write(advanced)
            for appender, _ in tables:
                appender.close()
        except BaseException:
            for appender, _ in tables:
                appender.close()
                appender.path.unlink(missing_ok=True)
            raise
        writer.close(failures)
    for appender, loc in tables:
        os.replace(appender.path, loc)


def repeat_rows(rows: pd.DataFrame, passes: int) -> pd.DataFrame:
    """``rows`` with each row ``passes`` times in a row (item ``i`` is row ``i // passes``, pass ``i % passes``),
    for test-time augmentation through one loader; the repeats get unique ``id_str`` (``<id>#<pass>``), as a
    loader's catalog needs.

    Examples
    --------
    >>> repeat_rows(pd.DataFrame({'id_str': ['a', 'b']}), 2)['id_str'].tolist()
    ['a#0', 'a#1', 'b#0', 'b#1']
    """
    if passes == 1:
        return rows
    repeated = rows.iloc[np.repeat(np.arange(len(rows)), passes)].reset_index(drop=True)
    suffix = pd.Series(np.tile(np.arange(passes), len(rows))).astype(str)
    repeated["id_str"] = repeated["id_str"].astype(str) + "#" + suffix
    return repeated


class PassCollector:
    """Gathers the samples of rows read ``passes`` times (test-time augmentation, see :func:`repeat_rows`)
    until each row is complete; with one pass it passes results through.

    Examples
    --------
    >>> collector = PassCollector(passes=2, n_outputs=1)
    >>> collector.add(np.array([0, 1, 2]), np.ones((3, 1, 1)), np.zeros(3, bool))[0]  # row 0 complete
    array([0])
    """

    def __init__(self, passes: int, n_outputs: int):
        self.passes, self.n_outputs = passes, n_outputs
        self.samples = {}  # row -> (outputs, passes) samples so far
        self.count = {}
        self.failed = {}

    def add(self, items: np.ndarray, out: np.ndarray, failed: np.ndarray):
        """``(positions, predictions, failed)`` of the rows these loader items complete."""
        if self.passes == 1:
            return items, out, failed
        done = []
        for item, sample, bad in zip(items, out, failed):
            row, p = divmod(int(item), self.passes)
            slots = self.samples.setdefault(row, np.empty((self.n_outputs, self.passes), dtype=np.float32))
            slots[:, p] = sample[:, 0]
            self.failed[row] = self.failed.get(row, False) or bool(bad)
            self.count[row] = self.count.get(row, 0) + 1
            if self.count[row] == self.passes:
                done.append(row)
        positions = np.array(done, dtype=np.int64)
        predictions = (np.stack([self.samples.pop(r) for r in done]) if done
                       else np.empty((0, self.n_outputs, self.passes), dtype=np.float32))
        failed = np.array([self.failed.pop(r) for r in done], dtype=bool)
        for r in done:
            del self.count[r]
        return positions, predictions, failed


def _fingerprint(catalog, chunk_size, label_cols, kind, metadata, resume_key) -> str:
    from zoobot.shared.training_config import to_jsonable

    digest = hashlib.sha256()
    for column in ("id_str", "file_loc"):
        if column in catalog.columns:
            digest.update(column.encode())
            for value in catalog[column].astype(str):
                digest.update(value.encode("utf-8") + b"\x1f")
    settings = {
        "chunk_size": int(chunk_size),
        "label_cols": list(label_cols),
        "kind": kind,
        "metadata": to_jsonable(dict(metadata or {})),
        "resume_key": to_jsonable(resume_key),
    }
    digest.update(json.dumps(settings, sort_keys=True).encode())
    return digest.hexdigest()


def _open_partial_dir(folder: pathlib.Path, fingerprint: str, n_rows, chunk_size, label_cols) -> pathlib.Path:
    manifest_path = folder / _MANIFEST
    if folder.exists():
        try:
            manifest = json.loads(manifest_path.read_text())
        except (OSError, ValueError):
            manifest = {}
        if manifest.get("fingerprint") == fingerprint:
            return folder
        warnings.warn(
            f"{folder} holds an unfinished prediction run for a different catalog or different settings; "
            "discarding it and starting afresh.",
            UserWarning,
            stacklevel=4,
        )
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    manifest = {
        "fingerprint": fingerprint,
        "n_rows": n_rows,
        "chunk_size": int(chunk_size),
        "label_cols": list(label_cols),
    }
    tmp = folder / (_MANIFEST + ".tmp")
    tmp.write_text(json.dumps(manifest, indent=1))
    os.replace(tmp, manifest_path)
    return folder


def _chunk_path(folder: pathlib.Path, index: int) -> pathlib.Path:
    return folder / f"chunk_{index:06d}.npz"


def release_free_memory() -> bool:
    """Give the C heap's free memory back to the operating system (glibc ``malloc_trim``), and the
    memory Arrow's pool keeps for reuse (once pyarrow is imported).

    Called before a prediction's first batch and after every batch (at most every 0.1 s). One data
    pipeline serves the whole catalog, and the batches' large temporary buffers, freed between other
    small allocations, fragment glibc's heap: without this the resident memory of a PyTorch prediction
    crept up by ~180 MiB over 100k rows (tiny_cnn, 64 px); with it it stays flat (docs/benchmarks.md,
    section 3b). The catalog checks run on pandas' Arrow-backed strings, whose pool (mimalloc) kept
    ~140 bytes per catalog row after the duplicate-id check (section 3c). Returns whether the C heap
    was trimmed (False where the C library has no ``malloc_trim``, e.g. macOS or musl).
    """
    import sys

    if "pyarrow" in sys.modules:  # nothing to give back if pyarrow never ran
        sys.modules["pyarrow"].default_memory_pool().release_unused()
    global _MALLOC_TRIM
    if _MALLOC_TRIM is None:
        try:
            import ctypes
            import ctypes.util

            _MALLOC_TRIM = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim
        except (OSError, AttributeError, TypeError):
            _MALLOC_TRIM = False
    if _MALLOC_TRIM is False:
        return False
    _MALLOC_TRIM(0)
    return True


_MALLOC_TRIM = None  # the C function once looked up; False where there is none


def _write_chunk(folder, index, predictions, ids, failures) -> None:
    path = _chunk_path(folder, index)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        np.savez(
            f,
            predictions=predictions,
            id_str=np.array(ids, dtype=str),
            **{f"failures_{c}": failures[c].astype(str).to_numpy(dtype=str) for c in _FAILURE_COLUMNS},
        )
    os.replace(tmp, path)


def _read_chunk(folder, index, ids, n_outputs):
    """A finished chunk, or None if missing, unreadable or not for these rows."""
    path = _chunk_path(folder, index)
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as stored:
            predictions = stored["predictions"]
            if stored["id_str"].tolist() != list(ids) or predictions.shape[:2] != (len(ids), n_outputs):
                return None
            failures = pd.DataFrame({c: stored[f"failures_{c}"].tolist() for c in _FAILURE_COLUMNS})
    except (OSError, ValueError, KeyError):
        return None
    return predictions.astype(np.float32, copy=False), failures


def _checked_batch(result, rows: pd.DataFrame, n_outputs: int):
    """``(positions, predictions, failures)`` of one ``predict_rows`` result, checked and normalised."""
    if not isinstance(result, tuple) or len(result) != 3:
        raise TypeError(
            "predict_rows must yield (positions, predictions, failures); got "
            f"{type(result).__name__}{f' of length {len(result)}' if isinstance(result, tuple) else ''}"
        )
    positions, predictions, failures = result
    positions = np.asarray(positions, dtype=np.int64).reshape(-1)
    if len(positions) and (positions.min() < 0 or positions.max() >= len(rows)):
        raise ValueError(f"predict_rows yielded positions outside 0-{len(rows) - 1}: {positions[:5].tolist()}...")
    predictions = np.asarray(predictions, dtype=np.float32)
    if predictions.ndim == 2:
        predictions = predictions[:, :, None]
    if predictions.ndim != 3 or predictions.shape[:2] != (len(positions), n_outputs):
        ids = rows["id_str"].iloc[positions[:1]].tolist()
        raise ValueError(
            f"predict_rows returned predictions of shape {predictions.shape} for {len(positions)} rows (first id_str "
            f"{ids}); expected ({len(positions)}, {n_outputs}, n_samples) (width = len(label_cols))."
        )
    if failures is None or len(failures) == 0:
        return positions, predictions, pd.DataFrame(columns=_FAILURE_COLUMNS)
    failures = pd.DataFrame(failures).copy()
    if "id_str" not in failures.columns:
        raise ValueError(f"predict_rows failures need the columns {_FAILURE_COLUMNS}; got {list(failures.columns)}")
    for column in _FAILURE_COLUMNS[1:]:
        if column not in failures.columns:
            failures[column] = ""
    return positions, predictions, failures[_FAILURE_COLUMNS].astype(str).reset_index(drop=True)


# ---------------------------------------------------------------------------------------------
# the front end of both backends' predict(): argument checks, the model's outputs, loader options
# ---------------------------------------------------------------------------------------------

ON_BAD_IMAGE = ("record", "raise")
# loader keywords that change only the speed, not the pixels: left out of the resume fingerprint
_SPEED_ONLY = ("batch_size", "num_workers", "prefetch_factor")


@dataclasses.dataclass
class ModelSpec:
    """How ``predict`` treats a model (each backend's ``describe_model`` fills it in).

    Attributes
    ----------
    model : torch.nn.Module or keras.Model
    kind : {'tree', 'generic'}
        'tree': outputs are Dirichlet concentrations (saved with vote fractions).
    family : {'tree', 'classifier', 'regressor', 'features'}
    label_cols : list of str
        Default output names.
    channels : int
        Image channels the model takes.
    input_size : int
        Image side the model takes.
    schema : Schema or None
    """

    model: object
    kind: str
    family: str
    label_cols: list
    channels: int
    input_size: int
    schema: object = None


@dataclasses.dataclass(frozen=True)
class PredictArguments:
    """``predict``'s keyword arguments, checked and normalised by :func:`check_predict_arguments`."""

    n_samples: int
    on_bad_image: str
    chunk_size: int
    test_time_dropout: bool | None
    test_time_augmentation: bool
    shard: object
    datamodule_kwargs: dict
    trainer_kwargs: dict


def check_predict_arguments(*, n_samples, save_loc, datamodule_kwargs, trainer_kwargs, test_time_dropout,
                            test_time_augmentation, on_bad_image, chunk_size, shard) -> PredictArguments:
    """Check ``predict``'s arguments (both backends) before the model or any image is touched.

    Raises
    ------
    TypeError
        ``n_samples``/``chunk_size`` not integers, ``test_time_dropout`` not None/True/False,
        ``datamodule_kwargs``/``trainer_kwargs`` not dicts.
    ValueError
        ``n_samples``/``chunk_size`` < 1; E13 for an unknown ``on_bad_image`` or ``save_loc`` extension;
        a malformed ``shard``.

    Examples
    --------
    >>> args = check_predict_arguments(n_samples=5, save_loc=None, datamodule_kwargs=None, trainer_kwargs=None,
    ...                                test_time_dropout=None, test_time_augmentation=False, on_bad_image='record',
    ...                                chunk_size=4096, shard=None)
    >>> args.n_samples, args.datamodule_kwargs
    (5, {})
    """
    from zoobot.shared.sharding import parse_shard

    n_samples = check_int("n_samples", n_samples, minimum=1)
    check_choice("on_bad_image", on_bad_image, ON_BAD_IMAGE)
    chunk_size = check_int("chunk_size", chunk_size, minimum=1)
    if test_time_dropout is not None:
        test_time_dropout = check_bool("test_time_dropout", test_time_dropout)
    shard = parse_shard(shard)  # (rank, world_size) or None
    if save_loc is not None:
        save_predictions.prediction_format(save_loc)  # E13 for an unknown extension
    for name, value in (("datamodule_kwargs", datamodule_kwargs), ("trainer_kwargs", trainer_kwargs)):
        if value is not None and not isinstance(value, dict):
            raise TypeError(f"{name} must be a dict or None, got {type(value).__name__}: {value!r}")
    return PredictArguments(n_samples, on_bad_image, chunk_size, test_time_dropout, bool(test_time_augmentation),
                            shard, dict(datamodule_kwargs or {}), dict(trainer_kwargs or {}))


def resolve_label_cols(label_cols, spec: ModelSpec) -> list:
    """The output names: the model's own (``label_cols=None``) or the caller's, of the model's width (E10).

    Examples
    --------
    >>> spec = ModelSpec(None, 'generic', 'regressor', ['prediction'], 3, 224)
    >>> resolve_label_cols(None, spec), resolve_label_cols('redshift', spec)
    (['prediction'], ['redshift'])
    """
    if label_cols is None:
        return list(spec.label_cols)
    if isinstance(label_cols, str):
        label_cols = [label_cols]
    label_cols = [str(c) for c in label_cols]
    if len(label_cols) != len(spec.label_cols):
        what = (f"schema {spec.schema.name!r}" if spec.schema is not None and spec.schema.name
                else type(spec.model).__name__)
        raise ValueError(
            f"label_cols has width {len(label_cols)} but the model ({what}) predicts {len(spec.label_cols)} outputs: "
            f"expected width {len(spec.label_cols)}, got width {len(label_cols)}. Pass label_cols=None to use "
            f"the model's own names ({spec.label_cols[:3]}...)."
        )
    return label_cols


def requested_dropout(model, test_time_dropout):
    """True/False to force (Monte Carlo) dropout on/off at inference; None to leave the model's layers as they are.

    Examples
    --------
    >>> requested_dropout(object(), None) is None, requested_dropout(object(), False)
    (True, False)
    """
    if test_time_dropout is not None:
        return bool(test_time_dropout)
    own = getattr(model, "test_time_dropout", None)
    return own if isinstance(own, bool) else None


def datamodule_options(spec: ModelSpec, overrides: dict, test_time_augmentation: bool, layout: str) -> dict:
    """GalaxyDataModule keywords for prediction: the model's channels and size, user overrides on top.

    ``layout`` ('NCHW' or 'NHWC') is named in the E7 error of a ``greyscale`` override that contradicts
    the model's channels.

    Examples
    --------
    >>> spec = ModelSpec(None, 'generic', 'features', ['feat_0'], 1, 64)
    >>> options = datamodule_options(spec, {'batch_size': 8}, False, 'NCHW')
    >>> options['greyscale'], options['resize_after_crop'], options['batch_size']
    (True, 64, 8)
    """
    for key in ("catalog", "train_catalog", "val_catalog", "test_catalog", "predict_catalog", "label_cols"):
        if key in overrides:
            raise ValueError(f"datamodule_kwargs may not set {key!r}: predict() passes the catalog itself.")
    greyscale = spec.channels == 1
    if "greyscale" in overrides and bool(overrides["greyscale"]) != greyscale:
        got = 1 if overrides["greyscale"] else 3
        raise ChannelMismatchError(
            f"datamodule_kwargs greyscale={overrides['greyscale']!r} gives {got}-channel images but the model "
            f"({type(spec.model).__name__}) expects {spec.channels} channels ({layout}). Fix: remove greyscale from "
            f"datamodule_kwargs, or use greyscale={greyscale}."
        )
    if "test_time_augmentation" in overrides:
        raise ValueError("Pass test_time_augmentation to predict() itself, not in datamodule_kwargs.")
    options = dict(
        greyscale=greyscale,
        resize_after_crop=spec.input_size,
        batch_size=256,
        num_workers=min(4, available_cpus()),
        test_time_augmentation=test_time_augmentation,
    )
    options.update(overrides)
    return options


def resume_key(weights: Iterable[tuple[str, bytes]], options: Mapping) -> dict:
    """What must match for an interrupted run's finished chunks to be reused: the exact weights and the
    preprocessing options (not the speed-only loader settings).

    ``weights`` yields ``(header, raw bytes)`` per tensor; the header names the tensor, its dtype and size.

    Examples
    --------
    >>> key = resume_key([('w|float32|1', b'abcd')], {'batch_size': 8, 'greyscale': True})
    >>> key['preprocessing']
    {'greyscale': 'True'}
    """
    digest = hashlib.sha1()
    for header, raw in weights:
        digest.update(header.encode())
        digest.update(raw)
    preprocessing = {k: repr(v) for k, v in sorted(options.items()) if k not in _SPEED_ONLY}
    return {"weights_sha1": digest.hexdigest(), "preprocessing": preprocessing}


@dataclasses.dataclass
class PredictionPlan:
    """What both backends' ``predict`` work from once the arguments, model and catalog are checked."""

    catalog: pd.DataFrame
    spec: ModelSpec
    label_cols: list
    options: dict  # GalaxyDataModule keywords
    scale: np.ndarray | None  # calibration scale of a tree model's concentrations
    args: PredictArguments

    def run_kwargs(self, save_loc, backend: str, dropout_active: bool, weights: Callable[[], Iterable]) -> dict:
        """Keywords of :func:`run_chunked_prediction` (``weights()`` is only read with a ``save_loc``)."""
        metadata = {
            "model_class": type(self.spec.model).__name__,
            "n_samples": self.args.n_samples,
            "test_time_dropout": dropout_active,
            "test_time_augmentation": self.args.test_time_augmentation,
            "backend": backend,
            "concentration_scale": None if self.scale is None else self.scale.tolist(),
        }
        kwargs = dict(label_cols=self.label_cols, kind=self.spec.kind, metadata=metadata, schema=self.spec.schema,
                      chunk_size=self.args.chunk_size, shard=self.args.shard)
        if save_loc is not None:
            # finished chunks of an interrupted run are reused only for the same weights and preprocessing
            kwargs["resume_key"] = resume_key(weights(), {**self.options, "concentration_scale": self.scale})
        return kwargs


def plan_prediction(catalog, spec: ModelSpec, label_cols, args: PredictArguments, *, check_valid_paths: bool,
                    calibrate: bool, layout: str) -> PredictionPlan:
    """The checks of ``predict`` that need the model: calibration, output names, loader options, the catalog
    (E1/E3/E4/E5) and the model's recorded preprocessing; nothing is read yet."""
    from zoobot.shared import calibration
    from zoobot.shared.preprocessing import resolve_preprocessing

    model = spec.model
    scale = calibration.model_scale(model, calibrate) if spec.kind == "tree" else None
    label_cols = resolve_label_cols(label_cols, spec)
    options = datamodule_options(spec, dict(args.datamodule_kwargs), args.test_time_augmentation, layout)
    catalog = validate_catalog(catalog, label_cols=None, require_file_loc=True, label_kind=None,
                               check_valid_paths=check_valid_paths)
    options.update(resolve_preprocessing(
        getattr(model, "preprocessing", None), dict(args.datamodule_kwargs), model_name=type(model).__name__,
        file_locs=catalog["file_loc"], fallback_input_size=spec.input_size))
    return PredictionPlan(catalog, spec, label_cols, options, scale, args)
