"""A quiet console: progress that suits a terminal or a log file, and the dependencies' noise filtered at its source.

Framework-free helpers that both backends use (docs/cli.md, "What the console shows"):

- :func:`is_terminal` and :func:`progress_bar`: a tqdm bar on a terminal; one line per 10 % when the output
  goes to a file (a batch log keeps every line, no carriage returns or colour codes);
- :func:`format_epoch_line`: the one line per epoch both backends print when stdout is not a terminal;
- :func:`quiet_dependencies`: drops the start-up lines of Lightning (GPU/TPU availability, the litlogger
  advertisement) and one deprecation warning Lightning triggers inside torch, unless zoobot's logger is at
  DEBUG;
- :func:`quiet_native_startup`: hides TensorFlow's C++ start-up lines (oneDNN, CPU features, absl's
  "before InitializeLog" notice) while TensorFlow is imported.

Examples
--------
>>> format_epoch_line(0, 10, {'loss': 0.51234, 'val_loss': 0.6, 'lr': 1e-4}, seconds=2.25)
'Epoch 1/10: loss 0.5123, val_loss 0.6000, lr 0.0001 (2.2 s)'
>>> import io
>>> out = io.StringIO()
>>> with progress_bar(total=4, desc='Predicting', unit='galaxy', file=out) as bar:
...     for _ in range(4):
...         bar.update(1)
>>> print(out.getvalue().strip())
Predicting: 1/4 galaxy (25%)
Predicting: 2/4 galaxy (50%)
Predicting: 3/4 galaxy (75%)
Predicting: 4/4 galaxy (100%)
"""
from __future__ import annotations

import contextlib
import logging
import math
import os
import re
import sys
import tempfile
import time
import warnings

__all__ = ["is_terminal", "progress_bar", "format_epoch_line", "quiet_dependencies", "quiet_native_startup"]

#: Start of the INFO lines Lightning prints at every ``Trainer`` start that say nothing about this run.
_LIGHTNING_NOISE = ("GPU available:", "TPU available:", "HPU available:", "IPU available:", "💡 Tip:",
                    "`Trainer.fit` stopped: `max_epochs=")
_LIGHTNING_LOGGERS = ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero",
                      "pytorch_lightning.utilities.rank_zero")
#: Lightning 2.6 calls a torch pytree API that torch 2.14 deprecated; nothing a user can do about it.
_DEPENDENCY_WARNINGS = (r"`isinstance\(treespec, LeafSpec\)` is deprecated",)
#: TensorFlow's C++ start-up lines (TF 2.21 logs them through absl before ``TF_CPP_MIN_LOG_LEVEL`` is read).
_NATIVE_NOISE = re.compile(
    r"All log messages before absl::InitializeLog|oneDNN custom operations are on|cpu_feature_guard|"
    r"This TensorFlow binary is optimized|To enable the following instructions|rebuild TensorFlow with|"
    r"Unable to register cu(DNN|FFT|BLAS) factory|computation_placer|TF-TRT Warning|"
    r"Could not find cuda drivers|failed call to cuInit|E0000 00:00:.*cuda"
)


def is_terminal(stream=None) -> bool:
    """True when ``stream`` (default ``sys.stdout``) is an interactive terminal, or a Jupyter notebook's output."""
    stream = sys.stdout if stream is None else stream
    if stream in (sys.stdout, sys.stderr) and _in_notebook():
        return True  # notebooks redraw bars in place, although their streams are not ttys
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


def _in_notebook() -> bool:
    shell = sys.modules.get("IPython")
    if shell is None or "ipykernel" not in sys.modules:
        return False
    try:
        return shell.get_ipython() is not None
    except Exception:  # an unusual IPython: treat as a plain stream
        return False


def _zoobot_debug() -> bool:
    return logging.getLogger("zoobot").getEffectiveLevel() <= logging.DEBUG


# ---------------------------------------------------------------------------------------------
# progress
# ---------------------------------------------------------------------------------------------

