"""The finetuning ``Trainer`` of the TensorFlow backend: Lightning's interface on top of ``keras.Model.fit``.

PyTorch's ``finetune.get_trainer`` returns a Lightning ``Trainer``; its TensorFlow twin returns this
:class:`Trainer`, with the same methods and attributes the seeds use::

    trainer = finetune.get_trainer(save_dir, accelerator='cpu', max_epochs=100)
    trainer.fit(model, datamodule)          # compiles the model with its finetuning rules
    trainer.checkpoint_callback.best_model_path
    trainer.test(model, datamodule)         # [{'finetuning/test_loss': ..., 'finetuning/test_acc': ...}]
    trainer.predict(model, datamodule)      # one array per batch, as Lightning

A fit is assembled from the callbacks of :mod:`zoobot.tensorflow.training.callbacks` (checkpoints, metrics
file, early stopping, non-finite-loss guard, feature replay), as ``train_with_keras.train`` is. Metric names
are those of the PyTorch backend: ``finetuning/{train,val,test}_loss``, ``finetuning/{train,val,test}_{acc,rmse}``,
``lr``.
"""
from __future__ import annotations

import contextlib
import logging
import os
import pathlib
import re
import shutil
import sys
import weakref

import keras
import numpy as np
import pandas as pd
import tensorflow as tf

from zoobot.shared import interrupts
from zoobot.shared.errors import unknown_option_error
from zoobot.shared.validation import check_choice, check_int, check_number, is_int
from zoobot.tensorflow.distributed import (check_workers_agree, is_chief, multi_worker_strategy, shard_by_data,
                                           temporary_worker_dir)
from zoobot.tensorflow.training.callbacks import (
    LABEL_ERROR_MARKER,
    NONFINITE_LOSS_MARKER,
    TRAINER_STATE_ENTRY,  # noqa: F401  (re-exported: read_trainer_state's entry)
    CSVLogger,
    EarlyStopping,
    FeatureReplayCallback,
    ModelCheckpoint,
    NonFiniteLossGuard,
    log_to,
    optimizer_step,
    read_trainer_state,  # also re-exported: zoobot.tensorflow.training.trainer.read_trainer_state
    seed_generator_states,
    skip_epochs,
    to_number,
)
from zoobot.tensorflow.training.console import fit_verbosity

__all__ = ["Trainer", "ModelCheckpoint", "EarlyStopping", "CSVLogger"]

logger = logging.getLogger(__name__)

def is_datamodule(data) -> bool:
    """True for a data module (``setup``, ``train_dataloader``, ``predict_dataloader``), not a dataset."""
    return (not isinstance(data, tf.data.Dataset) and hasattr(data, "setup")
            and hasattr(data, "train_dataloader") and hasattr(data, "predict_dataloader"))


#: Keras's own names for the finetuning metrics. They are added to each epoch's logs after zoobot has
#: recorded its names (``finetuning/...``, as in PyTorch), so that Keras callbacks work unchanged:
#: ``keras.callbacks.EarlyStopping(monitor='val_loss')``, ``keras.callbacks.CSVLogger``, ...
KERAS_ALIASES = {
    "loss": "finetuning/train_loss", "val_loss": "finetuning/val_loss",
    "accuracy": "finetuning/train_acc", "val_accuracy": "finetuning/val_acc",
    "root_mean_squared_error": "finetuning/train_rmse", "val_root_mean_squared_error": "finetuning/val_rmse",
}


def add_keras_aliases(logs: dict) -> dict:
    """Add :data:`KERAS_ALIASES` to ``logs`` (in place) for every zoobot name present.

    Examples
    --------
    >>> add_keras_aliases({'finetuning/val_loss': 0.5, 'finetuning/val_acc': 0.8})
    {'finetuning/val_loss': 0.5, 'finetuning/val_acc': 0.8, 'val_loss': 0.5, 'val_accuracy': 0.8}
    """
    for alias, name in KERAS_ALIASES.items():
        if name in logs:
            logs[alias] = logs[name]
    return logs


