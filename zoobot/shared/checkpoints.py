"""Version stamps in checkpoints and the checks made when loading them (docs/reliability.md).

Every checkpoint either backend writes carries ``zoobot_version`` (the release, e.g. "0.1.0") and
``format_version`` (an integer, :data:`zoobot.FORMAT_VERSION`, bumped when files written by a
release can no longer be read by the previous one). On loading:

- a file with a **newer** format than this installation understands raises
  :class:`~zoobot.shared.errors.CheckpointVersionError` (E11): upgrade zoobot;
- a file with an **older** format (or none, e.g. written by upstream Zoobot) loads with a
  ``UserWarning``: old files stay readable;
- hyperparameters this release does not know (written by another version) are dropped with a
  warning instead of crashing the model's ``__init__``.
"""
from __future__ import annotations

import warnings
from typing import Mapping

import zoobot
from zoobot.shared.errors import CheckpointVersionError

__all__ = ["version_metadata", "check_format_version", "drop_unknown_hparams", "VERSION_KEYS",
           "unreadable_checkpoint_error"]

#: The keys :func:`version_metadata` adds to every checkpoint and saved file.
VERSION_KEYS = ("zoobot_version", "format_version")


def version_metadata() -> dict:
    """The version stamp to store in a checkpoint or file.

    Returns
    -------
    dict
        ``{'zoobot_version': zoobot.__version__, 'format_version': zoobot.FORMAT_VERSION}``.

    Examples
    --------
    >>> sorted(version_metadata())
    ['format_version', 'zoobot_version']
    """
    return {"zoobot_version": zoobot.__version__, "format_version": int(zoobot.FORMAT_VERSION)}


def check_format_version(file_versions: Mapping, path) -> None:
    """Check that a file's ``format_version`` can be read by this installation.

    Parameters
    ----------
    file_versions : mapping
        What the file recorded, e.g. the checkpoint's hyperparameters; the keys ``format_version``
        and ``zoobot_version`` are read (either may be missing).
    path : str or path-like
        The file, named in messages.

    Raises
    ------
    CheckpointVersionError
        (E11) if the file's ``format_version`` is newer than :data:`zoobot.FORMAT_VERSION`,
        or is not an integer.

    Warns
    -----
    UserWarning
        If the file's format is older than this installation's, or it records none.

    Examples
    --------
    >>> check_format_version(version_metadata(), 'model.ckpt')  # same version: silent
    """
    installed = f"zoobot {zoobot.__version__} (format_version {zoobot.FORMAT_VERSION})"
    file_release = file_versions.get("zoobot_version", "unknown") if file_versions is not None else "unknown"
    file_format = file_versions.get("format_version") if file_versions is not None else None
    if file_format is None:
        warnings.warn(
            f"{path} records no format_version (written by upstream Zoobot or before zoobot stored versions); "
            f"loading it with {installed} as format_version 0. Check the results, and re-save the model to "
            "stamp the current format.",
            UserWarning,
            stacklevel=2,
        )
        return
    try:
        file_format_int = int(file_format)
        if file_format_int != float(file_format):
            raise ValueError
    except (TypeError, ValueError):
        raise CheckpointVersionError(
            f"{path} records format_version={file_format!r} (zoobot_version {file_release!r}), which is not an "
            f"integer; installed: {installed}. The file is damaged or was not written by zoobot."
        ) from None
    if file_format_int > zoobot.FORMAT_VERSION:
        raise CheckpointVersionError(
            f"{path} was written by zoobot {file_release} with format_version {file_format_int}, newer than the "
            f"installed {installed} can read. Upgrade zoobot: pip install --upgrade zoobot"
        )
    if file_format_int < zoobot.FORMAT_VERSION:
        warnings.warn(
            f"{path} was written by zoobot {file_release} with format_version {file_format_int}, older than the "
            f"installed {installed}; loading it in compatibility mode. Re-save it to update the file.",
            UserWarning,
            stacklevel=2,
        )


def drop_unknown_hparams(hparams: Mapping, known: set, where: str) -> dict:
    """Keep only the hyperparameters a constructor accepts.

    The version keys (:data:`VERSION_KEYS`) are metadata and are dropped silently unless they are
    in ``known``; any other unknown key is dropped with one warning naming them all.

    Parameters
    ----------
    hparams : mapping
        Hyperparameters read from a checkpoint.
    known : set of str
        Names the constructor accepts.
    where : str
        What is being loaded, named in the warning (e.g. ``"FinetuneableZoobotClassifier from
        best.ckpt"``).

    Returns
    -------
    dict
        The kept hyperparameters, in their original order.

    Warns
    -----
    UserWarning
        If keys other than the version keys are dropped.

    Examples
    --------
    >>> drop_unknown_hparams({'num_classes': 2, 'zoobot_version': '0.1.0'}, {'num_classes'}, 'x.ckpt')
    {'num_classes': 2}
    """
    known = set(known)
    kept = {k: v for k, v in hparams.items() if k in known}
    dropped = [k for k in hparams if k not in known and k not in VERSION_KEYS]
    if dropped:
        warnings.warn(
            f"Loading {where}: ignoring hyperparameters this zoobot version does not know: "
            f"{', '.join(map(repr, dropped))} (written by zoobot {hparams.get('zoobot_version', 'unknown')}, "
            f"installed {zoobot.__version__}).",
            UserWarning,
            stacklevel=2,
        )
    return kept


def unreadable_checkpoint_error(path, error: BaseException, expected: str = "a PyTorch .ckpt file") -> ValueError:
    """The error for a checkpoint file that cannot be read: names the file and, from its bytes, the likely cause.

    Built (not raised) for the backends' loaders, which raise it ``from`` the framework's own error (whose
    text - "Aborted.", ``KeyError: 101``, ``[enforce fail at inline_container.cc]`` - says neither).

    Examples
    --------
    >>> import tempfile, pathlib
    >>> empty = pathlib.Path(tempfile.mkdtemp()) / 'last.ckpt'
    >>> _ = empty.write_bytes(b'')
    >>> 'is empty (0 bytes)' in str(unreadable_checkpoint_error(empty, EOFError()))
    True
    """
    import os
    import pathlib
    import zipfile

    path = pathlib.Path(path)
    size = os.path.getsize(path) if path.is_file() else None
    with open(path, "rb") as f:
        head = f.read(4)
    if size == 0:
        cause = "it is empty (0 bytes): its write was interrupted, or the copy failed"
    elif head.startswith(b"PK"):
        try:
            with zipfile.ZipFile(path) as archive:
                names = archive.namelist()
        except (zipfile.BadZipFile, OSError):
            names = None
        if names is None:
            cause = f"it is a truncated or damaged archive ({size} bytes): copy it again, or use another checkpoint"
        elif any(name.endswith(("config.json", ".weights.h5")) for name in names) and \
                not any(name.endswith("data.pkl") for name in names):
            cause = "it is a Keras .keras file: load it with the TensorFlow backend (--backend tensorflow)"
        else:
            cause = f"its contents are damaged ({type(error).__name__}: {' '.join(str(error).split())[:200]})"
    elif head.startswith(b"\x89HDF"):
        cause = "it is an HDF5 file (Keras weights?), not a PyTorch checkpoint"
    else:
        cause = "it is not a checkpoint written by zoobot (no zip archive; a text file or another format?)"
    return ValueError(f"Cannot read the checkpoint {path}: {cause}. Expected {expected} written by zoobot.")
