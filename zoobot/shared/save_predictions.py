"""Writing prediction files, the same way for both backends.

:func:`save` writes ``predictions`` of shape (galaxy, output, sample), keyed by ``id_str``, in the format
the extension of ``save_loc`` names (``.parquet`` recommended, ``.csv``, ``.hdf5``/``.h5``); failed images
are NaN rows listed in ``<stem>_failures.csv``. Files are written atomically (temporary name, then
rename). :class:`PredictionWriter` writes the same files chunk by chunk, so memory stays flat however
many rows there are; :class:`ParquetAppender` appends DataFrames to one parquet file as row groups (also
the summary tables). Columns and metadata of each format: docs/components/predictions_and_representations.md.
"""
from __future__ import annotations

import json
import os
import pathlib
from typing import Mapping, Sequence

import numpy as np
import pandas as pd

from zoobot.shared.checkpoints import version_metadata
from zoobot.shared.errors import CatalogError, format_examples, missing_dependency, unknown_option_error

__all__ = [
    "classifier_output_names",
    "partial_dir",
    "write_table",
    "save",
    "PredictionWriter",
    "ParquetAppender",
    "predictions_to_hdf5",
    "predictions_to_csv",
    "prediction_format",
    "failures_path",
    "prediction_columns",
    "infer_question_index_groups",
    "PREDICTION_EXTENSIONS",
    "KINDS",
]

#: Extension -> format.
PREDICTION_EXTENSIONS = {".parquet": "parquet", ".csv": "csv", ".hdf5": "hdf5", ".h5": "hdf5"}
#: Accepted values of ``kind``.
KINDS = ("tree", "generic")
FAILURE_COLUMNS = ["id_str", "file_loc", "error"]
#: Rows per write when :func:`save` writes a whole array.
WRITE_ROWS = 4096


def prediction_format(save_loc) -> str:
    """``'parquet'``, ``'csv'`` or ``'hdf5'`` from the extension of ``save_loc``.

    Raises
    ------
    ValueError
        (E13) for any other extension.

    Examples
    --------
    >>> prediction_format('out/preds.h5')
    'hdf5'
    """
    suffix = pathlib.Path(os.fspath(save_loc)).suffix.lower()
    if suffix not in PREDICTION_EXTENSIONS:
        raise unknown_option_error(
            f"predictions file extension (save_loc={os.fspath(save_loc)!r})", suffix, list(PREDICTION_EXTENSIONS)
        )
    return PREDICTION_EXTENSIONS[suffix]


def failures_path(save_loc) -> pathlib.Path:
    """``<stem>_failures.csv`` next to ``save_loc``.

    Examples
    --------
    >>> failures_path('out/preds.parquet').as_posix()
    'out/preds_failures.csv'
    """
    path = pathlib.Path(save_loc)
    return path.with_name(path.stem + "_failures.csv")


def prediction_columns(label_cols: Sequence[str], n_samples: int, kind: str = "tree") -> list[str]:
    """Column names of a parquet/csv predictions file after ``id_str``, in order.

    Examples
    --------
    >>> prediction_columns(['ring'], 2, kind='generic')
    ['ring_pred_0', 'ring_pred_1', 'ring_pred_mean']
    """
    if kind == "tree":
        per_col = [f"_concentration_{k}" for k in range(n_samples)] + ["_fraction"]
    else:
        per_col = [f"_pred_{k}" for k in range(n_samples)] + ["_pred_mean"]
    return [f"{col}{end}" for col in label_cols for end in per_col]


def classifier_output_names(num_classes: int, label_cols=None) -> list[str]:
    """Column stems of a classifier's class probabilities, named after the label it was trained on.

    A binary classifier of ``ring`` gives ``['not_ring', 'ring']`` (so ``ring_pred_mean`` is the
    probability of a ring); ``num_classes`` > 2 gives ``['morph_0', 'morph_1', ...]``. Without a known
    label (a model never fitted on a data module, or saved by zoobot < 0.3) the names are the older
    ``class_0``, ``class_1``, ...

    Examples
    --------
    >>> classifier_output_names(2, ['ring'])
    ['not_ring', 'ring']
    >>> classifier_output_names(3, ['morph'])
    ['morph_0', 'morph_1', 'morph_2']
    >>> classifier_output_names(2)
    ['class_0', 'class_1']
    """
    n = int(num_classes)
    if not label_cols or len(label_cols) != 1:
        return [f"class_{i}" for i in range(n)]
    label = str(label_cols[0])
    return [f"not_{label}", label] if n == 2 else [f"{label}_{i}" for i in range(n)]


