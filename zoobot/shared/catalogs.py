"""Catalogs: load, validate and split the table of galaxies (docs/components/loading_data.md).

A catalog has one row per galaxy: ``id_str`` (a unique string), ``file_loc`` (path to the
image) and label columns (vote counts per answer for decision trees; class ids or targets
for finetuning). Every train / finetune / predict entry point of both backends calls
:func:`validate_catalog` before any model work, so bad input fails fast with a message that
names the rows and the fix.

:func:`split_catalog` assigns each galaxy to train / val / test by a hash of
``(id_str, seed)``: the assignment of a galaxy never depends on the other rows, so appending
galaxies to a catalog never moves the existing ones between splits.
"""
from __future__ import annotations

import hashlib
import os
import pathlib
import warnings
from typing import Sequence

import numpy as np
import pandas as pd

from zoobot.shared.errors import CatalogError, format_examples, unknown_option_error
from zoobot.shared.validation import check_fraction

__all__ = ["load_catalog", "validate_catalog", "split_catalog", "split_assignment", "LABEL_KINDS"]

#: Accepted values of ``label_kind``.
LABEL_KINDS = ("counts", "class", "regression", None)
_CATALOG_EXTENSIONS = [".csv", ".parquet"]


def load_catalog(path) -> pd.DataFrame:
    """Read a catalog from a .csv or .parquet file, with ``id_str`` as strings.

    Parameters
    ----------
    path : str or path-like
        A ``.csv`` or ``.parquet`` file.

    Returns
    -------
    pandas.DataFrame
        The table; ``id_str`` (if present) holds str, so ``'007'`` keeps its leading zeros.

    Raises
    ------
    ValueError
        (E13) for another extension.
    FileNotFoundError
        If the file does not exist.

    Examples
    --------
    >>> catalog = load_catalog('catalog.parquet')  # doctest: +SKIP
    """
    path = pathlib.Path(path)
    suffix = path.suffix.lower()
    if suffix not in _CATALOG_EXTENSIONS:
        raise unknown_option_error("catalog file extension", suffix or str(path), _CATALOG_EXTENSIONS)
    if not path.is_file():
        raise FileNotFoundError(f"Catalog file {str(path)!r} does not exist (working directory {os.getcwd()!r}).")
    if suffix == ".csv":
        catalog = _read_csv(path)
    else:
        catalog = pd.read_parquet(path)
    if "id_str" in catalog.columns:
        catalog["id_str"] = _ids_as_str(catalog["id_str"])
    return catalog


def _read_csv(path: pathlib.Path) -> pd.DataFrame:
    """A csv catalog; errors name the file and the fix (empty file, not UTF-8, not comma-separated)."""
    from zoobot.shared.errors import CatalogError

    try:
        catalog = pd.read_csv(path, dtype={"id_str": str}, keep_default_na=True)
    except pd.errors.EmptyDataError:
        raise CatalogError(f"Catalog file {str(path)!r} is empty ({path.stat().st_size} bytes): it needs a header "
                           "line (id_str,file_loc,...) and one line per galaxy.") from None
    except UnicodeDecodeError as err:
        raise CatalogError(
            f"Catalog file {str(path)!r} is not UTF-8 text (byte {err.object[err.start:err.start + 1]!r} at position "
            f"{err.start}). Save it as UTF-8, or read it yourself, e.g. pd.read_csv(path, encoding='latin-1'), and "
            "pass the DataFrame."
        ) from None
    if len(catalog.columns) == 1:
        header = str(catalog.columns[0])
        for separator, name in ((";", "semicolons"), ("\t", "tabs"), ("|", "vertical bars")):
            if separator in header:
                raise CatalogError(
                    f"Catalog file {str(path)!r} has one column {header[:80]!r}: it looks separated by {name}, not "
                    f"commas. Save it with commas, or read it yourself with pd.read_csv(path, sep={separator!r}) and "
                    "pass the DataFrame."
                )
    return catalog


def _ids_as_str(ids: pd.Series) -> pd.Series:
    """``id_str`` as strings (numeric ids via ``str``; whole floats such as 123.0 -> '123').

    Missing ids stay missing, so that they can be reported.
    """
    missing = ids.isna()
    if pd.api.types.is_float_dtype(ids) and not missing.any() and (ids == np.round(ids)).all():
        ids = ids.astype(np.int64)  # ids read as float because of a NaN elsewhere in the file
    out = ids.astype(str)
    if missing.any():
        out = out.astype(object).where(~missing, None)
    return out


