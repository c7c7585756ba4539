"""Reading prediction files back, and the summary tables astronomers use
(docs/components/predictions_and_representations.md).

:func:`load` reads any file :func:`zoobot.shared.save_predictions.save` writes (.parquet, .csv,
.hdf5/.h5) into ``(ids, predictions, label_cols, metadata)``.

:func:`predictions_to_summary` turns tree predictions (Dirichlet concentrations) into two tables:

- ``<stem>_friendly.parquet``: ``id_str`` and ``{col}_fraction``, NaN where the question is
  probably not asked (P(asked) < 0.5), so only meaningful fractions remain;
- ``<stem>_advanced.parquet``: ``id_str`` and, per answer, ``{col}_fraction``,
  ``{col}_90pc-lower``, ``{col}_90pc-upper`` and ``{col}_proportion-asked`` (float32).
"""
from __future__ import annotations

import json
import os
import pathlib
import re

import numpy as np
import pandas as pd

from zoobot.shared import stats
from zoobot.shared.errors import missing_dependency
from zoobot.shared.save_predictions import PREDICTION_EXTENSIONS, prediction_format

__all__ = ["load", "predictions_to_summary", "prediction_hdf5_to_summary_parquet", "summary_paths"]

_SAMPLE_COLUMN = {
    "tree": re.compile(r"^(?P<col>.+)_concentration_(?P<k>\d+)$"),
    "generic": re.compile(r"^(?P<col>.+)_pred_(?P<k>\d+)$"),
}
_SUMMARY_COLUMN = {"tree": "_fraction", "generic": "_pred_mean"}
#: Asked-probability below which the friendly table hides a fraction.
ASKED_THRESHOLD = 0.5


def load(path) -> tuple[pd.DataFrame, np.ndarray, list[str], dict]:
    """Read a predictions file.

    Parameters
    ----------
    path : str or path-like
        ``.parquet``, ``.csv``, ``.hdf5`` or ``.h5``, as written by ``save_predictions.save``.

    Returns
    -------
    ids : pandas.DataFrame
        ``id_str`` (str) and any other non-prediction columns, one row per galaxy in file order.
    predictions : numpy.ndarray
        (galaxy, output, sample) float32.
    label_cols : list of str
    metadata : dict
        Decoded metadata (``schema`` as a dict). CSV files carry none: ``kind`` and ``n_samples`` are
        inferred from the column names.

    Raises
    ------
    ValueError
        (E13) unknown extension; a table without prediction columns.
    FileNotFoundError
    MissingDependencyError
        (E12) ``.hdf5`` without h5py.

    Examples
    --------
    >>> ids, predictions, label_cols, metadata = load('preds.parquet')  # doctest: +SKIP
    """
    fmt = prediction_format(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"Predictions file {os.fspath(path)!r} does not exist.")
    if fmt == "hdf5":
        return _load_hdf5(path)
    if fmt == "csv":
        table = pd.read_csv(path, dtype={"id_str": str})
        metadata = {}
    else:
        import pyarrow.parquet as pq

        arrow_table = pq.read_table(path)
        metadata = _decode_parquet_metadata(arrow_table.schema.metadata or {})
        table = arrow_table.to_pandas()
    ids, predictions, label_cols, kind = _parse_table(table, path)
    metadata.setdefault("kind", kind)
    metadata.setdefault("n_samples", predictions.shape[2])
    return ids, predictions, label_cols, metadata


def _decode_parquet_metadata(raw: dict) -> dict:
    out = {}
    for key, value in raw.items():
        key = key.decode() if isinstance(key, bytes) else key
        if key == "pandas" or key.startswith("ARROW"):
            continue
        text = value.decode() if isinstance(value, bytes) else value
        try:
            out[key] = json.loads(text)
        except ValueError:
            out[key] = text
    return out


def _parse_table(table: pd.DataFrame, path) -> tuple[pd.DataFrame, np.ndarray, list[str], str]:
    for kind, pattern in _SAMPLE_COLUMN.items():
        matches = [(c, pattern.match(str(c))) for c in table.columns]
        matches = [(c, m.group("col"), int(m.group("k"))) for c, m in matches if m]
        if matches:
            break
    else:
        raise ValueError(
            f"{os.fspath(path)!r} has no prediction columns ('<col>_concentration_<k>' or '<col>_pred_<k>'); "
            f"columns: {list(table.columns)[:10]}"
        )
    label_cols = list(dict.fromkeys(col for _, col, _ in matches))
    n_samples = max(k for _, _, k in matches) + 1
    template = "{}_concentration_{}" if kind == "tree" else "{}_pred_{}"
    names = [template.format(col, k) for col in label_cols for k in range(n_samples)]
    missing = [n for n in names if n not in table.columns]
    if missing:
        raise ValueError(f"{os.fspath(path)!r} lacks prediction columns {missing[:5]}")
    predictions = table[names].to_numpy(dtype=np.float32).reshape(len(table), len(label_cols), n_samples)
    used = set(names) | {f"{col}{_SUMMARY_COLUMN[kind]}" for col in label_cols}
    ids = table[[c for c in table.columns if c not in used]].copy()
    if "id_str" in ids.columns:
        ids["id_str"] = ids["id_str"].astype(str)
    return ids.reset_index(drop=True), predictions, label_cols, kind


