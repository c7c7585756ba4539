"""SIGTERM and SIGINT stop a run honestly (issue 12; docs/reliability.md).

A batch scheduler that preempts a job sends SIGTERM; a user at a terminal presses Ctrl+C (SIGINT). Inside
:func:`raise_on_signals` (the ``zoobot`` command line runs every command in it) either signal raises
:class:`Interrupted` in the main thread. It is a ``BaseException``, so no ``except Exception`` of ours or of
a framework mistakes it for an ordinary error: Lightning and Keras stop, what was finished stays on disk
(checkpoints of finished epochs, the Keras backup, finished prediction chunks), and the command prints
:func:`describe` ("interrupted at epoch N / row R; rerun the same command to resume") and exits with
:attr:`Interrupted.exit_code`: 143 for SIGTERM, 130 for SIGINT (128 + the signal number, as a shell
reports a process killed by it) - never 0.

The backends report how far a run got with :func:`note_epoch` (training, finetuning) and the prediction
runner with :func:`note_rows`. Both also stop the run if a signal arrived whose :class:`Interrupted` was lost:
the exception is raised wherever the main thread happens to be, and a library's bare ``except:`` there (an
import, a clean-up) can swallow it, after which a run went on to the end and exited 0.
"""
from __future__ import annotations

import contextlib
import os
import signal
import threading

__all__ = ["Interrupted", "raise_on_signals", "note_epoch", "note_rows", "describe", "reset", "stop_if_signalled"]

_SIGNALS = (signal.SIGTERM, signal.SIGINT)
_PROGRESS: dict = {}
_RECEIVED: list = []  # signals received inside raise_on_signals, in order


class Interrupted(BaseException):
    """Raised by the handlers of :func:`raise_on_signals` when SIGTERM or SIGINT arrives."""

    def __init__(self, signum: int):
        self.signum = int(signum)
        super().__init__(f"received {signal.Signals(self.signum).name}")

    @property
    def exit_code(self) -> int:
        """128 + the signal number: 143 for SIGTERM, 130 for SIGINT."""
        return 128 + self.signum


def reset() -> None:
    """Forget the progress and the signals of an earlier run."""
    _PROGRESS.clear()
    _RECEIVED.clear()


def stop_if_signalled() -> None:
    """Raise :class:`Interrupted` again if a signal arrived: its first one may have been swallowed.

    Examples
    --------
    >>> reset(); stop_if_signalled()  # nothing received: returns
    >>> _RECEIVED.append(signal.SIGTERM)
    >>> stop_if_signalled()
    Traceback (most recent call last):
    ...
    zoobot.shared.interrupts.Interrupted: received SIGTERM
    >>> reset()
    """
    if _RECEIVED:
        raise Interrupted(_RECEIVED[0])


def note_epoch(epoch: int, epochs: int | None = None) -> None:
    """Training or finetuning has started ``epoch`` (counted from 0) of ``epochs``; stops here if a signal arrived."""
    _PROGRESS.update(kind="epoch", epoch=int(epoch), epochs=None if epochs is None else int(epochs))
    stop_if_signalled()


def note_rows(done: int, total: int, partial=None) -> None:
    """Prediction has finished ``done`` of ``total`` rows (finished chunks are kept in ``partial``); stops here if
    a signal arrived."""
    _PROGRESS.update(kind="rows", done=int(done), total=int(total), partial=None if partial is None else str(partial))
    stop_if_signalled()


def describe(error: Interrupted) -> str:
    """What was interrupted, where, and what to do.

    Examples
    --------
    >>> reset(); note_epoch(2, 10)
    >>> describe(Interrupted(signal.SIGTERM))
    'interrupted at epoch 2 (counted from 0) of 10 by SIGTERM; finished epochs are saved; rerun the same command to resume'
    """
    name = signal.Signals(error.signum).name
    kind = _PROGRESS.get("kind")
    if kind == "epoch":
        of = f" of {_PROGRESS['epochs']}" if _PROGRESS.get("epochs") else ""
        where = f"at epoch {_PROGRESS['epoch']} (counted from 0){of} by {name}; finished epochs are saved"
    elif kind == "rows":
        kept = f" in {_PROGRESS['partial']}" if _PROGRESS.get("partial") else ""
        where = (f"at row {_PROGRESS['done']} of {_PROGRESS['total']} by {name}; finished chunks are kept{kept}")
    else:
        where = f"by {name} before any epoch or row was finished"
    return f"interrupted {where}; rerun the same command to resume"


@contextlib.contextmanager
def raise_on_signals():
    """Within this block, SIGTERM and SIGINT raise :class:`Interrupted` in this process's main thread.

    Worker processes forked inside the block (data loaders) keep the usual behaviour: SIGTERM ends them,
    SIGINT raises ``KeyboardInterrupt``. Outside the main thread this does nothing.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    owner = os.getpid()

    def handler(signum, frame):
        if os.getpid() != owner:  # a forked worker: behave as if no handler were installed
            if signum == signal.SIGINT:
                raise KeyboardInterrupt
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)
            return
        _RECEIVED.append(signum)
        raise Interrupted(signum)

    previous = {signum: signal.getsignal(signum) for signum in _SIGNALS}
    reset()
    for signum in _SIGNALS:
        signal.signal(signum, handler)
    try:
        yield
    finally:
        for signum, old in previous.items():
            signal.signal(signum, old if old is not None else signal.SIG_DFL)