def validate_catalog(
    catalog,
    label_cols: Sequence[str] | str | None = None,
    require_file_loc: bool = True,
    label_kind: str | None = "counts",
    check_valid_paths: bool = False,
    *,
    name: str = "catalog",
    label_description: str | None = None,
    num_classes: int | None = None,
) -> pd.DataFrame:
    """Check a catalog before any model work and return a clean copy. (Long only for its numpydoc; each
    check is its own helper.)

    Checks, in this order: the type (``TypeError``); required columns present (E1); not empty (E4);
    ``id_str`` unique (E3); label columns numeric (``TypeError``); label values (E2: NaN/inf for every
    kind, negative counts for ``'counts'``; non-integer counts are allowed with one warning); class
    labels integers in ``[0, num_classes)`` (E14); image files exist (E5, only if
    ``check_valid_paths``).

    Over 80 lines only for its numpydoc; the body is 19 lines.

    Parameters
    ----------
    catalog : pandas.DataFrame
        One row per galaxy (docs/components/loading_data.md).
    label_cols : list of str, str or None
        Label columns that must be present; ``None`` for no labels (e.g. prediction).
    require_file_loc : bool
        Require a ``file_loc`` column (False for catalogs of pre-made shards).
    label_kind : {'counts', 'class', 'regression', None}
        How to check the label values: vote counts (finite, >= 0), class ids (integers
        ``>= 0`` and ``< num_classes``), regression targets (finite), or no value checks.
    check_valid_paths : bool
        Check every ``file_loc`` exists (cwd-relative paths allowed).
    name : str, keyword-only
        What the catalog is called in messages (e.g. ``'train_catalog'``).
    label_description : str, keyword-only, optional
        Why the labels are required, for E1 (e.g. ``"label columns of schema 'gz2_ortho'"``).
    num_classes : int, keyword-only, optional
        Upper bound for ``label_kind='class'``.

    Returns
    -------
    pandas.DataFrame
        A copy with ``id_str`` as str; the index is kept.

    Raises
    ------
    TypeError
        ``catalog`` is not a DataFrame, or a label column is not numeric.
    CatalogError
        E1 (missing columns), E4 (empty), E3 (duplicate ids), E2 (bad label values).
    ValueError
        E13 (unknown ``label_kind``), E14 (bad class labels).
    FileNotFoundError
        E5 (missing image files).

    Warns
    -----
    UserWarning
        Once, if vote counts are not whole numbers.

    Examples
    --------
    >>> import pandas as pd
    >>> cat = pd.DataFrame({'id_str': [1, 2], 'file_loc': ['a.jpg', 'b.jpg'], 'ring': [0, 1]})
    >>> validate_catalog(cat, ['ring'], label_kind='class', num_classes=2)['id_str'].tolist()
    ['1', '2']
    """
    if not isinstance(catalog, pd.DataFrame):
        raise TypeError(f"{name} must be a pandas DataFrame, got {type(catalog).__name__}.")
    if label_kind not in LABEL_KINDS:
        raise unknown_option_error("label_kind", label_kind, [str(k) for k in LABEL_KINDS])
    if isinstance(label_cols, str):
        label_cols = [label_cols]
    label_cols = [] if label_cols is None else list(label_cols)

    _check_columns(catalog, label_cols, require_file_loc, name, label_description)  # E1
    if len(catalog) == 0:  # E4
        raise CatalogError(f"{name} is empty (0 rows); it needs at least one galaxy.")
    catalog = catalog.copy()
    catalog["id_str"] = _ids_as_str(catalog["id_str"])
    _check_ids(catalog, name)  # missing ids, E3
    if label_kind is not None and label_cols:
        _check_label_values(catalog, label_cols, label_kind, name, num_classes)
    if check_valid_paths and require_file_loc:
        _check_files_exist(catalog, name)  # E5
    return catalog


def _check_columns(catalog, label_cols, require_file_loc, name, label_description) -> None:
    """E1: ``id_str``, ``file_loc`` (if required) and the label columns are present."""
    required = {"id_str": "every galaxy needs a unique string id"}
    if require_file_loc:
        required["file_loc"] = "the path of each galaxy's image"
    why_labels = label_description or "label columns (label_cols)"
    missing = [c for c in required if c not in catalog.columns]
    missing_labels = [c for c in label_cols if c not in catalog.columns]
    if missing or missing_labels:
        parts = [f"{c!r} ({required[c]})" for c in missing]
        if missing_labels:
            parts.append(f"{format_examples(missing_labels, limit=40)} ({why_labels})")
        hint = ""
        if "id_str" in missing:
            hint = " Numeric ids are fine: e.g. catalog['id_str'] = catalog['objid'].astype(str)."
        raise CatalogError(
            f"{name} is missing {len(missing) + len(missing_labels)} required column(s): {'; '.join(parts)}. "
            f"Columns present: {format_examples(list(catalog.columns), limit=20)}.{hint}"
        )


