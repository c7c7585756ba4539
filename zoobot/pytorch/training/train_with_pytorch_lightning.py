"""Train a Zoobot model from scratch on Galaxy Zoo vote counts (see docs/guides/training_from_scratch_pytorch.md).

Two public names share one implementation, each with its own defaults: :func:`train` has the argument list
of the user documentation (``model_architecture='efficientnet'``, ``resize_size=224``, ``batch_size=256``);
:func:`train_default_zoobot_from_scratch` the upstream Zoobot v2 list (``architecture_name='efficientnet_b0'``,
``resize_after_crop=224``, ``batch_size=128``). Both build a :class:`~zoobot.shared.training_config.TrainConfig`
(every argument checked, catalogs split 70/10/20, before any model work) and call :func:`_train`, which
keeps only the Lightning work:

1. claim ``save_dir`` (resume the run there, replace it with ``overwrite=True``, or refuse);
2. build a ``GalaxyDataModule`` and a ``ZoobotTree``; pick the devices;
3. fit with Lightning's ``ModelCheckpoint`` (best ``save_top_k`` + ``last.ckpt``) and ``EarlyStopping``,
   plus the callbacks of :mod:`zoobot.pytorch.training.callbacks`; metrics in ``save_dir/logs/metrics.csv``;
4. load the best checkpoint, calibrate the concentrations on the validation votes, test, return it.
"""
from __future__ import annotations

import csv
import os
import pathlib
import warnings

import lightning as L
import torch
from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.utilities import rank_zero_only

from zoobot.pytorch.training.callbacks import (
    LearningRateLogger,
    NonFiniteLossGuard,
    NoteEpoch,
    RecordRun,
    SeedEachEpoch,
)
from zoobot.pytorch.training.console import console_trainer_kwargs
from zoobot.shared.errors import unknown_option_error
from zoobot.shared.run_dir import claim_save_dir
from zoobot.shared.schedules import (DEFAULT_TRAIN_CONCENTRATION_FLOOR, DEFAULT_TRAIN_FRACTION_LOSS_WEIGHT,
                                     resolve_train_schedule, train_timm_kwargs)
from zoobot.shared.training_config import TrainConfig, resolve_device_count

__all__ = ["train", "train_default_zoobot_from_scratch"]

#: Metric that picks the best checkpoint and drives early stopping.
MONITOR = "validation/supervised_loss"
#: Gradient norm clipping of every run.
GRADIENT_CLIP_VAL = 0.3


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
        catalogs (docs/guides/training_from_scratch_pytorch.md). Created if missing.
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

    Notes
    -----
    Over 80 lines only because of this docstring (every argument documented); the body is a few lines.

    Examples
    --------
    >>> from zoobot.shared import schemas
    >>> from zoobot.pytorch.training import train_with_pytorch_lightning
    >>> model, trainer = train_with_pytorch_lightning.train(
    ...     save_dir='results/run', schema=schemas.decals_dr5_ortho_schema, catalog=catalog,
    ...     model_architecture='efficientnet', gpus=2)  # doctest: +SKIP
    """
    arguments = dict(locals())  # exactly the parameters: nothing else is defined yet
    return _train(TrainConfig.from_arguments("train", "pytorch", **arguments))


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

    Notes
    -----
    Over 80 lines only because of this docstring (every argument documented); the body is a few lines.

    Examples
    --------
    >>> model, trainer = train_default_zoobot_from_scratch(
    ...     'results/run', schema, catalog=catalog, architecture_name='convnext_nano')  # doctest: +SKIP
    """
    arguments = dict(locals())  # exactly the parameters: nothing else is defined yet
    for name in ("train_urls", "val_urls", "test_urls", "cache_dir"):
        del arguments[name]
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
    return _train(TrainConfig.from_arguments("train_default_zoobot_from_scratch", "pytorch", **arguments))

# ---------------------------------------------------------------------------------------------
# the implementation shared by both public names
# ---------------------------------------------------------------------------------------------


