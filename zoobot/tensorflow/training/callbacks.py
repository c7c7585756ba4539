"""The Keras callbacks both TensorFlow training paths are assembled from.

``train_with_keras.train`` (a ``ZoobotTree`` from scratch) and the finetuning
:class:`~zoobot.tensorflow.training.trainer.Trainer` run ``keras.Model.fit`` with these, as Lightning
runs with its own: :class:`ModelCheckpoint` (best k + ``last.keras``, atomic, resumable), one metrics
file writer (:class:`CSVLogger`, fed by :class:`EpochMetrics` or the Trainer), early stopping
(:class:`EarlyStopping`, Keras's own with Lightning's names), one non-finite-loss guard
(:class:`NonFiniteLossGuard`), feature replay (:class:`FeatureReplayCallback`) and the backup of
``train(resume=True)`` (:class:`AtomicBackupAndRestore`, :class:`RandomStateBackup`). Every file is
written through :func:`atomic_save` or a temporary file and ``os.replace``, so a killed run never
leaves half a file. See docs/how_the_code_fits_together.md and docs/reliability.md.
"""
from __future__ import annotations

import contextlib
import csv
import datetime
import json
import logging
import math
import os
import pathlib
import re
import shutil
import warnings
import zipfile

import keras
import numpy as np

from zoobot.shared.validation import check_choice, check_int

__all__ = ["ModelCheckpoint", "CSVLogger", "EpochMetrics", "EarlyStopping", "NonFiniteLossGuard",
           "FeatureReplayCallback", "AtomicBackupAndRestore", "RandomStateBackup", "atomic_save", "atomic_copy",
           "read_trainer_state", "TRAINER_STATE_ENTRY", "LABEL_ERROR_MARKER", "NONFINITE_LOSS_MARKER"]

logger = logging.getLogger(__name__)

#: The entry of ``last.keras`` (a zip file) that holds the trainer state a resumed fit needs; Keras ignores it.
TRAINER_STATE_ENTRY = "zoobot_trainer_state.json"
#: Prefix of the in-graph label checks of the finetuning models (turned into ``ValueError`` by the Trainer).
LABEL_ERROR_MARKER = "ZOOBOT_LABEL_ERROR: "
#: Message of the in-graph ``check_numerics`` on the finetuning loss (turned into ``FloatingPointError``).
NONFINITE_LOSS_MARKER = "ZOOBOT_NONFINITE_LOSS"


def scalar(value) -> float:
    """A logged value as a Python float (NaN if it is not a number)."""
    try:
        return float(np.asarray(value))
    except (TypeError, ValueError):
        return float("nan")


def optimizer_step(model) -> int:
    """Optimizer steps taken so far (0 before compile)."""
    optimizer = getattr(model, "optimizer", None)
    return 0 if optimizer is None else int(np.asarray(optimizer.iterations))


# =============================================================================================
# atomic files
# =============================================================================================

def _temporary(path: pathlib.Path) -> pathlib.Path:
    return path.with_name(f".{path.stem}.tmp.keras")


def atomic_save(model, path, state: dict | None = None) -> None:
    """``model.save(path)`` via a temporary file, so a killed run never leaves half a checkpoint.

    ``state`` (JSON) is added to the archive as :data:`TRAINER_STATE_ENTRY` before the file gets its
    final name, so the trainer state is always that of the weights next to it.
    """
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _temporary(path)
    model.save(str(tmp))
    _add_state(tmp, state)
    os.replace(tmp, path)


def atomic_copy(source, path, state: dict | None = None) -> None:
    """Copy a saved checkpoint to ``path`` (atomic, like :func:`atomic_save`; ~100x cheaper than saving)."""
    path = pathlib.Path(path)
    tmp = _temporary(path)
    shutil.copyfile(source, tmp)
    _add_state(tmp, state)
    os.replace(tmp, path)


def _add_state(path: pathlib.Path, state: dict | None) -> None:
    if state is None:
        return
    with zipfile.ZipFile(path, "a") as archive:
        archive.writestr(TRAINER_STATE_ENTRY, json.dumps(state))