def infer_question_index_groups(label_cols: Sequence[str]) -> list[tuple[int, int]]:
    """Question groups from label column names ``question_answer`` (question = text before the first
    ``_``), for tree predictions saved without a schema. Exact for every Galaxy Zoo tree.

    Raises
    ------
    ValueError
        If a question's columns are not contiguous (pass the schema instead).

    Examples
    --------
    >>> infer_question_index_groups(['a_x', 'a_y', 'b-c_u', 'b-c_v', 'b-c_w'])
    [(0, 1), (2, 4)]
    """
    questions = [col.split("_", 1)[0] for col in label_cols]
    groups, seen = [], set()
    for i, question in enumerate(questions):
        if i > 0 and question == questions[i - 1]:
            groups[-1] = (groups[-1][0], i)
            continue
        if question in seen:
            raise ValueError(
                f"Cannot tell the questions apart from the label columns (question {question!r} is not contiguous); "
                "pass schema= to save the vote fractions."
            )
        seen.add(question)
        groups.append((i, i))
    return groups


def _groups_for_fractions(label_cols, schema, metadata) -> list[tuple[int, int]]:
    if schema is None and isinstance(metadata.get("schema"), Mapping):
        from zoobot.shared.schemas import Schema

        schema = Schema.from_dict(metadata["schema"])
    if schema is None:
        return infer_question_index_groups(label_cols)
    if list(schema.label_cols) != list(label_cols):
        raise ValueError(
            f"label_cols differ from the label columns of schema {schema.name!r}: expected width "
            f"{len(schema.label_cols)}, got width {len(label_cols)} "
            f"(first difference: {_first_difference(schema.label_cols, label_cols)})."
        )
    return list(schema.question_index_groups)


def _first_difference(expected, got) -> str:
    for i, (a, b) in enumerate(zip(expected, got)):
        if a != b:
            return f"column {i}: {a!r} vs {b!r}"
    return f"{len(expected)} vs {len(got)} columns"


def _tree_fractions(predictions: np.ndarray, groups) -> np.ndarray:
    from zoobot.shared.stats import vote_fractions

    return vote_fractions(predictions, groups).astype(np.float32)


def _metadata_record(metadata, schema, kind, n_samples) -> dict:
    record = dict(metadata or {})
    if schema is not None:
        record["schema"] = schema
    if hasattr(record.get("schema"), "to_dict"):
        record["schema"] = record["schema"].to_dict()
    record.update(version_metadata())
    record["kind"] = kind
    record["n_samples"] = int(n_samples)
    return record


def save(
    predictions,
    id_str: Sequence[str],
    label_cols: Sequence[str],
    save_loc,
    kind: str = "tree",
    failures: pd.DataFrame | None = None,
    metadata: Mapping | None = None,
    *,
    schema=None,
) -> pathlib.Path:
    """Write predictions to a file in the format the extension of ``save_loc`` names.

    Layout: the module docstring and docs/components/predictions_and_representations.md. The upstream
    names ``predictions_to_csv`` and ``predictions_to_hdf5`` are this same function: whatever the name,
    ``.parquet``/``.csv``/``.hdf5``/``.h5`` decides the format.

    Parameters
    ----------
    predictions : array-like
        (galaxy, output, sample), or (galaxy, output) for one sample. NaN rows for failed images.
    id_str : sequence of str
        One unique id per galaxy, in the order of ``predictions``.
    label_cols : sequence of str
        One name per output (schema label columns, ``class_{i}``, ``prediction``, ...).
    save_loc : str or path-like
        ``.parquet``, ``.csv``, ``.hdf5`` or ``.h5``; parent folders are created.
    kind : {'tree', 'generic'}
        'tree': outputs are Dirichlet concentrations (``_concentration_k`` and ``_fraction`` columns);
        'generic': anything else (``_pred_k`` and ``_pred_mean``).
    failures : DataFrame, optional
        Rows ``id_str, file_loc, error`` of images that could not be read: those rows are written as
        NaN and listed in ``<stem>_failures.csv``. Without failures a stale ``<stem>_failures.csv``
        from an earlier run is removed.
    metadata : mapping, optional
        Extra metadata (``model_class``, ``schema``, ``test_time_dropout``, ``test_time_augmentation``,
        ``backend``, ...); JSON-able values. ``zoobot_version``, ``format_version``, ``kind`` and
        ``n_samples`` are always set.
    schema : Schema, keyword-only, optional
        For tree fractions (which need the question groups) and the metadata. Otherwise taken from
        ``metadata['schema']``, else the groups are read from the column names (text before the first ``_``).

    Returns
    -------
    pathlib.Path
        The file written.

    Raises
    ------
    ValueError
        (E13) unknown extension or kind; (E10) ``label_cols`` width differs from the outputs; id count
        differs from the rows.
    CatalogError
        (E3) duplicate ids.
    MissingDependencyError
        (E12) ``.hdf5`` without h5py.

    Examples
    --------
    >>> save(np.ones((2, 2, 1)), ['a', 'b'], ['ring_yes', 'ring_no'], 'preds.parquet')  # doctest: +SKIP
    """
    predictions, id_str, label_cols, failures = _checked_inputs(predictions, id_str, label_cols, save_loc, kind,
                                                                failures)
    n_rows, n_samples = predictions.shape[0], predictions.shape[2]
    with PredictionWriter(save_loc, label_cols, n_rows, n_samples, kind, metadata, schema=schema) as writer:
        for start in range(0, n_rows, WRITE_ROWS):
            writer.write(predictions[start : start + WRITE_ROWS], id_str[start : start + WRITE_ROWS])
        return writer.close(failures)