def _train(config: TrainConfig):
    """Fit, restore the best checkpoint, calibrate, test: the Lightning part of a run.

    The order: architecture (E13), catalogs (E1-E5), ``save_dir`` claim, devices, then the model work.
    """
    _check_architecture(config.architecture_name)
    config = config.with_split_catalogs()
    save_dir = pathlib.Path(config.save_dir)
    last_checkpoint = save_dir / "checkpoints" / "last.ckpt"
    # one run per save_dir: resume it, replace it (overwrite) or refuse, before any expensive work
    resuming = claim_save_dir(save_dir, config, resume=config.resume, overwrite=config.overwrite,
                              resumable=last_checkpoint.is_file(), clear=_is_global_zero())
    accelerator, devices = _resolve_devices(config.gpus)
    precision = _precision(config.mixed_precision, accelerator)

    L.seed_everything(config.random_state, workers=True, verbose=False)
    datamodule = _datamodule(config)
    model = _model(config)
    if accelerator == "cpu" and _is_global_zero():  # GPU-sized settings on a CPU: say how long a batch will take
        _warn_if_gpu_sized(model, config)

    checkpoint_callback = _checkpoint_callback(config, save_dir / "checkpoints")
    trainer = _trainer(config, accelerator, devices, precision, checkpoint_callback,
                       resume_from=last_checkpoint if resuming else None)
    trainer.fit(model, datamodule=datamodule, ckpt_path=str(last_checkpoint) if resuming else None)
    model = _best_model(model, checkpoint_callback, last_checkpoint)
    is_main = _is_global_zero()
    _calibrate(model, datamodule, save_dir if is_main else None,
               [model.best_checkpoint_path, str(last_checkpoint)] if is_main else [])
    if config.test_catalog is not None:
        trainer.test(model, datamodule=datamodule, verbose=is_main)
    model = model.cpu().eval()
    # the input size is not a ZoobotTree hyperparameter; predict() reads it from here
    model.input_size = int(config.resize_after_crop)
    return model, trainer


def _check_architecture(name: str) -> None:
    """E13 for an architecture neither timm nor zoobot knows, before any catalog or model work."""
    import timm

    if name != "tiny_cnn" and not timm.is_model(name):
        raise unknown_option_error("model_architecture (architecture_name)", name,
                                   ["efficientnet", "tiny_cnn", *timm.list_models()])


def _resolve_devices(gpus: int) -> tuple[str, int]:
    """``(accelerator, devices)`` for Lightning: the GPUs asked for and available, else one CPU process.

    The tests replace this function to run DDP over CPU processes (``('cpu', 2)``).
    """
    n_gpus = resolve_device_count(gpus, torch.cuda.device_count() if torch.cuda.is_available() else 0, "pytorch")
    return ("gpu", n_gpus) if n_gpus > 0 else ("cpu", 1)


def _precision(mixed_precision: bool, accelerator: str) -> str:
    if not mixed_precision:
        return "32-true"
    if accelerator == "gpu":
        return "16-mixed"
    warnings.warn("mixed_precision=True is ignored: training runs on the CPU, where zoobot trains in float32.",
                  UserWarning, stacklevel=4)
    return "32-true"


def _datamodule(config: TrainConfig):
    from zoobot.pytorch.datasets import GalaxyDataModule

    return GalaxyDataModule(
        label_cols=list(config.schema.label_cols),
        train_catalog=config.train_catalog,
        val_catalog=config.val_catalog,
        test_catalog=config.test_catalog,
        greyscale=not config.color,
        crop_scale_bounds=config.crop_scale_bounds,
        crop_ratio_bounds=config.crop_ratio_bounds,
        resize_after_crop=config.resize_after_crop,
        batch_size=config.batch_size,
        num_workers=config.num_workers,
        prefetch_factor=config.prefetch_factor,
        seed=config.random_state,
        check_valid_paths=False,  # checked by TrainConfig.with_split_catalogs
    )


