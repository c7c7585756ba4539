"""Export the encoder of a PyTorch zoobot checkpoint as a timm Hugging Face folder.

:func:`export_encoder` writes, from a ``ZoobotTree`` or ``Finetuneable*`` ``.ckpt``::

    out_dir/config.json         timm's config (architecture, model_args, pretrained_cfg)
    out_dir/model.safetensors   the encoder's weights (timm's own saving: timm.models.save_for_hf)
    out_dir/zoobot.json         zoobot's side file: schema/task, channels, input size, preprocessing

The folder is what a Hugging Face Hub repo of a published Zoobot encoder holds, so it loads as
``'local-dir:out_dir'`` in both backends (TensorFlow converts it with keras-hub, for the families
keras-hub knows), or can be uploaded to the Hub and named ``'hf-hub:owner/repo'``. The pretrained
config records zoobot's pixel convention: images in [0, 1], no mean/std normalisation (mean 0,
std 1). The twin :mod:`zoobot.tensorflow.export` writes a Keras folder. The command line:
``zoobot export --checkpoint CKPT --out DIR`` (docs/pretrained_models.md).
"""
from __future__ import annotations

import json
import os
import pathlib

from zoobot.shared.export import METADATA_FILE, encoder_metadata, prepare_out_dir

__all__ = ["export_encoder"]


def export_encoder(checkpoint_path, out_dir, overwrite: bool = False) -> pathlib.Path:
    """Write the timm encoder of a PyTorch zoobot checkpoint to ``out_dir`` (timm Hugging Face format).

    Parameters
    ----------
    checkpoint_path : str or path-like
        A ``.ckpt`` written by ``ZoobotTree`` training or a ``Finetuneable*`` model, with a timm encoder.
    out_dir : str or path-like
        The folder to write (created; must be empty unless ``overwrite``).
    overwrite : bool, default False
        Replace the export files of an existing folder.

    Returns
    -------
    pathlib.Path
        ``out_dir``.

    Raises
    ------
    FileNotFoundError
        No such checkpoint.
    FileExistsError
        ``out_dir`` holds files and ``overwrite`` is False.
    ValueError
        The encoder is not a timm model (``tiny_cnn``, a custom ``encoder=``): timm folders hold timm
        architectures only.
    """
    import timm

    from zoobot.pytorch.estimators.define_model import read_checkpoint
    from zoobot.pytorch.estimators.pretrained_encoders import encoder_architecture, encoder_channels
    from zoobot.pytorch.training.finetune import load_pretrained_zoobot

    checkpoint_path = pathlib.Path(os.fspath(checkpoint_path))
    out_dir = prepare_out_dir(out_dir, overwrite)
    checkpoint = read_checkpoint(checkpoint_path)
    encoder = load_pretrained_zoobot(checkpoint_path).eval()
    architecture = encoder_architecture(encoder)
    if architecture is None or architecture == "tiny_cnn" or not timm.is_model(architecture):
        raise ValueError(
            f"{checkpoint_path} has a {architecture or type(encoder).__name__} encoder, which is not a timm "
            "architecture, so it cannot be exported as a timm folder. Export models trained with a timm "
            "encoder (e.g. model_architecture='efficientnet_b0' or name='hf-hub:...'), or use --format onnx."
        )
    channels = encoder_channels(encoder)
    metadata = encoder_metadata(checkpoint, checkpoint_path, architecture, channels, backend="pytorch")
    size = metadata["input_size"]
    data_config = {"input_size": (channels, size, size), "mean": (0.0,) * channels, "std": (1.0,) * channels,
                   "crop_pct": 1.0, "interpolation": "bilinear"}
    # the architecture's default tag names ImageNet weights: say whose weights these are
    provenance = {"pretrained_cfg": {"tag": "zoobot", "license": "see zoobot.json", "origin_url": "zoobot export"}}
    timm.models.save_for_hf(encoder, str(out_dir), model_config=provenance, safe_serialization=True,
                            data_config=data_config)
    (out_dir / METADATA_FILE).write_text(json.dumps(metadata, indent=2) + "\n", encoding="utf-8")
    return out_dir