def _checked_inputs(predictions, id_str, label_cols, save_loc, kind, failures):
    """:func:`save`'s inputs checked (E13, E10, E3) and normalised; failed rows set to NaN."""
    prediction_format(save_loc)  # E13
    if kind not in KINDS:
        raise unknown_option_error("kind", kind, KINDS)
    predictions = np.asarray(predictions, dtype=np.float32)
    if predictions.ndim == 2:
        predictions = predictions[:, :, None]
    if predictions.ndim != 3:
        raise ValueError(f"predictions must be (galaxy, output, sample), got shape {predictions.shape}")
    id_str = [str(i) for i in id_str]
    label_cols = [str(c) for c in label_cols]
    if len(id_str) != predictions.shape[0]:
        raise ValueError(f"Got {len(id_str)} id_str for {predictions.shape[0]} rows of predictions.")
    _check_width(predictions.shape[1], label_cols)
    duplicated = pd.Index(id_str)[pd.Index(id_str).duplicated()].unique().tolist()
    if duplicated:
        raise CatalogError(
            f"Cannot save predictions keyed by id_str: {len(duplicated)} duplicated id_str value(s), e.g. "
            f"{format_examples(duplicated)}."
        )
    failures = _clean_failures(failures)
    if len(failures):
        failed = np.isin(np.asarray(id_str, dtype=object), failures["id_str"].to_numpy(dtype=object))
        if failed.any():
            predictions = predictions.copy()
            predictions[failed] = np.nan
    return predictions, id_str, label_cols, failures


def _check_width(n_outputs: int, label_cols) -> None:
    if len(label_cols) != n_outputs:
        raise ValueError(
            f"Width mismatch: predictions have {n_outputs} outputs, so expected width "
            f"{n_outputs} label_cols, got width {len(label_cols)}."
        )


