"""Framework-neutral set-up of training and finetuning runs, shared by both backends.

1. :class:`TrainConfig` holds and checks every argument of ``train()`` (aliases resolved by
   :meth:`TrainConfig.from_arguments`, e.g. ``model_architecture``/``architecture_name``);
   :meth:`TrainConfig.with_split_catalogs` validates and splits the catalogs (E1-E5, 70/10/20);
2. :func:`resolve_device_count` caps the requested GPUs at what is available;
3. :func:`check_resume_config` refuses to resume a run started with other arguments (the fields marked
   resumable aside), then :func:`write_run_config` writes ``save_dir/config.json``
   (:meth:`TrainConfig.to_record`) and :func:`write_split_catalogs` the split catalogs;
4. :class:`FinetuneConfig` holds and checks the arguments both finetuning constructors share.

See docs/reliability.md for the errors.
"""
from __future__ import annotations

import dataclasses
import hashlib
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
from zoobot.shared.run_dir import check_save_dir
from zoobot.shared.schedules import normalise_scheduler_params, train_scheduler_params
from zoobot.shared.validation import check_bool, check_choice, check_fraction, check_int, check_number

__all__ = [
    "TrainConfig",
    "FinetuneConfig",
    "TRAINING_MODES",
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

    Notes
    -----
    Over 80 lines only because of this docstring; the body is about 30 lines.

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
    TypeError, ValueError
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
    requested = check_int("gpus", requested, minimum=-1)  # -1: all available
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
    config : TrainConfig or mapping
        The arguments (:meth:`TrainConfig.to_record`, or a mapping converted with :func:`to_jsonable`).
    backend : str
        ``'pytorch'`` or ``'tensorflow'``.

    Returns
    -------
    pathlib.Path
        The file written (atomically: a crash never leaves half a file).
    """
    save_dir = pathlib.Path(save_dir)
    save_dir.mkdir(parents=True, exist_ok=True)
    record = config.to_record() if isinstance(config, TrainConfig) else to_jsonable(dict(config))
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
    Keys in ``ignore`` (e.g. ``epochs``, ``num_workers``) and the version/backend keys are not compared;
    for a :class:`TrainConfig`, neither are its :meth:`~TrainConfig.resumable_fields`.

    Parameters
    ----------
    save_dir : str or path-like
    config : TrainConfig or mapping
        This run's arguments, as passed to :func:`write_run_config`.
    ignore : sequence of str, keyword-only
        More arguments that may change between a run and its resumption.

    Raises
    ------
    ValueError
        Naming every differing argument with both values, and the fix (``overwrite=True`` or a new
        ``save_dir``).
    """
    saved = read_run_config(save_dir)
    if saved is None:
        return
    if isinstance(config, TrainConfig):
        ignore = [*ignore, *config.resumable_fields()]
        now = config.to_record()
    else:
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


# ---------------------------------------------------------------------------------------------
# TrainConfig: every argument of train() / train_default_zoobot_from_scratch(), checked once
# ---------------------------------------------------------------------------------------------

BACKENDS = ("pytorch", "tensorflow")
#: ``train()``'s two entry points and their spellings: (field, canonical, alias, canonical default) per pair.
_ENTRY_POINT_SPELLINGS = {
    "train": (("architecture_name", "model_architecture", "architecture_name", "efficientnet"),
              ("resize_after_crop", "resize_size", "resize_after_crop", 224)),
    "train_default_zoobot_from_scratch": (
        ("architecture_name", "architecture_name", "model_architecture", "efficientnet_b0"),
        ("resize_after_crop", "resize_after_crop", "resize_size", 224)),
}
_CALLBACK_KIND = {"pytorch": "Lightning", "tensorflow": "Keras"}


def _arg(default=None, *, resumable: bool = False, backend: str | None = None, record: bool = True,
         compare: bool = True, doc: str = ""):
    """A TrainConfig field. ``resumable``: may differ between a run and its resumption; ``backend``: the only
    backend whose ``train()`` has it (None: both); ``record``: written to ``config.json``."""
    metadata = {"resumable": resumable, "backend": backend, "record": record, "doc": doc}
    return dataclasses.field(default=default, compare=compare, metadata=metadata)


@dataclasses.dataclass(frozen=True, kw_only=True)
class TrainConfig:
    """Every argument of a training run, validated once for both backends (see docs/reliability.md).

    Both backends' ``train`` and ``train_default_zoobot_from_scratch`` build one with
    :meth:`from_arguments` and pass it to their private ``_train(config)``. Field names are the
    canonical spellings recorded in ``config.json`` (``architecture_name``, ``resize_after_crop``); the
    defaults are those of ``train()``. Field metadata says which fields may change when a run is resumed
    (``resumable``), which exist in one backend only (``backend``) and which are not recorded (``record``).

    Raises
    ------
    TypeError, ValueError
        In ``__post_init__``, for any bad value, with the wording of :mod:`zoobot.shared.validation`.

    Examples
    --------
    >>> from zoobot.shared import schemas
    >>> config = TrainConfig(backend='pytorch', save_dir='run', schema=schemas.gz2_ortho_schema,
    ...                      architecture_name='efficientnet', batch_size=8)
    >>> config.architecture_name, config.batch_size, 'epochs' in TrainConfig.resumable_fields()
    ('efficientnet_b0', 8, True)
    """

    backend: str = _arg("pytorch", record=False, doc="'pytorch' or 'tensorflow' (written by write_run_config)")
    entry_point: str = _arg("train", resumable=True, doc="the public function called")
    save_dir: object = _arg(None, resumable=True, doc="output folder (a moved folder may be resumed)")
    schema: object = _arg(None, compare=False)
    catalog: object = _arg(None, record=False, compare=False, doc="split 70/10/20 by with_split_catalogs()")
    train_catalog: object = _arg(None, compare=False)
    val_catalog: object = _arg(None, compare=False)
    test_catalog: object = _arg(None, compare=False)
    architecture_name: str = _arg("efficientnet")
    batch_size: int = _arg(256)
    epochs: int = _arg(1000, resumable=True)
    patience: int = _arg(8, resumable=True)
    color: bool = _arg(False)
    resize_after_crop: int = _arg(224)
    crop_scale_bounds: tuple = _arg((0.7, 0.8))
    crop_ratio_bounds: tuple = _arg((0.9, 1.1))
    nodes: int = _arg(1, resumable=True)
    gpus: int = _arg(2, resumable=True)
    num_workers: int = _arg(4, resumable=True)
    prefetch_factor: int = _arg(4, resumable=True)
    mixed_precision: bool = _arg(False, resumable=True)
    random_state: int = _arg(42)
    wandb_logger: object = _arg(None, resumable=True, compare=False)
    dropout_rate: float = _arg(0.2)
    learning_rate: float = _arg(1e-3)
    betas: tuple = _arg((0.9, 0.999))
    weight_decay: float = _arg(0.01)
    scheduler_params: object = _arg(None, doc="None: the training recipe's schedule, resolved per run")
    timm_kwargs: object = _arg(None)
    sync_batchnorm: bool = _arg(False, resumable=True)
    compile_encoder: bool = _arg(False, resumable=True)
    save_top_k: int = _arg(3, resumable=True)
    checkpoint_file_template: object = _arg(None)
    auto_insert_metric_name: bool = _arg(True)
    extra_callbacks: object = _arg(None, resumable=True, compare=False)
    check_valid_paths: bool = _arg(True, resumable=True)
    resume: bool = _arg(True, resumable=True)
    overwrite: bool = _arg(False, resumable=True)
    # TensorFlow only: TFRecord shards instead of catalogs, and Keras switches
    train_records: object = _arg(None, backend="tensorflow", doc="TFRecord shards (instead of catalogs)")
    val_records: object = _arg(None, backend="tensorflow")
    test_records: object = _arg(None, backend="tensorflow")
    requested_img_size: object = _arg(None, backend="tensorflow", doc="shard image size (with records)")
    always_augment: bool = _arg(False, backend="tensorflow")
    eager: bool = _arg(False, resumable=True, backend="tensorflow", doc="run Keras eagerly (debugging)")

    def __post_init__(self):
        check_choice("backend", self.backend, BACKENDS)
        check_choice("entry_point", self.entry_point, list(_ENTRY_POINT_SPELLINGS))
        check_save_dir(self.save_dir)  # None or '' (which would write into the working directory)
        self._check_schema()
        for name, minimum in (("batch_size", 1), ("epochs", 1), ("patience", 0), ("nodes", 1), ("num_workers", 0),
                              ("prefetch_factor", 1), ("save_top_k", -1), ("gpus", -1)):
            self._set(name, check_int(name, getattr(self, name), minimum=minimum))
        self._set("resize_after_crop", check_int("resize_after_crop (resize_size)", self.resize_after_crop, minimum=8))
        self._set("requested_img_size", check_int("requested_img_size", self.requested_img_size, minimum=8,
                                                  allow_none=True))
        for name in ("crop_scale_bounds", "crop_ratio_bounds"):
            self._set(name, _positive_pair(name, getattr(self, name)))
        self._set("dropout_rate", check_fraction("dropout_rate", self.dropout_rate, allow_one=False))
        self._set("learning_rate", check_number("learning_rate", self.learning_rate, minimum=0,
                                                exclusive_minimum=True))
        self._set("weight_decay", check_number("weight_decay", self.weight_decay, minimum=0))
        self._set("betas", tuple(check_fraction("betas", b, allow_one=False) for b in self.betas))
        if self.extra_callbacks is not None:
            if not isinstance(self.extra_callbacks, (list, tuple)):
                raise TypeError(f"extra_callbacks must be a list of {_CALLBACK_KIND[self.backend]} callbacks, "
                                f"got {type(self.extra_callbacks)}.")
            self._set("extra_callbacks", list(self.extra_callbacks))
        self._set("architecture_name", resolve_architecture_name(self.architecture_name))
        self._set("scheduler_params", train_scheduler_params(self.scheduler_params))

    def _set(self, name: str, value) -> None:
        object.__setattr__(self, name, value)  # frozen: only __post_init__ normalises

    def _check_schema(self) -> None:
        from zoobot.shared.schemas import Schema

        if not isinstance(self.schema, Schema):
            raise TypeError(
                f"schema must be a zoobot.shared.schemas.Schema, got {type(self.schema).__name__}. "
                "Use e.g. schemas.decals_dr5_ortho_schema, schemas.get_schema(name) or "
                "schemas.Schema(question_answer_pairs, dependencies)."
            )

    @classmethod
    def from_arguments(cls, entry_point: str, backend: str, **arguments) -> "TrainConfig":
        """Build the config from a public function's keywords, resolving the two spellings of
        ``model_architecture``/``architecture_name`` and ``resize_size``/``resize_after_crop``
        (:func:`merge_alias_kwargs`, with the entry point's own canonical spelling and default).

        Examples
        --------
        >>> from zoobot.shared import schemas
        >>> config = TrainConfig.from_arguments('train', 'pytorch', save_dir='run', schema=schemas.gz2_ortho_schema,
        ...                                     model_architecture='tiny_cnn', architecture_name=None,
        ...                                     resize_size=224, resize_after_crop=64)
        >>> config.architecture_name, config.resize_after_crop
        ('tiny_cnn', 64)
        """
        spellings = _ENTRY_POINT_SPELLINGS[check_choice("entry_point", entry_point, list(_ENTRY_POINT_SPELLINGS))]
        for field, canonical, alias, default in spellings:
            given = {canonical: arguments.pop(canonical, default), alias: arguments.pop(alias, None)}
            arguments[field] = merge_alias_kwargs(given, canonical, alias, default)
        return cls(entry_point=entry_point, backend=backend, **arguments)

    @classmethod
    def resumable_fields(cls) -> frozenset:
        """Names of the fields that may change between a run and its resumption (not compared on resume)."""
        return frozenset(f.name for f in dataclasses.fields(cls) if f.metadata.get("resumable"))

    def with_split_catalogs(self) -> "TrainConfig":
        """This config with ``catalog`` validated and split 70/10/20 (or the explicit splits validated), by
        :func:`prepare_catalogs`; a config with TFRecord shards instead of catalogs is returned unchanged."""
        if any(getattr(self, f"{split}_records") is not None for split in ("train", "val", "test")):
            return self
        train, val, test = prepare_catalogs(
            self.schema.label_cols,
            catalog=self.catalog,
            train_catalog=self.train_catalog,
            val_catalog=self.val_catalog,
            test_catalog=self.test_catalog,
            random_state=self.random_state,
            check_valid_paths=self.check_valid_paths,
            label_kind="counts",
            label_description=f"a vote-count column of schema {self.schema.name or 'given'}",
        )
        return dataclasses.replace(self, catalog=None, train_catalog=train, val_catalog=val, test_catalog=test)

    def to_record(self) -> dict:
        """What ``config.json`` records (JSON types): every recorded field of this backend, catalogs
        summarised by row count and a SHA-1 of their ``id_str``, callbacks and loggers by class name.

        Examples
        --------
        >>> from zoobot.shared import schemas
        >>> record = TrainConfig(save_dir='run', schema=schemas.gz2_ortho_schema).to_record()
        >>> record['architecture_name'], record['crop_scale_bounds'], 'eager' in record
        ('efficientnet_b0', [0.7, 0.8], False)
        """
        record = {}
        for f in dataclasses.fields(self):
            if not f.metadata.get("record", True) or f.metadata.get("backend") not in (None, self.backend):
                continue
            value = getattr(self, f.name)
            if f.name.endswith("_catalog"):
                value = None if value is None else {"rows": int(len(value)), "id_sha1": _ids_digest(value)}
            elif f.name == "extra_callbacks":
                value = None if value is None else [type(c).__name__ for c in value]
            elif f.name == "wandb_logger":
                value = None if value is None else type(value).__name__
            record[f.name] = value
        return to_jsonable(record)


def _positive_pair(name: str, value) -> tuple[float, float]:
    try:
        low, high = (float(v) for v in value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a pair (low, high) of numbers, got {value!r}") from None
    if not (0 < low <= high) or not math.isfinite(high):
        raise ValueError(f"{name} must satisfy 0 < low <= high, got {value!r}")
    return low, high


def _ids_digest(catalog: pd.DataFrame) -> str:
    digest = hashlib.sha1()
    for id_str in catalog["id_str"].astype(str):
        digest.update(id_str.encode() + b"\0")
    return digest.hexdigest()


# ---------------------------------------------------------------------------------------------
# FinetuneConfig: the arguments shared by both backends' finetuning constructors
# ---------------------------------------------------------------------------------------------

#: ``training_mode`` (upstream spelling) -> ``n_blocks``.
TRAINING_MODES = {"head_only": 0, "full": -1}


@dataclasses.dataclass(frozen=True, kw_only=True)
class FinetuneConfig:
    """The arguments of ``FinetuneableZoobotAbstract.__init__`` that both backends share, validated once.

    Build it with :meth:`from_arguments`, which resolves the upstream spellings (``n_layers``,
    ``training_mode``, ``layer_decay``, ``checkpoint_loc``). ``n_blocks`` is the resolved request (``-1`` =
    all); the backend caps it at the encoder's block count. See docs/guides/finetuning.md.

    Examples
    --------
    >>> config = FinetuneConfig.from_arguments(name='tiny_cnn', training_mode='full', layer_decay=0.5)
    >>> config.n_blocks, config.lr_decay, config.cosine_params is None
    (-1, 0.5, True)
    """

    name: str | None = None
    encoder: object = dataclasses.field(default=None, compare=False, repr=False)
    zoobot_checkpoint_loc: object = None
    n_blocks: int = 0
    lr_decay: float = 0.75
    weight_decay: float = 0.05
    learning_rate: float = 1e-4
    dropout_prob: float = 0.5
    always_train_batchnorm: bool = False
    cosine_schedule: bool = False
    warmup_epochs: int = 0
    max_cosine_epochs: int = 100
    max_learning_rate_reduction_factor: float = 0.01
    from_scratch: bool = False
    prog_bar: bool = True
    visualize_images: bool = False
    seed: int = 42
    cache_features: bool | None = None
    encoder_dim: int | None = None

    def __post_init__(self):
        set_ = lambda name, value: object.__setattr__(self, name, value)  # noqa: E731 (frozen)
        set_("n_blocks", check_int("n_blocks", self.n_blocks, minimum=-1))
        set_("learning_rate", check_number("learning_rate", self.learning_rate, minimum=0))
        set_("weight_decay", check_number("weight_decay", self.weight_decay, minimum=0))
        set_("lr_decay", check_number("lr_decay", self.lr_decay, minimum=0, exclusive_minimum=True, maximum=1))
        set_("dropout_prob", check_fraction("dropout_prob", self.dropout_prob, allow_one=False))
        if self.cache_features is not None:
            check_bool("cache_features", self.cache_features)
        set_("seed", check_int("seed", self.seed))
        set_("encoder_dim", check_int("encoder_dim", self.encoder_dim, minimum=1, allow_none=True))
        for name in ("always_train_batchnorm", "cosine_schedule", "from_scratch", "prog_bar", "visualize_images"):
            set_(name, bool(getattr(self, name)))
        if self.zoobot_checkpoint_loc is not None:
            set_("zoobot_checkpoint_loc", os.fspath(self.zoobot_checkpoint_loc))
        self.cosine_params  # noqa: B018 - checks the schedule's settings now, not at the first epoch

    @classmethod
    def from_arguments(cls, *, n_layers=0, training_mode=None, layer_decay=None, checkpoint_loc=None,
                       stacklevel: int = 3, **arguments) -> "FinetuneConfig":
        """Resolve the upstream spellings, then validate.

        ``n_layers`` (deprecated, ``DeprecationWarning`` at ``stacklevel`` above the caller) and
        ``training_mode`` (``'head_only'``/``'full'``) become ``n_blocks``; ``layer_decay`` becomes
        ``lr_decay``; ``checkpoint_loc`` becomes ``zoobot_checkpoint_loc``. Both spellings with different
        values raise ``TypeError``; an unknown ``training_mode`` raises E13.
        """
        n_blocks = arguments.get("n_blocks", 0)
        if n_layers not in (0, None):
            warnings.warn("n_layers is deprecated: use n_blocks (the number of encoder blocks to finetune).",
                          DeprecationWarning, stacklevel=stacklevel)
            if n_blocks not in (0, n_layers):
                raise TypeError(f"Got both n_blocks={n_blocks!r} and its old spelling n_layers={n_layers!r}; "
                                "pass only n_blocks.")
            n_blocks = n_layers
        if training_mode is not None:
            check_choice("training_mode", training_mode, list(TRAINING_MODES))
            if n_blocks not in (0, TRAINING_MODES[training_mode]):
                raise TypeError(f"Got n_blocks={n_blocks!r} and training_mode={training_mode!r}; pass only one.")
            n_blocks = TRAINING_MODES[training_mode]
        arguments["n_blocks"] = n_blocks
        if layer_decay is not None:
            lr_decay = arguments.get("lr_decay", 0.75)
            if lr_decay != 0.75 and lr_decay != layer_decay:
                raise TypeError(f"Got both lr_decay={lr_decay!r} and its other spelling layer_decay={layer_decay!r}; "
                                "pass only one of them.")
            arguments["lr_decay"] = layer_decay
        if checkpoint_loc is not None:
            given = arguments.get("zoobot_checkpoint_loc")
            if given is not None and str(given) != str(checkpoint_loc):
                raise TypeError("Got both zoobot_checkpoint_loc and its other spelling checkpoint_loc; pass only one.")
            arguments["zoobot_checkpoint_loc"] = checkpoint_loc
        return cls(**arguments)

    @property
    def cosine_params(self) -> dict | None:
        """The cosine schedule's canonical dict (:func:`~zoobot.shared.schedules.normalise_scheduler_params`),
        or None without ``cosine_schedule``."""
        if not self.cosine_schedule:
            return None
        return normalise_scheduler_params({
            "name": "cosine", "warmup_epochs": self.warmup_epochs, "max_epochs": self.max_cosine_epochs,
            "min_lr_factor": self.max_learning_rate_reduction_factor})

    def encoder_source(self) -> str:
        """Which encoder source was given: ``'name'``, ``'encoder'`` or ``'zoobot_checkpoint_loc'``.

        Raises
        ------
        ValueError
            Unless exactly one was given.
        """
        given = [what for what in ("name", "encoder", "zoobot_checkpoint_loc") if getattr(self, what) is not None]
        if len(given) != 1:
            raise ValueError(
                "Give exactly one encoder source: name= (a pretrained encoder, e.g. "
                "'hf_hub:mwalmsley/zoobot-encoder-convnext_nano', or an architecture such as 'tiny_cnn'), "
                "encoder= (a model) or zoobot_checkpoint_loc= (a ZoobotTree checkpoint); got "
                f"{', '.join(given) if given else 'none'}."
            )
        return given[0]

    def check_encoder_dim(self, known: int | None) -> int | None:
        """``encoder_dim`` checked against the dimension the encoder reports (``known``; None if it reports
        none); returns ``encoder_dim`` (None when not given: the backend measures it)."""
        if self.encoder_dim is not None and known is not None and int(known) != self.encoder_dim:
            raise ValueError(f"encoder_dim={self.encoder_dim} but the encoder reports {int(known)} features.")
        return self.encoder_dim

    def check_cache_features(self, encoder_is_frozen: bool) -> None:
        """``cache_features=True`` needs a frozen encoder."""
        if self.cache_features is True and not encoder_is_frozen:
            raise ValueError(
                "cache_features=True needs a frozen encoder (n_blocks=0, from_scratch=False, "
                f"always_train_batchnorm=False); got n_blocks={self.n_blocks}, from_scratch={self.from_scratch}, "
                f"always_train_batchnorm={self.always_train_batchnorm}."
            )

    #: Model attributes set from the config by :meth:`apply_to`.
    MODEL_ATTRIBUTES = ("learning_rate", "lr_decay", "weight_decay", "dropout_prob", "always_train_batchnorm",
                        "from_scratch", "prog_bar", "visualize_images", "seed", "cache_features", "cosine_params")

    def apply_to(self, model) -> None:
        """Set :data:`MODEL_ATTRIBUTES` on ``model`` (the finetuning model reads them as attributes)."""
        for name in self.MODEL_ATTRIBUTES:
            setattr(model, name, getattr(self, name))

    def hparams(self, *, source: str, architecture, channels: int, input_size: int, encoder_dim: int,
                **extra) -> dict:
        """The hyperparameters saved with a finetuned model (JSON types): the encoder's description, then
        ``extra`` (e.g. ``encoder_kwargs``), then every constructor argument under its canonical name."""
        return to_jsonable({
            "name": self.name,
            "zoobot_checkpoint_loc": self.zoobot_checkpoint_loc,
            "encoder_source": source,
            "architecture": architecture,
            "channels": channels,
            "input_size": input_size,
            "encoder_dim": encoder_dim,
            **extra,
            **{f.name: getattr(self, f.name) for f in dataclasses.fields(self)
               if f.name not in ("name", "encoder", "zoobot_checkpoint_loc", "encoder_dim")},
        })