class _EpochCallback(keras.callbacks.Callback):
    """First callback of every fit: learning-rate schedule, metric names, feature cache, logging."""

    def __init__(self, trainer: "Trainer", finetune_model):
        super().__init__()
        self.trainer = trainer
        self.finetune_model = finetune_model

    def on_epoch_begin(self, epoch, logs=None):
        model = self.finetune_model
        self.trainer.current_epoch = epoch
        interrupts.note_epoch(epoch, self.trainer.max_epochs)  # for the message of an interrupted run
        model.optimizer.learning_rate.assign(model.learning_rate * model.lr_multiplier(epoch))
        _reseed_random_layers(model, int(getattr(model, "seed", 0)), epoch)
        if model.feature_cache is not None:
            for stage in model.feature_cache.STAGES:
                model.feature_cache.reset_stats(stage)

    def on_epoch_end(self, epoch, logs=None):
        if logs is None:
            return
        model = self.finetune_model
        for key in [k for k in logs if k.startswith("val_finetuning/")]:
            logs[key[len("val_"):]] = logs.pop(key)
        for key in [k for k in logs if k in KERAS_ALIASES]:  # Keras's own names come back below
            logs.pop(key)
        logs["lr"] = float(np.asarray(model.optimizer.learning_rate))
        self._check_cache(epoch)
        step = optimizer_step(model)
        self.trainer.global_step = step
        self.trainer._record(logs, epoch=epoch, step=step)
        add_keras_aliases(logs)

    def _check_cache(self, epoch):
        import warnings

        from zoobot.tensorflow.training.feature_cache import MIN_HIT_RATE

        model = self.finetune_model
        cache = model.feature_cache
        if cache is None or self.trainer.feature_replay is not None:  # replaying: the cache is not used
            return
        cache.history.append({"epoch": epoch, **{stage: cache.stats(stage) for stage in cache.STAGES}})
        if not cache.enabled("train"):
            return
        rate = cache.hit_rate("train")
        if epoch >= 1 and rate is not None and rate < MIN_HIT_RATE:
            cache.disable("train")
            message = (
                f"cache_features: only {rate:.0%} of the training images in epoch {epoch} were seen before "
                "(random augmentations change them every epoch), so cached features cannot be reused; caching "
                "of training images is off for the rest of this fit. For fast frozen-encoder finetuning use a "
                "deterministic training transform."
            )
            if model.cache_features is True:
                warnings.warn(message, UserWarning, stacklevel=2)
            else:
                logger.info(message)


def _reseed_random_layers(model, seed: int, epoch: int) -> None:
    """Dropout masks as a function of ``(seed, epoch)``, as PyTorch's finetuning reseeds each epoch, so that a
    resumed fit draws the masks of an uninterrupted one (``.keras`` files do not save Keras's seed states)."""
    for index, state in enumerate(seed_generator_states(model)):
        value = (seed * 1_000_003 + epoch * 7_919 + index) % (2 ** 31)
        state.assign(np.array([value, 0], dtype=state.dtype))


