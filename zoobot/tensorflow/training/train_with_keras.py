"""Train a Zoobot model from scratch with Keras (api.md 3.6), the twin of ``train_with_pytorch_lightning``.

Two public names share one implementation (:func:`_train`); each keeps its own defaults:

- :func:`train` has the argument list of the user documentation (the "seed"), identical to the PyTorch
  ``train`` (``model_architecture='efficientnet'``, ``resize_size=224``, ``batch_size=256``), plus the
  TensorFlow-only ``train_records``/``val_records``/``test_records`` (train from TFRecord shards) and the
  upstream v1 keywords ``requested_img_size``, ``always_augment``, ``eager``;
- :func:`train_default_zoobot_from_scratch` has the upstream Zoobot v2 argument list
  (``architecture_name='efficientnet_b0'``, ``resize_after_crop=224``, ``batch_size=128``).

What a run does, in order (the same as PyTorch):

1. check the arguments and catalogs (E1-E5) before any model work; split one catalog 70/10/20;
2. claim ``save_dir`` (:func:`zoobot.shared.run_dir.claim_save_dir`: resume, ``overwrite=True`` or refuse);
   ``config.json`` and the split catalogs are written when training starts;
3. build the ``tf.data`` pipelines (:class:`~zoobot.tensorflow.datasets.GalaxyDataModule`, or TFRecord
   shards augmented with the same transforms) and a
   :class:`~zoobot.tensorflow.estimators.define_model.ZoobotTree` - inside a ``MirroredStrategy`` scope
   when more than one GPU is used; check the first batch (E7, E8, E10);
4. fit: checkpoints in ``save_dir/checkpoints`` (the best ``save_top_k`` by ``validation/supervised_loss``
   as ``epoch={epoch}.keras``, plus ``last.keras``), early stopping, gradient clipping at 0.3 (global
   norm), metrics in ``save_dir/logs/metrics.csv`` with the PyTorch metric names, ``BackupAndRestore`` in
   ``save_dir/backup`` (``resume=True`` continues an interrupted or finished run from it); a non-finite
   loss stops training with a ``FloatingPointError`` naming the epoch and step;
5. restore the best weights, fit the per-question concentration scale to the validation votes
   (``zoobot.shared.calibration``; saved in the best and last ``.keras`` files and
   ``save_dir/calibration.json``), evaluate them on the test split, and return ``(model, trainer)``.
"""
from __future__ import annotations

import contextlib
import csv
import hashlib
import json
import math
import os
import pathlib
import re
import shutil
import warnings

import keras
import numpy as np
import tensorflow as tf

from zoobot.tensorflow.training.console import fit_verbosity
from zoobot.shared import schemas as schemas_module
from zoobot.shared import interrupts
from zoobot.shared.run_dir import check_save_dir, claim_save_dir
from zoobot.shared.schedules import (
    DEFAULT_TRAIN_CONCENTRATION_FLOOR,
    resolve_train_schedule,
    train_scheduler_params,
)
from zoobot.shared.training_config import (
    merge_alias_kwargs,
    prepare_catalogs,
    resolve_architecture_name,
    resolve_device_count,
    write_run_config,
    write_split_catalogs,
)

__all__ = ["train", "train_default_zoobot_from_scratch", "TrainingRun", "CheckpointRecord", "MetricsCSV",
           "RandomStateBackup", "AtomicBackupAndRestore", "rename_metrics"]

#: Metric that picks the best checkpoint and drives early stopping (Keras logs it as ``val_loss``).
MONITOR = "validation/supervised_loss"
_KERAS_MONITOR = "val_loss"
#: Arguments that may change between a run and its resumption (not compared on resume), as in PyTorch.
_RESUMABLE_CHANGES = (
    "epochs",
    "patience",
    "gpus",
    "nodes",
    "num_workers",
    "prefetch_factor",
    "mixed_precision",
    "check_valid_paths",
    "resume",
    "overwrite",
    "save_top_k",
    "extra_callbacks",
    "wandb_logger",
    "sync_batchnorm",
    "compile_encoder",
    "entry_point",
    "eager",
)


