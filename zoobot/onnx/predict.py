"""Predict a catalog with an exported ``.onnx`` model: numpy, Pillow and ONNX Runtime only (docs/guides/onnx.md).

:func:`predict` gives what ``zoobot.pytorch.predictions.predict_on_catalog.predict`` and its TensorFlow twin
give for the model the file was exported from: the same array, files, ``id_str`` keys, failures file,
resumable chunks and shards, because it hands its batches to the same
:func:`zoobot.shared.prediction_runner.run_chunked_prediction`. Only the model work differs:

- images are read by :class:`zoobot.onnx.images.BatchReader` (threads, reduced-DCT JPEG decoding, crop
  before float conversion);
- one ONNX Runtime call per batch runs the encoder **once** and the head on ``n_samples`` dropout masks
  (Monte Carlo dropout) drawn here with numpy, so sampling costs about one head per sample.

:func:`get_representations` returns the encoder features (the file's ``features`` output).
Neither PyTorch nor TensorFlow is imported.
"""
from __future__ import annotations

import hashlib
import os
import pathlib

import numpy as np
import pandas as pd

from zoobot.onnx.images import BatchReader, ImagePlan
from zoobot.onnx.metadata import parse_metadata
from zoobot.onnx.runtime import open_session
from zoobot.shared.validation import available_cpus, check_bool, check_choice, check_int

__all__ = ["OnnxModel", "predict", "get_representations"]

_ON_BAD_IMAGE = ("record", "raise")
_TABLE_EXTENSIONS = (".parquet", ".csv")


