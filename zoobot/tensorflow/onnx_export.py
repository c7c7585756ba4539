"""Export a TensorFlow (Keras 3) zoobot model to one ``.onnx`` file for :mod:`zoobot.onnx` (docs/guides/onnx.md).

The twin of ``zoobot.pytorch.onnx_export``: the same graph contract (:mod:`zoobot.onnx.metadata`), with
the image input in the TensorFlow layout ``(B, H, W, C)``. The model's inference function (encoder ->
features * ``dropout_mask`` -> the head's layers after its dropout) is traced as a ``tf.function`` and
converted with ``tf2onnx`` (chosen by the round-trip tests in tests/onnx: Keras 3's
``Model.export(format='onnx')`` also goes through tf2onnx, but exports only the model's ``call``, with no
second input for the dropout mask and no features output). The file is checked against TensorFlow.
"""
from __future__ import annotations

import os
import pathlib
import shutil
import tempfile

import keras
import numpy as np
import tensorflow as tf

__all__ = ["export_onnx"]

OPSET = 17


def _as_model(model_or_checkpoint_path):
    if isinstance(model_or_checkpoint_path, keras.Model):
        return model_or_checkpoint_path
    if isinstance(model_or_checkpoint_path, (str, os.PathLike)):
        from zoobot.cli._common import load_model

        return load_model(pathlib.Path(os.fspath(model_or_checkpoint_path)), backend="tensorflow")
    raise TypeError(f"export_onnx needs a keras.Model or a .keras path, got {type(model_or_checkpoint_path).__name__}")


def _head_layers(model) -> tuple[list, float]:
    """The head's layers after its leading dropout layer, and that layer's rate."""
    head = model.head
    layers = list(getattr(head, "layers", []) or [])
    if isinstance(head, keras.Sequential) and layers and isinstance(layers[0], keras.layers.Dropout) \
            and not any(isinstance(layer, keras.layers.Dropout) for layer in layers[1:]):
        return layers[1:], float(layers[0].rate)
    if hasattr(head, "dense") and isinstance(getattr(head, "dropout", None), keras.layers.Dropout):
        steps = [head.dense] + ([head.activation] if head.activation is not None else [])
        return steps, float(head.dropout.rate)
    raise NotImplementedError(
        f"{type(model).__name__}.head ({type(head).__name__}) is not a zoobot head (dropout first, then the "
        "layers): export its encoder alone for representations, or a ZoobotTree / Finetuneable* model."
    )


def _functions(model, spec):
    """(function, input signature, output names, dropout rate, encoder)."""
    size, channels = spec.input_size, spec.channels
    image = tf.TensorSpec([None, size, size, channels], tf.float32, name="image")
    if spec.family == "features":
        def features_only(image):
            features = model(image, training=False)
            return {"features": tf.reshape(features, [tf.shape(image)[0], -1])}

        return features_only, [image], ["features"], 0.0, model
    layers, rate = _head_layers(model)
    encoder, family = model.encoder, spec.family

    def with_head(image, dropout_mask):
        features = tf.reshape(encoder(image, training=False), [tf.shape(image)[0], -1])
        x = features[tf.newaxis] * dropout_mask  # (S, B, D)
        for layer in layers:
            x = layer(x)
        if family == "classifier":
            x = tf.nn.softmax(x, axis=-1)
        return {"predictions": tf.transpose(x, [1, 2, 0]), "features": features}

    mask = tf.TensorSpec([None, None, None], tf.float32, name="dropout_mask")
    return with_head, [image, mask], ["predictions", "features"], rate, encoder


def _convert(function, signature, names, out_path: pathlib.Path) -> None:
    """Freeze the traced function (variables and captured tensors, e.g. the mean and variance of Keras'
    EfficientNet input normalisation, become constants), convert it with tf2onnx and give the graph's
    inputs and outputs the contract's names."""
    try:
        import tf2onnx
    except ImportError:
        from zoobot.shared.errors import missing_dependency

        raise missing_dependency("tf2onnx", "Exporting a TensorFlow model to ONNX", "onnx-export") from None
    import onnx
    from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

    frozen = convert_variables_to_constants_v2(tf.function(function, input_signature=signature).get_concrete_function())
    inputs = [t.name for t in frozen.inputs if t.dtype != tf.resource]
    outputs = [t.name for t in frozen.outputs]
    proto, _ = tf2onnx.convert.from_graph_def(frozen.graph.as_graph_def(), input_names=inputs, output_names=outputs,
                                              opset=OPSET)
    # outputs come in the order of the flattened dict (sorted keys); inputs in the signature's order
    renames = dict(zip(outputs, sorted(names)))
    renames.update(zip(inputs, [spec.name for spec in signature]))
    for value in list(proto.graph.input) + list(proto.graph.output):
        value.name = renames.get(value.name, value.name)
    for node in proto.graph.node:
        node.input[:] = [renames.get(n, n) for n in node.input]
        node.output[:] = [renames.get(n, n) for n in node.output]
    onnx.save(proto, str(out_path))


