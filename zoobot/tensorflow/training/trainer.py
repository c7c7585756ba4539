"""The finetuning ``Trainer`` of the TensorFlow backend: Lightning's interface on top of ``keras.Model.fit``.

PyTorch's ``finetune.get_trainer`` returns a Lightning ``Trainer``; its TensorFlow twin returns this
:class:`Trainer`, with the same methods and attributes the seeds use::

    trainer = finetune.get_trainer(save_dir, accelerator='cpu', max_epochs=100)
    trainer.fit(model, datamodule)          # compiles the model with its finetuning rules
    trainer.checkpoint_callback.best_model_path
    trainer.test(model, datamodule)         # [{'finetuning/test_loss': ..., 'finetuning/test_acc': ...}]
    trainer.predict(model, datamodule)      # one array per batch, as Lightning

Read top to bottom:

1. :class:`CSVLogger` (``save_dir/logs/metrics.csv``, one row per epoch, Lightning's layout);
2. the callbacks :class:`ModelCheckpoint` (best ``.keras`` files + ``last.keras``) and
   :class:`EarlyStopping` (with ``check_finite``), as Lightning's;
3. :class:`Trainer`: data (a TF ``GalaxyDataModule``, a ``(train_ds, val_ds)`` tuple, or datasets),
   checks before any work (labels E14, channels E7, pixel range E8), devices, ``fit``, ``validate``,
   ``test``, ``predict``; errors raised inside TensorFlow graphs (bad labels, a non-finite loss)
   come out as ``ValueError`` / ``FloatingPointError`` naming what went wrong.

Metric names are those of the PyTorch backend: ``finetuning/{train,val,test}_loss``,
``finetuning/{train,val,test}_{acc,rmse}``, ``lr``.
"""
from __future__ import annotations

import contextlib
import csv
import json
import logging
import math
import os
import pathlib
import re
import shutil
import sys

import keras
import numpy as np
import pandas as pd
import tensorflow as tf

from zoobot.tensorflow.training.console import fit_verbosity
from zoobot.shared import interrupts
from zoobot.shared.errors import unknown_option_error

__all__ = ["Trainer", "ModelCheckpoint", "EarlyStopping", "CSVLogger"]

logger = logging.getLogger(__name__)


# =============================================================================================
# 1. the CSV logger
# =============================================================================================

class CSVLogger:
    """Metrics to ``save_dir/name/version/metrics.csv`` (Lightning's ``CSVLogger`` layout).

    One row per call of :meth:`log_metrics` (the Trainer logs once per epoch, and once per
    ``validate``/``test``); columns ``epoch``, ``step``, then the metric names in order of first
    appearance. A new column rewrites the file, so it always has one header. Hyperparameters go to
    ``hparams.json`` next to it.

    Parameters
    ----------
    save_dir : str or path-like
    name : str, default 'logs'
    version : str, default ''
        Sub-folder of ``name`` ('' = none).

    Examples
    --------
    >>> import tempfile
    >>> log = CSVLogger(tempfile.mkdtemp())
    >>> log.log_metrics({'epoch': 0, 'finetuning/train_loss': 0.7}, step=3)
    >>> open(log.metrics_file).read().splitlines()
    ['epoch,step,finetuning/train_loss', '0,3,0.7']
    """

    def __init__(self, save_dir, name: str = "logs", version: str = ""):
        self.save_dir = pathlib.Path(save_dir)
        self.name = name
        self.version = version
        self.log_dir = self.save_dir / name / version if version else self.save_dir / name
        self.metrics_file = self.log_dir / "metrics.csv"
        self._rows: list[dict] = []
        self._columns: list[str] = ["epoch", "step"]

    def log_metrics(self, metrics: dict, step: int | None = None) -> None:
        """Append one row."""
        row = {k: _to_number(v) for k, v in metrics.items()}
        row.setdefault("step", step)
        new = [k for k in row if k not in self._columns]
        self._columns.extend(new)
        self._rows.append(row)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        if new or len(self._rows) == 1:
            with open(self.metrics_file, "w", newline="") as f:
                writer = csv.DictWriter(f, fieldnames=self._columns)
                writer.writeheader()
                writer.writerows(self._rows)
        else:
            with open(self.metrics_file, "a", newline="") as f:
                csv.DictWriter(f, fieldnames=self._columns).writerow(row)

    def resume(self, epoch: int) -> None:
        """Continue an existing ``metrics.csv`` from a resumed fit: keep its rows up to ``epoch`` (a row of a later
        epoch was logged after the checkpoint the fit resumes from), so each epoch appears once."""
        if not self.metrics_file.is_file() or self._rows:
            return
        frame = pd.read_csv(self.metrics_file)
        if "epoch" in frame:
            frame = frame[frame["epoch"].isna() | (frame["epoch"] <= epoch)]
        self._columns = list(dict.fromkeys(["epoch", "step", *frame.columns]))
        self._rows = [{k: v for k, v in row.items() if not (isinstance(v, float) and math.isnan(v))}
                      for row in frame.to_dict("records")]
        with open(self.metrics_file, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=self._columns)
            writer.writeheader()
            writer.writerows(self._rows)

    def log_hyperparams(self, params: dict) -> None:
        """Write ``hparams.json``."""
        from zoobot.shared.training_config import to_jsonable

        self.log_dir.mkdir(parents=True, exist_ok=True)
        with open(self.log_dir / "hparams.json", "w") as f:
            json.dump(to_jsonable(dict(params)), f, indent=2)