def train(
    save_dir,
    schema,
    catalog=None,
    train_catalog=None,
    val_catalog=None,
    test_catalog=None,
    model_architecture="efficientnet",
    batch_size=256,
    epochs=1000,
    patience=8,
    color=False,
    resize_size=224,
    crop_scale_bounds=(0.7, 0.8),
    crop_ratio_bounds=(0.9, 1.1),
    nodes=1,
    gpus=2,
    num_workers=4,
    prefetch_factor=4,
    mixed_precision=False,
    random_state=42,
    wandb_logger=None,
    *,
    dropout_rate=0.2,
    learning_rate=1e-3,
    betas=(0.9, 0.999),
    weight_decay=0.01,
    scheduler_params=None,
    timm_kwargs=None,
    sync_batchnorm=False,
    compile_encoder=False,
    save_top_k=3,
    checkpoint_file_template=None,
    extra_callbacks=None,
    check_valid_paths=True,
    resume=True,
    overwrite=False,
    architecture_name=None,
    resize_after_crop=None,
    train_records=None,
    val_records=None,
    test_records=None,
    requested_img_size=None,
    always_augment=False,
    eager=False,
):
    """Train a :class:`~zoobot.tensorflow.estimators.define_model.ZoobotTree` from scratch with Keras.

    The arguments, defaults and behaviour are those of
    ``zoobot.pytorch.training.train_with_pytorch_lightning.train``; see there for the full description.
    Differences that follow from the framework are listed here.

    Parameters
    ----------
    save_dir : str or path-like
        Output folder: ``checkpoints/`` (``epoch=N.keras`` best checkpoints and ``last.keras``),
        ``logs/metrics.csv``, ``config.json``, the split catalogs, and ``backup/`` (Keras
        ``BackupAndRestore``, used to resume).
    schema : zoobot.shared.schemas.Schema
        Decision tree; every catalog needs one vote-count column per ``schema.label_cols``.
    catalog, train_catalog, val_catalog, test_catalog : DataFrame, optional
        One catalog (split 70/10/20 with ``random_state``) or explicit splits.
    model_architecture : str
        A Keras encoder of ``define_model.ENCODER_NAMES`` (``'efficientnet'`` = ``efficientnet_b0``;
        ``'tiny_cnn'`` for tests). Also accepted as ``architecture_name``.
    batch_size : int
        Galaxies per batch per device (the global batch is ``batch_size`` x the number of GPUs).
    epochs, patience : int
        Maximum epochs; epochs without improvement of ``validation/supervised_loss`` before stopping.
    color : bool
        True: 3-channel RGB input; False: 1-channel greyscale (mean of R, G, B).
    resize_size : int
        Side of the model input after cropping. Also accepted as ``resize_after_crop``.
    crop_scale_bounds, crop_ratio_bounds : (float, float)
        Random resized crop augmentation (area fraction and aspect ratio ranges).
    nodes : int
        Machines. Only 1 is supported with Keras (``NotImplementedError`` otherwise).
    gpus : int
        Maximum GPUs to use; fewer available: those are used, with a warning (none: CPU). More than
        one: ``tf.distribute.MirroredStrategy`` (the model is built inside its scope).
    num_workers, prefetch_factor : int
        Parallel decode/augment calls of the ``tf.data`` pipeline, and batches prefetched.
    mixed_precision : bool
        The ``mixed_float16`` Keras policy on GPU (ignored with a warning on CPU). The previous global
        policy is restored afterwards.
    random_state : int
        Seeds Python, NumPy, TensorFlow, the augmentations and the catalog split.
    wandb_logger : wandb Run, optional
        Metrics are also sent with ``wandb_logger.log``; ``save_dir/logs/metrics.csv`` is always written.
    dropout_rate, learning_rate, betas, weight_decay, scheduler_params, timm_kwargs, compile_encoder
        Passed to ZoobotTree (keyword-only). ``timm_kwargs`` go to the Keras application constructor.
        ``scheduler_params=None`` (default) is the training recipe's schedule: a short warm-up, then cosine
        decay to 1 % of ``learning_rate`` at ``epochs``; ``{}`` is a constant rate. Models made here use a
        Dirichlet head floor of 0.1 (``model.concentration_floor``). See docs/guides/training_recipe.md.
        The Keras encoder trains like timm's: BatchNorm momentum 0.9, no stochastic depth.
    sync_batchnorm : bool
        Accepted for parity; Keras' MirroredStrategy keeps per-replica BatchNorm statistics (ignored).
    save_top_k : int
        Best checkpoints kept (``last.keras`` is kept as well); -1 keeps all.
    checkpoint_file_template : str, optional
        File name template of the best checkpoints (default ``'{epoch}'``, giving ``epoch=3.keras``
        as Lightning gives ``epoch=3.ckpt``). Keys: ``epoch`` and the logged metrics.
    extra_callbacks : list of keras.callbacks.Callback, optional
    check_valid_paths : bool
        Check every ``file_loc`` exists before training (E5).
    resume : bool
        If ``save_dir/backup`` holds a backup, continue that run from it (its ``config.json`` must
        record the same arguments, apart from e.g. ``epochs``/``patience``/``gpus``). A folder holding
        the checkpoints of another run is refused (``SaveDirInUseError``) unless ``overwrite=True``.
    overwrite : bool
        Delete the run already in ``save_dir`` and start afresh (as in PyTorch).
    train_records, val_records, test_records : list of str, optional, keyword-only
        [TF only] TFRecord shards (e.g. ``ShardConfig.train_tfrecord_locs()``) instead of catalogs;
        train and val are required together, and no catalog may be given. Shards hold
        ``schema.label_cols``.
    requested_img_size : int, optional, keyword-only
        [U1] With shards: resize the stored images to this size before augmentation. With catalogs
        images are decoded at their own size (the argument is then unused, with a warning).
    always_augment : bool, keyword-only
        [U1] Augment validation and test images too (test-time augmentation).
    eager : bool, keyword-only
        [U1] Run Keras eagerly (``run_eagerly=True``), for debugging.

    Returns
    -------
    (model, trainer)
        ``model``: the ZoobotTree with the weights of the best checkpoint (lowest
        ``validation/supervised_loss``), ``input_size`` set; ``trainer``: a :class:`TrainingRun`
        (``history``, ``checkpoint_callback.best_model_path``, ``callback_metrics``, ``test_metrics``).

    Raises
    ------
    CatalogError, FileNotFoundError
        E1-E5 for bad catalogs, before any model is built.
    ValueError
        Neither/both of ``catalog`` and ``train_catalog``+``val_catalog``; catalogs and records together;
        bad argument values; an unknown architecture (E13); resuming a run recorded with other arguments.
    NotImplementedError
        ``nodes > 1``.
    TypeError
        Both spellings of an aliased keyword given with different values.
    FloatingPointError
        The loss became NaN or infinite (the message names the epoch and step).

    Examples
    --------
    >>> from zoobot.shared import schemas
    >>> from zoobot.tensorflow.training import train_with_keras
    >>> model, trainer = train_with_keras.train(
    ...     save_dir='results/run', schema=schemas.decals_dr5_ortho_schema, catalog=catalog,
    ...     model_architecture='efficientnet', gpus=2)  # doctest: +SKIP
    """
    return _train(
        **_resolve_arguments(
            dict(
                entry_point="train",
                save_dir=save_dir,
                schema=schema,
                catalog=catalog,
                train_catalog=train_catalog,
                val_catalog=val_catalog,
                test_catalog=test_catalog,
                architecture_name=_merge_alias(
                    model_architecture, "model_architecture", "efficientnet", architecture_name, "architecture_name"
                ),
                batch_size=batch_size,
                epochs=epochs,
                patience=patience,
                color=color,
                resize_after_crop=_merge_alias(resize_size, "resize_size", 224, resize_after_crop, "resize_after_crop"),
                crop_scale_bounds=crop_scale_bounds,
                crop_ratio_bounds=crop_ratio_bounds,
                nodes=nodes,
                gpus=gpus,
                num_workers=num_workers,
                prefetch_factor=prefetch_factor,
                mixed_precision=mixed_precision,
                random_state=random_state,
                wandb_logger=wandb_logger,
                dropout_rate=dropout_rate,
                learning_rate=learning_rate,
                betas=betas,
                weight_decay=weight_decay,
                scheduler_params=scheduler_params,
                timm_kwargs=timm_kwargs,
                sync_batchnorm=sync_batchnorm,
                compile_encoder=compile_encoder,
                save_top_k=save_top_k,
                checkpoint_file_template=checkpoint_file_template,
                auto_insert_metric_name=True,
                extra_callbacks=extra_callbacks,
                check_valid_paths=check_valid_paths,
                resume=resume,
                overwrite=overwrite,
                train_records=train_records,
                val_records=val_records,
                test_records=test_records,
                requested_img_size=requested_img_size,
                always_augment=always_augment,
                eager=eager,
            )
        )
    )


