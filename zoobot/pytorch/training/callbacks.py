"""The Lightning callbacks that training from scratch and finetuning assemble their runs from.

- :class:`RecordRun` writes ``config.json`` and the split catalogs when training starts;
- :class:`NoteEpoch` tells :mod:`zoobot.shared.interrupts` which epoch runs;
- :class:`NonFiniteLossGuard` stops at the first NaN/infinite loss with an error naming the epoch and step;
- :class:`SeedEachEpoch` reseeds every epoch, so that a resumed run repeats an uninterrupted one;
- :class:`LearningRateLogger` logs the learning rate as ``lr`` (the name both backends use).

Checkpoints and early stopping are Lightning's own ``ModelCheckpoint`` and ``EarlyStopping``.
See docs/how_the_code_fits_together.md.
"""
from __future__ import annotations

import math

import lightning as L
import torch

from zoobot.shared.training_config import write_run_config, write_split_catalogs

__all__ = ["RecordRun", "NoteEpoch", "NonFiniteLossGuard", "SeedEachEpoch", "LearningRateLogger"]


class RecordRun(L.Callback):
    """Writes ``config.json`` (:meth:`~zoobot.shared.training_config.TrainConfig.to_record`) and the split
    catalogs when training starts, on the main process only.

    Not before: a run that fails while it is set up (e.g. asking for a GPU on a CPU-only machine) leaves the
    folder as it was.
    """

    def __init__(self, save_dir, config, catalogs, backend: str = "pytorch"):
        self.save_dir, self.config, self.catalogs, self.backend = save_dir, config, catalogs, backend

    def on_fit_start(self, trainer, pl_module):
        if trainer.is_global_zero:
            write_run_config(self.save_dir, self.config, backend=self.backend)
            write_split_catalogs(self.save_dir, *self.catalogs)


class NoteEpoch(L.Callback):
    """Tells :mod:`zoobot.shared.interrupts` which epoch runs, for the message of an interrupted run."""

    def on_train_epoch_start(self, trainer, pl_module):
        from zoobot.shared import interrupts

        interrupts.note_epoch(trainer.current_epoch, trainer.max_epochs)


class NonFiniteLossGuard(L.Callback):
    """Stop training with a ``FloatingPointError`` as soon as the training loss or the monitored validation
    loss is NaN or infinite, naming the epoch and step.

    Kept next to Lightning's ``EarlyStopping(check_finite=True)`` because that one only looks at the
    monitored metric once per epoch and stops quietly; this guard checks every training step *before* the
    backward pass, so the weights stay those of the last finite step, and raises an error that says where
    and why.

    Parameters
    ----------
    monitor : str
        The validation metric checked after each validation run.
    """

    def __init__(self, monitor: str = "validation/supervised_loss"):
        self.monitor = monitor

    def on_before_backward(self, trainer, pl_module, loss):
        if isinstance(loss, torch.Tensor) and not bool(loss.detach().isfinite().all()):
            value = float(loss.detach().float().mean())
            batch_idx = trainer.fit_loop.epoch_loop.batch_progress.current.ready - 1
            raise FloatingPointError(non_finite_message("training loss", value, trainer, batch_idx))

    def on_validation_end(self, trainer, pl_module):
        if trainer.sanity_checking:
            return
        value = trainer.callback_metrics.get(self.monitor)
        if value is not None and not math.isfinite(float(value)):
            raise FloatingPointError(non_finite_message(self.monitor, float(value), trainer, None))


def non_finite_message(what: str, value: float, trainer, batch_idx) -> str:
    """The error of :class:`NonFiniteLossGuard`: what became ``value``, where, the usual causes."""
    where = f"epoch {trainer.current_epoch}, step {trainer.global_step}"
    if batch_idx is not None:
        where += f" (batch {batch_idx} of the epoch)"
    return (
        f"The {what} became {value} at {where}: training stopped. Usual causes: a learning_rate too high for "
        "this batch size, or corrupt labels/images. The last finite checkpoint is in the checkpoints folder."
    )


class SeedEachEpoch(L.Callback):
    """Reseed Python, NumPy and torch at the start of every training epoch from ``(random_state, epoch)``.

    A run resumed from ``last.ckpt`` then draws the same augmentations and dropout masks as an
    uninterrupted one (the batch order is seeded the same way by the data module's sampler).

    Parameters
    ----------
    random_state : int or None
        None: the module's ``seed`` attribute (finetuning models), if it has one.
    """

    def __init__(self, random_state: int | None):
        self.random_state = None if random_state is None else int(random_state)

    def on_train_epoch_start(self, trainer, pl_module):
        random_state = self.random_state if self.random_state is not None else getattr(pl_module, "seed", None)
        if random_state is None:
            return
        seed = (int(random_state) * 1_000_003 + trainer.current_epoch) % 2**32
        L.seed_everything(seed, workers=True, verbose=False)


class LearningRateLogger(L.Callback):
    """Log the learning rate of each epoch as ``lr`` (the metric name both backends use).

    Lightning's ``LearningRateMonitor`` (used by ``finetune.get_trainer``) names the metric after the
    optimiser (``lr-AdamW``) unless a scheduler is configured with a name, and resumed runs compare
    ``metrics.csv`` columns across backends.
    """

    def on_train_epoch_start(self, trainer, pl_module):
        if trainer.optimizers:
            lr = float(trainer.optimizers[0].param_groups[0]["lr"])
            pl_module.log("lr", lr, on_step=False, on_epoch=True, batch_size=1)
