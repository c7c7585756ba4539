"""One run per ``save_dir`` (docs/reliability.md), shared by both backends' ``train`` and the
``zoobot finetune`` command.

A ``save_dir`` holds one training run: its ``checkpoints/`` (PyTorch ``last.ckpt`` and ``epoch=N.ckpt``,
Keras ``last.keras`` and ``epoch=N.keras``), the Keras ``backup/`` it resumes from, ``logs/`` and the
``config.json`` that describes it. :func:`claim_save_dir` decides, before any expensive work, what a new
call may do with a folder:

- no checkpoints yet: start (a ``config.json`` left by a run that never saved a checkpoint is replaced);
- checkpoints of a run that can be resumed, and ``resume=True``: resume it - only when the recorded
  arguments match (:func:`zoobot.shared.training_config.check_resume_config`);
- ``overwrite=True``: delete the earlier run's files (:data:`RUN_FILES` only) and start afresh;
- anything else: refuse with :class:`SaveDirInUseError`, so that ``last.ckpt`` is always the run that
  ``config.json`` describes (no ``last-v1.ckpt`` next to another run's ``last.ckpt``).

``config.json`` itself is written by the backends when training starts, not before (a run that fails
while it is set up leaves the folder as it was).
"""
from __future__ import annotations

import pathlib
import shutil
from typing import Mapping, Sequence

from zoobot.shared.validation import check_save_dir  # noqa: F401  (re-exported)

__all__ = ["SaveDirInUseError", "RUN_FILES", "checkpoint_files", "claim_save_dir", "claim_save_dir_for_fit", "clear_run",
           "check_save_dir"]

#: What a training run writes into its ``save_dir`` (and what ``overwrite=True`` deletes; nothing else is).
RUN_FILES = ("checkpoints", "backup", "logs", "config.json", "train_catalog.parquet", "val_catalog.parquet",
             "test_catalog.parquet", "test_predictions.parquet")


class SaveDirInUseError(FileExistsError):
    """A ``save_dir`` holds the checkpoints of another run (pass ``overwrite=True``, resume it, or use a new folder)."""


def checkpoint_files(save_dir) -> list[pathlib.Path]:
    """The checkpoint and backup files of the run in ``save_dir`` (empty when there is none).

    Examples
    --------
    >>> import tempfile
    >>> checkpoint_files(tempfile.mkdtemp())
    []
    """
    save_dir = pathlib.Path(save_dir)
    found = []
    for folder in (save_dir / "checkpoints", save_dir / "backup"):
        if folder.is_dir():
            found += sorted(path for path in folder.rglob("*") if path.is_file())
    return found


def clear_run(save_dir) -> None:
    """Delete the files of :data:`RUN_FILES` in ``save_dir`` (the user's other files stay)."""
    save_dir = pathlib.Path(save_dir)
    for name in RUN_FILES:
        path = save_dir / name
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()


def claim_save_dir(save_dir, config: Mapping, *, resume: bool, overwrite: bool, resumable: bool,
                   ignore: Sequence[str] = (), clear: bool = True) -> bool:
    """May a run with ``config`` use ``save_dir``? Returns True to resume the run found there.

    Parameters
    ----------
    save_dir : str or path-like
    config : mapping
        The new run's arguments, as written to ``config.json``.
    resume : bool
        Continue the run found there (if ``resumable`` and its arguments match).
    overwrite : bool
        Delete the run found there and start afresh.
    resumable : bool
        Whether the run found there can be continued (PyTorch: ``checkpoints/last.ckpt`` exists; Keras: a
        backup exists).
    ignore : sequence of str
        Arguments that may change on resumption (not compared).
    clear : bool
        Whether this process deletes the old files with ``overwrite`` (False on the other processes of a
        multi-process run, so that only one deletes).

    Returns
    -------
    bool
        True: resume; False: start afresh (the folder holds no checkpoints any more).

    Raises
    ------
    SaveDirInUseError
        The folder holds another run's checkpoints, and it is neither resumed nor overwritten.
    ValueError
        ``resume=True`` but the recorded arguments differ (names each, with both values).

    Examples
    --------
    >>> import tempfile
    >>> claim_save_dir(tempfile.mkdtemp(), {}, resume=True, overwrite=False, resumable=False)
    False
    """
    from zoobot.shared.training_config import check_resume_config

    existing = checkpoint_files(save_dir)
    if not existing:
        return False
    if overwrite:
        if clear:
            clear_run(save_dir)
        return False
    if resume and resumable:
        check_resume_config(save_dir, config, ignore=ignore)
        return True
    why = ("resume=False was given" if resumable else
           "that run cannot be resumed (it has no last checkpoint)")
    raise SaveDirInUseError(
        f"{_holds_another_run(save_dir, existing)} and {why}. Pass overwrite=True (command line: --overwrite) to "
        "replace that run, rerun with the same arguments and resume=True to continue it, or choose a new save_dir."
    )


def claim_save_dir_for_fit(save_dir, *, resuming: bool, overwrite: bool, last: str, clear: bool = True) -> None:
    """May a finetuning ``fit`` (Python API) write its checkpoints into ``save_dir``?

    The rule of :func:`claim_save_dir` for ``trainer.fit``, which knows no run arguments: a fit that resumes
    (``ckpt_path`` given) or finds no checkpoints may go on; ``overwrite`` deletes the earlier run's files
    (:data:`RUN_FILES`); anything else is refused, so that no ``last-v1.ckpt`` appears next to another
    run's ``last.ckpt``.

    Parameters
    ----------
    save_dir : str or path-like
    resuming : bool
        ``fit`` was given a ``ckpt_path`` to continue from.
    overwrite : bool
        ``get_trainer(..., overwrite=True)``.
    last : str
        The backend's last checkpoint name (``'last.ckpt'``, ``'last.keras'``), for the message.
    clear : bool
        Whether this process deletes the old files (False on all but one process of a multi-process run).

    Raises
    ------
    SaveDirInUseError
        ``save_dir`` holds checkpoints, and the fit neither resumes nor overwrites them.

    Examples
    --------
    >>> import tempfile
    >>> claim_save_dir_for_fit(tempfile.mkdtemp(), resuming=False, overwrite=False, last='last.ckpt')
    """
    existing = checkpoint_files(save_dir)
    if not existing or resuming:
        return
    if overwrite:
        if clear:
            clear_run(save_dir)
        return
    last_path = pathlib.Path(save_dir) / "checkpoints" / last
    raise SaveDirInUseError(
        f"{_holds_another_run(save_dir, existing)}. Pass get_trainer(..., overwrite=True) to replace that run, "
        f"trainer.fit(..., ckpt_path={str(last_path)!r}) to continue it, or choose a new save_dir."
    )


def _holds_another_run(save_dir, existing: Sequence[pathlib.Path]) -> str:
    shown = ", ".join(path.relative_to(save_dir).as_posix() for path in existing[:4])
    return f"{save_dir} already holds the checkpoints of another run ({shown}{', ...' if len(existing) > 4 else ''})"
