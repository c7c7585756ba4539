"""Export the encoder of a TensorFlow zoobot model as a folder the TensorFlow backend loads by name.

The twin of :mod:`zoobot.pytorch.export`. keras-hub reads timm checkpoints but does not write them,
so a Keras encoder is exported in Keras format::

    out_dir/encoder.keras   the encoder (a Keras model: images in [0, 1] -> pooled features)
    out_dir/zoobot.json     zoobot's side file: schema/task, channels, input size, preprocessing

which ``'local-dir:out_dir'`` loads in ``zoobot.tensorflow`` (``create_encoder``, the finetuning
classes' ``name=``). For an encoder that runs anywhere, use ``zoobot export --format onnx``; for
one that both backends load, train or finetune it with ``zoobot.pytorch`` and export a timm folder
(docs/pretrained_models.md).
"""
from __future__ import annotations

import json
import os
import pathlib

from zoobot.shared.export import METADATA_FILE, encoder_metadata, prepare_out_dir

__all__ = ["export_encoder"]


def export_encoder(checkpoint_path, out_dir, overwrite: bool = False) -> pathlib.Path:
    """Write the encoder of a ``.keras`` zoobot model (``ZoobotTree`` or ``Finetuneable*``) to ``out_dir``.

    Parameters
    ----------
    checkpoint_path : str or path-like
        A ``.keras`` file written by zoobot training or finetuning.
    out_dir : str or path-like
        The folder to write (created; must be empty unless ``overwrite``).
    overwrite : bool, default False
        Replace the export files of an existing folder.

    Returns
    -------
    pathlib.Path
        ``out_dir``, holding ``encoder.keras`` and ``zoobot.json``.
    """
    from zoobot.tensorflow.estimators.define_model import load_zoobot_model

    checkpoint_path = pathlib.Path(os.fspath(checkpoint_path))
    if not checkpoint_path.is_file():
        raise FileNotFoundError(f"No checkpoint file at {checkpoint_path}")
    out_dir = prepare_out_dir(out_dir, overwrite)
    try:
        from zoobot.tensorflow.training import finetune  # noqa: F401  (registers the finetuning classes)
    except ImportError:
        pass
    model = load_zoobot_model(checkpoint_path)
    encoder = getattr(model, "encoder", None)
    if encoder is None:
        raise ValueError(f"{checkpoint_path} holds a {type(model).__name__} without an encoder; give a zoobot "
                         "model file (ZoobotTree or a finetuned model).")
    hparams = dict(getattr(model, "hparams", None) or {})
    for key in ("schema", "question_answer_pairs", "dependencies", "label_cols", "num_classes"):
        value = getattr(model, key, None)
        if key not in hparams and isinstance(value, (int, list, dict)):
            hparams[key] = value
    schema = getattr(model, "schema", None)
    if hasattr(schema, "to_dict"):
        hparams["schema"] = schema.to_dict()
    preprocessing = getattr(model, "preprocessing", None)
    contents = {"hyper_parameters": hparams, "zoobot_input_size": getattr(model, "input_size", None),
                "preprocessing": preprocessing.to_dict() if hasattr(preprocessing, "to_dict") else preprocessing}
    channels = int(encoder.input_shape[-1])
    architecture = getattr(model, "architecture", None) or getattr(model, "architecture_name", None) or encoder.name
    encoder.save(out_dir / "encoder.keras")
    metadata = encoder_metadata(contents, checkpoint_path, str(architecture), channels, backend="tensorflow")
    (out_dir / METADATA_FILE).write_text(json.dumps(metadata, indent=2) + "\n", encoding="utf-8")
    return out_dir