def train_default_zoobot_from_scratch(
    save_dir,
    schema,
    catalog=None,
    train_catalog=None,
    val_catalog=None,
    test_catalog=None,
    train_urls=None,
    val_urls=None,
    test_urls=None,
    cache_dir=None,
    epochs=1000,
    patience=8,
    architecture_name="efficientnet_b0",
    timm_kwargs=None,
    batch_size=128,
    dropout_rate=0.2,
    learning_rate=1e-3,
    betas=(0.9, 0.999),
    weight_decay=0.01,
    scheduler_params=None,
    color=False,
    resize_after_crop=224,
    crop_scale_bounds=(0.7, 0.8),
    crop_ratio_bounds=(0.9, 1.1),
    nodes=1,
    gpus=2,
    sync_batchnorm=False,
    num_workers=4,
    prefetch_factor=4,
    mixed_precision=False,
    compile_encoder=False,
    wandb_logger=None,
    checkpoint_file_template=None,
    auto_insert_metric_name=True,
    save_top_k=3,
    extra_callbacks=None,
    random_state=42,
    *,
    check_valid_paths=True,
    resume=True,
    model_architecture=None,
    resize_size=None,
    train_records=None,
    val_records=None,
    test_records=None,
    requested_img_size=None,
    always_augment=False,
    eager=False,
):
    """Train a ZoobotTree from scratch, with the upstream Zoobot v2 argument list and defaults.

    The same implementation as :func:`train` (see there for every argument and the behaviour); only
    the names and defaults differ: ``architecture_name='efficientnet_b0'``, ``resize_after_crop=224``,
    ``batch_size=128``.

    Parameters
    ----------
    train_urls, val_urls, test_urls, cache_dir
        WebDataset shards (upstream). Not implemented: pass catalogs, or TFRecord shards as
        ``train_records``/``val_records``/``test_records``.
    auto_insert_metric_name : bool
        ``epoch=3.keras`` (True) or ``3.keras`` (False) for the template ``'{epoch}'``.
    model_architecture, resize_size : keyword-only
        The seed spellings of ``architecture_name`` and ``resize_after_crop``.

    Returns
    -------
    (model, trainer)
        As :func:`train`.

    Raises
    ------
    NotImplementedError
        If any ``*_urls`` is given, or ``nodes > 1``.
    ValueError, TypeError, CatalogError, FileNotFoundError, FloatingPointError
        As :func:`train`.

    Examples
    --------
    >>> model, trainer = train_default_zoobot_from_scratch(
    ...     'results/run', schema, catalog=catalog, architecture_name='efficientnet_b0')  # doctest: +SKIP
    """
    urls = {"train_urls": train_urls, "val_urls": val_urls, "test_urls": test_urls}
    given = [name for name, value in urls.items() if value is not None]
    if given:
        raise NotImplementedError(
            f"Training from WebDataset shards ({', '.join(given)}) is not implemented in this zoobot version. "
            "Pass catalogs instead (catalog=... or train_catalog=..., val_catalog=...), or TFRecord shards as "
            "train_records=..., val_records=... (see zoobot.tensorflow.data_utils.create_shards.ShardConfig)."
        )
    if cache_dir is not None:
        warnings.warn(
            f"cache_dir={cache_dir!r} is only used with WebDataset shards (*_urls), which this zoobot version "
            "does not support; it is ignored.",
            UserWarning,
            stacklevel=2,
        )
    return _train(
        **_resolve_arguments(
            dict(
                entry_point="train_default_zoobot_from_scratch",
                save_dir=save_dir,
                schema=schema,
                catalog=catalog,
                train_catalog=train_catalog,
                val_catalog=val_catalog,
                test_catalog=test_catalog,
                architecture_name=_merge_alias(
                    architecture_name, "architecture_name", "efficientnet_b0", model_architecture, "model_architecture"
                ),
                batch_size=batch_size,
                epochs=epochs,
                patience=patience,
                color=color,
                resize_after_crop=_merge_alias(resize_after_crop, "resize_after_crop", 224, resize_size, "resize_size"),
                crop_scale_bounds=crop_scale_bounds,
                crop_ratio_bounds=crop_ratio_bounds,
                nodes=nodes,
                gpus=gpus,
                num_workers=num_workers,
                prefetch_factor=prefetch_factor,
                mixed_precision=mixed_precision,
                random_state=random_state,
                wandb_logger=wandb_logger,
                dropout_rate=dropout_rate,
                learning_rate=learning_rate,
                betas=betas,
                weight_decay=weight_decay,
                scheduler_params=scheduler_params,
                timm_kwargs=timm_kwargs,
                sync_batchnorm=sync_batchnorm,
                compile_encoder=compile_encoder,
                save_top_k=save_top_k,
                checkpoint_file_template=checkpoint_file_template,
                auto_insert_metric_name=auto_insert_metric_name,
                extra_callbacks=extra_callbacks,
                check_valid_paths=check_valid_paths,
                resume=resume,
                train_records=train_records,
                val_records=val_records,
                test_records=test_records,
                requested_img_size=requested_img_size,
                always_augment=always_augment,
                eager=eager,
            )
        )
    )


# ---------------------------------------------------------------------------------------------
# 1. arguments: aliases, checks, catalogs (no framework work yet)
# ---------------------------------------------------------------------------------------------


def _merge_alias(canonical_value, canonical: str, default, alias_value, alias: str):
    return merge_alias_kwargs({canonical: canonical_value, alias: alias_value}, canonical, alias, default)


def _resolve_arguments(args: dict) -> dict:
    """Check every argument and prepare the catalogs; returns the keywords of :func:`_train`."""
    check_save_dir(args["save_dir"])  # None or '' (which would write into the working directory)
    if not isinstance(args["schema"], schemas_module.Schema):
        raise TypeError(
            f"schema must be a zoobot.shared.schemas.Schema, got {type(args['schema']).__name__}. "
            "Use e.g. schemas.decals_dr5_ortho_schema, schemas.get_schema(name) or "
            "schemas.Schema(question_answer_pairs, dependencies)."
        )
    for name, minimum in (("batch_size", 1), ("epochs", 1), ("patience", 0), ("nodes", 1), ("num_workers", 0),
                          ("prefetch_factor", 1), ("save_top_k", -1)):
        _check_int(name, args[name], minimum)
    _check_int("gpus", args["gpus"], -1)
    _check_int("resize_after_crop (resize_size)", args["resize_after_crop"], 8)
    if args["requested_img_size"] is not None:
        _check_int("requested_img_size", args["requested_img_size"], 8)
    if args["nodes"] > 1:
        raise NotImplementedError(
            f"nodes={args['nodes']}: multi-machine training is not implemented in the TensorFlow backend "
            "(it would need tf.distribute.MultiWorkerMirroredStrategy and a TF_CONFIG cluster). Use nodes=1 "
            "(all GPUs of one machine via gpus=...), or the PyTorch backend for multi-node training."
        )
    for name in ("crop_scale_bounds", "crop_ratio_bounds"):
        _check_bounds(name, args[name])
    if not 0 <= float(args["dropout_rate"]) < 1:
        raise ValueError(f"dropout_rate must be in [0, 1), got {args['dropout_rate']!r}.")
    if not (isinstance(args["learning_rate"], (int, float)) and args["learning_rate"] > 0):
        raise ValueError(f"learning_rate must be a positive number, got {args['learning_rate']!r}.")
    if args["extra_callbacks"] is not None and not isinstance(args["extra_callbacks"], (list, tuple)):
        raise TypeError(f"extra_callbacks must be a list of Keras callbacks, got {type(args['extra_callbacks'])}.")
    args["architecture_name"] = resolve_architecture_name(args["architecture_name"])
    from zoobot.tensorflow.estimators.define_model import ENCODER_NAMES
    from zoobot.shared.errors import unknown_option_error

    if args["architecture_name"] not in ENCODER_NAMES:
        raise unknown_option_error("TensorFlow encoder architecture", args["architecture_name"], ENCODER_NAMES)
    args["scheduler_params"] = train_scheduler_params(args["scheduler_params"])
    args["crop_scale_bounds"] = tuple(float(v) for v in args["crop_scale_bounds"])
    args["crop_ratio_bounds"] = tuple(float(v) for v in args["crop_ratio_bounds"])
    args["betas"] = tuple(float(v) for v in args["betas"])

    records = {k: args[k] for k in ("train_records", "val_records", "test_records")}
    schema = args["schema"]
    if any(v is not None for v in records.values()):
        catalogs = [k for k in ("catalog", "train_catalog", "val_catalog", "test_catalog") if args[k] is not None]
        if catalogs:
            raise ValueError(
                f"Pass either catalogs or TFRecord shards (train_records/val_records/test_records), not both: got "
                f"{', '.join(catalogs)} and records."
            )
        if records["train_records"] is None or records["val_records"] is None:
            raise ValueError("Training from shards needs both train_records and val_records (test_records optional).")
        for key, value in records.items():
            if value is not None:
                args[key] = _record_list(key, value)
        args.pop("catalog")
        args.update(train_catalog=None, val_catalog=None, test_catalog=None)
        return args
    if args["requested_img_size"] is not None:
        warnings.warn(
            "requested_img_size is only used with TFRecord shards; catalog images are decoded at their own size "
            "and cropped/resized to resize_size.",
            UserWarning,
            stacklevel=3,
        )
    train_catalog, val_catalog, test_catalog = prepare_catalogs(
        schema.label_cols,
        catalog=args.pop("catalog"),
        train_catalog=args["train_catalog"],
        val_catalog=args["val_catalog"],
        test_catalog=args["test_catalog"],
        random_state=args["random_state"],
        check_valid_paths=args["check_valid_paths"],
        label_kind="counts",
        label_description=f"a vote-count column of schema {schema.name or 'given'}",
    )
    args.update(train_catalog=train_catalog, val_catalog=val_catalog, test_catalog=test_catalog)
    return args