def _to_number(value):
    if value is None or isinstance(value, (int, float, str)):
        return value
    try:
        return float(np.asarray(value))
    except (TypeError, ValueError):
        return str(value)


# =============================================================================================
# 2. callbacks
# =============================================================================================

class ModelCheckpoint(keras.callbacks.Callback):
    """Save the best ``.keras`` files by a monitored metric, and ``last.keras`` (Lightning's ``ModelCheckpoint``).

    Parameters
    ----------
    dirpath : str or path-like
    filename : str, default '{epoch}'
        Template with ``{epoch}`` (0-based, as Lightning), ``{step}`` or metric names; with
        ``auto_insert_metric_name`` each ``{x}`` becomes ``x={x}`` (``epoch=3.keras``). '/' in
        metric names becomes '_' in file names.
    monitor : str, default 'finetuning/val_loss'
    mode : {'min', 'max'}
    save_top_k : int, default 1
        -1: keep every epoch's file; 0: no best files (``last.keras`` still saved).
    save_last : bool, default True
    auto_insert_metric_name : bool, default True

    Attributes
    ----------
    best_model_path : str
        '' until a file was saved.
    best_model_score : float or None
    last_model_path : str
    best_k_models : dict
        path -> score of the kept files.
    """

    def __init__(self, dirpath, filename: str = "{epoch}", monitor: str = "finetuning/val_loss", mode: str = "min",
                 save_top_k: int = 1, save_last: bool = True, auto_insert_metric_name: bool = True):
        super().__init__()
        if mode not in ("min", "max"):
            raise unknown_option_error("ModelCheckpoint mode", mode, ["min", "max"])
        if isinstance(save_top_k, bool) or not isinstance(save_top_k, (int, np.integer)) or save_top_k < -1:
            raise ValueError(f"save_top_k must be an int >= -1, got {save_top_k!r}")
        self.dirpath = pathlib.Path(dirpath)
        self.filename = filename or "{epoch}"
        self.monitor = monitor
        self.mode = mode
        self.save_top_k = int(save_top_k)
        self.save_last = bool(save_last)
        self.auto_insert_metric_name = bool(auto_insert_metric_name)
        self.best_model_path = ""
        self.best_model_score = None
        self.last_model_path = ""
        self.best_k_models: dict = {}
        self.global_step = 0
        #: Set by :class:`Trainer`: a callable ``epoch -> dict`` written into ``last.keras`` so a fit can resume it.
        self.state_source = None

    def format_checkpoint_name(self, metrics: dict) -> pathlib.Path:
        """The file for these metrics (``epoch``, ``step`` and logged values)."""
        def replace(match):
            name, fmt = match.group(1), match.group(2) or ""
            value = metrics.get(name, 0)
            text = format(value, fmt) if fmt else str(value)
            return f"{name}={text}" if self.auto_insert_metric_name else text

        stem = re.sub(r"\{([^{}:]+)(?::([^{}]*))?\}", replace, self.filename).replace("/", "_")
        return self.dirpath / f"{stem}.keras"

    def _better(self, score: float, than: float) -> bool:
        return score < than if self.mode == "min" else score > than

    def on_train_begin(self, logs=None):
        self.dirpath.mkdir(parents=True, exist_ok=True)

    def on_epoch_end(self, epoch, logs=None):
        logs = dict(logs or {})
        step = int(np.asarray(self.model.optimizer.iterations)) if self.model.optimizer is not None else 0
        self.global_step = step
        saved = None
        if self.save_top_k != 0:
            if self.monitor not in logs:
                raise RuntimeError(
                    f"ModelCheckpoint(monitor={self.monitor!r}) could not find the metric in the logged metrics "
                    f"{sorted(logs)}. Pass validation data to fit, or monitor one of those."
                )
            score = float(logs[self.monitor])
            if math.isfinite(score):
                saved = self._maybe_save_best(score, {**logs, "epoch": epoch, "step": step})
        if self.save_last:
            path = self.dirpath / "last.keras"
            self.last_model_path = str(path)
            state = None if self.state_source is None else self.state_source(epoch)
            if saved is not None:  # the same weights were just serialised: copying is ~100x cheaper than saving again
                _atomic_copy(saved, path, state)
            else:
                _atomic_save(self.model, path, state)

    def state_dict(self) -> dict:
        """What a resumed fit needs of this callback (JSON)."""
        return {"best_k_models": dict(self.best_k_models), "best_model_path": self.best_model_path,
                "best_model_score": self.best_model_score}

    def load_state_dict(self, state: dict) -> None:
        self.best_k_models = {str(k): float(v) for k, v in state.get("best_k_models", {}).items()}
        self.best_model_path = state.get("best_model_path", "")
        self.best_model_score = state.get("best_model_score")

    def _maybe_save_best(self, score: float, metrics: dict) -> pathlib.Path | None:
        """Save a best-k file if ``score`` earns one; return its path (None if nothing was saved)."""
        if self.save_top_k != -1 and len(self.best_k_models) >= self.save_top_k:
            worst_path = max(self.best_k_models, key=self.best_k_models.get) if self.mode == "min" else \
                min(self.best_k_models, key=self.best_k_models.get)
            if not self._better(score, self.best_k_models[worst_path]):
                return None
            del self.best_k_models[worst_path]
            if worst_path != str(self.format_checkpoint_name(metrics)):
                with contextlib.suppress(FileNotFoundError):
                    os.remove(worst_path)
        path = self.format_checkpoint_name(metrics)
        _atomic_save(self.model, path)
        self.best_k_models[str(path)] = score
        pick = min if self.mode == "min" else max
        self.best_model_path = pick(self.best_k_models, key=self.best_k_models.get)
        self.best_model_score = self.best_k_models[self.best_model_path]
        return path