def save_reusing(model, template, path, frozen: str, state: dict | None = None) -> bool:
    """Write ``model`` to ``path`` as :func:`atomic_save` would, from ``template``: a ``.keras`` file of the same
    model whose weights under ``frozen`` (e.g. ``'encoder'``: a frozen encoder) are still current.

    The archive is copied and only the other weight groups (the head, the optimizer) are rewritten in its
    ``model.weights.h5``, each from its owner's public ``save_own_variables``; the frozen weights (most of the
    file) are not serialised again. Returns False, writing nothing, when the template does not fit (a weight
    group whose owner or shape is not found): then save in full.
    """
    import h5py

    path = pathlib.Path(path)
    tmp, weights = _temporary(path), path.with_name(f".{path.stem}.tmp.weights.h5")
    try:
        with zipfile.ZipFile(template) as source:
            with source.open(_WEIGHTS_ENTRY) as src, open(weights, "wb") as dst:
                shutil.copyfileobj(src, dst, 1 << 20)
            with h5py.File(weights, "r+") as store:
                if not _rewrite_unfrozen(model, store, frozen):
                    return False
            with zipfile.ZipFile(tmp, "w") as target:
                for item in source.infolist():
                    if item.filename == _WEIGHTS_ENTRY:
                        target.write(weights, _WEIGHTS_ENTRY)
                    elif item.filename == "metadata.json":
                        metadata = json.loads(source.read(item))
                        metadata["date_saved"] = datetime.datetime.now().strftime("%Y-%m-%d@%H:%M:%S")
                        target.writestr(item, json.dumps(metadata))
                    elif item.filename != TRAINER_STATE_ENTRY:
                        target.writestr(item, source.read(item))
        _add_state(tmp, state)
        os.replace(tmp, path)
        return True
    finally:
        for leftover in (weights, tmp):
            with contextlib.suppress(FileNotFoundError):
                os.remove(leftover)


_WEIGHTS_ENTRY = "model.weights.h5"


def _rewrite_unfrozen(model, store, frozen: str) -> bool:
    """Write every ``.../vars`` group of a Keras weights file outside ``frozen/`` from the model's current state."""
    import h5py

    groups = []
    store.visititems(lambda name, item: groups.append(name) if isinstance(item, h5py.Group)
                     and name.split("/")[-1] == "vars" else None)
    for name in groups:
        owner_path = name[:-len("vars")].rstrip("/")
        if owner_path == frozen or owner_path.startswith(frozen + "/"):
            continue
        owner = _owner(model, owner_path)
        if owner is None or not hasattr(owner, "save_own_variables"):
            return False
        values: dict = {}
        owner.save_own_variables(values)
        group = store[name]
        if set(values) != set(group.keys()):
            return False
        for key, value in values.items():
            value = np.asarray(value)
            if group[key].shape != value.shape:
                return False
            group[key][...] = value
    return True


def _owner(model, path: str):
    """The layer/optimizer behind a weight-file path such as ``head/dense`` or ``encoder/layers/conv2d``."""
    owner, parts = model, [p for p in path.split("/") if p]
    while parts:
        value = getattr(owner, parts.pop(0), None)
        if isinstance(value, (list, tuple)) and parts:
            name = parts.pop(0)
            value = next((item for item in value if getattr(item, "name", None) == name), None)
        if value is None:
            return None
        owner = value
    return owner


def read_trainer_state(path) -> dict:
    """The trainer state saved in a finetuning run's ``last.keras`` (epoch, early-stopping and best-checkpoint state).

    Raises
    ------
    ValueError
        The file holds none (not a ``last.keras`` of a finetuning run of this release).
    """
    try:
        with zipfile.ZipFile(path) as archive:
            return json.loads(archive.read(TRAINER_STATE_ENTRY))
    except (KeyError, zipfile.BadZipFile, ValueError) as err:
        raise ValueError(
            f"Cannot resume finetuning from {os.fspath(path)}: it holds no trainer state ({type(err).__name__}: "
            f"{err}). Resume from the last.keras of a finetuning run (save_dir/checkpoints/last.keras), or load "
            "the weights with load_from_checkpoint and fit afresh."
        ) from None


# =============================================================================================
# checkpoints
# =============================================================================================

