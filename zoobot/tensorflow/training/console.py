"""What a Keras run shows on the console (docs/cli.md, "What the console shows").

On a terminal Keras draws its own per-step bar (``verbose=1``). Elsewhere (a batch log, a redirected
file) :class:`EpochLineLogger` prints one line per epoch in the format the PyTorch backend uses
(:func:`zoobot.shared.console.format_epoch_line`), with no carriage returns or colour codes.

The PyTorch twin is :mod:`zoobot.pytorch.training.console`.
"""
from __future__ import annotations

import sys

import keras

from zoobot.shared.console import EpochTimer, format_epoch_line, is_terminal

__all__ = ["EpochLineLogger", "fit_verbosity"]


class EpochLineLogger(keras.callbacks.Callback):
    """Print ``Epoch 3/10: loss 0.41, val_loss 0.50 (12.3 s)`` to stdout at the end of each epoch."""

    def __init__(self, max_epochs: int | None = None, hide=(), keep=None):
        super().__init__()
        self.max_epochs = max_epochs
        self.hide = set(hide)  # names not to show (aliases of metrics shown under another name)
        self.keep = None if keep is None else tuple(keep)  # only these names, in this order (None: all)
        self._timer = EpochTimer()

    def on_epoch_begin(self, epoch, logs=None):
        self._timer.start()

    def on_epoch_end(self, epoch, logs=None):
        max_epochs = self.max_epochs or (self.params or {}).get("epochs")
        print(format_epoch_line(epoch, max_epochs, self._shown(logs or {}), self._timer.seconds()), file=sys.stdout,
              flush=True)

    def _shown(self, logs: dict) -> dict:
        if self.keep is not None:
            return {k: logs[k] for k in self.keep if k in logs}
        return {k: v for k, v in logs.items() if k not in self.hide}


def fit_verbosity(enabled: bool = True, max_epochs: int | None = None, hide=(), keep=None) -> tuple[int, list]:
    """``(verbose, extra_callbacks)`` for ``model.fit``: Keras's bar on a terminal, our epoch lines elsewhere."""
    if not enabled:
        return 0, []
    if is_terminal():
        return 1, []
    return 0, [EpochLineLogger(max_epochs, hide=hide, keep=keep)]