def _check_ids(catalog, name) -> None:
    """Every row has an ``id_str``, and no two rows the same (E3)."""
    if catalog["id_str"].isna().any():
        bad = catalog.index[catalog["id_str"].isna()].tolist()
        raise CatalogError(
            f"{name} has {len(bad)} row(s) with a missing id_str (index {format_examples(bad)}); every galaxy needs one."
        )
    duplicated = catalog["id_str"][catalog["id_str"].duplicated(keep=False)]
    if len(duplicated):
        unique_dups = list(dict.fromkeys(duplicated))
        raise CatalogError(
            f"{name} has {len(unique_dups)} duplicated id_str value(s) ({len(duplicated)} rows), e.g. "
            f"{format_examples(unique_dups)}. id_str must be unique: drop the repeated rows "
            "(catalog.drop_duplicates('id_str')) or make the ids unique."
        )


def _check_files_exist(catalog, name) -> None:
    """E5: every ``file_loc`` is an existing file."""
    exists = catalog["file_loc"].map(lambda p: isinstance(p, (str, os.PathLike)) and os.path.isfile(p))
    if not exists.all():
        bad = catalog.loc[~exists, ["id_str", "file_loc"]]
        examples = format_examples(list(bad.itertuples(index=False, name=None)))
        raise FileNotFoundError(
            f"{name}: {len(bad)} of {len(catalog)} file_loc path(s) do not exist, e.g. (id_str, file_loc) "
            f"{examples}. Relative paths are read from the working directory {os.getcwd()!r}. "
            "Fix the paths, or pass check_valid_paths=False to skip this check."
        )


def _check_label_values(catalog, label_cols, label_kind, name, num_classes) -> None:
    """Label checks of :func:`validate_catalog`: numeric dtype, E2, E14."""
    for col in label_cols:
        dtype = catalog[col].dtype
        if not (pd.api.types.is_numeric_dtype(dtype) or pd.api.types.is_bool_dtype(dtype)):
            # the values that are not numbers, with their rows (not merely the first rows)
            not_numbers = pd.to_numeric(catalog[col], errors="coerce").isna() & catalog[col].notna()
            bad = catalog.loc[not_numbers, ["id_str", col]] if "id_str" in catalog else catalog.loc[not_numbers, [col]]
            examples = format_examples([tuple(str(v) for v in row) for row in bad.itertuples(index=False, name=None)],
                                       limit=3)
            raise TypeError(
                f"{name}: label column {col!r} has dtype {dtype}, but labels must be numeric: {int(not_numbers.sum())}"
                f" value(s) are not numbers, e.g. (id_str, {col}) {examples}. Fix them, or convert with "
                f"pd.to_numeric(catalog[{col!r}], errors='coerce') and drop the rows that become NaN."
            )
    values = catalog[label_cols].to_numpy(dtype=np.float64)
    bad_finite = ~np.isfinite(values)
    bad = bad_finite | (values < 0) if label_kind == "counts" else bad_finite
    if bad.any():
        bad_rows = bad.any(axis=1)
        bad_cols = [c for c, b in zip(label_cols, bad.any(axis=0)) if b]
        what = "NaN, inf or negative values" if label_kind == "counts" else "NaN or inf values"
        hint = (
            "Use 0, not NaN, for answers with no votes (catalog[label_cols] = catalog[label_cols].fillna(0))."
            if label_kind == "counts"
            else "Drop rows without a label, or fill them."
        )
        raise CatalogError(
            f"{name}: label column(s) {format_examples(bad_cols, limit=10)} hold {what} in {int(bad_rows.sum())} "
            f"row(s), e.g. id_str {format_examples(catalog['id_str'][bad_rows].tolist())}. {hint}"
        )
    if label_kind == "counts":
        fractional = values != np.round(values)
        if fractional.any():
            rows = fractional.any(axis=1)
            warnings.warn(
                f"{name}: vote counts in {int(rows.sum())} row(s) are not whole numbers (e.g. id_str "
                f"{format_examples(catalog['id_str'][rows].tolist(), limit=3)}). The Dirichlet-multinomial loss "
                "accepts them, but check the columns hold vote counts, not vote fractions.",
                UserWarning,
                stacklevel=3,
            )
    elif label_kind == "class":
        bad = (values != np.round(values)) | (values < 0)
        if num_classes is not None:
            bad |= values >= num_classes
        if bad.any():
            offending = list(dict.fromkeys(values[bad].tolist()))
            bound = f"[0, {num_classes})" if num_classes is not None else "[0, num_classes)"
            bad_rows = bad.any(axis=1)
            raise ValueError(
                f"{name}: class labels must be integers in {bound} (num_classes={num_classes}), but "
                f"{int(bad_rows.sum())} row(s) have {format_examples(offending)}, e.g. id_str "
                f"{format_examples(catalog['id_str'][bad_rows].tolist())}. Map your classes to "
                "0..num_classes-1 (e.g. catalog['label'] = catalog['label'].astype('category').cat.codes)."
            )