class ModelCheckpoint(keras.callbacks.Callback):
    """Keep the best ``save_top_k`` ``.keras`` files by a monitored metric, and ``last.keras`` (Lightning's).

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
    state_file : str or path-like, optional
        A JSON file keeping the ranking between runs (``train(resume=True)``); read when training begins.
    template_metrics : callable, optional
        ``logs -> dict`` of further names the filename template may use (``train`` adds the PyTorch names).

    Attributes
    ----------
    best_model_path : str
        '' until a file was saved.
    best_model_score : float or None
    last_model_path : str
    best_k_models : dict
        path -> score of the kept files.
    state_source : callable or None
        ``epoch -> dict`` written into ``last.keras`` (:data:`TRAINER_STATE_ENTRY`) so a fit can resume from it.
    frozen_part : str or None
        Set per fit (the Trainer sets ``'encoder'`` when the encoder is frozen): the weights under it cannot
        change, so after the first full save each file is written with :func:`save_reusing` (milliseconds
        instead of a second or more for EfficientNet-B0).

    Examples
    --------
    >>> import tempfile
    >>> callback = ModelCheckpoint(tempfile.mkdtemp(), monitor='val_loss', save_top_k=2)
    >>> callback.format_checkpoint_name({'epoch': 3, 'val_loss': 0.5}).name
    'epoch=3.keras'
    """

    def __init__(self, dirpath, filename: str = "{epoch}", monitor: str = "finetuning/val_loss", mode: str = "min",
                 save_top_k: int = 1, save_last: bool = True, auto_insert_metric_name: bool = True,
                 state_file=None, template_metrics=None):
        super().__init__()
        self.mode = check_choice("ModelCheckpoint mode", mode, ["min", "max"])
        self.save_top_k = check_int("save_top_k", save_top_k, minimum=-1)
        self.dirpath = pathlib.Path(dirpath)
        self.filename = filename or "{epoch}"
        self.monitor = monitor
        self.save_last = bool(save_last)
        self.auto_insert_metric_name = bool(auto_insert_metric_name)
        self.state_file = None if state_file is None else pathlib.Path(state_file)
        self.template_metrics = template_metrics
        self.best_model_path = ""
        self.best_model_score = None
        self.last_model_path = ""
        self.best_k_models: dict = {}
        self.global_step = 0
        self.state_source = None
        self.frozen_part = None
        self._template = None

    def format_checkpoint_name(self, metrics: dict) -> pathlib.Path:
        """The file for these metrics (``epoch``, ``step`` and logged values)."""
        def replace(match):
            name, fmt = match.group(1), match.group(2) or ""
            value = metrics.get(name, 0)
            text = format(value, fmt) if fmt else str(value)
            return f"{name}={text}" if self.auto_insert_metric_name else text

        stem = re.sub(r"\{([^{}:]+)(?::([^{}]*))?\}", replace, self.filename).replace("/", "_")
        return self.dirpath / f"{stem}.keras"

    def on_train_begin(self, logs=None):
        self.dirpath.mkdir(parents=True, exist_ok=True)
        self._template = None  # a file of this fit: its frozen weights are those of the model
        if self.state_file is not None and self.state_file.is_file():  # resuming: keep the earlier ranking
            state = json.loads(self.state_file.read_text())
            self.load_state_dict({"best_k_models": {p: s for p, s in state.get("best_k_models", {}).items()
                                                    if os.path.isfile(p)}})
            last = self.dirpath / "last.keras"
            self.last_model_path = str(last) if last.is_file() else ""

    def on_epoch_end(self, epoch, logs=None):
        logs = dict(logs or {})
        step = self.global_step = optimizer_step(self.model)
        saved = None
        if self.save_top_k != 0:
            if self.monitor not in logs:
                raise RuntimeError(
                    f"ModelCheckpoint(monitor={self.monitor!r}) could not find the metric in the logged metrics "
                    f"{sorted(logs)}. Pass validation data to fit, or monitor one of those."
                )
            score = scalar(logs[self.monitor])
            if math.isfinite(score):
                extra = self.template_metrics(logs) if self.template_metrics is not None else {}
                saved = self._maybe_save_best(score, {**extra, **logs, "epoch": epoch, "step": step})
        if self.save_last:
            self._save_last(epoch, saved)
        if self.state_file is not None:
            tmp = self.state_file.with_name(self.state_file.name + ".tmp")
            tmp.write_text(json.dumps({"best_k_models": self.best_k_models}, indent=1))
            os.replace(tmp, self.state_file)

    def _save_last(self, epoch: int, saved: pathlib.Path | None) -> None:
        path = self.dirpath / "last.keras"
        self.last_model_path = str(path)
        state = None if self.state_source is None else self.state_source(epoch)
        if saved is not None:  # the same weights were just serialised: copying is ~100x cheaper than saving again
            atomic_copy(saved, path, state)
            self._template = path
        else:
            self._save(path, state)

    def _save(self, path: pathlib.Path, state: dict | None = None) -> None:
        template = self._template
        if (self.frozen_part is None or template is None or not os.path.isfile(template)
                or not save_reusing(self.model, template, path, self.frozen_part, state)):
            atomic_save(self.model, path, state)
        self._template = path

    def state_dict(self) -> dict:
        """What a resumed fit needs of this callback (JSON)."""
        return {"best_k_models": dict(self.best_k_models), "best_model_path": self.best_model_path,
                "best_model_score": self.best_model_score}

    def load_state_dict(self, state: dict) -> None:
        self.best_k_models = {str(k): float(v) for k, v in state.get("best_k_models", {}).items()}
        self._update_best()

    def _update_best(self) -> None:
        if not self.best_k_models:
            self.best_model_path, self.best_model_score = "", None
            return
        pick = min if self.mode == "min" else max
        self.best_model_path = pick(self.best_k_models, key=self.best_k_models.get)
        self.best_model_score = self.best_k_models[self.best_model_path]

    def _better(self, score: float, than: float) -> bool:
        return score < than if self.mode == "min" else score > than

    def _maybe_save_best(self, score: float, metrics: dict) -> pathlib.Path | None:
        """Save a best-k file if ``score`` earns one; return its path (None if nothing was saved)."""
        path = self.format_checkpoint_name(metrics)
        if self.save_top_k != -1 and len(self.best_k_models) >= self.save_top_k:
            worst = (max if self.mode == "min" else min)(self.best_k_models, key=self.best_k_models.get)
            if not self._better(score, self.best_k_models[worst]):
                return None
            del self.best_k_models[worst]
            if worst != str(path):
                with contextlib.suppress(FileNotFoundError):
                    os.remove(worst)
        self._save(path)
        self.best_k_models[str(path)] = score
        self._update_best()
        return path


