"""Writing prediction files (api.md 1.6, 4.4), the same way for both backends.

:func:`save` writes ``predictions`` of shape (galaxy, output, sample), keyed by ``id_str``, in the
format the extension of ``save_loc`` names:

- ``.parquet`` (recommended) and ``.csv``: one row per galaxy in the given order, ``id_str`` first.
  Tree models: per label column, ``{col}_concentration_0 .. {col}_concentration_{S-1}`` then
  ``{col}_fraction`` (the mean over samples of alpha / sum of the question's alphas). Other models:
  ``{name}_pred_0 .. {name}_pred_{S-1}`` then ``{name}_pred_mean``. Parquet files carry key-value
  metadata (each value JSON-encoded): ``zoobot_version``, ``format_version``, ``kind``, ``n_samples``,
  plus what the caller passes (``model_class``, ``schema``, ``test_time_dropout``,
  ``test_time_augmentation``, ``backend``, ...). CSV has no metadata.
- ``.hdf5`` / ``.h5`` (needs h5py): datasets ``predictions`` (float32, galaxy x output x sample),
  ``id_str`` and ``label_cols`` (utf-8 strings); the metadata as attributes (dicts as JSON text).

Images that failed are NaN rows and are listed in ``<stem>_failures.csv`` (``id_str``,
``file_loc``, ``error``) next to the file. Files are written atomically (temporary file, then
rename), so a crash never leaves a half-written file under the final name.
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
    "save",
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
    """Write predictions in the layout of api.md 4.4, format chosen by the extension.

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
    fmt = prediction_format(save_loc)
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
    if len(label_cols) != predictions.shape[1]:
        raise ValueError(
            f"Width mismatch: predictions have {predictions.shape[1]} outputs, so expected width "
            f"{predictions.shape[1]} label_cols, got width {len(label_cols)}."
        )
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

    record = _metadata_record(metadata, schema, kind, predictions.shape[2])
    save_loc = pathlib.Path(save_loc)
    save_loc.parent.mkdir(parents=True, exist_ok=True)
    tmp = save_loc.with_name(f".{save_loc.name}.tmp")
    if fmt == "hdf5":
        _write_hdf5(tmp, predictions, id_str, label_cols, record)
    else:
        table = _to_table(predictions, id_str, label_cols, kind, schema, record)
        if fmt == "csv":
            table.to_csv(tmp, index=False)
        else:
            _write_parquet(tmp, table, record)
    os.replace(tmp, save_loc)

    failures_loc = failures_path(save_loc)
    if len(failures):
        failures.to_csv(failures_loc, index=False)
    elif failures_loc.exists():
        failures_loc.unlink()
    return save_loc


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


def _to_table(predictions, id_str, label_cols, kind, schema, record) -> pd.DataFrame:
    if kind == "tree":
        groups = _groups_for_fractions(label_cols, schema, record)
        summary = _tree_fractions(predictions, groups)
    else:
        with np.errstate(invalid="ignore"):
            summary = predictions.mean(axis=2)
    block = np.concatenate([predictions, summary[:, :, None]], axis=2).reshape(len(id_str), -1)
    table = pd.DataFrame(block, columns=prediction_columns(label_cols, predictions.shape[2], kind))
    table.insert(0, "id_str", pd.Series(id_str, dtype=str))
    return table


def _write_parquet(path, table: pd.DataFrame, record: Mapping) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    arrow_table = pa.Table.from_pandas(table, preserve_index=False)
    existing = arrow_table.schema.metadata or {}
    merged = {**existing, **{k.encode(): json.dumps(v).encode() for k, v in record.items()}}
    pq.write_table(arrow_table.replace_schema_metadata(merged), path)


def _write_hdf5(path, predictions, id_str, label_cols, record) -> None:
    try:
        import h5py
    except ImportError:
        raise missing_dependency("h5py", "Writing .hdf5 prediction files", "hdf5") from None
    text = h5py.string_dtype("utf-8")
    with h5py.File(path, "w") as f:
        f.create_dataset("predictions", data=predictions, dtype=np.float32)
        f.create_dataset("id_str", data=np.array(id_str, dtype=object), dtype=text)
        f.create_dataset("label_cols", data=np.array(label_cols, dtype=object), dtype=text)
        for key, value in record.items():
            if isinstance(value, (bool, int, float, str)):
                f.attrs[key] = value
            else:  # dicts, lists, None
                f.attrs[key] = json.dumps(value)


#: Upstream (v1) names of :func:`save`; the extension of ``save_loc`` decides the format.
predictions_to_hdf5 = save
predictions_to_csv = save
