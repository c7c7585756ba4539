"""Train a Zoobot model from scratch on Galaxy Zoo vote counts (api.md 2.4).

Two public names share one implementation (:func:`_train`); each keeps its own defaults:

- :func:`train` has exactly the argument list of the user documentation (the "seed"), e.g.
  ``model_architecture='efficientnet'``, ``resize_size=224``, ``batch_size=256``;
- :func:`train_default_zoobot_from_scratch` has the upstream Zoobot v2 argument list, e.g.
  ``architecture_name='efficientnet_b0'``, ``resize_after_crop=224``, ``batch_size=128``.

Either spelling of ``model_architecture``/``architecture_name`` and ``resize_size``/
``resize_after_crop`` is accepted by both.

What a run does, in order:

1. check the arguments and catalogs (E1-E5) before any model work; split one catalog 70/10/20;
2. claim ``save_dir`` (:func:`zoobot.shared.run_dir.claim_save_dir`: resume the run there when its
   recorded arguments match, replace it with ``overwrite=True``, otherwise refuse); ``config.json`` and
   ``{train,val,test}_catalog.parquet`` are written when training starts;
3. build a :class:`~zoobot.pytorch.datasets.GalaxyDataModule` and a
   :class:`~zoobot.pytorch.estimators.define_model.ZoobotTree`;
4. fit with Lightning: checkpoints in ``save_dir/checkpoints`` (best ``save_top_k`` by
   ``validation/supervised_loss`` plus ``last.ckpt``), early stopping, gradient clipping at 0.3,
   metrics in ``save_dir/logs/metrics.csv``; a non-finite loss stops training with a
   ``FloatingPointError`` naming the epoch and step; ``resume=True`` continues from ``last.ckpt``;
5. load the best checkpoint, fit the per-question concentration scale to the validation votes
   (``zoobot.shared.calibration``; stored in the best and last checkpoints and ``save_dir/calibration.json``),
   evaluate it on the test split, and return it.
"""
from __future__ import annotations

import csv
import hashlib
import math
import os
import pathlib
import warnings

import lightning as L
import numpy as np
import torch
from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.utilities import rank_zero_only

from zoobot.pytorch.training.console import console_trainer_kwargs
from zoobot.shared import schemas as schemas_module
from zoobot.shared.errors import unknown_option_error
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

__all__ = ["train", "train_default_zoobot_from_scratch"]