class PredictionWriter:
    """Write a predictions file chunk by chunk: the file :func:`save` writes, holding one chunk in memory.

    Rows are written in the order given, to ``.<name>.tmp`` next to ``save_loc``; :meth:`close` checks
    that all ``n_rows`` rows came, renames the file into place and writes (or removes a stale)
    ``<stem>_failures.csv``. Used as a context manager, an exception discards the temporary file.
    Parquet gets one row group per :meth:`write`, csv appends rows (header once), hdf5 fills slices of
    datasets of the final size.

    Parameters
    ----------
    save_loc : str or path-like
        ``.parquet``, ``.csv``, ``.hdf5`` or ``.h5``; parent folders are created.
    label_cols : sequence of str
        One name per output.
    n_rows : int
        Rows the file will hold.
    n_samples : int
        Samples per output.
    kind, metadata, schema
        As in :func:`save`.

    Raises
    ------
    ValueError
        (E13) unknown extension or kind; (E10) tree ``label_cols`` that differ from ``schema``.
    MissingDependencyError
        (E12) ``.hdf5`` without h5py.

    Examples
    --------
    >>> with PredictionWriter('preds.parquet', ['x'], n_rows=3, n_samples=1, kind='generic') as writer:  # doctest: +SKIP
    ...     writer.write(np.ones((2, 1, 1)), ['a', 'b'])
    ...     writer.write(np.ones((1, 1, 1)), ['c'])
    ...     writer.close()
    """

    def __init__(self, save_loc, label_cols, n_rows: int, n_samples: int, kind: str = "tree", metadata=None, *,
                 schema=None):
        self.format = prediction_format(save_loc)
        if kind not in KINDS:
            raise unknown_option_error("kind", kind, KINDS)
        self.path = pathlib.Path(save_loc)
        self.label_cols = [str(c) for c in label_cols]
        self.n_rows, self.n_samples, self.kind = int(n_rows), int(n_samples), kind
        self.record = _metadata_record(metadata, schema, kind, n_samples)
        tree_table = kind == "tree" and self.format != "hdf5"  # hdf5 stores no fractions
        self.groups = _groups_for_fractions(self.label_cols, schema, self.record) if tree_table else None
        self.rows_written = 0
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.tmp = self.path.with_name(f".{self.path.name}.tmp")
        self._file = None
        if self.format == "hdf5":
            self._file = _open_hdf5(self.tmp, self.n_rows, self.label_cols, self.n_samples, self.record)
        elif self.format == "csv":
            self._file = open(self.tmp, "w", newline="", encoding="utf-8")
        else:
            self._file = ParquetAppender(self.tmp, self.record)

    def write(self, predictions, id_str) -> None:
        """Append the next rows: ``predictions`` (rows, outputs, samples) and their ``id_str``."""
        predictions = np.asarray(predictions, dtype=np.float32)
        if predictions.ndim == 2:
            predictions = predictions[:, :, None]
        id_str = [str(i) for i in id_str]
        if predictions.ndim != 3 or predictions.shape[2] != self.n_samples or len(id_str) != len(predictions):
            raise ValueError(
                f"Expected predictions of shape ({len(id_str)}, {len(self.label_cols)}, {self.n_samples}) for "
                f"{len(id_str)} id_str, got shape {predictions.shape}."
            )
        _check_width(predictions.shape[1], self.label_cols)
        stop = self.rows_written + len(id_str)
        if stop > self.n_rows:
            raise ValueError(f"Writing rows {self.rows_written}-{stop - 1} of a file of {self.n_rows} rows.")
        if self.format == "hdf5":
            self._file["predictions"][self.rows_written : stop] = predictions
            self._file["id_str"][self.rows_written : stop] = np.array(id_str, dtype=object)
        else:
            table = _to_table(predictions, id_str, self.label_cols, self.kind, self.groups)
            if self.format == "csv":
                table.to_csv(self._file, header=self.rows_written == 0, index=False)
            else:
                self._file.write(table)
        self.rows_written = stop

    def close(self, failures: pd.DataFrame | None = None) -> pathlib.Path:
        """Finish the file (all ``n_rows`` rows must be written), move it into place, write the failures.

        Raises
        ------
        ValueError
            If fewer rows than ``n_rows`` were written (the temporary file is removed).
        """
        if self.rows_written != self.n_rows:
            self.abort()
            raise ValueError(f"Only {self.rows_written} of {self.n_rows} rows were written to {self.path}.")
        failures = _clean_failures(failures)
        self._close_file()
        os.replace(self.tmp, self.path)
        failures_loc = failures_path(self.path)
        if len(failures):
            failures.to_csv(failures_loc, index=False)
        elif failures_loc.exists():
            failures_loc.unlink()
        return self.path

    def abort(self) -> None:
        """Discard the temporary file."""
        self._close_file()
        self.tmp.unlink(missing_ok=True)

    def _close_file(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def __enter__(self) -> "PredictionWriter":
        return self

    def __exit__(self, exc_type, exc, traceback) -> None:
        if exc_type is not None or self._file is not None:
            self.abort()


class ParquetAppender:
    """Append DataFrames with the same columns to one parquet file, one row group each.

    The first frame fixes the Arrow schema (as ``DataFrame.to_parquet(index=False)`` would write it);
    ``metadata`` values are added JSON-encoded to the file's key-value metadata. Nothing is written
    until the first :meth:`write`; :meth:`close` finishes the file (an empty file if nothing came).

    Examples
    --------
    >>> appender = ParquetAppender('table.parquet', {'n_samples': 1})  # doctest: +SKIP
    >>> appender.write(pd.DataFrame({'id_str': ['a'], 'x': [1.0]}))  # doctest: +SKIP
    >>> appender.close()  # doctest: +SKIP
    """

    def __init__(self, path, metadata: Mapping | None = None):
        self.path = pathlib.Path(path)
        self.metadata = {k.encode(): json.dumps(v).encode() for k, v in (metadata or {}).items()}
        self._writer = None

    def write(self, frame: pd.DataFrame) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        table = pa.Table.from_pandas(frame, preserve_index=False)
        if self._writer is None:
            schema = table.schema.with_metadata({**(table.schema.metadata or {}), **self.metadata})
            self._writer = pq.ParquetWriter(self.path, schema)
        self._writer.write_table(table.replace_schema_metadata(self._writer.schema.metadata))

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None


def _clean_failures(failures) -> pd.DataFrame:
    if failures is None:
        return pd.DataFrame(columns=FAILURE_COLUMNS)
    if not isinstance(failures, pd.DataFrame):
        failures = pd.DataFrame(failures)
    if "id_str" not in failures.columns:
        raise ValueError(f"failures must have the columns {FAILURE_COLUMNS}; got {list(failures.columns)}")
    failures = failures.copy()
    for col in FAILURE_COLUMNS[1:]:
        if col not in failures.columns:
            failures[col] = ""
    failures["id_str"] = failures["id_str"].astype(str)
    return failures[FAILURE_COLUMNS + [c for c in failures.columns if c not in FAILURE_COLUMNS]]


def _to_table(predictions, id_str, label_cols, kind, groups) -> pd.DataFrame:
    """The parquet/csv columns of some rows: per label column its samples, then the fraction or mean."""
    if kind == "tree":
        summary = _tree_fractions(predictions, groups)
    else:
        with np.errstate(invalid="ignore"):
            summary = predictions.mean(axis=2, dtype=np.float32)
    block = np.concatenate([predictions, summary[:, :, None]], axis=2)
    block = block.reshape(len(id_str), block.shape[1] * block.shape[2])  # (also for no rows)
    table = pd.DataFrame(block, columns=prediction_columns(label_cols, predictions.shape[2], kind), copy=False)
    table.insert(0, "id_str", pd.Series(id_str, dtype=str))
    return table


def _open_hdf5(path, n_rows, label_cols, n_samples, record):
    """An open h5py file with datasets ``predictions`` and ``id_str`` of the final size (filled by slices)."""
    try:
        import h5py
    except ImportError:
        raise missing_dependency("h5py", "Writing .hdf5 prediction files", "hdf5") from None
    text = h5py.string_dtype("utf-8")
    f = h5py.File(path, "w")
    f.create_dataset("predictions", shape=(n_rows, len(label_cols), n_samples), dtype=np.float32)
    f.create_dataset("id_str", shape=(n_rows,), dtype=text)
    f.create_dataset("label_cols", data=np.array(label_cols, dtype=object), dtype=text)
    for key, value in record.items():
        if isinstance(value, (bool, int, float, str)):
            f.attrs[key] = value
        else:  # dicts, lists, None
            f.attrs[key] = json.dumps(value)
    return f


#: Upstream (v1) name of :func:`save`, kept for upstream code. It writes the format the extension of
#: ``save_loc`` names (HDF5 for ``.hdf5``, not only CSV): prefer ``save``, the honest name.
predictions_to_csv = save
#: Upstream (v1) name of :func:`save` (writes the format the extension names, not only HDF5).
predictions_to_hdf5 = save


def partial_dir(save_loc) -> pathlib.Path:
    """The folder of finished chunks of an unfinished run: ``<save_loc>.partial``.

    Examples
    --------
    >>> partial_dir('out/preds.parquet').as_posix()
    'out/preds.parquet.partial'
    """
    path = pathlib.Path(save_loc)
    return path.with_name(path.name + ".partial")


def write_table(table: pd.DataFrame, save_loc) -> pathlib.Path:
    """Write a table to ``.csv`` or ``.parquet`` atomically (a temporary file, then a rename).

    Examples
    --------
    >>> import tempfile
    >>> write_table(pd.DataFrame({'id_str': ['a']}), pathlib.Path(tempfile.mkdtemp()) / 't.csv').name
    't.csv'
    """
    save_loc = pathlib.Path(save_loc)
    save_loc.parent.mkdir(parents=True, exist_ok=True)
    tmp = save_loc.with_name(f".{save_loc.name}.tmp")
    if save_loc.suffix.lower() == ".csv":
        table.to_csv(tmp, index=False)
    else:
        table.to_parquet(tmp, index=False)
    os.replace(tmp, save_loc)
    return save_loc