#: The entry of ``last.keras`` (a zip file) that holds the trainer state a resumed fit needs; Keras ignores it.
TRAINER_STATE_ENTRY = "zoobot_trainer_state.json"


def _atomic_save(model, path: pathlib.Path, state: dict | None = None) -> None:
    """Write ``path`` via a temporary file, so a killed run never leaves half a checkpoint."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp.keras")
    model.save(str(tmp))
    _add_state(tmp, state)
    os.replace(tmp, path)


def _atomic_copy(source: pathlib.Path, path: pathlib.Path, state: dict | None = None) -> None:
    """Copy a saved checkpoint to ``path`` via a temporary file (atomic, like :func:`_atomic_save`)."""
    tmp = path.with_name(f".{path.stem}.tmp.keras")
    shutil.copyfile(source, tmp)
    _add_state(tmp, state)
    os.replace(tmp, path)


def _add_state(path: pathlib.Path, state: dict | None) -> None:
    """Add the trainer state to a ``.keras`` file (before it gets its final name: atomic with the weights)."""
    if state is None:
        return
    import zipfile

    with zipfile.ZipFile(path, "a") as archive:
        archive.writestr(TRAINER_STATE_ENTRY, json.dumps(state))


def read_trainer_state(path) -> dict:
    """The trainer state saved in a finetuning run's ``last.keras`` (epoch, early-stopping and best-checkpoint state).

    Raises
    ------
    ValueError
        The file holds none (not a ``last.keras`` of a finetuning run of this release).
    """
    import zipfile

    try:
        with zipfile.ZipFile(path) as archive:
            return json.loads(archive.read(TRAINER_STATE_ENTRY))
    except (KeyError, zipfile.BadZipFile, ValueError) as err:
        raise ValueError(
            f"Cannot resume finetuning from {os.fspath(path)}: it holds no trainer state ({type(err).__name__}: "
            f"{err}). Resume from the last.keras of a finetuning run (save_dir/checkpoints/last.keras), or load "
            "the weights with load_from_checkpoint and fit afresh."
        ) from None


class EarlyStopping(keras.callbacks.Callback):
    """Stop when the monitored metric stops improving (Lightning's ``EarlyStopping``).

    Parameters
    ----------
    monitor : str
    mode : {'min', 'max'}
    patience : int
        Epochs without improvement before stopping.
    min_delta : float, default 0.0
        Smallest change that counts as an improvement.
    check_finite : bool, default True
        Stop as soon as the metric is NaN or infinite.

    Attributes
    ----------
    stopped_epoch : int
        The epoch after which training stopped (0 if it ran to the end).
    stopping_reason : str or None
    best_score : float
    """

    def __init__(self, monitor: str = "finetuning/val_loss", mode: str = "min", patience: int = 3,
                 min_delta: float = 0.0, check_finite: bool = True):
        super().__init__()
        if mode not in ("min", "max"):
            raise unknown_option_error("EarlyStopping mode", mode, ["min", "max"])
        if isinstance(patience, bool) or not isinstance(patience, (int, np.integer)) or patience < 0:
            raise ValueError(f"patience must be an int >= 0, got {patience!r}")
        self.monitor, self.mode, self.patience = monitor, mode, int(patience)
        self.min_delta, self.check_finite = abs(float(min_delta)), bool(check_finite)
        self.on_train_begin()

    def on_train_begin(self, logs=None):
        self.wait_count = 0
        self.stopped_epoch = 0
        self.stopping_reason = None
        self.best_score = math.inf if self.mode == "min" else -math.inf
        restored, self._restored = getattr(self, "_restored", None), None
        if restored:  # a resumed fit: continue counting where the saved run was
            self.wait_count, self.best_score = int(restored["wait_count"]), float(restored["best_score"])

    def state_dict(self) -> dict:
        """What a resumed fit needs of this callback (JSON)."""
        return {"wait_count": self.wait_count, "best_score": self.best_score}

    def load_state_dict(self, state: dict) -> None:
        """Applied when the next fit begins (``on_train_begin`` resets the counters first)."""
        self._restored = dict(state)

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        if self.monitor not in logs:
            raise RuntimeError(f"EarlyStopping(monitor={self.monitor!r}) could not find the metric in the logged "
                               f"metrics {sorted(logs)}.")
        current = float(logs[self.monitor])
        if self.check_finite and not math.isfinite(current):
            self._stop(epoch, f"{self.monitor} = {current} is not finite")
            return
        improved = (current < self.best_score - self.min_delta if self.mode == "min"
                    else current > self.best_score + self.min_delta)
        if improved:
            self.best_score, self.wait_count = current, 0
            return
        self.wait_count += 1
        if self.wait_count >= self.patience:
            self._stop(epoch, f"{self.monitor} did not improve in the last {self.wait_count} epochs "
                              f"(best {self.best_score:.4g})")

    def _stop(self, epoch, reason):
        self.stopped_epoch, self.stopping_reason = epoch, reason
        self.model.stop_training = True
        logger.info("Early stopping after epoch %d: %s", epoch, reason)


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
        step = int(np.asarray(model.optimizer.iterations))
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
    resumed fit draws the masks of an uninterrupted one (Keras keeps each layer's random state in a
    ``SeedGenerator`` that ``.keras`` files do not save)."""
    generators = [generator for layer in model._flatten_layers(include_self=True, recursive=True)
                  for generator in getattr(layer, "_seed_generators", ())]
    for index, generator in enumerate(generators):
        value = (seed * 1_000_003 + epoch * 7_919 + index) % (2 ** 31)
        generator.state.assign(np.array([value, 0], dtype=generator.state.dtype))


class _FeatureReplayCallback(keras.callbacks.Callback):
    """Last callback of a fast-path fit: encodes every train and val row once, when the first epoch begins."""

    def __init__(self, replay, encoder, progress_bar: bool):
        super().__init__()
        self.replay, self.encoder, self.progress_bar = replay, encoder, progress_bar

    def on_epoch_begin(self, epoch, logs=None):
        if not self.replay.encoded:
            self.replay.encode(self.encoder, progress_bar=self.progress_bar)


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

    Attributes
    ----------
    checkpoint_callback : ModelCheckpoint or None
    early_stopping_callback : EarlyStopping or None
    callback_metrics : dict
        The latest value of every logged metric.
    history : keras.callbacks.History or None
        Per-epoch metrics of the last ``fit`` (``history.history``).
    current_epoch, global_step : int
    """

    def __init__(self, default_root_dir=None, max_epochs: int = 100, devices="auto", accelerator="auto",
                 logger=None, callbacks=None, enable_progress_bar: bool = True, gradient_clip_val=None,
                 enable_checkpointing: bool = True, limit_train_batches=None, limit_val_batches=None,
                 log_every_n_steps=None, overwrite: bool = False):
        if isinstance(max_epochs, bool) or not isinstance(max_epochs, (int, np.integer)) or max_epochs < 1:
            raise ValueError(f"max_epochs must be a positive int, got {max_epochs!r}")
        for what, value in (("limit_train_batches", limit_train_batches), ("limit_val_batches", limit_val_batches)):
            if value is not None and (isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1):
                raise ValueError(f"{what} must be a positive int (a number of batches) or None, got {value!r}")
        if gradient_clip_val is not None and (not isinstance(gradient_clip_val, (int, float)) or gradient_clip_val <= 0):
            raise ValueError(f"gradient_clip_val must be a positive number or None, got {gradient_clip_val!r}")
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

    def _verbose(self, model) -> int:
        if not (self.enable_progress_bar and getattr(model, "prog_bar", True)):
            return 0
        return 1 if getattr(sys.stdout, "isatty", lambda: False)() else 2

    def _record(self, metrics: dict, epoch: int, step: int) -> None:
        values = {k: _to_number(v) for k, v in metrics.items()}
        self.callback_metrics.update(values)
        self.logged_metrics = dict(values)
        self._log({"epoch": epoch, **values}, step)

    def _log(self, metrics: dict, step: int) -> None:
        log = self.logger
        if log is None:
            return
        if hasattr(log, "log_metrics"):
            log.log_metrics(metrics, step=step)
        elif hasattr(log, "log"):  # a wandb run
            log.log(metrics, step=step)

    # ------------------------------------------------------------------------- data
    def _fit_data(self, train_dataloaders, val_dataloaders, datamodule):
        from zoobot.tensorflow.training.finetune import _is_datamodule

        if datamodule is None and _is_datamodule(train_dataloaders):
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
        from zoobot.tensorflow.training.finetune import _is_datamodule

        if datamodule is None and _is_datamodule(dataloaders):
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
            model.compile(gradient_clip_val=self.gradient_clip_val)

    @staticmethod
    def _check_model(model):
        from zoobot.tensorflow.training.finetune import FinetuneableZoobotAbstract

        if not isinstance(model, FinetuneableZoobotAbstract):
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
        if ckpt_path is not None:
            ckpt_path = self._resume_path(ckpt_path)
        resume = None if ckpt_path is None else read_trainer_state(ckpt_path)
        self._claim_save_dir(ckpt_path)
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
        from zoobot.shared.preprocessing import carry_record, record_of_fit

        record = record_of_fit(dm)
        if record is not None:  # saved with every checkpoint; predict uses it by default
            carry_record(model, record)

        self.model = model
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

        verbose, progress_callbacks = fit_verbosity(self._verbose(model) > 0, self.max_epochs, hide=KERAS_ALIASES)
        # checkpoints last (as Lightning orders them), so that last.keras holds the other callbacks' state of its epoch
        checkpoints = [c for c in self.callbacks if isinstance(c, ModelCheckpoint)]
        callbacks = [_EpochCallback(self, model), *[c for c in self.callbacks if c not in checkpoints], *checkpoints,
                     *progress_callbacks]
        for callback in checkpoints:
            callback.best_k_models, callback.best_model_path, callback.best_model_score = {}, "", None
            callback.state_source = self._state_of_epoch
        initial_epoch = 0
        if resume is not None:
            initial_epoch = self._restore(model, ckpt_path, resume)
        cache = model.feature_cache
        replay = self.feature_replay = self._plan_feature_replay(model, dm)
        if replay is not None:  # the fast path: head-only steps on features, encoded at the start of epoch 1
            train_ds, val_ds = self._limit(replay.train_dataset(), replay.val_dataset())
            # last, so that every other callback's on_epoch_begin(0) sees the encoding inside the first epoch
            callbacks.append(_FeatureReplayCallback(replay, model.encoder, progress_bar=self._verbose(model) > 0))
            model.use_replayed_features(True)
        elif cache is not None:
            cache.start()
            if model.cache_features is None and _augments_training_images(dm):
                cache.disable("train")  # known random augmentations: nothing to reuse (validation is still cached)
        # one dataset iteration per epoch, whatever Keras does between epochs, after skipping those of the epochs
        # a resumed fit has done: each epoch sees the shuffle and augmentations of an uninterrupted run
        steps_per_epoch = int(train_ds.cardinality()) if replay is None else -1  # replayed features: read as before
        if steps_per_epoch > 0:
            from zoobot.tensorflow.training.train_with_keras import _skip_epochs

            _skip_epochs(train_ds, initial_epoch)
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
                model.use_replayed_features(False)  # validate/test/predict read images again
                replay.free()
            elif cache is not None:
                cache.stop()

    def _state_of_epoch(self, epoch: int) -> dict:
        """The trainer state saved in ``last.keras`` after ``epoch`` (see :func:`read_trainer_state`)."""
        stopping = self.early_stopping_callback
        return {"epoch": int(epoch), "global_step": int(self.global_step),
                "checkpoint": self.checkpoint_callback.state_dict() if self.checkpoint_callback else None,
                "early_stopping": stopping.state_dict() if stopping else None}

    def _resume_path(self, ckpt_path) -> str:
        """``ckpt_path`` as a file: 'last' is the checkpoint callback's ``last.keras``."""
        if ckpt_path == "last" and self.checkpoint_callback is not None:
            ckpt_path = self.checkpoint_callback.dirpath / "last.keras"
        path = os.fspath(ckpt_path)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"No checkpoint file at {path} to resume finetuning from.")
        return path

    def _restore(self, model, ckpt_path, state: dict) -> int:
        """Load weights and optimizer state from ``ckpt_path`` and the callbacks' state; returns the next epoch."""
        model.load_weights(os.fspath(ckpt_path))  # the compiled model's optimizer is built: its state loads too
        if self.checkpoint_callback is not None and state.get("checkpoint"):
            self.checkpoint_callback.load_state_dict(state["checkpoint"])
        if self.early_stopping_callback is not None and state.get("early_stopping"):
            self.early_stopping_callback.load_state_dict(state["early_stopping"])
        epoch = int(state["epoch"])
        if hasattr(self.logger, "resume"):
            self.logger.resume(epoch)
        self.current_epoch, self.global_step = epoch + 1, int(state.get("global_step", 0))
        logger.info("Resuming finetuning from %s after epoch %d", ckpt_path, epoch)
        return epoch + 1

    def _claim_save_dir(self, ckpt_path) -> None:
        """One run per save_dir: the first fit may not write next to another run's checkpoints."""
        if self._claimed or self.default_root_dir is None:
            return
        from zoobot.shared.run_dir import claim_save_dir_for_fit

        claim_save_dir_for_fit(self.default_root_dir, resuming=ckpt_path is not None, overwrite=self.overwrite,
                               last="last.keras")
        self._claimed = True

    def _limit(self, train_ds, val_ds):
        if self.limit_train_batches:
            train_ds = train_ds.take(self.limit_train_batches)
        if self.limit_val_batches:
            val_ds = val_ds.take(self.limit_val_batches)
        return train_ds, val_ds

    @staticmethod
    def _plan_feature_replay(model, datamodule):
        """A FeatureReplay when the fast path applies (frozen encoder, GalaxyDataModule, deterministic
        transforms, features within the cache's memory cap), else None."""
        from zoobot.tensorflow.datasets.galaxy_datamodule import GalaxyDataModule
        from zoobot.tensorflow.training.feature_cache import FeatureReplay, is_deterministic_transform

        cache = model.feature_cache
        if cache is None or not isinstance(datamodule, GalaxyDataModule):
            return None
        random = [f"{name}={getattr(datamodule, name, None)!r}" for name in ("train_transform", "test_transform")
                  if not is_deterministic_transform(getattr(datamodule, name, None))]
        if random:
            logger.info("feature replay off: %s is not known to be deterministic, so images are read every epoch "
                        "(give GalaxyDataModule(train_transform=EvalTransform(...)) for the fast path)", random[0])
            return None
        rows = {split: len(getattr(datamodule, f"{split}_catalog")) for split in FeatureReplay.SPLITS}
        if max(rows.values()) > cache.max_rows:
            logger.info("feature replay off: %d train / %d val rows of %d features exceed the feature cache's memory "
                        "cap (%d rows); using the content-keyed cache", rows["train"], rows["val"],
                        model.encoder_dim, cache.max_rows)
            return None
        return FeatureReplay(datamodule, model.encoder_dim)

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
        values = {k: _to_number(v) for k, v in logs.items()}
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
    if isinstance(devices, bool) or not isinstance(devices, (int, np.integer)) or devices == 0 or devices < -1:
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
        from zoobot.tensorflow.training.finetune import LABEL_ERROR_MARKER, NONFINITE_LOSS_MARKER

        text = str(getattr(exc, "message", exc))
        if LABEL_ERROR_MARKER in text:
            match = re.search(re.escape(LABEL_ERROR_MARKER) + r"(.*?)\]\s*\[got values:\]\s*\[(.*?)\]", text, re.S)
            message = match.group(1) if match else text.split(LABEL_ERROR_MARKER, 1)[1].split("]")[0]
            values = f" Got {match.group(2).strip()} in a {self.during} batch." if match else ""
            raise ValueError(message + values) from None
        if NONFINITE_LOSS_MARKER in text:
            step = int(np.asarray(self.model.optimizer.iterations)) if self.model.optimizer is not None else 0
            raise FloatingPointError(
                f"The training loss became NaN or infinite at epoch {self.trainer.current_epoch}, step {step}: "
                "training stopped. Usual causes: a learning_rate too high, or corrupt labels/images."
            ) from None
        return False
