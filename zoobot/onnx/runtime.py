"""Opening an ``.onnx`` file with ONNX Runtime: execution providers and threads (docs/guides/onnx.md)."""
from __future__ import annotations

import os
import pathlib

__all__ = ["open_session", "resolve_providers", "PROVIDER_CHOICES"]

#: Accelerated execution providers tried, in this order, by ``providers='auto'`` (CPU always last).
PROVIDER_CHOICES = ("TensorrtExecutionProvider", "CUDAExecutionProvider", "CoreMLExecutionProvider")
_CPU = "CPUExecutionProvider"


def _ort():
    try:
        import onnxruntime
    except ImportError:
        from zoobot.shared.errors import missing_dependency

        raise missing_dependency("onnxruntime", "Predicting with an .onnx model", "onnx") from None
    return onnxruntime


def resolve_providers(providers=None) -> list:
    """The ONNX Runtime execution providers to use.

    Parameters
    ----------
    providers : None, 'auto', str or list of str
        None or 'cpu': ``['CPUExecutionProvider']`` (the default, tested here). 'auto': every
        accelerated provider of :data:`PROVIDER_CHOICES` this onnxruntime build offers (CUDA and
        TensorRT with ``onnxruntime-gpu``), then the CPU. A list: those providers, in order.

    Raises
    ------
    ValueError
        A provider this onnxruntime build lacks (naming the ones it has).

    Examples
    --------
    >>> resolve_providers()
    ['CPUExecutionProvider']
    """
    ort = _ort()
    available = list(ort.get_available_providers())
    if providers is None or providers == "cpu":
        return [_CPU]
    if providers == "auto":
        return [p for p in PROVIDER_CHOICES if p in available] + [_CPU]
    if isinstance(providers, str):
        providers = [providers]
    providers = [str(p) for p in providers]
    missing = [p for p in providers if p not in available]
    if missing:
        raise ValueError(f"onnxruntime here has no {missing[0]}; available: {available}. Install onnxruntime-gpu "
                         "for CUDA/TensorRT, or pass providers='auto' to use whatever is available.")
    return providers


def open_session(onnx_path, providers=None, num_threads: int | None = None):
    """An ``onnxruntime.InferenceSession`` of ``onnx_path`` with all graph optimisations.

    ``num_threads``: ONNX Runtime's intra-op threads (None: its default, one per core).

    Raises
    ------
    FileNotFoundError
        No such file.
    """
    ort = _ort()
    path = pathlib.Path(os.fspath(onnx_path))
    if not path.is_file():
        raise FileNotFoundError(f"No ONNX model at {str(path)!r} (working directory {os.getcwd()!r}).")
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3
    if num_threads is not None:
        options.intra_op_num_threads = int(num_threads)
        options.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), sess_options=options, providers=resolve_providers(providers))
