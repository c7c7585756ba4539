"""Prediction from exported ``.onnx`` models with neither PyTorch nor TensorFlow (docs/guides/onnx.md).

``pip install "zoobot[onnx]"`` (numpy, Pillow, pandas, pyarrow, onnxruntime) is enough to run

>>> from zoobot.onnx import predict, get_representations
>>> predictions = predict(catalog, 'model.onnx', n_samples=5, save_loc='preds.parquet')  # doctest: +SKIP

Models are exported from either backend with ``zoobot export --format onnx`` or
``zoobot.pytorch.onnx_export.export_onnx`` / ``zoobot.tensorflow.onnx_export.export_onnx``.
"""
from zoobot.onnx.metadata import read_metadata
from zoobot.onnx.predict import OnnxModel, get_representations, predict

__all__ = ["predict", "get_representations", "OnnxModel", "read_metadata"]