def _load_hdf5(path):
    try:
        import h5py
    except ImportError:
        raise missing_dependency("h5py", "Reading .hdf5 prediction files", "hdf5") from None
    with h5py.File(path, "r") as f:
        predictions = np.asarray(f["predictions"][...], dtype=np.float32)
        id_str = [s for s in f["id_str"].asstr()[...]]
        label_cols = [s for s in f["label_cols"].asstr()[...]]
        metadata = {}
        for key, value in f.attrs.items():
            if isinstance(value, bytes):
                value = value.decode()
            if isinstance(value, np.generic):
                value = value.item()
            if isinstance(value, str) and (value[:1] in ("{", "[") or value == "null"):
                try:
                    value = json.loads(value)
                except ValueError:
                    pass
            metadata[key] = value
    if predictions.ndim == 2:
        predictions = predictions[:, :, None]
    metadata.setdefault("n_samples", predictions.shape[2])
    return pd.DataFrame({"id_str": pd.Series(id_str, dtype=str)}), predictions, label_cols, metadata


def summary_paths(save_loc) -> tuple[pathlib.Path, pathlib.Path]:
    """``(<stem>_friendly.parquet, <stem>_advanced.parquet)`` for a predictions path or a bare stem.

    Examples
    --------
    >>> [p.name for p in summary_paths('out/preds.parquet')]
    ['preds_friendly.parquet', 'preds_advanced.parquet']
    """
    path = pathlib.Path(save_loc)
    if path.suffix.lower() in PREDICTION_EXTENSIONS:
        path = path.with_suffix("")
    return path.with_name(path.name + "_friendly.parquet"), path.with_name(path.name + "_advanced.parquet")


def predictions_to_summary(path_or_array, schema, save_loc=None, *, id_str=None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Write the friendly and advanced summary tables of tree predictions.

    Parameters
    ----------
    path_or_array : str, path-like or numpy.ndarray
        A predictions file (any format :func:`load` reads) or concentrations
        (galaxy, answer[, sample]).
    schema : Schema
        The decision tree of the predictions.
    save_loc : str or path-like, optional
        Where to write: its stem (extension dropped if it is a predictions extension) gets
        ``_friendly.parquet`` and ``_advanced.parquet``. Default: next to ``path_or_array`` when it is a
        path; with an array and no ``save_loc`` nothing is written.
    id_str : sequence of str, keyword-only
        Required with an array.

    Returns
    -------
    (friendly, advanced) : tuple of pandas.DataFrame

    Raises
    ------
    ValueError
        (E10) the predictions' label columns or width differ from the schema; an array without ``id_str``.

    Examples
    --------
    >>> friendly, advanced = predictions_to_summary('preds.parquet', schema)  # doctest: +SKIP
    """
    if isinstance(path_or_array, (str, os.PathLike)):
        ids, concentrations, label_cols, _ = load(path_or_array)
        if list(label_cols) != list(schema.label_cols):
            raise ValueError(
                f"{os.fspath(path_or_array)!r} holds {len(label_cols)} outputs that are not the label columns of "
                f"schema {schema.name!r} (expected width {len(schema.label_cols)}, got width {len(label_cols)}; "
                f"first columns {label_cols[:3]} vs {list(schema.label_cols)[:3]})."
            )
        id_values = ids["id_str"].astype(str).tolist()
        if save_loc is None:
            save_loc = path_or_array
    else:
        concentrations = np.asarray(path_or_array, dtype=np.float64)
        if id_str is None:
            raise ValueError("predictions_to_summary needs id_str=... (one id per row) when given an array.")
        id_values = [str(i) for i in id_str]
        if len(id_values) != concentrations.shape[0]:
            raise ValueError(f"Got {len(id_values)} id_str for {concentrations.shape[0]} rows of predictions.")

    fractions = stats.vote_fractions(concentrations, schema)
    asked_per_question = stats.proportion_asked(fractions, schema)
    question_of_answer = np.concatenate(
        [np.full(end - start + 1, q) for q, (start, end) in enumerate(schema.question_index_groups)]
    )
    asked = asked_per_question[:, question_of_answer]
    lower, upper = stats.get_confidence_intervals(concentrations, schema, interval_width=0.9)

    cols = list(schema.label_cols)
    friendly_values = np.where(asked >= ASKED_THRESHOLD, fractions, np.nan).astype(np.float32)
    friendly = pd.DataFrame(friendly_values, columns=[f"{c}_fraction" for c in cols])
    friendly.insert(0, "id_str", pd.Series(id_values, dtype=str))

    block = np.stack([fractions, lower, upper, asked], axis=2).astype(np.float32).reshape(len(id_values), -1)
    names = [f"{c}{end}" for c in cols for end in ("_fraction", "_90pc-lower", "_90pc-upper", "_proportion-asked")]
    advanced = pd.DataFrame(block, columns=names)
    advanced.insert(0, "id_str", pd.Series(id_values, dtype=str))

    if save_loc is not None:
        friendly_loc, advanced_loc = summary_paths(save_loc)
        friendly_loc.parent.mkdir(parents=True, exist_ok=True)
        for frame, loc in ((friendly, friendly_loc), (advanced, advanced_loc)):
            tmp = loc.with_name(f".{loc.name}.tmp")
            frame.to_parquet(tmp, index=False)
            os.replace(tmp, loc)
    return friendly, advanced


def prediction_hdf5_to_summary_parquet(hdf5_loc, save_loc, schema) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Upstream (v1) spelling of :func:`predictions_to_summary` (note its argument order).

    Examples
    --------
    >>> prediction_hdf5_to_summary_parquet('preds.hdf5', 'summary.parquet', schema)  # doctest: +SKIP
    """
    return predictions_to_summary(hdf5_loc, schema, save_loc)
