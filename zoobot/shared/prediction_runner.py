"""Chunked, resumable prediction over a catalog, shared by both backends (api.md 2.6, 4.4).

Each backend's ``predict_on_catalog.predict`` does the model work in a ``predict_chunk`` callable;
:func:`run_chunked_prediction` does everything else:

1. checks the catalog (``id_str`` present E1, not empty E4, ids unique E3) and the ``save_loc``
   extension (E13) **before any compute**;
2. cuts the catalog into chunks of ``chunk_size`` rows and calls ``predict_chunk`` on each, so at
   most one chunk of images is in memory at a time (the predictions of all rows are small);
3. with a ``save_loc``, stores each finished chunk in ``<save_loc>.partial/chunk_{i:06d}.npz``
   (written to a temporary name, then renamed, so a killed run never leaves a half-written chunk).
   ``<save_loc>.partial/manifest.json`` fingerprints the run: the ordered ids, their ``file_loc``,
   ``chunk_size``, ``label_cols``, ``kind``, ``metadata`` and ``resume_key``. Rerunning the same
   prediction skips finished chunks; a run with a different fingerprint starts afresh (warning);
4. at the end, writes the final file with :func:`zoobot.shared.save_predictions.save` (rows in catalog
   order, failed images as NaN rows listed in ``<stem>_failures.csv``), optionally the summary tables,
   and removes the partial folder. One warning summarises any failed images.

The backend's ``predict_chunk(chunk_catalog)`` receives a DataFrame slice (fresh 0..k-1 index) and
returns ``(predictions, failures)``: ``predictions`` float32 (rows of the chunk, outputs, samples) in
chunk order, ``failures`` a DataFrame ``id_str, file_loc, error`` (or None) of rows that could not be
read (their prediction rows are set to NaN here in any case).
"""
from __future__ import annotations

import hashlib
import json
import os
import pathlib
import shutil
import warnings
from typing import Callable, Mapping, Sequence

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from zoobot.shared import save_predictions
from zoobot.shared.catalogs import validate_catalog
from zoobot.shared.errors import format_examples, unknown_option_error

__all__ = ["run_chunked_prediction", "partial_dir"]

_MANIFEST = "manifest.json"
_FAILURE_COLUMNS = ["id_str", "file_loc", "error"]


def partial_dir(save_loc) -> pathlib.Path:
    """The folder of finished chunks of an unfinished run: ``<save_loc>.partial``.

    Examples
    --------
    >>> partial_dir('out/preds.parquet').as_posix()
    'out/preds.parquet.partial'
    """
    path = pathlib.Path(save_loc)
    return path.with_name(path.name + ".partial")


