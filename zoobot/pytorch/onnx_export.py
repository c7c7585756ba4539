"""Export a PyTorch zoobot model to one ``.onnx`` file for :mod:`zoobot.onnx` (docs/guides/onnx.md).

:func:`export_onnx` takes a ZoobotTree, a finetuned model (classifier, regressor, tree), an encoder
(e.g. a ZoobotEncoder, for representations) or a checkpoint path of one, and writes the graph contract
of :mod:`zoobot.onnx.metadata`: inputs ``image`` (B, C, H, W) and, for models with a head,
``dropout_mask`` (S, B, D); outputs ``predictions`` (B, outputs, S) and ``features`` (B, D). The head's
dropout layer (the first layer of every zoobot head) becomes the multiplication by ``dropout_mask``, so
Monte Carlo dropout runs the encoder once and the head on S masks, in one ONNX Runtime call.

The export goes through ``torch.onnx.export`` and is checked: ONNX Runtime and PyTorch must agree on a
random batch within 1e-4 (relative), else the file is removed and an error raised.
"""
from __future__ import annotations

import copy
import os
import pathlib
import warnings

import numpy as np
import torch
from torch import nn

__all__ = ["export_onnx"]

_DROPOUT = nn.modules.dropout._DropoutNd
OPSET = 18


class _Graph(nn.Module):
    """encoder -> (features * dropout_mask) -> head without its dropout -> what predict returns."""

    def __init__(self, encoder: nn.Module, head: nn.Module | None, family: str):
        super().__init__()
        self.encoder, self.head, self.family = encoder, head, family

    def forward(self, image, dropout_mask=None):
        features = self.encoder(image).reshape(image.shape[0], -1)
        if self.head is None:
            return features
        out = self.head(features.unsqueeze(0) * dropout_mask)  # (S, B, outputs)
        if self.family == "classifier":
            out = torch.softmax(out, dim=-1)
        return out.permute(1, 2, 0), features


class _LinearHeadWithoutDropout(nn.Module):
    def __init__(self, head):
        super().__init__()
        self.linear, self.activation = head.linear, head.activation

    def forward(self, x):
        x = self.linear(x)
        return self.activation(x) if self.activation is not None else x


def _split_head(model: nn.Module) -> tuple[nn.Module, float]:
    """The model's head without its leading dropout layer, and that layer's probability."""
    head = model.head
    dropouts = [m for m in head.modules() if isinstance(m, _DROPOUT)]
    if isinstance(head, nn.Sequential) and len(head) and isinstance(head[0], _DROPOUT) and len(dropouts) == 1:
        return nn.Sequential(*list(head)[1:]), float(head[0].p)
    if hasattr(head, "linear") and hasattr(head, "dropout") and dropouts == [head.dropout]:
        return _LinearHeadWithoutDropout(head), float(head.dropout.p)
    raise NotImplementedError(
        f"{type(model).__name__}.head ({type(head).__name__}) is not a zoobot head (dropout first, then the "
        "layers): export its encoder alone for representations, or a ZoobotTree / Finetuneable* model."
    )


def _as_model(model_or_checkpoint_path):
    if isinstance(model_or_checkpoint_path, nn.Module):
        return model_or_checkpoint_path
    if isinstance(model_or_checkpoint_path, (str, os.PathLike)):
        from zoobot.cli._common import load_model

        return load_model(pathlib.Path(os.fspath(model_or_checkpoint_path)), backend="pytorch")
    raise TypeError(f"export_onnx needs a torch.nn.Module or a .ckpt path, got {type(model_or_checkpoint_path).__name__}")


def _describe(model: nn.Module):
    from zoobot.pytorch.predictions.predict_on_catalog import describe_model

    return describe_model(model)


def _graph_of(model, spec) -> tuple[_Graph, float]:
    if spec.family == "features":  # an encoder (e.g. a ZoobotEncoder): the whole model gives the features
        return _Graph(model, None, "features"), 0.0
    head, rate = _split_head(model)
    return _Graph(model.encoder, head, spec.family), rate


