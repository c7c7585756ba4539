"""``zoobot export``: a trained model's encoder as a folder other tools and the other backend load.

``--format timm`` (default) writes a timm Hugging Face folder (``config.json``, ``model.safetensors``,
``zoobot.json``) from a PyTorch ``.ckpt`` (:func:`zoobot.pytorch.export.export_encoder`): both backends
load it as ``--name local-dir:DIR``. From a TensorFlow ``.keras`` file the folder holds
``encoder.keras`` instead (:func:`zoobot.tensorflow.export.export_encoder`; keras-hub writes no timm
files). ``--format onnx`` calls the backend's ``onnx_export.export_onnx``. See docs/pretrained_models.md.
"""
from __future__ import annotations

import importlib
import pathlib

import click

from zoobot.cli._common import common_options

FORMATS = ("timm", "onnx")


def _backend_of(checkpoint: pathlib.Path) -> str:
    suffix = checkpoint.suffix.lower()
    if suffix == ".keras":
        return "tensorflow"
    if suffix == ".ckpt":
        return "pytorch"
    raise ValueError(f"--checkpoint {checkpoint} is neither a PyTorch .ckpt nor a Keras .keras file: give a model "
                     "written by `zoobot train` or `zoobot finetune`.")


def export(checkpoint, out, export_format: str = "timm", overwrite: bool = False) -> pathlib.Path:
    """Export ``checkpoint`` to ``out`` in ``export_format``; the backend follows the file's extension."""
    from zoobot.shared.validation import check_choice

    export_format = check_choice("export format", export_format, FORMATS)
    checkpoint, out = pathlib.Path(checkpoint), pathlib.Path(out)
    backend = _backend_of(checkpoint)
    if export_format == "onnx":
        try:
            module = importlib.import_module(f"zoobot.{backend}.onnx_export")
        except ModuleNotFoundError as error:
            if (error.name or "").startswith("zoobot."):
                raise NotImplementedError(f"This installation of zoobot has no {error.name}: ONNX export is not "
                                          "available.") from error
            raise
        return module.export_onnx(str(checkpoint), str(out))
    module = importlib.import_module(f"zoobot.{backend}.export")
    return module.export_encoder(checkpoint, out, overwrite=overwrite)


@click.command("export")
@click.option("--checkpoint", type=click.Path(exists=True, dir_okay=False, path_type=pathlib.Path), required=True,
              help="A model from `zoobot train` / `zoobot finetune` (.ckpt: PyTorch, .keras: TensorFlow).")
@click.option("--out", type=click.Path(path_type=pathlib.Path), required=True,
              help="Folder to write (timm) or .onnx file (onnx).")
@click.option("--format", "export_format", type=click.Choice(FORMATS), default="timm", show_default=True,
              help="timm: a timm Hugging Face folder (config.json + model.safetensors + zoobot.json) that both "
                   "backends load with --name local-dir:OUT; onnx: an ONNX model.")
@click.option("--overwrite", is_flag=True, help="Replace an earlier export in --out.")
@common_options
def export_command(checkpoint, out, export_format, overwrite):
    """Export the encoder of a trained model, e.g. to finetune a PyTorch-trained encoder in TensorFlow."""
    written = export(checkpoint, out, export_format, overwrite)
    click.echo(f"exported {checkpoint} -> {written}")


COMMANDS = [export_command]