class _PredictionCollector(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.outputs = []

    def on_predict_batch_end(self, batch, logs=None):
        self.outputs.append(np.asarray((logs or {})["outputs"]))


# =============================================================================================
# 3. the Trainer
# =============================================================================================

_ACCELERATORS = ("auto", "cpu", "gpu", "cuda")
_STRATEGIES = ("auto", "ddp", "multi_worker_mirrored")


class Trainer:
    """Fit, validate, test and predict with the finetuning models (Lightning's ``Trainer`` interface).

    Usually made by :func:`zoobot.tensorflow.training.finetune.get_trainer`.

    Parameters
    ----------
    default_root_dir : str or path-like, optional
        Where relative outputs go (the save_dir).
    max_epochs : int, default 100
    devices : 'auto', int, str or list, default 'auto'
        One device; more -> NotImplementedError.
    accelerator : {'auto', 'cpu', 'gpu', 'cuda'}, default 'auto'
        'cpu' hides the GPUs; 'gpu' requires one.
    logger : CSVLogger, logger object, False or None
        Anything with ``log_metrics(metrics, step)`` (or a wandb run, ``log(metrics, step=)``);
        False/None: no logging.
    callbacks : list, optional
        :class:`ModelCheckpoint`, :class:`EarlyStopping` and any Keras callbacks.
    enable_progress_bar : bool, default True
        Keras progress output (one line per epoch when the output is not a terminal).
    gradient_clip_val : float, optional
        Clip the global gradient norm.
    enable_checkpointing : bool, default True
        Recorded for Lightning compatibility (``get_trainer`` adds no ModelCheckpoint when False).
    limit_train_batches, limit_val_batches : int, optional
        Use only the first batches of each epoch (quick runs).
    log_every_n_steps : int, optional
        Accepted for Lightning compatibility; metrics are logged once per epoch.
    overwrite : bool, default False
        One run per ``default_root_dir``: the first ``fit`` into a folder holding another run's checkpoints
        deletes that run with ``overwrite=True``, continues it with ``ckpt_path``, and is refused otherwise
        (:class:`~zoobot.shared.run_dir.SaveDirInUseError`).
    num_nodes : int, default 1
        Workers (Lightning's name). More than 1: ``fit`` runs under ``tf.distribute.MultiWorkerMirroredStrategy``
        over the ``TF_CONFIG``/SLURM cluster (made here: before any other TensorFlow work in the process); build
        the model inside ``trainer.strategy.scope()``. The chief writes ``default_root_dir``; on the other workers
        ``default_root_dir`` becomes a temporary folder, removed when the trainer goes (put the files of your
        own callbacks under it). See docs/guides/scaling_out.md.
    strategy : {'auto', 'ddp', 'multi_worker_mirrored'}, default 'auto'
        Lightning's argument: all three mean synchronous data parallelism (the strategy above with
        ``num_nodes > 1``).

    Attributes
    ----------
    checkpoint_callback : ModelCheckpoint or None
    early_stopping_callback : EarlyStopping or None
    callback_metrics : dict
        The latest value of every logged metric.
    history : keras.callbacks.History or None
        Per-epoch metrics of the last ``fit`` (``history.history``).
    current_epoch, global_step : int
    test_metrics : dict or None
        Set by ``train_with_keras.train``: the test metrics of the best model.
    strategy : tf.distribute.Strategy or None
        The ``MultiWorkerMirroredStrategy`` of ``num_nodes > 1``; set by ``train_with_keras.train``: the strategy
        it trained under.
    is_chief : bool
        Whether this process writes the shared ``save_dir`` (always on one machine).
    shared_root_dir : pathlib.Path or None
        The ``default_root_dir`` given: the folder every worker reads (resumes, refusals).

    Raises
    ------
    RuntimeError
        ``num_nodes > 1`` without a ``TF_CONFIG``/SLURM cluster of that size, or after TensorFlow already ran
        something in this process.
    """

    def __init__(self, default_root_dir=None, max_epochs: int = 100, devices="auto", accelerator="auto",
                 logger=None, callbacks=None, enable_progress_bar: bool = True, gradient_clip_val=None,
                 enable_checkpointing: bool = True, limit_train_batches=None, limit_val_batches=None,
                 log_every_n_steps=None, overwrite: bool = False, num_nodes: int = 1, strategy="auto"):
        check_int("max_epochs", max_epochs, minimum=1)
        check_int("num_nodes", num_nodes, minimum=1)
        check_choice("strategy (TensorFlow)", "auto" if strategy is None else strategy, _STRATEGIES)
        for what, value in (("limit_train_batches", limit_train_batches), ("limit_val_batches", limit_val_batches)):
            check_int(what, value, minimum=1, allow_none=True)
        check_number("gradient_clip_val", gradient_clip_val, minimum=0, exclusive_minimum=True, allow_none=True)
        self.default_root_dir = None if default_root_dir is None else pathlib.Path(default_root_dir)
        self.max_epochs = int(max_epochs)
        self.logger = logger or None
        self.callbacks = list(callbacks or [])
        self.enable_progress_bar = bool(enable_progress_bar)
        self.gradient_clip_val = gradient_clip_val
        self.enable_checkpointing = bool(enable_checkpointing)
        self.limit_train_batches = limit_train_batches
        self.limit_val_batches = limit_val_batches
        self.log_every_n_steps = log_every_n_steps
        self.accelerator = str(accelerator).lower()
        self._device = self._select_device(self.accelerator, devices)
        self.devices = devices
        self.callback_metrics: dict = {}
        self.logged_metrics: dict = {}
        self.history = None
        #: The FeatureReplay of the last fit when it took the fast path, else None (its features are freed after fit).
        self.feature_replay = None
        self.current_epoch = 0
        self.global_step = 0
        self.model = None
        self.overwrite = bool(overwrite)
        self._claimed = False
        self.loss_guard = None
        self.test_metrics = None
        self.strategy = None
        self.is_chief = True
        self.num_nodes = int(num_nodes)
        self.shared_root_dir = self.default_root_dir
        if self.num_nodes > 1:
            self._join_cluster()

    def _join_cluster(self) -> None:
        """The multi-worker strategy; on a non-chief worker, a temporary folder to write to (removed with the
        trainer, or when the process ends)."""
        self.strategy = multi_worker_strategy(self.num_nodes)
        self.is_chief = is_chief(self.strategy)
        if not self.is_chief and self.default_root_dir is not None:
            scratch = temporary_worker_dir(self.strategy)
            weakref.finalize(self, shutil.rmtree, scratch, True)
            self.default_root_dir = pathlib.Path(scratch)

    @property
    def multi_worker(self) -> bool:
        """True when ``fit`` runs across several workers (``num_nodes > 1``)."""
        return self.num_nodes > 1 and self.strategy is not None

    def _strategy_scope(self):
        return self.strategy.scope() if self.multi_worker else contextlib.nullcontext()

    # ------------------------------------------------------------------------- set-up
    @staticmethod
    def _select_device(accelerator: str, devices):
        if accelerator not in _ACCELERATORS:
            raise unknown_option_error("accelerator (TensorFlow)", accelerator, _ACCELERATORS)
        gpus = tf.config.list_physical_devices("GPU")
        count = _device_count(devices, available=len(gpus) if accelerator != "cpu" else 1)
        if count > 1:
            raise NotImplementedError(
                f"devices={devices!r}: finetuning on more than one device is not implemented for TensorFlow. "
                "Use devices=1 (or 'auto'), or the PyTorch backend (zoobot.pytorch.training.finetune) for DDP."
            )
        if accelerator == "cpu":
            if not gpus:
                return None
            try:
                tf.config.set_visible_devices([], "GPU")
                return None
            except RuntimeError:  # TensorFlow already started on the GPUs: place the work on the CPU instead
                return "/CPU:0"
        if accelerator in ("gpu", "cuda") and not tf.config.list_logical_devices("GPU"):
            raise RuntimeError(
                f"accelerator={accelerator!r} but TensorFlow sees no GPU. Install a GPU build "
                '(pip install "zoobot[tensorflow-gpu]") or use accelerator="cpu" / "auto".'
            )
        return None

    def _device_scope(self):
        return tf.device(self._device) if self._device else contextlib.nullcontext()

    @property
    def checkpoint_callback(self):
        """The first :class:`ModelCheckpoint` (None if there is none)."""
        return next((c for c in self.callbacks if isinstance(c, ModelCheckpoint)), None)

    @property
    def early_stopping_callback(self):
        """The first :class:`EarlyStopping` (None if there is none)."""
        return next((c for c in self.callbacks if isinstance(c, EarlyStopping)), None)

    @property
    def log_dir(self):
        return getattr(self.logger, "log_dir", None)

    @property
    def save_dir(self):
        """``default_root_dir``: where the run's checkpoints and logs go."""
        return self.default_root_dir

    @property
    def metrics_path(self):
        """The metrics file of a :class:`CSVLogger` logger (``save_dir/logs/metrics.csv``), else None."""
        return getattr(self.logger, "metrics_file", None)

    def _verbose(self, model) -> int:
        if not (self.enable_progress_bar and getattr(model, "prog_bar", True)):
            return 0
        return 1 if getattr(sys.stdout, "isatty", lambda: False)() else 2

    def _record(self, metrics: dict, epoch: int, step: int) -> None:
        values = {k: to_number(v) for k, v in metrics.items()}
        self.callback_metrics.update(values)
        self.logged_metrics = dict(values)
        self._log({"epoch": epoch, **values}, step)

    def _log(self, metrics: dict, step: int) -> None:
        if self.logger is not None:
            log_to(self.logger, metrics, step=step)

    # ------------------------------------------------------------------------- data
    def _fit_data(self, train_dataloaders, val_dataloaders, datamodule):
        if datamodule is None and is_datamodule(train_dataloaders):
            datamodule, train_dataloaders = train_dataloaders, None
        if datamodule is not None:
            if train_dataloaders is not None or val_dataloaders is not None:
                raise ValueError("Pass either a datamodule or datasets to fit, not both.")
            datamodule.setup("fit")
            return datamodule.train_dataloader(), datamodule.val_dataloader(), datamodule
        if isinstance(train_dataloaders, (tuple, list)):
            if len(train_dataloaders) != 2 or val_dataloaders is not None:
                raise ValueError("fit takes a (train_dataset, val_dataset) pair, or train and val datasets; "
                                 f"got a sequence of {len(train_dataloaders)}.")
            train_dataloaders, val_dataloaders = train_dataloaders
        return train_dataloaders, val_dataloaders, None

    def _eval_data(self, dataloaders, datamodule, split: str):
        if datamodule is None and is_datamodule(dataloaders):
            datamodule, dataloaders = dataloaders, None
        if datamodule is not None:
            stage = {"val": "validate", "test": "test", "predict": "predict"}[split]
            datamodule.setup(stage)
            return getattr(datamodule, f"{split}_dataloader")(), datamodule
        if isinstance(dataloaders, (tuple, list)):
            if len(dataloaders) != 1:
                raise NotImplementedError("One evaluation dataset at a time, please.")
            dataloaders = dataloaders[0]
        if dataloaders is None:
            raise ValueError(f"Give a dataset or a datamodule to {'predict' if split == 'predict' else split}.")
        return dataloaders, None

    @staticmethod
    def _check_dataset(dataset, what: str):
        if not isinstance(dataset, tf.data.Dataset):
            hint = (" (a PyTorch DataLoader? use zoobot.tensorflow.datasets.GalaxyDataModule)"
                    if hasattr(dataset, "dataset") and hasattr(dataset, "batch_size") else "")
            raise TypeError(f"{what} must be a tf.data.Dataset of (images, labels) batches, got "
                            f"{type(dataset).__name__}{hint}")
        return dataset

    @staticmethod
    def _check_catalogs(model, datamodule, splits) -> None:
        """Labels of the data module's catalogs, checked before any image is read (E14 and friends)."""
        label_cols = list(getattr(datamodule, "label_cols", None) or [])
        if not label_cols:
            raise ValueError("The data module has no label_cols: finetuning needs labels "
                             "(GalaxyDataModule(label_cols=[...], ...)).")
        model.check_label_cols(label_cols)
        for split in splits:
            catalog = getattr(datamodule, f"{split}_catalog", None)
            if isinstance(catalog, pd.DataFrame) and len(catalog):
                model.check_catalog_labels(catalog, label_cols, f"{split}_catalog")

    @staticmethod
    def _check_first_batch(model, dataset, what: str) -> None:
        from zoobot.tensorflow.estimators.define_model import check_images

        element = next(iter(dataset.take(1)), None)
        if element is None:
            raise ValueError(f"The {what} dataset is empty.")
        x, y = model._unpack(element)
        check_images(x, model.channels, where=f"the first {what} batch")
        model.check_labels(np.asarray(y), where=f"the first {what} batch")

    def _ensure_compiled(self, model) -> None:
        if not getattr(model, "compiled", False) or model.optimizer is None:
            with self._strategy_scope():
                model.compile(gradient_clip_val=self.gradient_clip_val)

    def _check_built_in_scope(self, model) -> None:
        """Across workers every variable must be mirrored: the model must be built inside the strategy's scope."""
        if not self.multi_worker:
            return
        outside = [v.path for v in model.variables
                   if not isinstance(getattr(v, "value", v), tf.distribute.DistributedValues)]
        if model.distribute_strategy is not self.strategy or outside:
            raise RuntimeError(
                f"num_nodes={self.num_nodes}: the model was built outside the trainer's strategy"
                + (f" (e.g. {outside[0]})" if outside else "") + ". Build it (and any encoder you pass it) inside "
                "`with trainer.strategy.scope():`, after get_trainer(..., num_nodes=...) (docs/guides/scaling_out.md)."
            )

    @staticmethod
    def _check_model(model):
        """The finetuning models of zoobot.tensorflow.training.finetune (recognised by what the Trainer calls)."""
        if not all(hasattr(model, name) for name in ("check_label_cols", "check_labels", "feature_cache",
                                                      "use_replayed_features", "lr_multiplier")):
            raise TypeError(
                f"Trainer works with the finetuning models of zoobot.tensorflow.training.finetune, got "
                f"{type(model).__name__}" + (" (a PyTorch model? use zoobot.pytorch.training.finetune.get_trainer)"
                                             if hasattr(model, "parameters") else "")
            )
        return model

    # ------------------------------------------------------------------------- errors from graphs
    def _translate_errors(self, model, during: str):
        return _GraphErrors(self, model, during)

    # ------------------------------------------------------------------------- fit
    def fit(self, model, train_dataloaders=None, val_dataloaders=None, datamodule=None, ckpt_path=None):
        """Finetune ``model``: compile it with its finetuning rules, then train with validation each epoch.

        Parameters
        ----------
        model : FinetuneableZoobotAbstract
        train_dataloaders : GalaxyDataModule, (train_ds, val_ds) tuple, or tf.data.Dataset
            As in the seeds, ``trainer.fit(model, datamodule)`` works positionally.
        val_dataloaders : tf.data.Dataset, optional
        datamodule : GalaxyDataModule, optional
        ckpt_path : str or path-like, optional
            Resume the run saved in this ``last.keras`` ('last': that of this trainer's checkpoints): weights, optimizer state, the
            epoch, early stopping and the best checkpoints continue where it stopped, and the epochs to come
            see the batches, augmentations and dropout masks of an uninterrupted run.

        Raises
        ------
        ValueError
            No validation data; (E14) bad labels; label columns that do not fit the task.
        ChannelMismatchError, PixelScaleError
            (E7, E8) on the first training batch.
        FloatingPointError
            The training loss became NaN or infinite (naming the epoch and step).
        """
        self._check_model(model)
        self._check_built_in_scope(model)
        if ckpt_path is not None:
            ckpt_path = self._resume_path(ckpt_path)
        resume = None if ckpt_path is None else read_trainer_state(ckpt_path)
        self._claim_save_dir(ckpt_path)
        train_ds, val_ds, dm = self._checked_fit_data(model, train_dataloaders, val_dataloaders, datamodule)
        self._prepare_model(model, train_ds, val_ds, dm)
        verbose, progress_callbacks = fit_verbosity(self._verbose(model) > 0, self.max_epochs, hide=KERAS_ALIASES)
        callbacks = self._fit_callbacks(model) + progress_callbacks
        initial_epoch = 0 if resume is None else self._restore(model, ckpt_path, resume)
        cache = None if self.multi_worker else model.feature_cache  # each worker sees other images: no cache
        replay = None if cache is None else FeatureReplayCallback.plan(model, dm, progress_bar=self._verbose(model) > 0)
        self.feature_replay = None if replay is None else replay.replay
        if replay is not None:  # the fast path: head-only steps on features, encoded at the start of epoch 1
            train_ds, val_ds = self._limit(*replay.datasets())
            callbacks.append(replay)  # last: every other callback's on_epoch_begin(0) sees the encoding in epoch 1
        elif cache is not None:
            cache.start()
            if model.cache_features is None and _augments_training_images(dm):
                cache.disable("train")  # known random augmentations: nothing to reuse (validation is still cached)
        # one dataset iteration per epoch, whatever Keras does between epochs, after skipping those of the epochs
        # a resumed fit has done: each epoch sees the shuffle and augmentations of an uninterrupted run
        steps_per_epoch = int(train_ds.cardinality()) if replay is None else -1  # replayed features: read as before
        if steps_per_epoch > 0:
            skip_epochs(train_ds, initial_epoch)
            train_ds = train_ds.repeat()
        else:
            steps_per_epoch = None
        try:
            with self._device_scope(), self._translate_errors(model, "training"):
                self.history = model.fit(train_ds, validation_data=val_ds, epochs=self.max_epochs,
                                         initial_epoch=initial_epoch, steps_per_epoch=steps_per_epoch,
                                         callbacks=callbacks, verbose=verbose, shuffle=False)
        finally:
            if replay is not None:
                replay.close()  # validate/test/predict read images again
            elif cache is not None:
                cache.stop()

    def _checked_fit_data(self, model, train_dataloaders, val_dataloaders, datamodule):
        """``(train_ds, val_ds, datamodule or None)``, checked (labels E14, channels E7, pixels E8) and limited."""
        train_ds, val_ds, dm = self._fit_data(train_dataloaders, val_dataloaders, datamodule)
        if getattr(dm, "label_cols", None):  # names the prediction columns (ring_pred_mean, not class_1_pred_mean)
            model.hparams["label_cols"] = [str(c) for c in dm.label_cols]
        if train_ds is None or val_ds is None:
            raise ValueError("fit needs training and validation data: the best checkpoint and early stopping watch "
                             "finetuning/val_loss. Pass a GalaxyDataModule or (train_dataset, val_dataset).")
        self._check_dataset(train_ds, "the training data")
        self._check_dataset(val_ds, "the validation data")
        if dm is not None:
            self._check_catalogs(model, dm, ("train", "val"))
        self._check_first_batch(model, train_ds, "training")
        train_ds, val_ds = self._limit(train_ds, val_ds)
        if self.multi_worker:  # each worker takes its share of every global batch
            train_ds, val_ds = shard_by_data(train_ds), shard_by_data(val_ds)
        return train_ds, val_ds, dm

    def _prepare_model(self, model, train_ds, val_ds, datamodule) -> None:
        """Compile ``model`` with its finetuning rules; log hyperparameters, the sanity check, sample images."""
        from zoobot.shared.preprocessing import carry_record, record_of_fit

        record = record_of_fit(datamodule)
        if record is not None:  # saved with every checkpoint; predict uses it by default
            carry_record(model, record)
        self.model = model
        with self._strategy_scope():  # the optimizer's variables are mirrored too
            model.compile(gradient_clip_val=self.gradient_clip_val)
        model.eval_split = "val"
        model.test_function = None
        if self.logger is not None and hasattr(self.logger, "log_hyperparams"):
            self.logger.log_hyperparams(dict(model.hparams))
        if getattr(model, "run_linear_sanity_check", False):
            accuracy = model.linear_sanity_check(train_ds, val_ds)
            self._log({"finetuning/linear_sanity_check_val_acc": accuracy}, step=0)
        if getattr(model, "visualize_images", False) and hasattr(self.logger, "log_image"):
            images = model._unpack(next(iter(train_ds.take(1))))[0]
            self.logger.log_image(key="finetuning/train_images", images=list(np.asarray(images[:8])))

    def _fit_callbacks(self, model) -> list:
        """Ours first (epoch bookkeeping, the loss guard), then the user's, then the checkpoints (as Lightning
        orders them: ``last.keras`` holds the other callbacks' state of its epoch)."""
        checkpoints = [c for c in self.callbacks if isinstance(c, ModelCheckpoint)]
        frozen = "encoder" if getattr(model, "encoder_is_frozen", False) else None
        for callback in checkpoints:
            callback.load_state_dict({})
            callback.state_source = self._state_of_epoch
            callback.frozen_part = frozen  # its weights cannot change: each save after the first copies them
        self.loss_guard = NonFiniteLossGuard(val_key=None)
        return [_EpochCallback(self, model), self.loss_guard, *[c for c in self.callbacks if c not in checkpoints],
                *checkpoints]

    def _state_of_epoch(self, epoch: int) -> dict:
        """The trainer state saved in ``last.keras`` after ``epoch`` (see :func:`read_trainer_state`)."""
        stopping = self.early_stopping_callback
        return {"epoch": int(epoch), "global_step": int(self.global_step),
                "checkpoint": self.checkpoint_callback.state_dict() if self.checkpoint_callback else None,
                "early_stopping": stopping.state_dict() if stopping else None}

    def _resume_path(self, ckpt_path) -> str:
        """``ckpt_path`` as a file: 'last' is the checkpoint callback's ``last.keras``."""
        if ckpt_path == "last" and self.checkpoint_callback is not None:
            ckpt_path = self._shared_path(self.checkpoint_callback.dirpath / "last.keras")
        path = os.fspath(ckpt_path)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"No checkpoint file at {path} to resume finetuning from.")
        return path

    def _restore(self, model, ckpt_path, state: dict) -> int:
        """Load weights and optimizer state from ``ckpt_path`` and the callbacks' state; returns the next epoch."""
        model.load_weights(os.fspath(ckpt_path))  # the compiled model's optimizer is built: its state loads too
        if self.checkpoint_callback is not None and state.get("checkpoint"):
            self.checkpoint_callback.load_state_dict(self._own_copies(state["checkpoint"]))
        if self.early_stopping_callback is not None and state.get("early_stopping"):
            self.early_stopping_callback.load_state_dict(state["early_stopping"])
        epoch = int(state["epoch"])
        if hasattr(self.logger, "resume"):
            self.logger.resume(epoch)
        self.current_epoch, self.global_step = epoch + 1, int(state.get("global_step", 0))
        logger.info("Resuming finetuning from %s after epoch %d", ckpt_path, epoch)
        if self.multi_worker:
            check_workers_agree(self.strategy, epoch + 1, "the epoch to resume from (ckpt_path)")
        return epoch + 1

    def _shared_path(self, path) -> pathlib.Path:
        """Where ``path`` (under this worker's ``default_root_dir``) is in the shared folder (the chief's file)."""
        path = pathlib.Path(path)
        if self.is_chief or self.shared_root_dir is None or not path.is_relative_to(self.default_root_dir):
            return path
        return self.shared_root_dir / path.relative_to(self.default_root_dir)

    def _own_copies(self, checkpoint_state: dict) -> dict:
        """A non-chief worker resuming: its copies of the chief's best checkpoints (read from the shared folder,
        written to its own), so that it keeps, prunes and loads the same files as the chief without touching them."""
        if self.is_chief or self.shared_root_dir is None:
            return checkpoint_state
        own = {}
        for path, score in checkpoint_state.get("best_k_models", {}).items():
            path = pathlib.Path(path)
            if path.is_relative_to(self.shared_root_dir):
                copy = self.default_root_dir / path.relative_to(self.shared_root_dir)
                copy.parent.mkdir(parents=True, exist_ok=True)
                if path.is_file():
                    shutil.copy2(path, copy)
                path = copy
            own[str(path)] = score
        return {**checkpoint_state, "best_k_models": own}

    def _claim_save_dir(self, ckpt_path) -> None:
        """One run per save_dir: the first fit may not write next to another run's checkpoints."""
        if self._claimed or self.default_root_dir is None:
            return
        from zoobot.shared.run_dir import claim_save_dir_for_fit

        # every worker checks the shared folder (so all refuse alike); only the chief deletes an overwritten run
        claim_save_dir_for_fit(self.shared_root_dir, resuming=ckpt_path is not None, overwrite=self.overwrite,
                               last="last.keras", clear=self.is_chief)
        self._claimed = True

    def _limit(self, train_ds, val_ds):
        if self.limit_train_batches:
            train_ds = train_ds.take(self.limit_train_batches)
        if self.limit_val_batches:
            val_ds = val_ds.take(self.limit_val_batches)
        return train_ds, val_ds

    # ------------------------------------------------------------------------- evaluate
    def _evaluate(self, split: str, model, dataloaders, ckpt_path, verbose, datamodule) -> list[dict]:
        model = self._check_model(model if model is not None else self.model)
        dataset, dm = self._eval_data(dataloaders, datamodule, split)
        self._check_dataset(dataset, f"the {split} data")
        if dm is not None:
            self._check_catalogs(model, dm, (split,))
        self._check_first_batch(model, dataset, split)
        if split == "val" and self.limit_val_batches:
            dataset = dataset.take(self.limit_val_batches)
        if self.multi_worker:
            dataset = shard_by_data(dataset)
        self._load_ckpt(model, ckpt_path)
        self._ensure_compiled(model)
        model.eval_split = split
        model.test_function = None
        try:
            with self._device_scope(), self._translate_errors(model, "evaluation"):
                logs = model.evaluate(dataset, return_dict=True, verbose=0)
        finally:
            model.eval_split = "val"
            model.test_function = None
        values = {k: to_number(v) for k, v in logs.items()}
        self.callback_metrics.update(values)
        self._log({"epoch": self.current_epoch, **values}, self.global_step)
        if verbose:
            for key, value in values.items():
                print(f"{key}: {value:.6g}")
        return [values]

    def validate(self, model=None, dataloaders=None, ckpt_path=None, verbose: bool = True, datamodule=None):
        """Evaluate on validation data (a data module's val split); returns ``[{metric: value}]``.

        ``ckpt_path``: None (current weights), 'best', 'last' or a ``.keras`` path.
        """
        return self._evaluate("val", model, dataloaders, ckpt_path, verbose, datamodule)

    def test(self, model=None, dataloaders=None, ckpt_path=None, verbose: bool = True, datamodule=None):
        """Evaluate on test data (a data module's test split); returns ``[{'finetuning/test_loss': ..., ...}]``.

        ``ckpt_path``: None (current weights), 'best', 'last' or a ``.keras`` path.
        """
        return self._evaluate("test", model, dataloaders, ckpt_path, verbose, datamodule)

    def predict(self, model=None, dataloaders=None, datamodule=None, return_predictions=None, ckpt_path=None):
        """Predictions per batch (as Lightning): a list of arrays; ``np.concatenate`` them for one array.

        Parameters
        ----------
        model : FinetuneableZoobotAbstract, optional
            Default: the model of the last ``fit``.
        dataloaders : GalaxyDataModule or tf.data.Dataset
            A data module's predict set (``predict_catalog``), or batches of images /
            ``(images, id_str)``.
        datamodule : GalaxyDataModule, optional
        return_predictions : bool, optional
            False: return None.
        ckpt_path : str, optional
            None (current weights), 'best', 'last' or a ``.keras`` path.

        Returns
        -------
        list of ndarray
            Classifier: softmax probabilities (B, num_classes) per batch; regressor (B, 1); tree:
            concentrations (B, n_answers).
        """
        model = self._check_model(model if model is not None else self.model)
        dataset, _ = self._eval_data(dataloaders, datamodule, "predict")
        self._load_ckpt(model, ckpt_path)
        collector = _PredictionCollector()
        with self._device_scope():
            model.predict(dataset, verbose=0, callbacks=[collector])
        return None if return_predictions is False else collector.outputs

    def _load_ckpt(self, model, ckpt_path) -> None:
        if ckpt_path is None:
            return
        if ckpt_path in ("best", "last"):
            callback = self.checkpoint_callback
            path = getattr(callback, "best_model_path" if ckpt_path == "best" else "last_model_path", "") \
                if callback else ""
            if not path:
                raise ValueError(f"ckpt_path={ckpt_path!r} but no such checkpoint was saved (fit first, with a "
                                 "ModelCheckpoint).")
        else:
            path = os.fspath(ckpt_path)
            if not os.path.isfile(path):
                raise FileNotFoundError(f"No checkpoint file at {path}")
        model.load_weights(path)


