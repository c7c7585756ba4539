"""What a Lightning run shows on the console (docs/cli.md, "What the console shows").

- :class:`EpochLineProgressBar`: one line per epoch when stdout is not a terminal (a batch log or a
  redirected file), instead of a rich/tqdm bar that a log keeps only in its last state;
- :class:`CompactModelSummary`: Lightning's summary without the FLOPs column, which reads 0 for models
  without an ``example_input_array`` (ours take images of any size);
- :func:`console_trainer_kwargs`: adds both to a Trainer's keyword arguments and filters Lightning's
  start-up lines (:func:`zoobot.shared.console.quiet_dependencies`).

The TensorFlow twin is :mod:`zoobot.tensorflow.training.console`.
"""
from __future__ import annotations

import sys

from lightning.pytorch.callbacks import ModelSummary, ProgressBar
from lightning.pytorch.utilities.model_summary import get_human_readable_count

from zoobot.shared.console import EpochTimer, format_epoch_line, is_terminal, quiet_dependencies

__all__ = ["EpochLineProgressBar", "CompactModelSummary", "console_trainer_kwargs"]


class EpochLineProgressBar(ProgressBar):
    """Print ``Epoch 3/10: train_loss 0.41, val_loss 0.50 (12.3 s)`` to stdout at the end of each epoch.

    Lightning's progress-bar slot is used (a Trainer has at most one progress bar), so no other bar
    is drawn. The metrics are those shown in the progress bar (``prog_bar=True``) and logged per epoch.
    """

    def __init__(self) -> None:
        super().__init__()
        self._enabled = True
        self._timer = EpochTimer()

    def disable(self) -> None:
        self._enabled = False

    def enable(self) -> None:
        self._enabled = True

    @property
    def is_enabled(self) -> bool:
        return self._enabled

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self._timer.start()

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        # called after validation in Lightning 2, so the validation metrics of this epoch are in
        if not self._enabled or trainer.sanity_checking or not trainer.is_global_zero:
            return
        metrics = {k: v for k, v in self.get_metrics(trainer, pl_module).items() if k != "v_num"}
        print(format_epoch_line(trainer.current_epoch, trainer.max_epochs, metrics, self._timer.seconds()),
              file=sys.stdout, flush=True)


class CompactModelSummary(ModelSummary):
    """Lightning's model summary (one row per top-level module and the parameter totals), without FLOPs."""

    @staticmethod
    def summarize(summary_data, total_parameters, trainable_parameters, model_size, total_training_modes,
                  total_flops, **summarize_kwargs) -> None:
        columns = dict(summary_data)
        rows = zip(columns.get("Name", []), columns.get("Type", []), columns.get("Params", []))
        lines = [f"  {name:<12} {kind:<24} {params:>8} parameters" for name, kind, params in rows]
        lines.append(
            f"  {get_human_readable_count(int(trainable_parameters))} trainable of "
            f"{get_human_readable_count(int(total_parameters))} parameters ({model_size:.1f} MB)"
        )
        print("Model:\n" + "\n".join(lines), flush=True)


def console_trainer_kwargs(trainer_kwargs: dict) -> dict:
    """Add zoobot's progress and summary callbacks to ``L.Trainer`` keyword arguments (in place).

    Honours ``enable_progress_bar=False`` / ``enable_model_summary=False`` and any progress bar or
    model summary callback the caller passes. Lightning's own bar is kept on a terminal.
    """
    quiet_dependencies()
    callbacks = list(trainer_kwargs.get("callbacks") or [])
    if trainer_kwargs.get("enable_model_summary", True) and not any(isinstance(c, ModelSummary) for c in callbacks):
        callbacks.append(CompactModelSummary(max_depth=1))
        trainer_kwargs["enable_model_summary"] = False  # Lightning's default summary; ours is a callback
    if (trainer_kwargs.get("enable_progress_bar", True) and not is_terminal()
            and not any(isinstance(c, ProgressBar) for c in callbacks)):
        callbacks.append(EpochLineProgressBar())
    trainer_kwargs["callbacks"] = callbacks
    return trainer_kwargs