def _torch_export(graph: _Graph, example: tuple, out_path: pathlib.Path, has_head: bool) -> None:
    names = ["image", "dropout_mask"] if has_head else ["image"]
    outputs = ["predictions", "features"] if has_head else ["features"]
    axes = {"image": {0: "batch"}, "features": {0: "batch"}}
    if has_head:
        axes.update({"dropout_mask": {0: "samples", 1: "mask_batch"}, "predictions": {0: "batch", 2: "samples"}})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the exporter's own deprecation and tracer notices
        torch.onnx.export(graph, example, str(out_path), input_names=names, output_names=outputs,
                          dynamic_axes=axes, opset_version=OPSET, dynamo=False)


def _check(out_path, graph, example, has_head) -> float:
    """Largest difference between ONNX Runtime and PyTorch, relative to the largest output."""
    from zoobot.onnx.metadata import relative_difference
    from zoobot.onnx.runtime import open_session

    session = open_session(out_path)
    feeds = {"image": example[0].numpy()}
    if has_head:
        feeds["dropout_mask"] = example[1].numpy()
    got = session.run(None, feeds)
    with torch.no_grad():
        want = graph(*example)
    want = want if isinstance(want, tuple) else (want,)
    worst = 0.0
    for g, w in zip(got, want):
        w = w.numpy()
        worst = max(worst, relative_difference(g, w))
    return worst


def export_onnx(model_or_checkpoint_path, out_path, *, batch_size: int = 2, check: bool = True) -> pathlib.Path:
    """Write a PyTorch zoobot model (or a ``.ckpt`` file) as one ``.onnx`` file with its metadata.

    Parameters
    ----------
    model_or_checkpoint_path : torch.nn.Module, str or path-like
        A ZoobotTree, FinetuneableZoobotClassifier/Regressor/Tree, an encoder (ZoobotEncoder or any module
        mapping (B, C, H, W) to (B, D)), or a checkpoint written by ``zoobot train`` / ``zoobot finetune``.
    out_path : str or path-like
        The ``.onnx`` file to write (its folder is created).
    batch_size : int, default 2
        Size of the example batch traced (any batch size runs afterwards).
    check : bool, default True
        Run the file with ONNX Runtime and compare with PyTorch (within 1e-4 relative to the largest
        output); on a mismatch the file is removed and RuntimeError raised.

    Returns
    -------
    pathlib.Path
        ``out_path``.

    Raises
    ------
    TypeError
        ``model_or_checkpoint_path`` is neither a module nor a path.
    NotImplementedError
        A model whose head is not a zoobot head (dropout first).
    RuntimeError
        ONNX Runtime disagrees with PyTorch.

    Examples
    --------
    >>> from zoobot.shared import schemas
    >>> from zoobot.pytorch.estimators.define_model import ZoobotTree
    >>> model = ZoobotTree(2, schema=schemas.gz_rings_schema, architecture_name='tiny_cnn')
    >>> export_onnx(model, 'rings.onnx').name  # doctest: +SKIP
    'rings.onnx'
    """
    from zoobot.onnx.metadata import metadata_of_model, write_metadata

    model = _as_model(model_or_checkpoint_path)
    out_path = pathlib.Path(os.fspath(out_path))
    out_path.parent.mkdir(parents=True, exist_ok=True)
    spec = _describe(model)
    was_training = model.training
    model = copy.deepcopy(model).eval()  # the caller's model keeps its state (dropout flags, device)
    model.cpu()
    try:
        graph, rate = _graph_of(model, spec)
        graph.eval()
        generator = torch.Generator().manual_seed(0)
        image = torch.rand(batch_size, spec.channels, spec.input_size, spec.input_size, generator=generator)
        with torch.no_grad():
            encoder_dim = int(graph.encoder(image).reshape(batch_size, -1).shape[1])
        has_head = graph.head is not None
        example = (image,)
        if has_head:
            mask = (torch.rand(3, batch_size, encoder_dim, generator=generator) > 0.5).float() * 2
            example = (image, mask)
        _torch_export(graph, example, out_path, has_head)
        if check:
            worst = _check(out_path, graph, example, has_head)
            if worst > 1e-4:
                out_path.unlink(missing_ok=True)
                raise RuntimeError(f"ONNX Runtime and PyTorch disagree on {type(model).__name__} by {worst:.2g} "
                                   "(relative to the largest output; 1e-4 allowed); nothing was written.")
        write_metadata(out_path, metadata_of_model(model, spec, backend="pytorch", input_layout="NCHW",
                                                     dropout_rate=rate, encoder_dim=encoder_dim))
    finally:
        model.train(was_training)
    return out_path
