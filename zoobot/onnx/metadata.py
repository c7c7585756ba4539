"""What an exported ``.onnx`` model carries besides its weights: the graph contract and ``metadata_props``.

Every zoobot ONNX file has inputs ``image`` (float32 in [0, 1], NCHW from PyTorch, NHWC from TensorFlow)
and, for models with a head, ``dropout_mask`` (S Bernoulli masks for Monte Carlo dropout, the encoder run
once); outputs ``predictions`` ``(B, outputs, S)`` and ``features`` ``(B, D)``. The metadata keys
(``zoobot_label_cols``, ``zoobot_schema``, ``zoobot_channels``, ``zoobot_input_size``,
``zoobot_preprocessing``, ``zoobot_calibration``, ...) are listed in docs/guides/onnx.md; read them with
:func:`read_metadata`. This module is framework-free; writing the metadata needs the ``onnx`` package,
reading it only ``onnxruntime``.
"""
from __future__ import annotations

import json
import os
from typing import Mapping

__all__ = ["FORMAT", "KEYS", "model_metadata", "metadata_of_model", "write_metadata", "read_metadata",
           "parse_metadata", "relative_difference"]

#: Version of the graph contract and metadata layout.
FORMAT = 1
#: Metadata keys every zoobot ONNX file has.
KEYS = ("zoobot_onnx_format", "zoobot_version", "zoobot_backend", "zoobot_model_class", "zoobot_family",
        "zoobot_kind", "zoobot_label_cols", "zoobot_schema", "zoobot_channels", "zoobot_input_size",
        "zoobot_input_layout", "zoobot_preprocessing", "zoobot_calibration", "zoobot_dropout_rate",
        "zoobot_test_time_dropout", "zoobot_encoder_dim")
_FAMILIES = ("tree", "classifier", "regressor", "features")


def model_metadata(*, backend: str, model_class: str, family: str, kind: str, label_cols, schema, channels: int,
                   input_size: int, input_layout: str, preprocessing, calibration, dropout_rate: float,
                   test_time_dropout: bool, encoder_dim: int) -> dict:
    """The metadata of one exported model (JSON-ready values), checked.

    ``schema`` is a :class:`~zoobot.shared.schemas.Schema` or None; ``preprocessing`` a
    :class:`~zoobot.shared.preprocessing.Preprocessing` or None; ``calibration`` the per-question
    scale (a sequence of floats) or None.

    Examples
    --------
    >>> meta = model_metadata(backend='pytorch', model_class='ZoobotEncoder', family='features', kind='generic',
    ...                       label_cols=['feat_0'], schema=None, channels=1, input_size=32, input_layout='NCHW',
    ...                       preprocessing=None, calibration=None, dropout_rate=0.0, test_time_dropout=False,
    ...                       encoder_dim=1)
    >>> parse_metadata({k: json.dumps(v) for k, v in meta.items()})['zoobot_channels']
    1
    """
    from zoobot import __version__

    if family not in _FAMILIES:
        raise ValueError(f"family must be one of {_FAMILIES}, got {family!r}")
    if input_layout not in ("NCHW", "NHWC"):
        raise ValueError(f"input_layout must be 'NCHW' or 'NHWC', got {input_layout!r}")
    return {
        "zoobot_onnx_format": FORMAT,
        "zoobot_version": __version__,
        "zoobot_backend": backend,
        "zoobot_model_class": model_class,
        "zoobot_family": family,
        "zoobot_kind": kind,
        "zoobot_label_cols": [str(c) for c in label_cols],
        "zoobot_schema": None if schema is None else schema.to_dict(),
        "zoobot_channels": int(channels),
        "zoobot_input_size": int(input_size),
        "zoobot_input_layout": input_layout,
        "zoobot_preprocessing": None if preprocessing is None else preprocessing.to_dict(),
        "zoobot_calibration": None if calibration is None else [float(s) for s in calibration],
        "zoobot_dropout_rate": float(dropout_rate),
        "zoobot_test_time_dropout": bool(test_time_dropout),
        "zoobot_encoder_dim": int(encoder_dim),
    }


def metadata_of_model(model, spec, *, backend: str, input_layout: str, dropout_rate: float, encoder_dim: int) -> dict:
    """:func:`model_metadata` of a framework model described by its backend's ``describe_model`` (``spec``):
    its class, preprocessing record, calibration scale (tree models) and ``test_time_dropout`` default."""
    from zoobot.shared import calibration

    own = getattr(model, "test_time_dropout", None)
    scale = calibration.model_scale(model, True) if spec.kind == "tree" else None
    return model_metadata(
        backend=backend, model_class=type(model).__name__, family=spec.family, kind=spec.kind,
        label_cols=spec.label_cols, schema=spec.schema, channels=spec.channels, input_size=spec.input_size,
        input_layout=input_layout, preprocessing=getattr(model, "preprocessing", None), calibration=scale,
        dropout_rate=dropout_rate, test_time_dropout=bool(own) if isinstance(own, bool) else False,
        encoder_dim=encoder_dim,
    )


def relative_difference(got, want) -> float:
    """Largest absolute difference of two arrays relative to the largest ``|want|`` (the export check).

    Examples
    --------
    >>> relative_difference([1.0, 2.0], [1.0, 4.0])
    0.5
    """
    import numpy as np

    got, want = np.asarray(got, dtype=np.float64), np.asarray(want, dtype=np.float64)
    return float(np.max(np.abs(got - want)) / max(float(np.max(np.abs(want))), 1e-12))


def write_metadata(onnx_path, metadata: Mapping) -> None:
    """Store ``metadata`` (JSON-encoded values) in the ``metadata_props`` of an ``.onnx`` file, in place."""
    try:
        import onnx
    except ImportError:
        from zoobot.shared.errors import missing_dependency

        raise missing_dependency("onnx", "Exporting to ONNX", "onnx") from None
    model = onnx.load(os.fspath(onnx_path))
    props = {p.key: p.value for p in model.metadata_props}
    props.update({key: json.dumps(value) for key, value in metadata.items()})
    onnx.helper.set_model_props(model, props)
    onnx.save(model, os.fspath(onnx_path))


def parse_metadata(props: Mapping[str, str]) -> dict:
    """Decode the ``metadata_props`` of a zoobot ONNX file; raises ValueError if it is not one."""
    missing = [k for k in KEYS if k not in props]
    if missing:
        raise ValueError(
            f"not a zoobot ONNX model: its metadata lacks {', '.join(missing[:4])}. Export models with "
            "`zoobot export --format onnx` or zoobot.<backend>.onnx_export.export_onnx (docs/guides/onnx.md)."
        )
    meta = {key: json.loads(props[key]) for key in KEYS}
    if int(meta["zoobot_onnx_format"]) > FORMAT:
        raise ValueError(f"this ONNX model uses zoobot ONNX format {meta['zoobot_onnx_format']}, newer than this "
                         f"zoobot reads ({FORMAT}); upgrade zoobot.")
    return meta


def read_metadata(onnx_path) -> dict:
    """The zoobot metadata of an ``.onnx`` file (needs only ``onnxruntime``).

    Raises
    ------
    FileNotFoundError
        No such file.
    ValueError
        A file that is not a zoobot ONNX model.
    """
    from zoobot.onnx.runtime import open_session

    return parse_metadata(open_session(onnx_path).get_modelmeta().custom_metadata_map)
