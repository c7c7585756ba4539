"""Framework-neutral set-up of a training run, shared by both ``train`` functions (api.md 2.4, 3.6, 4.2).

Both backends call these helpers in the same order, so that the same arguments are accepted,
validated and recorded identically:

1. :func:`merge_alias_kwargs` resolves keywords with two spellings
   (``model_architecture``/``architecture_name``, ``resize_size``/``resize_after_crop``);
2. :func:`resolve_architecture_name` maps the seed's architecture names to timm-style names;
3. :func:`prepare_catalogs` validates and splits the catalogs (E1-E5, 70/10/20);
4. :func:`resolve_device_count` caps the requested GPUs at what is available;
5. :func:`check_resume_config` refuses to resume a run started with other arguments, then
   :func:`write_run_config` writes ``save_dir/config.json`` and :func:`write_split_catalogs`
   the split catalogs.
"""
from __future__ import annotations

import json
import math
import os
import pathlib
import warnings
from typing import Mapping, Sequence

import numpy as np
import pandas as pd

from zoobot.shared.catalogs import split_catalog, validate_catalog
from zoobot.shared.checkpoints import version_metadata

__all__ = [
    "resolve_architecture_name",
    "merge_alias_kwargs",
    "prepare_catalogs",
    "resolve_device_count",
    "to_jsonable",
    "write_run_config",
    "read_run_config",
    "check_resume_config",
    "write_split_catalogs",
    "CONFIG_FILENAME",
]

#: Name of the run record inside ``save_dir``.
CONFIG_FILENAME = "config.json"
_DEPRECATED_ARCHITECTURES = {"resnet_detectron": "resnet50", "resnet_torchvision": "resnet50"}
_ARCHITECTURE_ALIASES = {"efficientnet": "efficientnet_b0"}
# keys written by write_run_config itself, never compared on resume
_RECORD_KEYS = ("zoobot_version", "format_version", "backend")


def resolve_architecture_name(name: str) -> str:
    """Map the seed's architecture names to the names the backends build.

    ``'efficientnet'`` -> ``'efficientnet_b0'``; ``'resnet_detectron'`` and ``'resnet_torchvision'``
    -> ``'resnet50'`` (timm) with a ``DeprecationWarning``; every other name is returned unchanged
    (the backend raises E13 if it does not know it).

    Parameters
    ----------
    name : str

    Returns
    -------
    str

    Raises
    ------
    TypeError
        If ``name`` is not a string.

    Examples
    --------
    >>> resolve_architecture_name('efficientnet')
    'efficientnet_b0'
    >>> resolve_architecture_name('convnext_nano')
    'convnext_nano'
    """
    if not isinstance(name, str):
        raise TypeError(f"The architecture name must be a string, got {type(name).__name__}: {name!r}")
    if name in _ARCHITECTURE_ALIASES:
        return _ARCHITECTURE_ALIASES[name]
    if name in _DEPRECATED_ARCHITECTURES:
        new = _DEPRECATED_ARCHITECTURES[name]
        warnings.warn(
            f"Architecture {name!r} is deprecated: zoobot builds timm's {new!r} instead (the detectron2 / "
            f"torchvision variants are not provided). Pass model_architecture={new!r} to silence this warning.",
            DeprecationWarning,
            stacklevel=2,
        )
        return new
    return name


def merge_alias_kwargs(kwargs: Mapping, canonical: str, alias: str, value_default):
    """Resolve a keyword argument that has two accepted spellings.

    The caller passes the keywords as received, e.g.
    ``{'model_architecture': model_architecture, **kwargs}``. A spelling counts as *given*
    when it is in ``kwargs`` and not ``None``; the canonical spelling equal to its default
    ``value_default`` counts as not given (Python cannot tell an explicit default apart).

    Parameters
    ----------
    kwargs : mapping
        The received keywords (not modified).
    canonical : str
        The spelling in the function's own signature, e.g. ``'model_architecture'``.
    alias : str
        The other spelling, e.g. ``'architecture_name'``.
    value_default
        The canonical keyword's default.

    Returns
    -------
    The alias's value if given, else the canonical value if present, else ``value_default``.

    Raises
    ------
    TypeError
        If both spellings are given with different values.

    Examples
    --------
    >>> merge_alias_kwargs({'resize_size': 224, 'resize_after_crop': 128}, 'resize_size', 'resize_after_crop', 224)
    128
    >>> merge_alias_kwargs({'resize_size': 300}, 'resize_size', 'resize_after_crop', 224)
    300
    """
    alias_value = kwargs.get(alias)
    canonical_value = kwargs.get(canonical, value_default)
    if canonical_value is None:
        canonical_value = value_default
    canonical_given = canonical in kwargs and kwargs[canonical] is not None and not _same(canonical_value, value_default)
    if alias_value is None:
        return canonical_value
    if canonical_given and not _same(canonical_value, alias_value):
        raise TypeError(
            f"Got both {canonical}={canonical_value!r} and its other spelling {alias}={alias_value!r}; "
            f"pass only one of them."
        )
    return alias_value


