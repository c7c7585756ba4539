"""What an exported encoder folder records besides the weights (``zoobot export``), framework-free.

Both backends' ``export_encoder`` write :data:`METADATA_FILE` next to the weights: the zoobot
version, the architecture, channels, input size, pixel convention, the preprocessing record and
the task (decision-tree schema or finetuning task) of the checkpoint it came from. See
docs/pretrained_models.md.
"""
from __future__ import annotations

import os
import pathlib

from zoobot.shared.validation import check_bool

__all__ = ["METADATA_FILE", "EXPORT_FILES", "encoder_metadata", "prepare_out_dir"]

#: The zoobot side file of an exported encoder folder.
METADATA_FILE = "zoobot.json"
#: Files an export writes (and ``overwrite=True`` replaces).
EXPORT_FILES = ("config.json", "model.safetensors", "encoder.keras", METADATA_FILE)
#: Hyperparameters that describe the task the encoder was trained for.
_TASK_KEYS = ("schema", "question_answer_pairs", "dependencies", "label_cols", "num_classes", "unit_interval",
              "loss")


def prepare_out_dir(out_dir, overwrite: bool) -> pathlib.Path:
    """Create ``out_dir``; refuse (FileExistsError) a folder that already holds files unless ``overwrite``.

    Examples
    --------
    >>> import tempfile
    >>> folder = prepare_out_dir(pathlib.Path(tempfile.mkdtemp()) / 'encoder', overwrite=False)
    >>> folder.is_dir()
    True
    """
    overwrite = check_bool("overwrite", overwrite)
    out_dir = pathlib.Path(os.fspath(out_dir)).expanduser()
    if out_dir.exists() and not out_dir.is_dir():
        raise FileExistsError(f"--out {out_dir} is a file; give a folder to write the encoder into.")
    if out_dir.is_dir() and any(out_dir.iterdir()):
        if not overwrite:
            raise FileExistsError(
                f"{out_dir} already holds files. Give a new folder, or pass overwrite=True (--overwrite) to "
                "replace an earlier export there."
            )
        for name in EXPORT_FILES:
            (out_dir / name).unlink(missing_ok=True)
    out_dir.mkdir(parents=True, exist_ok=True)
    return out_dir


def encoder_metadata(checkpoint: dict, source, architecture: str, channels: int, backend: str) -> dict:
    """The side-file record of an export from a checkpoint's contents.

    Parameters
    ----------
    checkpoint : dict
        ``hyper_parameters`` (dict), and where present ``zoobot_input_size`` and ``preprocessing``.
    source : path-like
        The checkpoint file, recorded by name.
    architecture : str
    channels : int
    backend : {'pytorch', 'tensorflow'}

    Examples
    --------
    >>> meta = encoder_metadata({'hyper_parameters': {'num_classes': 2}}, 'best.ckpt', 'resnet18', 3, 'pytorch')
    >>> meta['architecture'], meta['channels'], meta['input_size'], meta['task']
    ('resnet18', 3, 224, {'num_classes': 2})
    """
    from zoobot import __version__

    hparams = dict(checkpoint.get("hyper_parameters") or {})
    preprocessing = checkpoint.get("preprocessing")
    input_size = checkpoint.get("zoobot_input_size") or hparams.get("input_size") or 224
    return {
        "format": "zoobot-encoder",
        "format_version": 1,
        "zoobot_version": __version__,
        "exported_from": {"backend": backend, "checkpoint": pathlib.Path(os.fspath(source)).name},
        "architecture": architecture,
        "channels": int(channels),
        "input_size": int(input_size),
        "pixel_scale": "0-1",
        "preprocessing": preprocessing,
        "task": {key: hparams[key] for key in _TASK_KEYS if hparams.get(key) is not None},
    }