class OnnxModel:
    """An exported zoobot model opened with ONNX Runtime, with its metadata.

    Parameters
    ----------
    path : str or path-like
        The ``.onnx`` file.
    providers : None, 'auto' or list of str
        ONNX Runtime execution providers (:func:`zoobot.onnx.runtime.resolve_providers`; default CPU).
    num_threads : int, optional
        ONNX Runtime intra-op threads (default: one per core).

    Attributes
    ----------
    metadata : dict
        Decoded ``metadata_props`` (:mod:`zoobot.onnx.metadata`).
    schema : Schema or None
    preprocessing : Preprocessing or None
    label_cols : list of str
    """

    def __init__(self, path, providers=None, num_threads: int | None = None):
        from zoobot.shared.preprocessing import Preprocessing
        from zoobot.shared.schemas import Schema

        self.path = pathlib.Path(os.fspath(path))
        self.session = open_session(self.path, providers, num_threads)
        try:
            self.metadata = parse_metadata(self.session.get_modelmeta().custom_metadata_map)
        except ValueError as err:
            raise ValueError(f"{str(self.path)!r} is {err}") from None
        meta = self.metadata
        self.family, self.kind = meta["zoobot_family"], meta["zoobot_kind"]
        self.label_cols = list(meta["zoobot_label_cols"])
        self.schema = Schema.from_dict(meta["zoobot_schema"]) if meta["zoobot_schema"] else None
        self.preprocessing = Preprocessing.from_dict(meta["zoobot_preprocessing"])
        self.channels, self.input_size = int(meta["zoobot_channels"]), int(meta["zoobot_input_size"])
        self.layout = meta["zoobot_input_layout"]
        self.dropout_rate = float(meta["zoobot_dropout_rate"])
        self.encoder_dim = int(meta["zoobot_encoder_dim"])
        self.has_head = "dropout_mask" in {i.name for i in self.session.get_inputs()}
        self.calibration = meta["zoobot_calibration"]

    def __repr__(self) -> str:
        return (f"OnnxModel({str(self.path)!r}: {self.metadata['zoobot_model_class']} from "
                f"{self.metadata['zoobot_backend']}, {self.channels} channel(s), {self.input_size} px)")

    def digest(self) -> str:
        """SHA-1 of the file (what a resumed prediction checks it still uses)."""
        sha = hashlib.sha1()
        with open(self.path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                sha.update(block)
        return sha.hexdigest()

    def features(self, images: np.ndarray) -> np.ndarray:
        """Encoder features (B, D) of prepared images."""
        feeds = {"image": images}
        if self.has_head:
            feeds["dropout_mask"] = np.ones((1, 1, self.encoder_dim), dtype=np.float32)
        return self.session.run(["features"], feeds)[0]

    def run(self, images: np.ndarray, n_samples: int = 1, dropout: bool = False, rng=None) -> np.ndarray:
        """Predictions ``(B, outputs, n_samples)`` of prepared images (float32 in [0, 1], the file's layout).

        With ``dropout`` the encoder runs once and the head on ``n_samples`` Bernoulli dropout masks
        (drawn from ``rng``, a ``numpy.random.Generator``); without, the head runs once and its output
        is repeated.
        """
        if not self.has_head:
            return np.repeat(self.features(images)[:, :, None], n_samples, axis=2)
        if dropout and self.dropout_rate > 0:
            rng = rng if rng is not None else np.random.default_rng()
            keep = 1.0 - self.dropout_rate
            mask = (rng.random((n_samples, len(images), self.encoder_dim), dtype=np.float32) < keep)
            mask = mask.astype(np.float32) / np.float32(keep)
            return self.session.run(["predictions"], {"image": images, "dropout_mask": mask})[0]
        once = self.session.run(["predictions"], {"image": images,
                                                  "dropout_mask": np.ones((1, 1, self.encoder_dim), np.float32)})[0]
        return np.repeat(once, n_samples, axis=2) if n_samples > 1 else once


def _as_model(model, providers, num_threads) -> OnnxModel:
    if isinstance(model, OnnxModel):
        return model
    if not isinstance(model, (str, os.PathLike)):
        raise TypeError(f"model must be the path of an .onnx file (or an OnnxModel), got {type(model).__name__}. "
                        "Export a framework model first: zoobot export --format onnx (docs/guides/onnx.md).")
    return OnnxModel(model, providers=providers, num_threads=num_threads)


def _image_plan(model: OnnxModel, file_locs) -> ImagePlan:
    from zoobot.shared.preprocessing import resolve_preprocessing

    resolved = resolve_preprocessing(model.preprocessing, {}, model_name=model.metadata["zoobot_model_class"],
                                     file_locs=file_locs, fallback_input_size=model.input_size)
    kwargs = {k: resolved[k] for k in ("crop_scale_bounds", "fits_scaling") if k in resolved}
    return ImagePlan(model.channels, model.input_size, layout=model.layout, **kwargs)


def _resolve_label_cols(label_cols, model: OnnxModel) -> list:
    if label_cols is None:
        return list(model.label_cols)
    label_cols = [label_cols] if isinstance(label_cols, str) else [str(c) for c in label_cols]
    if len(label_cols) != len(model.label_cols):
        raise ValueError(
            f"label_cols has width {len(label_cols)} but the model ({model.metadata['zoobot_model_class']}) predicts "
            f"{len(model.label_cols)} outputs: expected width {len(model.label_cols)}, got width {len(label_cols)}. "
            f"Pass label_cols=None to use the model's own names ({model.label_cols[:3]}...)."
        )
    return label_cols


def _reader_threads(num_workers) -> int:
    return min(2, available_cpus()) if num_workers is None else check_int("num_workers", num_workers, minimum=0)


def _predict_rows(model: OnnxModel, plan: ImagePlan, n_samples: int, dropout: bool, batch_size: int,
                  num_workers: int, on_bad_image: str, seed):
    """``predict_rows`` for :func:`~zoobot.shared.prediction_runner.run_chunked_prediction`."""
    def predict_rows(rows: pd.DataFrame):
        rng = np.random.default_rng(seed)
        ids, locs = rows["id_str"].astype(str).tolist(), rows["file_loc"].tolist()
        reader = BatchReader(locs, ids, plan, batch_size, num_workers, on_bad_image)
        for positions, images, errors in reader:
            predictions = model.run(images, n_samples, dropout, rng)
            failures = None
            if errors:
                failed = sorted(errors)
                failures = pd.DataFrame({"id_str": [ids[i] for i in failed],
                                         "file_loc": [str(locs[i]) for i in failed],
                                         "error": [errors[i] for i in failed]})
            yield positions, predictions, failures

    return predict_rows


def predict(catalog, model, n_samples=1, label_cols=None, save_loc=None, *, test_time_dropout=None,
            on_bad_image="record", check_valid_paths=True, chunk_size=4096, shard=None, calibrate=True,
            batch_size=32, num_workers=None, num_threads=None, providers=None, seed=None) -> np.ndarray:
    """Predict the galaxies of a catalog with an exported ``.onnx`` model; optionally save them.

    Same results and files as the framework's ``predict`` for the model the file came from
    (docs/guides/onnx.md), without PyTorch or TensorFlow.

    Over 80 lines only for its numpydoc; the body is 43 lines.

    Parameters
    ----------
    catalog : pandas.DataFrame
        ``id_str`` (unique) and ``file_loc`` (jpg/png/fits paths).
    model : str, path-like or OnnxModel
        A file from ``zoobot export --format onnx`` (docs/guides/onnx.md).
    n_samples : int, default 1
        Predictions per galaxy; with Monte Carlo dropout active they differ.
    label_cols : list of str, optional
        One name per output (default: the names the file records).
    save_loc : str or path-like, optional
        ``.parquet``, ``.csv`` or ``.hdf5``; failed images are listed in ``<stem>_failures.csv``.
    test_time_dropout : bool, optional (keyword-only)
        None: as the model was built (a ZoobotTree with ``test_time_dropout=True`` samples); True/False
        forces Monte Carlo dropout on/off.
    on_bad_image : {'record', 'raise'}, default 'record'
    check_valid_paths : bool, default True
        Check that every file exists before starting (E5).
    chunk_size : int, default 4096
        Rows per resumable chunk in ``<save_loc>.partial/``.
    shard : tuple or str, optional
        Predict part ``(rank, world_size)``, ``'R/N'`` or ``'auto'`` (docs/guides/scaling_out.md).
    calibrate : bool, default True
        Multiply a tree model's concentrations by the calibration scale the file records.
    batch_size : int, default 32
        Images per ONNX Runtime call.
    num_workers : int, optional
        Image-reading threads (default: 2, or 1 on one core; 0 reads in the calling thread).
    num_threads : int, optional
        ONNX Runtime intra-op threads (default: one per core).
    providers : None, 'auto' or list of str
        Execution providers (default CPU; 'auto' adds CUDA/TensorRT where onnxruntime-gpu has them).
    seed : int, optional
        Seed of the dropout masks (reproducible Monte Carlo samples).

    Returns
    -------
    numpy.ndarray
        float32 (n_galaxies, n_outputs, n_samples) in catalog order; NaN rows for unreadable images.

    Raises
    ------
    CatalogError
        E1, E3, E4 (catalog).
    FileNotFoundError
        E5 (missing images), or no such ``.onnx`` file.
    ImageLoadError
        E6 with ``on_bad_image='raise'``.
    ValueError
        E10 (``label_cols``), E13 (extension, option), a file that is not a zoobot ONNX model.

    Examples
    --------
    >>> from zoobot.onnx import predict
    >>> predictions = predict(catalog, 'model.onnx', n_samples=5, save_loc='preds.parquet')  # doctest: +SKIP
    """
    from zoobot.shared import calibration
    from zoobot.shared.catalogs import validate_catalog
    from zoobot.shared.prediction_runner import run_chunked_prediction
    from zoobot.shared.save_predictions import prediction_format
    from zoobot.shared.sharding import parse_shard

    n_samples = check_int("n_samples", n_samples, minimum=1)
    on_bad_image = check_choice("on_bad_image", on_bad_image, _ON_BAD_IMAGE)
    chunk_size = check_int("chunk_size", chunk_size, minimum=1)
    batch_size = check_int("batch_size", batch_size, minimum=1)
    calibrate = check_bool("calibrate", calibrate)
    if test_time_dropout is not None:
        test_time_dropout = check_bool("test_time_dropout", test_time_dropout)
    num_workers = _reader_threads(num_workers)
    shard = parse_shard(shard)
    if save_loc is not None:
        prediction_format(save_loc)  # E13 before any work
    model = _as_model(model, providers, num_threads)
    label_cols = _resolve_label_cols(label_cols, model)
    catalog = validate_catalog(catalog, label_cols=None, require_file_loc=True, label_kind=None,
                               check_valid_paths=check_valid_paths)
    plan = _image_plan(model, catalog["file_loc"])
    requested = model.metadata["zoobot_test_time_dropout"] if test_time_dropout is None else test_time_dropout
    dropout = bool(requested) and model.has_head and model.dropout_rate > 0
    scale = None
    if model.kind == "tree" and calibrate and model.calibration is not None:
        scale = np.asarray(model.calibration, dtype=np.float64)
    metadata = {
        "model_class": model.metadata["zoobot_model_class"],
        "n_samples": n_samples,
        "test_time_dropout": dropout,
        "test_time_augmentation": False,
        "backend": "onnx",
        "exported_from": model.metadata["zoobot_backend"],
        "concentration_scale": None if scale is None else scale.tolist(),
    }
    resume_key = {"onnx_sha1": model.digest(), "plan": repr(plan), "seed": seed}
    rows = _predict_rows(model, plan, n_samples, dropout, batch_size, num_workers, on_bad_image, seed)
    return run_chunked_prediction(
        catalog, calibration.scaled_rows(rows, scale, model.schema), save_loc=save_loc, label_cols=label_cols,
        kind=model.kind, metadata=metadata, chunk_size=chunk_size, schema=model.schema,
        resume_key=resume_key if save_loc is not None else None, shard=shard,
    )


def get_representations(catalog, model, save_loc=None, batch_size=32, *, num_workers=None, num_threads=None,
                        providers=None, check_valid_paths=True) -> pd.DataFrame:
    """Encoder features of every galaxy, from an exported ``.onnx`` model (any zoobot model: its encoder).

    Parameters
    ----------
    catalog : pandas.DataFrame
        ``id_str`` and ``file_loc``.
    model : str, path-like or OnnxModel
    save_loc : str or path-like, optional
        ``.parquet`` or ``.csv``: ``id_str, feat_0, ..., feat_{d-1}``.
    batch_size, num_workers, num_threads, providers, check_valid_paths
        As in :func:`predict`.

    Returns
    -------
    pandas.DataFrame
        ``id_str`` then ``feat_0 .. feat_{d-1}`` (float32) in catalog order; NaN rows for unreadable
        images (one warning counts them).

    Examples
    --------
    >>> table = get_representations(catalog, 'encoder.onnx')  # doctest: +SKIP
    """
    from zoobot.shared.catalogs import validate_catalog
    from zoobot.shared.errors import unknown_option_error
    from zoobot.shared.prediction_runner import run_chunked_prediction

    suffix = pathlib.Path(os.fspath(save_loc)).suffix.lower() if save_loc is not None else None
    if suffix is not None and suffix not in _TABLE_EXTENSIONS:
        raise unknown_option_error(f"representations file extension (save_loc={os.fspath(save_loc)!r})", suffix,
                                   _TABLE_EXTENSIONS)
    batch_size = check_int("batch_size", batch_size, minimum=1)
    num_workers = _reader_threads(num_workers)
    model = _as_model(model, providers, num_threads)
    catalog = validate_catalog(catalog, label_cols=None, require_file_loc=True, label_kind=None,
                               check_valid_paths=check_valid_paths)
    plan = _image_plan(model, catalog["file_loc"])

    def features_rows(rows):
        reader = BatchReader(rows["file_loc"].tolist(), rows["id_str"].astype(str).tolist(), plan, batch_size,
                             num_workers, "record")
        ids, locs = rows["id_str"].astype(str).tolist(), rows["file_loc"].tolist()
        for positions, images, errors in reader:
            failures = None
            if errors:
                failures = pd.DataFrame({"id_str": [ids[i] for i in sorted(errors)],
                                         "file_loc": [str(locs[i]) for i in sorted(errors)],
                                         "error": [errors[i] for i in sorted(errors)]})
            yield positions, model.features(images)[:, :, None], failures

    columns = [f"feat_{i}" for i in range(model.encoder_dim)]
    features = run_chunked_prediction(catalog, features_rows, label_cols=columns, kind="generic")[:, :, 0]
    table = pd.DataFrame(features.astype(np.float32), columns=columns)
    table.insert(0, "id_str", catalog["id_str"].astype(str).to_numpy())
    if save_loc is not None:
        pathlib.Path(os.fspath(save_loc)).parent.mkdir(parents=True, exist_ok=True)
        if suffix == ".parquet":
            table.to_parquet(save_loc, index=False)
        else:
            table.to_csv(save_loc, index=False)
    return table