def _augments_training_images(datamodule) -> bool:
    """True if the data module trains through the random default TrainTransform."""
    if datamodule is None:
        return False
    from zoobot.tensorflow.datasets.transforms import TrainTransform

    return isinstance(getattr(datamodule, "train_transform", None), TrainTransform)


def _device_count(devices, available: int) -> int:
    if devices in ("auto", None):
        return 1
    if isinstance(devices, str):
        devices = devices.strip()
        if devices.lstrip("-").isdigit():
            devices = int(devices)
        else:
            return len([d for d in devices.split(",") if d.strip()])
    if isinstance(devices, (list, tuple)):
        return len(devices)
    if not is_int(devices) or devices == 0 or devices < -1:
        raise ValueError(f"devices must be 'auto', a positive int, -1 (all) or a list of device ids; got {devices!r}")
    return max(available, 1) if devices == -1 else int(devices)


class _GraphErrors:
    """Turn the marked errors of our TensorFlow graphs into ValueError / FloatingPointError."""

    def __init__(self, trainer: Trainer, model, during: str):
        self.trainer, self.model, self.during = trainer, model, during

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is None or not issubclass(exc_type, tf.errors.InvalidArgumentError):
            return False
        text = str(getattr(exc, "message", exc))
        if LABEL_ERROR_MARKER in text:
            match = re.search(re.escape(LABEL_ERROR_MARKER) + r"(.*?)\]\s*\[got values:\]\s*\[(.*?)\]", text, re.S)
            message = match.group(1) if match else text.split(LABEL_ERROR_MARKER, 1)[1].split("]")[0]
            values = f" Got {match.group(2).strip()} in a {self.during} batch." if match else ""
            raise ValueError(message + values) from None
        if NONFINITE_LOSS_MARKER in text:
            guard = getattr(self.trainer, "loss_guard", None) or NonFiniteLossGuard()
            raise guard.error("training loss") from None
        return False