def split_assignment(id_str: Sequence[str], seed: int = 42) -> np.ndarray:
    """A reproducible number in [0, 1) for each id, from a hash of ``(seed, id_str)``.

    Uses BLAKE2b (not Python's salted ``hash``), so the value is identical in every process,
    machine and Python version.

    Examples
    --------
    >>> u = split_assignment(['a', 'b'], seed=1)
    >>> bool(((u >= 0) & (u < 1)).all())
    True
    """
    out = np.empty(len(id_str), dtype=np.float64)
    prefix = f"{int(seed)}\x1f".encode()
    for i, ident in enumerate(id_str):
        digest = hashlib.blake2b(prefix + str(ident).encode("utf-8"), digest_size=8).digest()
        out[i] = int.from_bytes(digest, "big") / 2.0**64
    return out


def split_catalog(
    catalog: pd.DataFrame,
    train_fraction: float = 0.7,
    val_fraction: float = 0.1,
    test_fraction: float = 0.2,
    seed: int = 42,
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Split a catalog into train, val and test by a hash of each galaxy's ``id_str``.

    Each galaxy's split depends only on its ``id_str`` and ``seed``, so the split is reproducible
    and appending rows never moves existing galaxies. Split sizes are therefore close to, not
    exactly, the requested fractions (binomial scatter).

    Parameters
    ----------
    catalog : pandas.DataFrame
        Must have ``id_str``.
    train_fraction, val_fraction, test_fraction : float
        In [0, 1], summing to 1 (within 1e-6). A fraction of 0 gives an empty split.
    seed : int
        Changes the assignment.

    Returns
    -------
    (train, val, test) : tuple of pandas.DataFrame
        Copies in catalog order with a fresh 0..n-1 index; ``id_str`` as str.

    Raises
    ------
    ValueError
        Fractions outside [0, 1] or not summing to 1.
    CatalogError
        E1 (no ``id_str``); E4 if the catalog or a split with a fraction > 0 is empty.

    Examples
    --------
    >>> import pandas as pd
    >>> cat = pd.DataFrame({'id_str': [str(i) for i in range(1000)]})
    >>> train, val, test = split_catalog(cat, seed=0)
    >>> len(train) + len(val) + len(test)
    1000
    """
    if not isinstance(catalog, pd.DataFrame):
        raise TypeError(f"catalog must be a pandas DataFrame, got {type(catalog).__name__}.")
    fractions = {"train_fraction": train_fraction, "val_fraction": val_fraction, "test_fraction": test_fraction}
    for key, value in fractions.items():
        check_fraction(key, value)
    total = train_fraction + val_fraction + test_fraction
    if abs(total - 1) > 1e-6:
        raise ValueError(
            f"train_fraction + val_fraction + test_fraction must sum to 1, got {train_fraction} + {val_fraction} + "
            f"{test_fraction} = {total:.6g}."
        )
    if "id_str" not in catalog.columns:
        raise CatalogError(
            f"catalog is missing the column 'id_str' (split_catalog assigns galaxies by id). "
            f"Columns present: {format_examples(list(catalog.columns), limit=20)}."
        )
    if len(catalog) == 0:
        raise CatalogError("catalog is empty (0 rows): there is nothing to split into train/val/test.")
    catalog = catalog.copy()
    catalog["id_str"] = _ids_as_str(catalog["id_str"])
    u = split_assignment(catalog["id_str"].tolist(), seed)
    is_train = u < train_fraction
    is_val = ~is_train & (u < train_fraction + val_fraction)
    is_test = ~is_train & ~is_val
    if test_fraction == 0:  # guard against float rounding in the cumulative sum
        is_val |= is_test
        is_test[:] = False
    splits = [catalog[m].reset_index(drop=True) for m in (is_train, is_val, is_test)]
    empty = [n for n, s, f in zip(("train", "val", "test"), splits, fractions.values()) if f > 0 and len(s) == 0]
    if empty:
        sizes = ", ".join(f"{n} {len(s)}" for n, s in zip(("train", "val", "test"), splits))
        raise CatalogError(
            f"Splitting a catalog of {len(catalog)} galaxies (fractions {train_fraction}/{val_fraction}/"
            f"{test_fraction}, seed {seed}) leaves the {' and '.join(empty)} split(s) empty: {sizes}. "
            "Use more galaxies, larger fractions for those splits, or pass the split catalogs explicitly."
        )
    return tuple(splits)