def _check(out_path, function, example: dict) -> float:
    from zoobot.onnx.metadata import relative_difference
    from zoobot.onnx.runtime import open_session

    got = open_session(out_path).run(None, example)
    names = [o.name for o in open_session(out_path).get_outputs()]
    want = function(*[tf.constant(v) for v in example.values()])
    worst = 0.0
    for name, g in zip(names, got):
        w = np.asarray(want[name])
        worst = max(worst, relative_difference(g, w))
    return worst


def export_onnx(model_or_checkpoint_path, out_path, *, batch_size: int = 2, check: bool = True) -> pathlib.Path:
    """Write a TensorFlow zoobot model (or a ``.keras`` file) as one ``.onnx`` file with its metadata.

    Parameters
    ----------
    model_or_checkpoint_path : keras.Model, str or path-like
        A ZoobotTree, FinetuneableZoobotClassifier/Regressor/Tree, an encoder (ZoobotEncoder or any model
        mapping (B, H, W, C) to (B, D)), or a ``.keras`` file written by ``zoobot train`` / ``zoobot finetune``.
    out_path : str or path-like
        The ``.onnx`` file to write (its folder is created).
    batch_size : int, default 2
        Size of the example batch checked (any batch size runs afterwards).
    check : bool, default True
        Run the file with ONNX Runtime and compare with TensorFlow (within 1e-4 relative to the largest
        output); on a mismatch the file is removed and RuntimeError raised.

    Returns
    -------
    pathlib.Path
        ``out_path``.

    Raises
    ------
    TypeError
        ``model_or_checkpoint_path`` is neither a Keras model nor a path.
    NotImplementedError
        A model whose head is not a zoobot head (dropout first).
    RuntimeError
        ONNX Runtime disagrees with TensorFlow.

    Examples
    --------
    >>> from zoobot.shared import schemas
    >>> from zoobot.tensorflow.estimators.define_model import ZoobotTree
    >>> model = ZoobotTree(2, schema=schemas.gz_rings_schema, architecture_name='tiny_cnn')
    >>> export_onnx(model, 'rings.onnx').name  # doctest: +SKIP
    'rings.onnx'
    """
    from zoobot.onnx.metadata import metadata_of_model, write_metadata
    from zoobot.tensorflow.predictions.predict_on_catalog import describe_model

    model = _as_model(model_or_checkpoint_path)
    out_path = pathlib.Path(os.fspath(out_path))
    out_path.parent.mkdir(parents=True, exist_ok=True)
    spec = describe_model(model)
    function, signature, names, rate, encoder = _functions(model, spec)
    rng = np.random.default_rng(0)
    image = rng.random((batch_size, spec.input_size, spec.input_size, spec.channels), dtype=np.float32)
    features = np.asarray(encoder(image, training=False)).reshape(batch_size, -1)
    example = {"image": image}
    if len(signature) == 2:
        example["dropout_mask"] = (rng.random((3, batch_size, features.shape[1])) > 0.5).astype(np.float32) * 2
    with tempfile.TemporaryDirectory() as scratch:
        tmp = pathlib.Path(scratch) / out_path.name
        _convert(function, signature, names, tmp)
        if check:
            worst = _check(tmp, function, example)
            if worst > 1e-4:
                raise RuntimeError(f"ONNX Runtime and TensorFlow disagree on {type(model).__name__} by {worst:.2g} "
                                   "(relative to the largest output; 1e-4 allowed); nothing was written.")
        write_metadata(tmp, metadata_of_model(model, spec, backend="tensorflow", input_layout="NHWC",
                                                dropout_rate=rate, encoder_dim=int(features.shape[1])))
        shutil.move(str(tmp), str(out_path))
    return out_path