def run_chunked_prediction(
    catalog: pd.DataFrame,
    predict_chunk: Callable[[pd.DataFrame], tuple],
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
) -> np.ndarray:
    """Predict a catalog chunk by chunk, resumable, and write the predictions file.

    Parameters
    ----------
    catalog : pandas.DataFrame
        Needs ``id_str`` (unique); other columns (``file_loc``, ...) are passed to ``predict_chunk``.
    predict_chunk : callable
        ``predict_chunk(chunk_catalog) -> (predictions, failures)``, see the module docstring.
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
        Rows per chunk.
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
        ``chunk_size``; ``summary`` without what it needs; a ``predict_chunk`` result of the wrong shape.

    Warns
    -----
    UserWarning
        When images failed (one summary), or an unfinished run with a different fingerprint is discarded.

    Examples
    --------
    >>> def predict_chunk(chunk):
    ...     return np.ones((len(chunk), 1, 1), dtype=np.float32), None
    >>> cat = pd.DataFrame({'id_str': ['a', 'b', 'c']})
    >>> run_chunked_prediction(cat, predict_chunk, label_cols=['x'], kind='generic', chunk_size=2,
    ...                        progress=False).shape
    (3, 1, 1)
    """
    # ---- every check before any compute
    if save_loc is not None:
        save_predictions.prediction_format(save_loc)  # E13
    if kind not in save_predictions.KINDS:
        raise unknown_option_error("kind", kind, save_predictions.KINDS)
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
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, (int, np.integer)) or chunk_size < 1:
        raise ValueError(f"chunk_size must be a positive integer, got {chunk_size!r}")
    if summary and (schema is None or kind != "tree" or save_loc is None):
        raise ValueError("summary=True needs a tree model's schema, kind='tree' and a save_loc to write next to.")

    ids = catalog["id_str"].tolist()
    n_rows = len(ids)
    starts = list(range(0, n_rows, int(chunk_size)))
    folder = None
    if save_loc is not None:
        fingerprint = _fingerprint(catalog, chunk_size, label_cols, kind, metadata, resume_key)
        folder = _open_partial_dir(partial_dir(save_loc), fingerprint, n_rows, chunk_size, label_cols)

    # ---- the chunks
    predictions = None
    failures = []
    finished = {}
    if folder is not None:
        for i, start in enumerate(starts):
            stored = _read_chunk(folder, i, ids[start : start + chunk_size], len(label_cols))
            if stored is not None:
                finished[i] = stored
    done_rows = sum(len(stored[0]) for stored in finished.values())
    bar = tqdm(total=n_rows, initial=done_rows, unit="galaxy", desc="Predicting", disable=not progress)
    try:
        for i, start in enumerate(starts):
            stop = min(start + chunk_size, n_rows)
            if i in finished:
                chunk_predictions, chunk_failures = finished.pop(i)
            else:
                chunk = catalog.iloc[start:stop].reset_index(drop=True)
                chunk_predictions, chunk_failures = _checked_result(
                    predict_chunk(chunk), chunk, len(label_cols), start
                )
                if folder is not None:
                    _write_chunk(folder, i, chunk_predictions, ids[start:stop], chunk_failures)
                bar.update(stop - start)
            if predictions is None:
                predictions = np.empty((n_rows,) + chunk_predictions.shape[1:], dtype=np.float32)
            elif chunk_predictions.shape[2] != predictions.shape[2]:
                raise ValueError(
                    f"predict_chunk returned {chunk_predictions.shape[2]} samples for rows {start}-{stop - 1} but "
                    f"{predictions.shape[2]} before; every chunk must have the same number of samples."
                )
            predictions[start:stop] = chunk_predictions
            if len(chunk_failures):
                failures.append(chunk_failures)
    finally:
        bar.close()

    failures = pd.concat(failures, ignore_index=True) if failures else pd.DataFrame(columns=_FAILURE_COLUMNS)
    if save_loc is not None:
        save_predictions.save(
            predictions, ids, label_cols, save_loc, kind=kind, failures=failures, metadata=metadata, schema=schema
        )
        if summary:
            from zoobot.shared.load_predictions import predictions_to_summary

            predictions_to_summary(predictions, schema, save_loc, id_str=ids)
        shutil.rmtree(folder, ignore_errors=True)
    if len(failures):
        where = (
            f"listed in {save_predictions.failures_path(save_loc)}" if save_loc is not None else "not saved anywhere"
        )
        warnings.warn(
            f"{len(failures)} of {n_rows} images could not be read; their predictions are NaN ({where}). "
            f"First: {format_examples(list(failures[['id_str', 'error']].itertuples(index=False, name=None)), 3)}",
            UserWarning,
            stacklevel=2,
        )
    return predictions


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
            stacklevel=3,
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


def _checked_result(result, chunk: pd.DataFrame, n_outputs: int, start: int):
    if not isinstance(result, tuple) or len(result) != 2:
        raise TypeError(
            "predict_chunk must return (predictions, failures); got "
            f"{type(result).__name__}{f' of length {len(result)}' if isinstance(result, tuple) else ''}"
        )
    predictions, failures = result
    predictions = np.asarray(predictions, dtype=np.float32)
    if predictions.ndim == 2:
        predictions = predictions[:, :, None]
    if predictions.ndim != 3 or predictions.shape[:2] != (len(chunk), n_outputs):
        raise ValueError(
            f"predict_chunk returned predictions of shape {predictions.shape} for rows {start}-"
            f"{start + len(chunk) - 1}; expected ({len(chunk)}, {n_outputs}, n_samples) (width = len(label_cols))."
        )
    if failures is None or len(failures) == 0:
        return predictions, pd.DataFrame(columns=_FAILURE_COLUMNS)
    failures = pd.DataFrame(failures).copy()
    if "id_str" not in failures.columns:
        raise ValueError(f"predict_chunk failures need the columns {_FAILURE_COLUMNS}; got {list(failures.columns)}")
    for column in _FAILURE_COLUMNS[1:]:
        if column not in failures.columns:
            failures[column] = ""
    failures = failures[_FAILURE_COLUMNS].astype(str)
    failed = chunk["id_str"].isin(set(failures["id_str"])).to_numpy()
    if failed.any():
        predictions = predictions.copy()
        predictions[failed] = np.nan
    return predictions, failures.reset_index(drop=True)