# =============================================================================================
# metrics file
# =============================================================================================

class CSVLogger:
    """Metrics to ``save_dir/name/version/metrics.csv`` (Lightning's ``CSVLogger`` layout).

    One row per call of :meth:`log_metrics`; columns ``epoch``, ``step``, then the metric names in order
    of first appearance. The file is rewritten atomically on every row, so it always has one header and
    is never torn. Hyperparameters go to ``hparams.json`` next to it.

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
        row = {k: to_number(v) for k, v in metrics.items()}
        row.setdefault("step", step)
        self._columns.extend(k for k in row if k not in self._columns)
        self._rows.append(row)
        self._write()

    def resume(self, epoch: int) -> None:
        """Continue the existing file of a resumed run: keep its rows up to ``epoch`` (the last epoch the
        run resumes after; rows of later epochs were logged after that checkpoint), so each epoch appears once."""
        if not self.metrics_file.is_file() or self._rows:
            return
        with open(self.metrics_file, newline="") as f:
            rows = [{k: v for k, v in row.items() if v not in ("", None)} for row in csv.DictReader(f)]
        self._rows = [row for row in rows if not (_epoch_of(row) > epoch)]
        for row in self._rows:
            self._columns.extend(k for k in row if k not in self._columns)
        self._write()

    def log_hyperparams(self, params: dict) -> None:
        """Write ``hparams.json``."""
        from zoobot.shared.training_config import to_jsonable

        self.log_dir.mkdir(parents=True, exist_ok=True)
        with open(self.log_dir / "hparams.json", "w") as f:
            json.dump(to_jsonable(dict(params)), f, indent=2)

    def _write(self) -> None:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        tmp = self.metrics_file.with_name(self.metrics_file.name + ".tmp")
        with open(tmp, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=self._columns)
            writer.writeheader()
            writer.writerows(self._rows)
        os.replace(tmp, self.metrics_file)


def to_number(value):
    if value is None or isinstance(value, (int, float, str)):
        return value
    try:
        return float(np.asarray(value))
    except (TypeError, ValueError):
        return str(value)


def _epoch_of(row) -> float:
    try:
        return float(row.get("epoch", "nan"))
    except ValueError:
        return float("nan")


def log_to(target, metrics: dict, step=None) -> None:
    """Send metrics to a logger with ``log_metrics(metrics, step)`` (ours, Lightning's) or a wandb run (``log``)."""
    if hasattr(target, "log_metrics"):
        target.log_metrics(metrics, step=step)
    elif hasattr(target, "log"):
        target.log(metrics, step=step)


class EpochMetrics(keras.callbacks.Callback):
    """One row per epoch, ``epoch``, ``step``, ``lr`` and the renamed Keras logs, to a :class:`CSVLogger`
    (and a wandb run, which gets the row without ``epoch``, at ``step=epoch``).

    Parameters
    ----------
    csv_logger : CSVLogger
    rename : callable
        ``logs -> dict`` of the names to record (``train_with_keras.rename_metrics``).
    wandb_logger : wandb Run, optional
    """

    def __init__(self, csv_logger: CSVLogger, rename, wandb_logger=None):
        super().__init__()
        self.csv_logger, self.rename, self.wandb_logger = csv_logger, rename, wandb_logger

    def on_epoch_end(self, epoch, logs=None):
        row = {"epoch": epoch, "step": optimizer_step(self.model),
               "lr": scalar(self.model.optimizer.learning_rate)}
        row.update({k: scalar(v) for k, v in self.rename(logs or {}).items() if k != "lr"})
        self.add_row(row, step=epoch)

    def add_row(self, row: dict, step=None) -> None:
        """Record ``row`` (e.g. the test metrics after fit)."""
        self.csv_logger.log_metrics(row, step=row.get("step"))
        if self.wandb_logger is not None:
            log_to(self.wandb_logger, {k: v for k, v in row.items() if k != "epoch"}, step=step)


# =============================================================================================
# stopping
# =============================================================================================

class EarlyStopping(keras.callbacks.EarlyStopping):
    """Keras's ``EarlyStopping`` with Lightning's interface: ``check_finite``, ``wait_count``,
    ``best_score``, ``stopping_reason``, and a state a resumed fit continues from.

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
    best_score : float or None
    wait_count : int

    Examples
    --------
    >>> EarlyStopping(monitor='finetuning/val_loss', patience=3).state_dict()
    {'wait_count': 0, 'best_score': None}
    """

    def __init__(self, monitor: str = "finetuning/val_loss", mode: str = "min", patience: int = 3,
                 min_delta: float = 0.0, check_finite: bool = True):
        check_choice("EarlyStopping mode", mode, ["min", "max"])
        super().__init__(monitor=monitor, mode=mode, patience=check_int("patience", patience, minimum=0),
                         min_delta=abs(float(min_delta)))
        self.check_finite = bool(check_finite)
        self.stopping_reason = None
        self._restored = None

    @property
    def wait_count(self) -> int:
        return self.wait

    @property
    def best_score(self):
        return None if self.best is None else float(self.best)

    def on_train_begin(self, logs=None):
        super().on_train_begin(logs)
        self.stopping_reason = None
        restored, self._restored = self._restored, None
        if restored:  # a resumed fit: continue counting where the saved run was
            self.wait = int(restored["wait_count"])
            self.best = None if restored.get("best_score") is None else float(restored["best_score"])

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
        current = scalar(logs[self.monitor])
        if self.check_finite and not math.isfinite(current):
            self._stopped(epoch, f"{self.monitor} = {current} is not finite")
            return
        super().on_epoch_end(epoch, {**logs, self.monitor: current})
        if self.model.stop_training and self.stopped_epoch == epoch:
            self._stopped(epoch, f"{self.monitor} did not improve in the last {self.wait} epochs "
                                 f"(best {self.best_score:.4g})")

    def _stopped(self, epoch: int, reason: str) -> None:
        self.stopped_epoch, self.stopping_reason = epoch, reason
        self.model.stop_training = True
        logger.info("Early stopping after epoch %d: %s", epoch, reason)


def non_finite_message(what: str, value, epoch: int, step: int, batch=None) -> str:
    """The one message of a loss that became NaN or infinite."""
    where = f"epoch {epoch}, step {step}" + ("" if batch is None else f" (batch {batch} of the epoch)")
    return (f"The {what} became {value} at {where}: training stopped. Usual causes: a learning_rate too high for "
            "this batch size, or corrupt labels/images. The last finite checkpoint is in the checkpoints folder.")


class NonFiniteLossGuard(keras.callbacks.Callback):
    """Stop training with a ``FloatingPointError`` naming the epoch and step as soon as the loss is NaN or
    infinite (Keras's ``TerminateOnNaN`` stops silently).

    It notices after a training batch (``logs['loss']``), after validation (``logs[val_key]``), and, through
    :meth:`error`, when the in-graph check of the finetuning models (``check_numerics`` with
    :data:`NONFINITE_LOSS_MARKER`, which fails before the step changes any weight) stops a step.

    Parameters
    ----------
    val_key : str or None, default 'val_loss'
        The validation loss in the epoch logs (None: not checked).
    val_name : str, default 'validation loss'
        How the message names it.
    """

    def __init__(self, val_key: str | None = "val_loss", val_name: str = "validation loss"):
        super().__init__()
        self.val_key, self.val_name = val_key, val_name
        self.epoch = 0

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        value = scalar((logs or {}).get("loss", 0.0))
        if not math.isfinite(value):
            raise self.error("training loss", value, batch)

    def on_epoch_end(self, epoch, logs=None):
        if self.val_key is None:
            return
        value = scalar((logs or {}).get(self.val_key, 0.0))
        if not math.isfinite(value):
            raise self.error(self.val_name, value)

    def error(self, what: str, value="NaN or infinite", batch=None) -> FloatingPointError:
        step = optimizer_step(self.model) if self.model is not None else 0
        return FloatingPointError(non_finite_message(what, value, self.epoch, step, batch))


# =============================================================================================
# feature replay
# =============================================================================================

class FeatureReplayCallback(keras.callbacks.Callback):
    """Feature replay of a frozen-encoder fit (:mod:`zoobot.tensorflow.training.feature_cache`).

    Made by :meth:`plan` when the fast path applies. The fit then reads :meth:`datasets` (features, not
    images); the encoder runs over every train and val row once, when the first epoch begins (put this
    callback last, so every other callback's ``on_epoch_begin(0)`` sees the encoding inside epoch 1).
    :meth:`close` (call it in a ``finally``) switches the model back to images and frees the features.
    """

    def __init__(self, replay, finetune_model, progress_bar: bool):
        super().__init__()
        self.replay, self.finetune_model, self.progress_bar = replay, finetune_model, progress_bar

    @classmethod
    def plan(cls, model, datamodule, progress_bar: bool = False):
        """A callback when the fast path applies (frozen encoder with a feature cache, a GalaxyDataModule,
        deterministic transforms, features within the cache's memory cap), else None."""
        from zoobot.tensorflow.datasets.galaxy_datamodule import GalaxyDataModule
        from zoobot.tensorflow.training.feature_cache import FeatureReplay, is_deterministic_transform

        cache = getattr(model, "feature_cache", None)
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
        return cls(FeatureReplay(datamodule, model.encoder_dim), model, progress_bar)

    def datasets(self):
        """``(train, val)`` datasets of stored features, and the model switched to read them."""
        self.finetune_model.use_replayed_features(True)
        return self.replay.train_dataset(), self.replay.val_dataset()

    def on_epoch_begin(self, epoch, logs=None):
        if not self.replay.encoded:
            self.replay.encode(self.finetune_model.encoder, progress_bar=self.progress_bar)

    def close(self) -> None:
        """Read images again (validate/test/predict) and free the features."""
        self.finetune_model.use_replayed_features(False)
        self.replay.free()


# =============================================================================================
# backup of train(resume=True)
# =============================================================================================

def skip_epochs(dataset, epochs: int) -> None:
    """Advance a dataset's per-iteration shuffle and augmentation seeds by ``epochs`` iterations, so that a
    resumed run sees the same order and augmentations in each epoch as an uninterrupted one (each
    iterator draws new seeds when it is created; no batch is read)."""
    for _ in range(epochs):
        iterator = iter(dataset)
        del iterator


def backup_epoch(backup_dir) -> int:
    """The epoch a ``BackupAndRestore`` backup resumes from (0 if there is none)."""
    path = pathlib.Path(backup_dir) / "training_metadata.json"
    try:
        return int(json.loads(path.read_text()).get("epoch", 0))
    except (OSError, ValueError, AttributeError):
        return 0


class AtomicBackupAndRestore(keras.callbacks.BackupAndRestore):
    """``BackupAndRestore`` whose backup is replaced atomically, so a crash or a full disk mid-write
    leaves the previous backup readable.

    The weights go to a new file named after the epoch; ``training_metadata.json`` (written to a
    temporary file, then renamed) names that file and is the commit point. Keras' own callback
    overwrites ``latest.weights.h5`` in place, and a torn write made the resumed run crash.
    (Overrides Keras 3's ``_save_model``/``_load_model`` and reads ``_current_epoch``,
    ``_last_batch_seen``, ``_training_metadata_path``: Keras has no public hook for where the backup goes.)
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
        self.model._initial_epoch = metadata["epoch"]  # how Keras's fit learns the epoch to resume from


def seed_generator_states(model) -> list:
    """The state variables of every Keras ``SeedGenerator`` in ``model`` (dropout masks), in a fixed order.

    Keras 3 counts them in ``model.variables`` but not in ``model.weights``; ``.keras`` files do not keep them.
    """
    weights = {id(v) for v in model.weights}
    states = [v for v in model.variables if id(v) not in weights and "seed_generator" in v.path]
    return sorted(states, key=lambda v: v.path)


class RandomStateBackup(keras.callbacks.Callback):
    """Save and restore the Keras random seed states (dropout masks) next to ``BackupAndRestore``'s backup.

    Keras' backup holds the weights and the optimiser but not the seed generators of dropout layers; with
    this callback a resumed run draws the same dropout masks as an uninterrupted one.

    Parameters
    ----------
    backup_dir : str or path-like
    start_epoch : int
        The epoch the run resumes from (:func:`backup_epoch`; 0 for a fresh run: nothing is restored).
    """

    def __init__(self, backup_dir, start_epoch: int = 0):
        super().__init__()
        self.path = pathlib.Path(backup_dir) / "zoobot_random_state.json"
        self.start_epoch = int(start_epoch)

    def on_train_begin(self, logs=None):
        start = self.start_epoch
        if not start or not self.path.is_file():
            return
        saved = json.loads(self.path.read_text())
        states = seed_generator_states(self.model)
        if saved.get("epoch") != start or len(saved.get("states", [])) != len(states):
            warnings.warn(f"{self.path} does not match the backup (epoch {start}); dropout masks will differ from "
                          "an uninterrupted run.", UserWarning, stacklevel=2)
            return
        for variable, state in zip(states, saved["states"]):
            variable.assign(np.asarray(state, dtype=variable.dtype))

    def on_epoch_end(self, epoch, logs=None):
        states = [np.asarray(variable.numpy()).tolist() for variable in seed_generator_states(self.model)]
        tmp = self.path.with_name(self.path.name + ".tmp")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_text(json.dumps({"epoch": epoch + 1, "states": states}))
        os.replace(tmp, self.path)


def all_layers(layer) -> list:
    """``layer`` and every layer inside it, depth first (the one place that reads Keras's private
    ``_flatten_layers``: Keras 3 has no public recursive listing; ``Model.layers`` is one level)."""
    return list(layer._flatten_layers(include_self=True, recursive=True))