def _same(a, b) -> bool:
    try:
        return bool(a == b)
    except Exception:  # e.g. arrays
        return a is b


def prepare_catalogs(
    label_cols: Sequence[str],
    catalog: pd.DataFrame | None = None,
    train_catalog: pd.DataFrame | None = None,
    val_catalog: pd.DataFrame | None = None,
    test_catalog: pd.DataFrame | None = None,
    random_state: int = 42,
    check_valid_paths: bool = True,
    *,
    label_kind: str | None = "counts",
    label_description: str | None = None,
    fractions: tuple[float, float, float] = (0.7, 0.1, 0.2),
    num_classes: int | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame | None]:
    """Validate the training catalogs and split a single catalog 70/10/20.

    Parameters
    ----------
    label_cols : list of str
        Label columns every catalog must have (e.g. ``schema.label_cols``).
    catalog : DataFrame, optional
        One catalog, split by :func:`~zoobot.shared.catalogs.split_catalog` with ``seed=random_state``.
    train_catalog, val_catalog : DataFrame, optional
        Explicit splits (both required if ``catalog`` is not given).
    test_catalog : DataFrame, optional
        Explicit test split (only with ``train_catalog``/``val_catalog``).
    random_state : int
        Seed of the split.
    check_valid_paths : bool
        Check every ``file_loc`` exists (E5).
    label_kind, label_description, num_classes : keyword-only
        Passed to :func:`~zoobot.shared.catalogs.validate_catalog`.
    fractions : (train, val, test), keyword-only
        Split fractions for a single ``catalog``.

    Returns
    -------
    (train, val, test) : DataFrames; ``test`` is None when only train/val catalogs were given.

    Raises
    ------
    ValueError
        Unless exactly one of ``catalog`` or (``train_catalog`` and ``val_catalog``) is given;
        plus everything :func:`validate_catalog` raises (E1-E5, E14).

    Warns
    -----
    UserWarning
        If explicit splits share galaxies (data leakage between train and val/test).

    Examples
    --------
    >>> train, val, test = prepare_catalogs(schema.label_cols, catalog=catalog)  # doctest: +SKIP
    """
    explicit = {"train_catalog": train_catalog, "val_catalog": val_catalog, "test_catalog": test_catalog}
    given = [k for k, v in explicit.items() if v is not None]
    if catalog is not None and given:
        raise ValueError(
            f"Pass either catalog (split 70/10/20 automatically) or train_catalog and val_catalog "
            f"(and optionally test_catalog), not both: got catalog and {', '.join(given)}."
        )
    if catalog is None and (train_catalog is None or val_catalog is None):
        raise ValueError(
            "Pass either catalog (split 70/10/20 automatically) or both train_catalog and val_catalog "
            f"(and optionally test_catalog); got {', '.join(given) if given else 'none of them'}."
        )
    options = dict(
        label_cols=label_cols,
        label_kind=label_kind,
        check_valid_paths=check_valid_paths,
        label_description=label_description,
        num_classes=num_classes,
    )
    if catalog is not None:
        catalog = validate_catalog(catalog, name="catalog", **options)
        train, val, test = split_catalog(catalog, *fractions, seed=random_state)
        return train, val, test

    train = validate_catalog(train_catalog, name="train_catalog", **options)
    val = validate_catalog(val_catalog, name="val_catalog", **options)
    test = None if test_catalog is None else validate_catalog(test_catalog, name="test_catalog", **options)
    _warn_overlap({"train_catalog": train, "val_catalog": val, "test_catalog": test})
    return train, val, test


def _warn_overlap(catalogs: Mapping[str, pd.DataFrame | None]) -> None:
    names = [n for n, c in catalogs.items() if c is not None]
    ids = {n: set(catalogs[n]["id_str"]) for n in names}
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            shared = ids[a] & ids[b]
            if shared:
                warnings.warn(
                    f"{a} and {b} share {len(shared)} galaxies (e.g. id_str {sorted(shared)[:5]}): the "
                    f"{b.split('_')[0]} metrics will be optimistic. Remove the overlap unless it is intended.",
                    UserWarning,
                    stacklevel=3,
                )


def resolve_device_count(requested: int, available: int, backend: str) -> int:
    """How many GPUs to use: at most ``requested``, at most ``available``.

    Parameters
    ----------
    requested : int
        The user's ``gpus`` (maximum to use; 0 = CPU; -1 = all available).
    available : int
        GPUs the backend sees.
    backend : str
        ``'pytorch'`` or ``'tensorflow'``, named in the warning.

    Returns
    -------
    int

    Raises
    ------
    ValueError
        If ``requested`` is not an integer >= -1.

    Warns
    -----
    UserWarning
        When fewer GPUs are available than requested.

    Examples
    --------
    >>> resolve_device_count(0, 4, 'pytorch')
    0
    >>> resolve_device_count(-1, 4, 'pytorch')
    4
    """
    if isinstance(requested, bool) or not isinstance(requested, (int, np.integer)) or requested < -1:
        raise ValueError(f"gpus must be an integer >= 0 (or -1 for all available), got {requested!r}.")
    available = max(int(available), 0)
    if requested == -1:
        return available
    if requested > available:
        where = "on the CPU" if available == 0 else f"on {available} GPU(s)"
        warnings.warn(
            f"gpus={requested} requested but {backend} sees {available} GPU(s): training {where}. "
            f"Pass gpus={available} to silence this warning.",
            UserWarning,
            stacklevel=2,
        )
        return available
    return int(requested)