#: Metric that picks the best checkpoint and drives early stopping.
MONITOR = "validation/supervised_loss"
#: Test hook: ``(accelerator, devices)`` used instead of the GPU resolution, e.g. ``('cpu', 2)`` runs DDP
#: over two CPU processes (gloo). Not part of the public API.
_device_override: tuple | None = None
#: Arguments that may change between a run and its resumption (not compared on resume).
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
):
    """Train a :class:`~zoobot.pytorch.estimators.define_model.ZoobotTree` from scratch.

    Parameters
    ----------
    save_dir : str or path-like
        Output folder: ``checkpoints/``, ``logs/metrics.csv``, ``config.json`` and the split
        catalogs (api.md 4.2). Created if missing.
    schema : zoobot.shared.schemas.Schema
        Decision tree; every catalog needs one vote-count column per ``schema.label_cols``.
    catalog : DataFrame, optional
        One catalog (``id_str``, ``file_loc``, vote counts), split 70/10/20 with ``random_state``.
    train_catalog, val_catalog, test_catalog : DataFrame, optional
        Explicit splits instead of ``catalog`` (train and val required; test optional).
    model_architecture : str
        ``'efficientnet'`` (= ``efficientnet_b0``), any timm name, ``'tiny_cnn'`` (tests), or the
        deprecated ``'resnet_detectron'``/``'resnet_torchvision'`` (= timm ``resnet50``).
        Also accepted as ``architecture_name``.
    batch_size : int
        Galaxies per batch per device.
    epochs : int
        Maximum number of epochs.
    patience : int
        Epochs without improvement of ``validation/supervised_loss`` before stopping.
    color : bool
        True: 3-channel RGB input; False: 1-channel greyscale (mean of R, G, B).
    resize_size : int
        Side of the (square) model input after cropping. Also accepted as ``resize_after_crop``.
    crop_scale_bounds, crop_ratio_bounds : (float, float)
        Random resized crop augmentation: area fraction and aspect ratio ranges.
    nodes : int
        Machines (Lightning ``num_nodes``).
    gpus : int
        Maximum GPUs per node to use. Fewer available: those are used, with a warning (none: CPU).
        More than one: distributed data parallel (DDP).
    num_workers, prefetch_factor : int
        DataLoader worker processes and batches prefetched per worker.
    mixed_precision : bool
        Train with '16-mixed' precision on GPU (ignored with a warning on CPU).
    random_state : int
        Seeds Python, NumPy, torch, the dataloader workers and the catalog split.
    wandb_logger : lightning.pytorch.loggers.WandbLogger, optional
        Log to Weights & Biases instead of ``save_dir/logs/metrics.csv``.
    dropout_rate, learning_rate, betas, weight_decay, scheduler_params, timm_kwargs, compile_encoder
        Passed to :class:`~zoobot.pytorch.estimators.define_model.ZoobotTree` (keyword-only).
        ``scheduler_params=None`` (default) is the training recipe's schedule: a short warm-up, then cosine
        decay to 1 % of ``learning_rate`` at ``epochs``; ``{}`` is a constant rate. Models made here use a
        Dirichlet head floor of 0.1 (``model.concentration_floor``). See docs/guides/training_recipe.md.
    sync_batchnorm : bool
        Synchronise BatchNorm statistics across devices under DDP.
    save_top_k : int
        Number of best checkpoints kept (``last.ckpt`` is kept as well).
    checkpoint_file_template : str, optional
        Lightning ``filename`` template of the best checkpoints (default ``'{epoch}'``, giving
        ``epoch=3.ckpt``).
    extra_callbacks : list of lightning Callback, optional
        Added to the trainer's callbacks.
    check_valid_paths : bool
        Check every ``file_loc`` exists before training (E5).
    resume : bool
        If ``save_dir/checkpoints/last.ckpt`` exists, continue that run (its ``config.json`` must
        record the same arguments, apart from e.g. ``epochs``/``patience``/``gpus``). A folder holding
        the checkpoints of another run is refused (``SaveDirInUseError``) unless ``overwrite=True``.
    overwrite : bool
        Delete the run already in ``save_dir`` (checkpoints, backup, logs, ``config.json``, split
        catalogs; nothing else) and start afresh. See docs/reliability.md.

    Returns
    -------
    (model, trainer)
        ``model``: the ZoobotTree with the weights of the best checkpoint (lowest
        ``validation/supervised_loss``), in eval mode on the CPU; ``trainer``: the Lightning
        Trainer (``trainer.checkpoint_callback.best_model_path``).

    Raises
    ------
    CatalogError, FileNotFoundError
        E1-E5 for bad catalogs, before any model is built.
    ValueError
        Neither/both of ``catalog`` and ``train_catalog``+``val_catalog``; bad argument values;
        an unknown architecture (E13); resuming a run recorded with other arguments.
    TypeError
        Both spellings of an aliased keyword given with different values.
    FloatingPointError
        The loss became NaN or infinite (the message names the epoch and step).

    Warns
    -----
    UserWarning
        Fewer GPUs available than ``gpus`` (e.g. ``gpus=2`` on a CPU-only machine); mixed precision
        requested on CPU.

    Examples
    --------
    >>> from zoobot.shared import schemas
    >>> from zoobot.pytorch.training import train_with_pytorch_lightning
    >>> model, trainer = train_with_pytorch_lightning.train(
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
):
    """Train a ZoobotTree from scratch, with the upstream Zoobot v2 argument list and defaults.

    The same implementation as :func:`train` (see there for every argument and the behaviour);
    only the names and defaults differ: ``architecture_name='efficientnet_b0'``,
    ``resize_after_crop=224``, ``batch_size=128``.

    Parameters
    ----------
    train_urls, val_urls, test_urls, cache_dir
        WebDataset shards (upstream). Not implemented yet: pass catalogs instead.
    auto_insert_metric_name : bool
        Lightning ModelCheckpoint option: ``epoch=3.ckpt`` (True) or ``3.ckpt`` (False) for the
        template ``'{epoch}'``.
    model_architecture, resize_size : keyword-only
        The seed spellings of ``architecture_name`` and ``resize_after_crop``.

    Returns
    -------
    (model, trainer)
        As :func:`train`: the best checkpoint loaded, and the Lightning Trainer.

    Raises
    ------
    NotImplementedError
        If any ``*_urls`` is given.
    ValueError, TypeError, CatalogError, FileNotFoundError, FloatingPointError
        As :func:`train`.

    Examples
    --------
    >>> model, trainer = train_default_zoobot_from_scratch(
    ...     'results/run', schema, catalog=catalog, architecture_name='convnext_nano')  # doctest: +SKIP
    """
    urls = {"train_urls": train_urls, "val_urls": val_urls, "test_urls": test_urls}
    given = [name for name, value in urls.items() if value is not None]
    if given:
        raise NotImplementedError(
            f"Training from WebDataset shards ({', '.join(given)}) is not implemented in this zoobot version. "
            "Pass catalogs instead: catalog=... (split 70/10/20 automatically) or train_catalog=..., "
            "val_catalog=... and optionally test_catalog=..., each with id_str, file_loc and one vote-count "
            "column per schema.label_cols."
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
    for name in ("crop_scale_bounds", "crop_ratio_bounds"):
        _check_bounds(name, args[name])
    if not 0 <= float(args["dropout_rate"]) < 1:
        raise ValueError(f"dropout_rate must be in [0, 1), got {args['dropout_rate']!r}.")
    for name in ("learning_rate", "weight_decay"):
        value = args[name]
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0 \
                or (name == "learning_rate" and value == 0):
            raise ValueError(f"{name} must be a finite number {'> 0' if name == 'learning_rate' else '>= 0'}, "
                             f"got {value!r}.")
    if args["extra_callbacks"] is not None and not isinstance(args["extra_callbacks"], (list, tuple)):
        raise TypeError(f"extra_callbacks must be a list of Lightning callbacks, got {type(args['extra_callbacks'])}.")
    args["architecture_name"] = resolve_architecture_name(args["architecture_name"])
    _check_architecture(args["architecture_name"])
    args["scheduler_params"] = train_scheduler_params(args["scheduler_params"])
    args["crop_scale_bounds"] = tuple(float(v) for v in args["crop_scale_bounds"])
    args["crop_ratio_bounds"] = tuple(float(v) for v in args["crop_ratio_bounds"])
    args["betas"] = tuple(float(v) for v in args["betas"])

    schema = args["schema"]
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


def _check_architecture(name: str) -> None:
    """E13 for an architecture neither timm nor zoobot knows, before any catalog or model work."""
    import timm

    if name != "tiny_cnn" and not timm.is_model(name):
        raise unknown_option_error("model_architecture (architecture_name)", name,
                                   ["efficientnet", "tiny_cnn", *timm.list_models()])


def _check_int(name: str, value, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) and not _is_numpy_int(value):
        raise TypeError(f"{name} must be an integer, got {type(value).__name__}: {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value!r}")


def _is_numpy_int(value) -> bool:
    return isinstance(value, np.integer)


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
        elif key in ("accelerator", "devices"):
            continue  # internal overrides (tests)
        else:
            config[key] = value
    return config


def _ids_digest(catalog) -> str:
    digest = hashlib.sha1()
    for id_str in catalog["id_str"].astype(str):
        digest.update(id_str.encode() + b"\0")
    return digest.hexdigest()


# ---------------------------------------------------------------------------------------------
# 2. the implementation shared by both public names
# ---------------------------------------------------------------------------------------------


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
    accelerator: str | None = None,
    devices: int | None = None,
):
    """Fit, restore the best checkpoint, test. ``accelerator``/``devices`` override the GPU
    resolution (used by the tests to run DDP on CPU processes)."""
    from zoobot.pytorch.datasets import GalaxyDataModule
    from zoobot.pytorch.estimators.define_model import ZoobotTree

    save_dir = pathlib.Path(save_dir)
    checkpoint_dir = save_dir / "checkpoints"
    last_checkpoint = checkpoint_dir / "last.ckpt"

    # one run per save_dir: resume it, replace it (overwrite) or refuse, before any expensive work
    config = _run_config(
        dict(
            entry_point=entry_point,
            schema=schema,
            train_catalog=train_catalog,
            val_catalog=val_catalog,
            test_catalog=test_catalog,
            architecture_name=architecture_name,
            batch_size=batch_size,
            epochs=epochs,
            patience=patience,
            color=color,
            resize_after_crop=resize_after_crop,
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
        )
    )
    resuming = claim_save_dir(save_dir, config, resume=resume, overwrite=overwrite,
                              resumable=last_checkpoint.is_file(), ignore=_RESUMABLE_CHANGES,
                              clear=_is_global_zero())

    # devices
    if accelerator is None and _device_override is not None:
        accelerator, devices = _device_override
    if accelerator is None:
        n_gpus = resolve_device_count(gpus, torch.cuda.device_count() if torch.cuda.is_available() else 0, "pytorch")
        accelerator, devices = ("gpu", n_gpus) if n_gpus > 0 else ("cpu", 1)
    precision = "32-true"
    if mixed_precision:
        if accelerator == "gpu":
            precision = "16-mixed"
        else:
            warnings.warn(
                "mixed_precision=True is ignored: training runs on the CPU, where zoobot trains in float32.",
                UserWarning,
                stacklevel=3,
            )
    distributed = devices > 1 or nodes > 1
    strategy = "ddp" if distributed else "auto"

    L.seed_everything(random_state, workers=True, verbose=False)
    is_main = _is_global_zero()

    datamodule = GalaxyDataModule(
        label_cols=list(schema.label_cols),
        train_catalog=train_catalog,
        val_catalog=val_catalog,
        test_catalog=test_catalog,
        greyscale=not color,
        crop_scale_bounds=crop_scale_bounds,
        crop_ratio_bounds=crop_ratio_bounds,
        resize_after_crop=resize_after_crop,
        batch_size=batch_size,
        num_workers=num_workers,
        prefetch_factor=prefetch_factor,
        seed=random_state,
        check_valid_paths=False,  # checked above
    )
    model = ZoobotTree(
        output_dim=schema.n_answers,
        schema=schema,
        architecture_name=architecture_name,
        channels=3 if color else 1,
        test_time_dropout=True,
        compile_encoder=compile_encoder,
        timm_kwargs=timm_kwargs,
        dropout_rate=dropout_rate,
        learning_rate=learning_rate,
        betas=betas,
        weight_decay=weight_decay,
        scheduler_params=resolve_train_schedule(scheduler_params, epochs),
    )
    model.concentration_floor = DEFAULT_TRAIN_CONCENTRATION_FLOOR
    if accelerator == "cpu" and is_main:  # GPU-sized settings on a CPU: say how long a batch will take
        _warn_if_gpu_sized(model, architecture_name, 3 if color else 1, resize_after_crop, batch_size,
                           len(train_catalog), epochs)

    checkpoint_callback = L.pytorch.callbacks.ModelCheckpoint(
        dirpath=checkpoint_dir,
        filename=checkpoint_file_template or "{epoch}",
        monitor=MONITOR,
        mode="min",
        save_top_k=save_top_k,
        save_last=True,
        auto_insert_metric_name=auto_insert_metric_name,
        enable_version_counter=False,  # one run per save_dir: never a last-v1.ckpt
    )
    callbacks = [
        _RecordRun(save_dir, config, (train_catalog, val_catalog, test_catalog)),
        NoteEpoch(),
        checkpoint_callback,
        L.pytorch.callbacks.EarlyStopping(monitor=MONITOR, mode="min", patience=patience, check_finite=True),
        _NonFiniteLossGuard(),
        _SeedEachEpoch(random_state),
        *(extra_callbacks or []),
    ]
    if wandb_logger is not None:
        logger = wandb_logger
    else:
        logger = _csv_logger(save_dir, resume_from=last_checkpoint if resuming else None)
    callbacks.append(_LearningRateLogger())

    trainer = L.Trainer(
        default_root_dir=save_dir,
        max_epochs=epochs,
        accelerator=accelerator,
        devices=devices,
        num_nodes=nodes,
        strategy=strategy,
        sync_batchnorm=bool(sync_batchnorm) and distributed,
        precision=precision,
        logger=logger,
        gradient_clip_val=0.3,
        log_every_n_steps=1,  # metrics are logged per epoch; a larger interval only warns about short epochs
        # per-epoch lines in a log file, a model summary without FLOPs
        **console_trainer_kwargs({"callbacks": callbacks, "enable_progress_bar": True}),
    )
    trainer.fit(model, datamodule=datamodule, ckpt_path=str(last_checkpoint) if resuming else None)

    best_path = checkpoint_callback.best_model_path
    if not best_path or not os.path.isfile(best_path):
        # no validation result was ever recorded (e.g. zero validation batches): fall back to last
        best_path = str(last_checkpoint)
    model = _load_weights(model, best_path)
    _calibrate(model, datamodule, save_dir if is_main else None,
               [best_path, str(last_checkpoint)] if is_main else [])
    if test_catalog is not None:
        trainer.test(model, datamodule=datamodule, verbose=is_main)
    model = model.cpu().eval()
    # the input size is not a ZoobotTree hyperparameter; predict() reads it from here
    model.input_size = int(resize_after_crop)
    return model, trainer


def _warn_if_gpu_sized(model, architecture_name, channels, size, batch_size, n_train, epochs):
    from zoobot.pytorch.estimators.define_model import time_encoder_pass
    from zoobot.shared.cpu_speed import warn_if_gpu_sized

    warn_if_gpu_sized(lambda n: time_encoder_pass(model.encoder, n, channels, size),
                      architecture_name=architecture_name, image_size=size, batch_size=batch_size,
                      n_train=n_train, epochs=epochs, stacklevel=4)


class _RecordRun(L.Callback):
    """Writes ``config.json`` and the split catalogs when training starts (not before: a run that fails while
    it is set up, e.g. asking for a GPU on a CPU-only machine, leaves the folder as it was)."""

    def __init__(self, save_dir, config, catalogs):
        self.save_dir, self.config, self.catalogs = save_dir, config, catalogs

    def on_fit_start(self, trainer, pl_module):
        if trainer.is_global_zero:
            write_run_config(self.save_dir, self.config, backend="pytorch")
            write_split_catalogs(self.save_dir, *self.catalogs)


class NoteEpoch(L.Callback):
    """Tells :mod:`zoobot.shared.interrupts` which epoch runs, for the message of an interrupted run."""

    def on_train_epoch_start(self, trainer, pl_module):
        from zoobot.shared import interrupts

        interrupts.note_epoch(trainer.current_epoch, trainer.max_epochs)
def _calibrate(model, datamodule, save_dir, checkpoint_paths) -> None:
    """Fit the per-question concentration scale on the validation votes (zoobot.shared.calibration),
    set ``model.calibration`` and add the record to the saved checkpoints (their own key)."""
    from zoobot.shared import calibration

    alphas, counts = [], []
    was_training = model.training
    model.eval()
    with torch.inference_mode(), model._mc_dropout(False):
        for images, labels in datamodule.val_dataloader():
            alphas.append(model(images.to(model.device)).float().cpu())
            counts.append(labels.float().cpu())
    model.train(was_training)
    if not alphas:
        return
    record = calibration.fit_record(torch.cat(counts).numpy(), torch.cat(alphas).numpy(), model.question_names,
                                    model.question_index_groups, save_dir=save_dir)
    model.calibration = record
    for path in dict.fromkeys(checkpoint_paths):
        if os.path.isfile(path):
            checkpoint = torch.load(path, map_location="cpu", weights_only=True)
            checkpoint[calibration.CHECKPOINT_KEY] = record
            torch.save(checkpoint, path + ".tmp")
            os.replace(path + ".tmp", path)


def _is_global_zero() -> bool:
    return getattr(rank_zero_only, "rank", 0) == 0


def _load_weights(model, checkpoint_path):
    """Load a checkpoint's weights into ``model`` (``weights_only=True``: checkpoints hold only
    tensors and JSON primitives)."""
    checkpoint = torch.load(checkpoint_path, map_location="cpu", weights_only=True)
    model.load_state_dict(checkpoint["state_dict"])
    model.best_checkpoint_path = str(checkpoint_path)
    return model


# ---------------------------------------------------------------------------------------------
# 3. logging and the non-finite guard
# ---------------------------------------------------------------------------------------------


def _csv_logger(save_dir: pathlib.Path, resume_from: pathlib.Path | None):
    """CSVLogger writing ``save_dir/logs/metrics.csv``. When resuming, the rows of the epochs the
    checkpoint already contains are kept (Lightning would otherwise start a fresh file)."""
    logger = CSVLogger(save_dir=str(save_dir), name="logs", version="")
    metrics_file = save_dir / "logs" / "metrics.csv"
    if not _is_global_zero():
        return logger
    old_rows = []
    if resume_from is not None and metrics_file.is_file():
        old_rows = _rows_up_to_checkpoint(metrics_file, resume_from)
    with warnings.catch_warnings():
        # "Experiment logs directory exists": expected when resuming; the old rows are kept below
        warnings.filterwarnings("ignore", message="Experiment logs directory")
        writer = logger.experiment
    if old_rows and isinstance(getattr(writer, "metrics", None), list):
        writer.metrics[:0] = old_rows
    return logger


def _rows_up_to_checkpoint(metrics_file: pathlib.Path, checkpoint_path: pathlib.Path) -> list[dict]:
    checkpoint = torch.load(checkpoint_path, map_location="cpu", weights_only=True)
    last_epoch = int(checkpoint.get("epoch", -1))
    with open(metrics_file, newline="") as f:
        rows = list(csv.DictReader(f))
    kept = []
    for row in rows:
        epoch = row.get("epoch", "")
        try:
            if epoch != "" and float(epoch) > last_epoch:
                continue
        except ValueError:
            pass
        kept.append({k: v for k, v in row.items() if v not in ("", None)})
    return kept


class _NonFiniteLossGuard(L.pytorch.callbacks.Callback):
    """Stop training with a ``FloatingPointError`` as soon as the training loss or the validation
    loss is NaN or infinite, naming the epoch and step.

    Kept next to Lightning's ``EarlyStopping(check_finite=True)`` (also used, above) because that one
    only looks at the monitored validation metric once per epoch and stops quietly; this guard checks
    every training step *before* the backward pass, so the weights stay those of the last finite step,
    and raises an error that says where and why."""

    def on_before_backward(self, trainer, pl_module, loss):
        # before the backward pass and the optimiser step: the weights stay those of the last finite step
        if isinstance(loss, torch.Tensor) and not bool(loss.detach().isfinite().all()):
            value = float(loss.detach().float().mean())
            batch_idx = trainer.fit_loop.epoch_loop.batch_progress.current.ready - 1
            raise FloatingPointError(_non_finite_message("training loss", value, trainer, batch_idx))

    def on_validation_end(self, trainer, pl_module):
        if trainer.sanity_checking:
            return
        value = trainer.callback_metrics.get(MONITOR)
        if value is not None and not math.isfinite(float(value)):
            raise FloatingPointError(_non_finite_message(MONITOR, float(value), trainer, None))


class _SeedEachEpoch(L.pytorch.callbacks.Callback):
    """Reseed Python, NumPy and torch at the start of every training epoch from ``(random_state, epoch)``,
    so that a run resumed from ``last.ckpt`` draws the same augmentations and dropout masks as an
    uninterrupted one (the batch order is seeded the same way by the data module's sampler).
    ``random_state=None``: the module's ``seed`` attribute (finetuning models), if it has one."""

    def __init__(self, random_state: int | None):
        self.random_state = None if random_state is None else int(random_state)

    def on_train_epoch_start(self, trainer, pl_module):
        random_state = self.random_state if self.random_state is not None else getattr(pl_module, "seed", None)
        if random_state is None:
            return
        seed = (int(random_state) * 1_000_003 + trainer.current_epoch) % 2**32
        L.seed_everything(seed, workers=True, verbose=False)


class _LearningRateLogger(L.pytorch.callbacks.Callback):
    """Log the learning rate of each epoch as ``lr`` (the metric name both backends use).

    Lightning's ``LearningRateMonitor`` (used by ``finetune.get_trainer``) names the metric after the
    optimiser (``lr-AdamW``) unless a scheduler is configured with a name, and resumed runs compare
    ``metrics.csv`` columns across backends; these five lines keep the one backend-neutral name."""

    def on_train_epoch_start(self, trainer, pl_module):
        if trainer.optimizers:
            lr = float(trainer.optimizers[0].param_groups[0]["lr"])
            pl_module.log("lr", lr, on_step=False, on_epoch=True, batch_size=1)


def _non_finite_message(what: str, value: float, trainer, batch_idx) -> str:
    where = f"epoch {trainer.current_epoch}, step {trainer.global_step}"
    if batch_idx is not None:
        where += f" (batch {batch_idx} of the epoch)"
    return (
        f"The {what} became {value} at {where}: training stopped. Usual causes: a learning_rate too high for "
        "this batch size, or corrupt labels/images. The last finite checkpoint is in the checkpoints folder."
    )