def _model(config: TrainConfig):
    from zoobot.pytorch.estimators.define_model import ZoobotTree

    model = ZoobotTree(
        output_dim=config.schema.n_answers,
        schema=config.schema,
        architecture_name=config.architecture_name,
        channels=3 if config.color else 1,
        test_time_dropout=True,
        compile_encoder=config.compile_encoder,
        timm_kwargs=train_timm_kwargs(config.architecture_name, config.timm_kwargs),
        dropout_rate=config.dropout_rate,
        learning_rate=config.learning_rate,
        betas=config.betas,
        weight_decay=config.weight_decay,
        scheduler_params=resolve_train_schedule(config.scheduler_params, config.epochs),
    )
    model.concentration_floor = DEFAULT_TRAIN_CONCENTRATION_FLOOR
    model.fraction_loss_weight = DEFAULT_TRAIN_FRACTION_LOSS_WEIGHT
    return model


def _warn_if_gpu_sized(model, config: TrainConfig) -> None:
    from zoobot.pytorch.estimators.define_model import time_encoder_pass
    from zoobot.shared.cpu_speed import warn_if_gpu_sized

    channels, size = 3 if config.color else 1, config.resize_after_crop
    warn_if_gpu_sized(lambda n: time_encoder_pass(model.encoder, n, channels, size),
                      architecture_name=config.architecture_name, image_size=size, batch_size=config.batch_size,
                      n_train=len(config.train_catalog), epochs=config.epochs, stacklevel=4)


def _checkpoint_callback(config: TrainConfig, checkpoint_dir: pathlib.Path):
    return L.pytorch.callbacks.ModelCheckpoint(
        dirpath=checkpoint_dir,
        filename=config.checkpoint_file_template or "{epoch}",
        monitor=MONITOR,
        mode="min",
        save_top_k=config.save_top_k,
        save_last=True,
        auto_insert_metric_name=config.auto_insert_metric_name,
        enable_version_counter=False,  # one run per save_dir: never a last-v1.ckpt
    )


def _trainer(config: TrainConfig, accelerator: str, devices: int, precision: str, checkpoint_callback,
             resume_from: pathlib.Path | None):
    """The Lightning Trainer: our callbacks, then the user's, a CSV logger unless a wandb logger is given."""
    save_dir = pathlib.Path(config.save_dir)
    callbacks = [
        RecordRun(save_dir, config, (config.train_catalog, config.val_catalog, config.test_catalog)),
        NoteEpoch(),
        checkpoint_callback,
        L.pytorch.callbacks.EarlyStopping(monitor=MONITOR, mode="min", patience=config.patience, check_finite=True),
        NonFiniteLossGuard(MONITOR),
        SeedEachEpoch(config.random_state),
        *(config.extra_callbacks or []),
        LearningRateLogger(),
    ]
    logger = config.wandb_logger if config.wandb_logger is not None else _csv_logger(save_dir, resume_from)
    distributed = devices > 1 or config.nodes > 1
    return L.Trainer(
        default_root_dir=save_dir,
        max_epochs=config.epochs,
        accelerator=accelerator,
        devices=devices,
        num_nodes=config.nodes,
        strategy="ddp" if distributed else "auto",
        sync_batchnorm=bool(config.sync_batchnorm) and distributed,
        precision=precision,
        logger=logger,
        gradient_clip_val=GRADIENT_CLIP_VAL,
        log_every_n_steps=1,  # metrics are logged per epoch; a larger interval only warns about short epochs
        # per-epoch lines in a log file, a model summary without FLOPs
        **console_trainer_kwargs({"callbacks": callbacks, "enable_progress_bar": True}),
    )


def _best_model(model, checkpoint_callback, last_checkpoint: pathlib.Path):
    """``model`` with the weights of the best checkpoint (``last.ckpt`` if no validation result was ever
    recorded, e.g. zero validation batches)."""
    best_path = checkpoint_callback.best_model_path
    if not best_path or not os.path.isfile(best_path):
        best_path = str(last_checkpoint)
    return _load_weights(model, best_path)


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