def to_jsonable(value):
    """Convert a config value to JSON types (tuples -> lists, numpy -> Python, paths -> str,
    objects with ``to_dict()`` such as a Schema -> dicts, anything else -> its ``repr``).

    Examples
    --------
    >>> to_jsonable({'bounds': (0.7, 0.8), 'n': np.int64(3)})
    {'bounds': [0.7, 0.8], 'n': 3}
    """
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        value = float(value)
        return value if math.isfinite(value) else repr(value)
    if isinstance(value, np.bool_):
        return bool(value)
    if isinstance(value, Mapping):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        items = sorted(value, key=repr) if isinstance(value, (set, frozenset)) else value
        return [to_jsonable(v) for v in items]
    if isinstance(value, np.ndarray):
        return to_jsonable(value.tolist())
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if isinstance(value, pd.DataFrame):
        return f"<DataFrame with {len(value)} rows>"
    if hasattr(value, "to_dict") and callable(value.to_dict):
        return to_jsonable(value.to_dict())
    return repr(value)


def write_run_config(save_dir, config: Mapping, backend: str) -> pathlib.Path:
    """Write ``save_dir/config.json``: the run's arguments plus ``zoobot_version``,
    ``format_version`` and ``backend``.

    Parameters
    ----------
    save_dir : str or path-like
        Created if missing.
    config : mapping
        The arguments (converted with :func:`to_jsonable`; pass ``schema`` as the Schema or its dict).
    backend : str
        ``'pytorch'`` or ``'tensorflow'``.

    Returns
    -------
    pathlib.Path
        The file written (atomically: a crash never leaves half a file).
    """
    save_dir = pathlib.Path(save_dir)
    save_dir.mkdir(parents=True, exist_ok=True)
    record = to_jsonable(dict(config))
    record.update(version_metadata())
    record["backend"] = backend
    path = save_dir / CONFIG_FILENAME
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(record, indent=2, sort_keys=False))
    os.replace(tmp, path)
    return path


def read_run_config(save_dir) -> dict | None:
    """The ``config.json`` of ``save_dir``, or None if there is none."""
    path = pathlib.Path(save_dir) / CONFIG_FILENAME
    if not path.is_file():
        return None
    return json.loads(path.read_text())


def check_resume_config(save_dir, config: Mapping, *, ignore: Sequence[str] = ()) -> None:
    """Refuse to resume a run whose recorded arguments differ from ``config``.

    Compares ``config`` (after :func:`to_jsonable`) with ``save_dir/config.json``, if that exists.
    Keys in ``ignore`` (e.g. ``epochs``, ``num_workers``) and the version/backend keys are not compared.

    Parameters
    ----------
    save_dir : str or path-like
    config : mapping
        This run's arguments, as passed to :func:`write_run_config`.
    ignore : sequence of str, keyword-only
        Arguments that may change between a run and its resumption.

    Raises
    ------
    ValueError
        Naming every differing argument with both values, and the fix (``overwrite=True`` or a new
        ``save_dir``).
    """
    saved = read_run_config(save_dir)
    if saved is None:
        return
    now = to_jsonable(dict(config))
    skip = set(ignore) | set(_RECORD_KEYS)
    differences = []
    for key in list(saved) + [k for k in now if k not in saved]:
        if key in skip:
            continue
        old, new = saved.get(key, "<not set>"), now.get(key, "<not set>")
        if old != new:
            differences.append(f"{key}: {_short(old)} (saved) vs {_short(new)} (now)")
    if differences:
        raise ValueError(
            f"{pathlib.Path(save_dir) / CONFIG_FILENAME} records a run with different arguments, so it cannot be "
            f"resumed: {'; '.join(differences)}. Pass overwrite=True (command line: --overwrite) to replace that run "
            "and start afresh, or use a new save_dir."
        )


def _short(value, limit: int = 80) -> str:
    text = json.dumps(value) if not isinstance(value, str) else repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def write_split_catalogs(save_dir, train: pd.DataFrame, val: pd.DataFrame, test: pd.DataFrame | None) -> dict:
    """Write ``save_dir/{train,val,test}_catalog.parquet`` (test skipped when None).

    Returns
    -------
    dict
        ``{'train': path, 'val': path, 'test': path or None}``.
    """
    save_dir = pathlib.Path(save_dir)
    save_dir.mkdir(parents=True, exist_ok=True)
    paths = {}
    for split, frame in (("train", train), ("val", val), ("test", test)):
        if frame is None:
            paths[split] = None
            continue
        path = save_dir / f"{split}_catalog.parquet"
        tmp = path.with_name(path.name + ".tmp")
        frame.to_parquet(tmp, index=False)
        os.replace(tmp, path)
        paths[split] = path
    return paths