def _record_list(name: str, value) -> list:
    if isinstance(value, (str, os.PathLike)):
        value = [value]
    locs = [os.fspath(v) for v in value]
    if not locs:
        raise ValueError(f"{name} is empty: give the TFRecord shard files, e.g. shard_config.train_tfrecord_locs().")
    missing = [loc for loc in locs if not os.path.isfile(loc)]
    if missing:
        from zoobot.shared.errors import format_examples

        raise FileNotFoundError(f"{len(missing)} file(s) of {name} do not exist: {format_examples(missing)}.")
    return locs


def _check_int(name: str, value, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an integer, got {type(value).__name__}: {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value!r}")


def _check_bounds(name: str, value) -> None:
    try:
        low, high = (float(v) for v in value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a pair (low, high) of numbers, got {value!r}") from None
    if not (0 < low <= high) or not math.isfinite(high):
        raise ValueError(f"{name} must satisfy 0 < low <= high, got {value!r}")


def _run_config(args: dict) -> dict:
    """What ``config.json`` records: the arguments, with catalogs summarised by size and ids."""
    config = {}
    for key, value in args.items():
        if key.endswith("_catalog"):
            config[key] = None if value is None else {"rows": int(len(value)), "id_sha1": _ids_digest(value)}
        elif key == "extra_callbacks":
            config[key] = None if value is None else [type(c).__name__ for c in value]
        elif key == "wandb_logger":
            config[key] = None if value is None else type(value).__name__
        elif key == "devices":
            continue  # internal override (tests)
        else:
            config[key] = value
    return config


def _ids_digest(catalog) -> str:
    digest = hashlib.sha1()
    for id_str in catalog["id_str"].astype(str):
        digest.update(id_str.encode() + b"\0")
    return digest.hexdigest()


# ---------------------------------------------------------------------------------------------
# 2. data
# ---------------------------------------------------------------------------------------------


def _catalog_datasets(args, global_batch_size):
    """(train, val, test or None) datasets from the catalogs, through the TF GalaxyDataModule."""
    from zoobot.tensorflow.datasets import GalaxyDataModule

    datamodule = GalaxyDataModule(
        label_cols=list(args["schema"].label_cols),
        train_catalog=args["train_catalog"],
        val_catalog=args["val_catalog"],
        test_catalog=args["test_catalog"],
        greyscale=not args["color"],
        crop_scale_bounds=args["crop_scale_bounds"],
        crop_ratio_bounds=args["crop_ratio_bounds"],
        resize_after_crop=args["resize_after_crop"],
        batch_size=global_batch_size,
        num_workers=min(args["num_workers"], _available_cpus()),
        prefetch_factor=args["prefetch_factor"],
        seed=args["random_state"],
        test_time_augmentation=args["always_augment"],
        check_valid_paths=False,  # checked already
    )
    datamodule.setup("fit")
    train_ds, val_ds = datamodule.train_dataloader(), datamodule.val_dataloader()
    test_ds = None
    if args["test_catalog"] is not None:
        datamodule.setup("test")
        test_ds = datamodule.test_dataloader()
    return train_ds, val_ds, test_ds


def _preprocessing_record(args, channels, train_catalog):
    """What the model remembers of its images (:mod:`zoobot.shared.preprocessing`); shards hold PNG-encoded
    pixels of unknown origin, so their formats stay unknown."""
    from zoobot.shared.preprocessing import Preprocessing

    return Preprocessing.for_training(
        args["resize_after_crop"], channels, args["crop_scale_bounds"], args["crop_ratio_bounds"],
        None if train_catalog is None else train_catalog["file_loc"])


def _available_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def _shard_dataset(records, args, global_batch_size, train: bool):
    """Batches of (images NHWC float32 [0, 1], vote counts (B, n_answers)) from TFRecord shards,
    augmented with the same transforms as the catalog pipeline."""
    from zoobot.tensorflow.data_utils import tfrecord_datasets
    from zoobot.tensorflow.datasets.transforms import default_transforms, image_to_float

    label_cols = list(args["schema"].label_cols)
    train_transform, eval_transform = default_transforms(
        greyscale=not args["color"],
        resize_after_crop=args["resize_after_crop"],
        crop_scale_bounds=args["crop_scale_bounds"],
        crop_ratio_bounds=args["crop_ratio_bounds"],
        test_time_augmentation=args["always_augment"],
    )
    transform = train_transform if train else eval_transform
    requested = args["requested_img_size"]
    seed = args["random_state"]
    raw = tfrecord_datasets.get_dataset(records, label_cols, global_batch_size, shuffle=train, seed=seed)
    seeds = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True).batch(2)

    def to_example(element, image_seed):
        image = element["matrix"]
        if requested is not None:  # [U1] the size images are loaded at, before augmentation
            image = tf.clip_by_value(tf.image.resize(image_to_float(image), (requested, requested), antialias=True),
                                     0.0, 1.0)
        labels = tf.stack([element[col] for col in label_cols], axis=-1)
        return transform(image, image_seed), labels

    parallel = tf.data.AUTOTUNE if args["num_workers"] > 0 else None
    dataset = tf.data.Dataset.zip((raw.unbatch(), seeds)).map(to_example, num_parallel_calls=parallel,
                                                              deterministic=True)
    dataset = dataset.batch(global_batch_size, drop_remainder=train)
    rows = _shard_row_count(records)
    if rows is not None:  # a known length lets Keras show progress and not warn at the end of each epoch
        batches = rows // global_batch_size if train else -(-rows // global_batch_size)
        if batches > 0:
            dataset = dataset.apply(tf.data.experimental.assert_cardinality(batches))
    return dataset.prefetch(args["prefetch_factor"] if args["num_workers"] > 0 else tf.data.AUTOTUNE)


def _shard_row_count(records):
    """Galaxies in ``records`` from the ``shard_config.json`` of their shard folder, when ``records`` are all
    the shards of one split; None otherwise (the dataset length then stays unknown)."""
    folders = {pathlib.Path(r).resolve().parent for r in records}
    if len(folders) != 1:
        return None
    folder = folders.pop()
    config_path = folder.parent / "shard_config.json"
    if not config_path.is_file():
        return None
    try:
        config = json.loads(config_path.read_text())
    except (OSError, ValueError):
        return None
    split = next((name for name, rel in (config.get("split_dirs") or {}).items()
                  if (folder.parent / rel).resolve() == folder), None)
    count = (config.get("row_counts") or {}).get(split)
    all_shards = {p.resolve() for p in folder.glob("*.tfrecord")}
    if not isinstance(count, int) or {pathlib.Path(r).resolve() for r in records} != all_shards:
        return None
    return count


@contextlib.contextmanager
def _image_errors_named(catalogs):
    """Turn a TensorFlow decode error from the data pipeline into the error of the unreadable file.

    A corrupt image stops a ``tf.data`` pipeline with an error that names neither the galaxy nor the
    file. On such an error the catalogs are checked file by file (only then: it reads every image) and
    the error of the first unreadable one (E6 ``ImageLoadError``, or E7/E8, naming ``id_str`` and
    ``file_loc``) is raised instead; TFRecord shards are not checked (the original error is raised).
    """
    try:
        yield
    except tf.errors.OpError as err:
        from zoobot.tensorflow.predictions.predict_on_catalog import _image_problems

        for catalog in catalogs:
            if catalog is None:
                continue
            problems = _image_problems(catalog, limit=1)
            if problems:
                raise next(iter(problems.values())) from err
        raise


def _check_first_batch(dataset, channels: int, schema, where: str) -> None:
    """E7/E8 on the first batch's images and E10 on its label width, before training starts."""
    from zoobot.tensorflow.estimators.define_model import check_images

    element = next(iter(dataset.take(1)), None)
    if element is None:
        raise ValueError(f"The {where} data yielded no batch: is it smaller than batch_size (the last partial "
                         "training batch is dropped)?")
    images, labels = element[0], element[1]
    check_images(images, channels, where=f"the first {where} batch")
    width = int(labels.shape[-1]) if labels.shape.rank == 2 else 1
    if width != schema.n_answers:
        raise ValueError(
            f"The {where} labels have width {width} but schema {schema.name or ''} has {schema.n_answers} answers "
            f"(expected width {schema.n_answers}, got {width})."
        )


# ---------------------------------------------------------------------------------------------
# 3. callbacks: checkpoints, metrics file, NaN guard
# ---------------------------------------------------------------------------------------------


def rename_metrics(logs: dict, split: str = "fit") -> dict:
    """Keras log names -> the PyTorch backend's metric names.

    ``loss`` -> ``train/supervised_loss``, ``val_loss`` -> ``validation/supervised_loss``,
    ``question_loss/q`` -> ``train/question_loss/q``, ``val_question_loss/q`` ->
    ``validation/question_loss/q``; with ``split='test'`` every name gets ``test/``. ``learning_rate``
    becomes ``lr``.

    Examples
    --------
    >>> rename_metrics({'loss': 1.0, 'val_loss': 2.0, 'val_question_loss/bar': 0.5, 'learning_rate': 0.1})
    {'train/supervised_loss': 1.0, 'validation/supervised_loss': 2.0, 'validation/question_loss/bar': 0.5, 'lr': 0.1}
    >>> rename_metrics({'loss': 3.0}, split='test')
    {'test/supervised_loss': 3.0}
    """
    out = {}
    for key, value in (logs or {}).items():
        if key in ("learning_rate", "lr"):
            out["lr"] = value
            continue
        if split == "test":
            prefix, name = "test", key
        elif key.startswith("val_"):
            prefix, name = "validation", key[len("val_"):]
        else:
            prefix, name = "train", key
        if name == "loss":
            name = "supervised_loss"
        out[f"{prefix}/{name}"] = value
    return out


def _scalar(value) -> float:
    try:
        return float(np.asarray(value))
    except (TypeError, ValueError):
        return float("nan")


class CheckpointRecord(keras.callbacks.Callback):
    """Keep the best ``save_top_k`` models by validation loss as ``.keras`` files, plus ``last.keras``.

    Mirrors Lightning's ``ModelCheckpoint`` (``save_last=True``): attributes ``best_model_path``,
    ``best_model_score``, ``best_k_models`` (path -> score), ``last_model_path``, ``dirpath``. Its state
    is kept in ``dirpath/checkpoints.json`` so a resumed run continues the ranking.
    """

    def __init__(self, dirpath, filename="{epoch}", monitor=_KERAS_MONITOR, save_top_k=3,
                 auto_insert_metric_name=True):
        super().__init__()
        self.dirpath = pathlib.Path(dirpath)
        self.filename = filename
        self.monitor = monitor
        self.save_top_k = save_top_k
        self.auto_insert_metric_name = auto_insert_metric_name
        self.best_k_models: dict = {}
        self.best_model_path = ""
        self.best_model_score = None
        self.last_model_path = ""
        self._state_path = self.dirpath / "checkpoints.json"

    def on_train_begin(self, logs=None):
        self.dirpath.mkdir(parents=True, exist_ok=True)
        if self._state_path.is_file():  # resuming: keep the ranking of the earlier epochs
            state = json.loads(self._state_path.read_text())
            self.best_k_models = {p: s for p, s in state.get("best_k_models", {}).items() if os.path.isfile(p)}
            self._update_best()
            last = self.dirpath / "last.keras"
            self.last_model_path = str(last) if last.is_file() else ""

    def format_checkpoint_name(self, epoch: int, logs: dict) -> str:
        values = {"epoch": epoch, **rename_metrics(logs), **(logs or {})}

        def replace(match):
            key, spec = match.group(1), match.group(2) or ""
            value = values.get(key, float("nan"))
            text = format(value, spec) if spec else str(value)
            return f"{key}={text}" if self.auto_insert_metric_name else text

        return re.sub(r"\{([^{}:]+)(?::([^{}]*))?\}", replace, self.filename) + ".keras"

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        last = self.dirpath / "last.keras"
        _atomic_save(self.model, last)
        self.last_model_path = str(last)
        score = _scalar(logs.get(self.monitor, float("nan")))
        if self.save_top_k != 0 and math.isfinite(score):
            path = str(self.dirpath / self.format_checkpoint_name(epoch, logs))
            ranked = sorted(self.best_k_models.items(), key=lambda item: item[1])
            if self.save_top_k < 0 or len(ranked) < self.save_top_k or score < ranked[-1][1]:
                _atomic_save(self.model, pathlib.Path(path))
                self.best_k_models[path] = score
                if self.save_top_k > 0 and len(self.best_k_models) > self.save_top_k:
                    worst = max(self.best_k_models, key=self.best_k_models.get)
                    del self.best_k_models[worst]
                    if worst != path and os.path.isfile(worst):
                        os.remove(worst)
        self._update_best()
        self._state_path.write_text(json.dumps({"best_k_models": self.best_k_models}, indent=1))

    def _update_best(self):
        if self.best_k_models:
            self.best_model_path = min(self.best_k_models, key=self.best_k_models.get)
            self.best_model_score = self.best_k_models[self.best_model_path]


def _atomic_save(model, path: pathlib.Path) -> None:
    tmp = path.with_name(path.stem + ".tmp.keras")
    model.save(tmp)
    os.replace(tmp, path)


class MetricsCSV(keras.callbacks.Callback):
    """Write ``save_dir/logs/metrics.csv`` with the PyTorch metric names, one row per epoch.

    Columns: ``epoch``, ``step``, ``lr``, then the renamed metrics. When resuming, rows of epochs
    already restored from the backup are kept and later rows are replaced.
    """

    def __init__(self, path, wandb_logger=None):
        super().__init__()
        self.path = pathlib.Path(path)
        self.wandb_logger = wandb_logger
        self.rows: list = []

    def on_train_begin(self, logs=None):
        self.path.parent.mkdir(parents=True, exist_ok=True)
        start = int(getattr(self.model, "_initial_epoch", None) or 0)
        self.rows = [row for row in _read_rows(self.path) if _epoch_of(row) < start] if start else []

    def on_epoch_end(self, epoch, logs=None):
        row = {"epoch": epoch, "step": int(self.model.optimizer.iterations.numpy()),
               "lr": _scalar(self.model.optimizer.learning_rate.numpy())}
        row.update({k: _scalar(v) for k, v in rename_metrics(logs).items() if k != "lr"})
        self.rows.append(row)
        self.write()
        if self.wandb_logger is not None:
            self.wandb_logger.log({k: v for k, v in row.items() if k != "epoch"}, step=epoch)

    def add_row(self, row: dict) -> None:
        self.rows.append(row)
        self.write()
        if self.wandb_logger is not None:
            self.wandb_logger.log({k: v for k, v in row.items() if k != "epoch"})

    def write(self) -> None:
        columns = []
        for row in self.rows:
            columns.extend(k for k in row if k not in columns)
        tmp = self.path.with_name(self.path.name + ".tmp")
        with open(tmp, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=columns)
            writer.writeheader()
            for row in self.rows:
                writer.writerow({k: ("" if v is None else v) for k, v in row.items()})
        os.replace(tmp, self.path)


def _read_rows(path: pathlib.Path) -> list:
    if not path.is_file():
        return []
    with open(path, newline="") as f:
        return [{k: v for k, v in row.items() if v not in ("", None)} for row in csv.DictReader(f)]


def _epoch_of(row) -> float:
    try:
        return float(row.get("epoch", "nan"))
    except ValueError:
        return float("nan")


def _warn_if_gpu_sized(model, architecture_name, channels, size, batch_size, train_catalog, steps_per_epoch,
                       epochs):
    from zoobot.shared.cpu_speed import warn_if_gpu_sized
    from zoobot.tensorflow.estimators.define_model import time_encoder_pass

    n_train = len(train_catalog) if train_catalog is not None else (steps_per_epoch or 1) * batch_size
    warn_if_gpu_sized(lambda n: time_encoder_pass(model.encoder, n, channels, size),
                      architecture_name=architecture_name, image_size=size, batch_size=batch_size,
                      n_train=n_train, epochs=epochs, stacklevel=4)


class _NonFiniteLossGuard(keras.callbacks.Callback):
    """Stop training with a ``FloatingPointError`` as soon as the training or validation loss is NaN or
    infinite, naming the epoch and step (Keras' TerminateOnNaN would only stop silently)."""

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        value = _scalar((logs or {}).get("loss", 0.0))
        if not math.isfinite(value):
            raise FloatingPointError(_non_finite_message("training loss", value, getattr(self, "_epoch", 0),
                                                         int(self.model.optimizer.iterations.numpy()), batch))

    def on_epoch_end(self, epoch, logs=None):
        value = _scalar((logs or {}).get(_KERAS_MONITOR, 0.0))
        if not math.isfinite(value):
            raise FloatingPointError(_non_finite_message(MONITOR, value, epoch,
                                                         int(self.model.optimizer.iterations.numpy()), None))


class AtomicBackupAndRestore(keras.callbacks.BackupAndRestore):
    """``BackupAndRestore`` whose backup is replaced atomically, so a crash or a full disk mid-write
    leaves the previous backup readable.

    The weights go to a new file named after the epoch; ``training_metadata.json`` (written to a
    temporary file, then renamed) names that file and is the commit point. Keras' own callback
    overwrites ``latest.weights.h5`` in place, and a torn write made the resumed run crash.
    (Relies on the Keras 3 attributes ``_current_epoch``, ``_last_batch_seen`` and
    ``_training_metadata_path``.)
    """

    def _save_model(self):
        os.makedirs(self.backup_dir, exist_ok=True)
        name = f"epoch_{self._current_epoch}_batch_{self._last_batch_seen}.weights.h5"
        partial = os.path.join(self.backup_dir, "partial_" + name)
        self.model.save_weights(partial, overwrite=True)
        os.replace(partial, os.path.join(self.backup_dir, name))
        metadata = {"epoch": self._current_epoch, "batch": self._last_batch_seen, "weights": name}
        tmp_metadata = self._training_metadata_path + ".tmp"
        with open(tmp_metadata, "w") as f:
            json.dump(metadata, f)
        os.replace(tmp_metadata, self._training_metadata_path)  # the commit point
        for old in os.listdir(self.backup_dir):
            if old.endswith(".weights.h5") and old != name:
                os.remove(os.path.join(self.backup_dir, old))

    def _load_model(self):
        if not os.path.isfile(self._training_metadata_path):
            return
        with open(self._training_metadata_path) as f:
            metadata = json.load(f)
        if self.model.optimizer is not None and not self.model.optimizer.built:
            self.model.optimizer.build(self.model.trainable_variables)
        self.model.load_weights(os.path.join(self.backup_dir, metadata["weights"]))
        self.model._initial_epoch = metadata["epoch"]


class RandomStateBackup(keras.callbacks.Callback):
    """Save and restore the Keras random seed states (dropout masks) next to ``BackupAndRestore``'s backup.

    Keras' backup holds the weights and the optimiser but not the seed generators of dropout layers; with
    this callback a resumed run draws the same dropout masks as an uninterrupted one. Put it right after
    ``BackupAndRestore`` (which sets the epoch to resume from in ``on_train_begin``).
    """

    def __init__(self, backup_dir):
        super().__init__()
        self.path = pathlib.Path(backup_dir) / "zoobot_random_state.json"

    def _generators(self):
        found, seen, stack = [], set(), [self.model]
        while stack:
            layer = stack.pop()
            if id(layer) in seen:
                continue
            seen.add(id(layer))
            found.extend(getattr(layer, "_seed_generators", []) or [])
            stack.extend(getattr(layer, "_layers", []) or [])
        return sorted(found, key=lambda generator: generator.state.path)

    def on_train_begin(self, logs=None):
        start = int(getattr(self.model, "_initial_epoch", None) or 0)
        if not start or not self.path.is_file():
            return
        saved = json.loads(self.path.read_text())
        generators = self._generators()
        if saved.get("epoch") != start or len(saved.get("states", [])) != len(generators):
            warnings.warn(f"{self.path} does not match the backup (epoch {start}); dropout masks will differ from "
                          "an uninterrupted run.", UserWarning, stacklevel=2)
            return
        for generator, state in zip(generators, saved["states"]):
            generator.state.assign(np.asarray(state, dtype=generator.state.dtype))

    def on_epoch_end(self, epoch, logs=None):
        states = [np.asarray(generator.state.numpy()).tolist() for generator in self._generators()]
        tmp = self.path.with_name(self.path.name + ".tmp")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_text(json.dumps({"epoch": epoch + 1, "states": states}))
        os.replace(tmp, self.path)


def _backup_epoch(backup_dir: pathlib.Path) -> int:
    """The epoch a ``BackupAndRestore`` backup resumes from (0 if there is none)."""
    path = backup_dir / "training_metadata.json"
    try:
        return int(json.loads(path.read_text()).get("epoch", 0))
    except (OSError, ValueError, AttributeError):
        return 0


def _skip_epochs(dataset, epochs: int) -> None:
    """Advance a dataset's per-iteration shuffle and augmentation seeds by ``epochs`` iterations, so that a
    resumed run sees the same order and augmentations in each epoch as an uninterrupted one (each
    iterator draws new seeds when it is created; no batch is read)."""
    for _ in range(epochs):
        iterator = iter(dataset)
        del iterator


def _train_encoder_like_timm(encoder) -> None:
    """Train the Keras encoder as timm's is trained in the PyTorch backend (issue 13, measured with
    ``benchmarks/bench_science.py``; docs/guides/training_recipe.md):

    - BatchNorm running statistics updated with PyTorch's momentum 0.1 (Keras ``momentum=0.9``) rather than
      Keras' 0.99, which lags behind the weights over a run of a few hundred steps per epoch;
    - no stochastic depth: Keras' EfficientNet hard-codes ``drop_connect_rate=0.2`` (its ``block*_drop``
      layers), timm's ``efficientnet_b0`` defaults to ``drop_path_rate=0``.
    """
    for layer in encoder._flatten_layers(include_self=False, recursive=True):
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.momentum = 0.9
        elif isinstance(layer, keras.layers.Dropout) and layer.name.startswith("block") and layer.name.endswith("_drop"):
            layer.rate = 0.0


def _calibrate(model, val_ds, save_dir, checkpoint_paths) -> None:
    """Fit the per-question concentration scale on the validation votes (zoobot.shared.calibration),
    set ``model.calibration`` and save it into the best and last ``.keras`` files (their config)."""
    from zoobot.shared import calibration

    alphas, counts = [], []
    for images, labels in val_ds:
        features = model.encoder(images, training=False)
        alphas.append(model.head(features, training=False).numpy().astype(np.float64))
        counts.append(labels.numpy().astype(np.float64))
    if not alphas:
        return
    model.calibration = calibration.fit_record(np.concatenate(counts), np.concatenate(alphas),
                                               model.question_names, model.question_index_groups, save_dir=save_dir)
    weights = model.get_weights()
    for path in dict.fromkeys(p for p in checkpoint_paths if p):
        if os.path.isfile(path):
            # the saved file holds these weights only for the best one: rewrite each with its own weights
            model.load_weights(path)
            _atomic_save(model, pathlib.Path(path))
    model.set_weights(weights)


def _non_finite_message(what: str, value: float, epoch: int, step: int, batch) -> str:
    where = f"epoch {epoch}, step {step}"
    if batch is not None:
        where += f" (batch {batch} of the epoch)"
    return (
        f"The {what} became {value} at {where}: training stopped. Usual causes: a learning_rate too high for "
        "this batch size, or corrupt labels/images. The last finite checkpoint is in the checkpoints folder."
    )


# ---------------------------------------------------------------------------------------------
# 4. the implementation shared by both public names
# ---------------------------------------------------------------------------------------------


class TrainingRun:
    """What :func:`train` returns next to the model (a light stand-in for a Lightning ``Trainer``).

    Attributes
    ----------
    history : keras.callbacks.History
        ``history.history`` maps Keras metric names to per-epoch values (of this call's epochs).
    checkpoint_callback : CheckpointRecord
        ``best_model_path``, ``best_model_score``, ``best_k_models``, ``last_model_path``.
    callback_metrics : dict
        The last epoch's metrics (PyTorch names), plus the test metrics.
    test_metrics : dict or None
        ``test/supervised_loss`` and the per-question test losses of the best model.
    save_dir : pathlib.Path
    strategy : tf.distribute.Strategy
    metrics_path : pathlib.Path
        ``save_dir/logs/metrics.csv``.
    """

    def __init__(self, history, checkpoint_callback, save_dir, strategy, metrics_path):
        self.history = history
        self.checkpoint_callback = checkpoint_callback
        self.save_dir = pathlib.Path(save_dir)
        self.strategy = strategy
        self.metrics_path = pathlib.Path(metrics_path)
        self.test_metrics = None
        last = {k: v[-1] for k, v in (history.history if history is not None else {}).items() if v}
        self.callback_metrics = {k: _scalar(v) for k, v in rename_metrics(last).items()}

    @property
    def current_epoch(self) -> int:
        """Epochs completed (counting the epochs of a resumed run)."""
        epochs = getattr(self.history, "epoch", None) or []
        return int(epochs[-1]) + 1 if epochs else 0

    def __repr__(self) -> str:
        return (f"TrainingRun(save_dir={str(self.save_dir)!r}, best_model_path="
                f"{self.checkpoint_callback.best_model_path!r}, epochs={self.current_epoch})")


def _train(
    *,
    entry_point: str,
    save_dir,
    schema,
    train_catalog,
    val_catalog,
    test_catalog,
    architecture_name: str,
    batch_size: int,
    epochs: int,
    patience: int,
    color: bool,
    resize_after_crop: int,
    crop_scale_bounds,
    crop_ratio_bounds,
    nodes: int,
    gpus: int,
    num_workers: int,
    prefetch_factor: int,
    mixed_precision: bool,
    random_state: int,
    wandb_logger,
    dropout_rate: float,
    learning_rate: float,
    betas,
    weight_decay: float,
    scheduler_params,
    timm_kwargs,
    sync_batchnorm: bool,
    compile_encoder: bool,
    save_top_k: int,
    checkpoint_file_template,
    auto_insert_metric_name: bool,
    extra_callbacks,
    check_valid_paths: bool,
    resume: bool,
    overwrite: bool = False,
    train_records,
    val_records,
    test_records,
    requested_img_size,
    always_augment: bool,
    eager: bool,
    devices: list | None = None,
):
    """Fit, restore the best checkpoint, test. ``devices`` (a list of device names to mirror over)
    overrides the GPU resolution (the tests mirror over two logical CPUs)."""
    from zoobot.tensorflow.estimators.define_model import ZoobotTree

    args = dict(locals())
    save_dir = pathlib.Path(save_dir)
    checkpoint_dir = save_dir / "checkpoints"
    backup_dir = save_dir / "backup"
    has_backup = backup_dir.is_dir() and any(backup_dir.iterdir())

    # one run per save_dir: resume it, replace it (overwrite) or refuse, before any expensive work
    config = _run_config({k: v for k, v in args.items() if k not in ("ZoobotTree",)})
    resuming = claim_save_dir(save_dir, config, resume=resume, overwrite=overwrite, resumable=has_backup,
                              ignore=_RESUMABLE_CHANGES)
    if not resuming and backup_dir.exists():
        shutil.rmtree(backup_dir)  # an empty backup folder: start afresh

    # devices
    if devices is None:
        n_gpus = resolve_device_count(gpus, len(tf.config.list_physical_devices("GPU")), "tensorflow")
        devices = [f"/gpu:{i}" for i in range(n_gpus)]
    if len(devices) > 1:
        strategy = tf.distribute.MirroredStrategy(devices=list(devices))
    elif len(devices) == 1:
        strategy = tf.distribute.OneDeviceStrategy(devices[0])
    else:
        strategy = tf.distribute.get_strategy()
    on_gpu = any("gpu" in str(d).lower() for d in devices)
    use_mixed = False
    if mixed_precision:
        if on_gpu:
            use_mixed = True
        else:
            warnings.warn(
                "mixed_precision=True is ignored: training runs on the CPU, where zoobot trains in float32.",
                UserWarning,
                stacklevel=3,
            )
    if sync_batchnorm and len(devices) > 1:
        warnings.warn(
            "sync_batchnorm=True is ignored by the TensorFlow backend: Keras' MirroredStrategy keeps per-replica "
            "BatchNorm statistics.",
            UserWarning,
            stacklevel=3,
        )

    keras.utils.set_random_seed(random_state)

    n_replicas = max(strategy.num_replicas_in_sync, 1)
    global_batch_size = batch_size * n_replicas
    args["resize_after_crop"] = resize_after_crop
    if train_records is not None:
        train_ds = _shard_dataset(train_records, args, global_batch_size, train=True)
        val_ds = _shard_dataset(val_records, args, global_batch_size, train=False)
        test_ds = None if test_records is None else _shard_dataset(test_records, args, global_batch_size, train=False)
    else:
        train_ds, val_ds, test_ds = _catalog_datasets(args, global_batch_size)
    channels = 3 if color else 1
    catalogs = (train_catalog, val_catalog, test_catalog)
    with _image_errors_named(catalogs):
        _check_first_batch(train_ds, channels, schema, "training")
    # Each epoch must see the same shuffle and augmentations whether or not the run was resumed. The
    # dataset draws new seeds per iteration, so it is repeated (one iteration per epoch, whatever Keras
    # does between epochs) after skipping the epochs a resumed run has already done.
    steps_per_epoch = int(train_ds.cardinality())
    if steps_per_epoch > 0:
        if resuming:
            _skip_epochs(train_ds, _backup_epoch(backup_dir))
        fit_ds = train_ds.repeat()
    else:  # unknown length (shards without a shard_config.json): Keras iterates until the data ends
        steps_per_epoch, fit_ds = None, train_ds

    previous_policy = keras.mixed_precision.global_policy()
    try:
        if use_mixed:
            keras.mixed_precision.set_global_policy("mixed_float16")
        with strategy.scope():
            model = ZoobotTree(
                output_dim=schema.n_answers,
                schema=schema,
                architecture_name=architecture_name,
                channels=channels,
                test_time_dropout=True,
                compile_encoder=compile_encoder,
                timm_kwargs=timm_kwargs,
                dropout_rate=dropout_rate,
                learning_rate=learning_rate,
                betas=betas,
                weight_decay=weight_decay,
                scheduler_params=resolve_train_schedule(scheduler_params, epochs),
            )
            _train_encoder_like_timm(model.encoder)
            model.concentration_floor = DEFAULT_TRAIN_CONCENTRATION_FLOOR
            model.input_size = int(resize_after_crop)
            model.preprocessing = _preprocessing_record(args, channels, train_catalog)
            model.compile(**model.default_compile_kwargs(gradient_clip_val=0.3), run_eagerly=bool(eager))
        if not on_gpu:  # GPU-sized settings on a CPU: say how long a batch will take
            _warn_if_gpu_sized(model, architecture_name, channels, resize_after_crop, batch_size,
                               train_catalog, steps_per_epoch, epochs)

        checkpoint_callback = CheckpointRecord(
            checkpoint_dir,
            filename=checkpoint_file_template or "{epoch}",
            monitor=_KERAS_MONITOR,
            save_top_k=save_top_k,
            auto_insert_metric_name=auto_insert_metric_name,
        )
        metrics_csv = MetricsCSV(save_dir / "logs" / "metrics.csv", wandb_logger=wandb_logger)
        callbacks = [
            # first, so that the other callbacks see the restored epoch in on_train_begin
            AtomicBackupAndRestore(str(backup_dir), delete_checkpoint=False),
            RandomStateBackup(backup_dir),
            _NonFiniteLossGuard(),
            *model.scheduler_callbacks(),
            checkpoint_callback,
            keras.callbacks.EarlyStopping(monitor=_KERAS_MONITOR, mode="min", patience=patience),
            metrics_csv,
            # for the message of an interrupted run (zoobot.shared.interrupts)
            keras.callbacks.LambdaCallback(on_epoch_begin=lambda epoch, logs: interrupts.note_epoch(epoch, epochs)),
            *(extra_callbacks or []),
        ]
        # one line per epoch in a log file, with the losses PyTorch's line shows (per-question losses: metrics.csv)
        verbose, progress_callbacks = fit_verbosity(True, epochs, keep=("val_loss", "loss", "learning_rate", "lr"))
        # the run is recorded when training starts, not before (a run that fails while set up leaves no trace)
        write_run_config(save_dir, config, backend="tensorflow")
        if train_catalog is not None:
            write_split_catalogs(save_dir, train_catalog, val_catalog, test_catalog)
        with _image_errors_named(catalogs):
            history = model.fit(fit_ds, validation_data=val_ds, epochs=epochs, steps_per_epoch=steps_per_epoch,
                                callbacks=callbacks + progress_callbacks, shuffle=False, verbose=verbose)

        best_path = checkpoint_callback.best_model_path
        if not best_path or not os.path.isfile(best_path):
            best_path = checkpoint_callback.last_model_path or str(checkpoint_dir / "last.keras")
        if os.path.isfile(best_path):
            model.load_weights(best_path)
        model.best_checkpoint_path = str(best_path)
        with _image_errors_named(catalogs):
            _calibrate(model, val_ds, save_dir, [best_path, checkpoint_callback.last_model_path])
        run = TrainingRun(history, checkpoint_callback, save_dir, strategy, metrics_csv.path)
        if test_ds is not None:
            with _image_errors_named(catalogs):
                results = model.evaluate(test_ds, return_dict=True, verbose=0)
            test_metrics = {k: _scalar(v) for k, v in rename_metrics(results, split="test").items()}
            run.test_metrics = test_metrics
            run.callback_metrics.update(test_metrics)
            last_epoch = history.epoch[-1] if history.epoch else 0
            metrics_csv.add_row({"epoch": last_epoch, "step": int(model.optimizer.iterations.numpy()),
                                 **test_metrics})
    finally:
        if use_mixed:
            keras.mixed_precision.set_global_policy(previous_policy)
    return model, run