class _LineProgress:
    """tqdm's ``update``/``close`` interface, printing one line per ``step`` percent (for log files)."""

    def __init__(self, total, desc: str, unit: str, initial: int = 0, step: int = 10, file=None):
        self.total, self.desc, self.unit, self.n = total, desc, unit, int(initial)
        self.step, self.file = step, file
        self._printed = self._bucket()

    def _bucket(self) -> int:
        if not self.total:
            return 0
        return int(math.floor(100 * self.n / self.total / self.step))

    def update(self, n: int = 1) -> None:
        self.n += int(n)
        bucket = self._bucket()
        if bucket > self._printed:
            self._printed = bucket
            percent = 100 * self.n / self.total
            print(f"{self.desc}: {self.n}/{self.total} {self.unit} ({percent:.0f}%)",
                  file=self.file if self.file is not None else sys.stderr, flush=True)

    def close(self) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def progress_bar(total, *, desc: str, unit: str = "it", initial: int = 0, disable: bool = False, file=None):
    """A progress bar over ``total`` items: tqdm on a terminal, one line per 10 % otherwise.

    Parameters
    ----------
    total : int or None
    desc, unit : str
        Label and unit of the bar.
    initial : int, default 0
        Items already done (a resumed job).
    disable : bool, default False
        Show nothing.
    file : file-like, optional
        Where to write (default ``sys.stderr``); the choice between bar and lines follows this stream.

    Returns
    -------
    object with ``update(n)`` and ``close()``, usable as a context manager.
    """
    stream = sys.stderr if file is None else file
    if disable or not total:
        from tqdm.auto import tqdm

        return tqdm(total=total, desc=desc, unit=unit, initial=initial, disable=True)
    if is_terminal(stream):
        from tqdm.auto import tqdm

        return tqdm(total=total, desc=desc, unit=unit, initial=initial, file=file)
    return _LineProgress(total, desc, unit, initial=initial, file=file)


def format_epoch_line(epoch: int, max_epochs: int | None, metrics: dict, seconds: float | None = None) -> str:
    """``'Epoch 3/10: loss 0.4123, val_loss 0.5011 (12.3 s)'`` (``epoch`` counts from 0)."""
    parts = []
    for name, value in metrics.items():
        try:
            number = float(value)
        except (TypeError, ValueError):
            continue
        shown = f"{number:.4g}" if number != 0 and (abs(number) < 1e-3 or abs(number) >= 1e5) else f"{number:.4f}"
        parts.append(f"{name} {shown}")
    total = f"/{max_epochs}" if max_epochs else ""
    line = f"Epoch {epoch + 1}{total}: " + ", ".join(parts)
    if seconds is not None:
        line += f" ({seconds:.1f} s)"
    return line


class EpochTimer:
    """Seconds since :meth:`start` (a helper for the per-epoch lines)."""

    def __init__(self) -> None:
        self.started = time.perf_counter()

    def start(self) -> None:
        self.started = time.perf_counter()

    def seconds(self) -> float:
        return time.perf_counter() - self.started


# ---------------------------------------------------------------------------------------------
# dependency noise
# ---------------------------------------------------------------------------------------------

class _DropStartupLines(logging.Filter):
    """Drops Lightning's start-up INFO lines (kept when zoobot's logger is at DEBUG)."""

    _zoobot_quiet = True

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno > logging.INFO or _zoobot_debug():
            return True
        return not str(record.getMessage()).startswith(_LIGHTNING_NOISE)


def quiet_dependencies() -> None:
    """Filter the noise of Lightning and torch at its source (idempotent; kept at zoobot DEBUG level).

    Adds a ``logging.Filter`` to Lightning's rank-zero loggers that drops the lines in
    ``_LIGHTNING_NOISE``, and ignores the warnings in ``_DEPENDENCY_WARNINGS`` (matched by message, so
    nothing else is hidden).
    """
    for name in _LIGHTNING_LOGGERS:
        logger = logging.getLogger(name)
        if not any(getattr(f, "_zoobot_quiet", False) for f in logger.filters):
            logger.addFilter(_DropStartupLines())
    if not _zoobot_debug():
        for message in _DEPENDENCY_WARNINGS:
            warnings.filterwarnings("ignore", message=message)


@contextlib.contextmanager
def quiet_native_startup():
    """Hide TensorFlow's C++ start-up lines written to file descriptor 2 inside this block.

    TensorFlow 2.21 logs them through absl before ``absl::InitializeLog`` runs, so
    ``TF_CPP_MIN_LOG_LEVEL`` does not reach them (it still silences the later ones and is set too).
    Everything else written to stderr in the block is passed on unchanged when the block ends. With
    zoobot's logger at DEBUG, or ``ZOOBOT_SHOW_NATIVE_LOGS=1``, nothing is hidden.
    """
    if _zoobot_debug() or os.environ.get("ZOOBOT_SHOW_NATIVE_LOGS", "") not in ("", "0"):
        yield
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError, AttributeError):  # no real stderr (embedded interpreters)
        yield
        return
    with tempfile.TemporaryFile(mode="w+b") as capture:
        os.dup2(capture.fileno(), 2)
        try:
            yield
        finally:
            try:
                sys.stderr.flush()
            except (OSError, ValueError):
                pass
            os.dup2(saved, 2)
            os.close(saved)
            capture.seek(0)
            kept = [line for line in capture.read().decode("utf-8", "replace").splitlines(keepends=True)
                    if not _NATIVE_NOISE.search(line)]
            if kept:
                sys.stderr.write("".join(kept))
                sys.stderr.flush()
