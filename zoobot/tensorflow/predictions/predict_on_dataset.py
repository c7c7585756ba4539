"""Predictions from a ``tf.data.Dataset`` of ``(images, id_str)`` batches (upstream Zoobot 1.x API;
docs/components/predictions_and_representations.md).

For catalogs of image files prefer :func:`zoobot.tensorflow.predictions.predict_on_catalog.predict`
(chunked, resumable, records unreadable images). This module serves users who build their own
dataset, e.g. from :func:`zoobot.tensorflow.data_utils.image_datasets.get_image_dataset` and
:func:`zoobot.tensorflow.preprocess.preprocess_dataset` with ``label_cols=[]``::

    paths = predict_on_dataset.paths_in_folder('images', file_format='png')
    raw = image_datasets.get_image_dataset(paths, 'png', 224, 64)
    ds = preprocess.preprocess_dataset(raw, preprocess.PreprocessingConfig([], 224))
    predict_on_dataset.predict(ds, model, n_samples=5, label_cols=schema.label_cols, save_loc='preds.parquet')
"""
from __future__ import annotations

import os
import pathlib
import sys

import numpy as np
import tensorflow as tf

from tqdm.auto import tqdm

from zoobot.shared.console import is_terminal
from zoobot.shared.errors import unknown_option_error
from zoobot.shared.validation import check_int

__all__ = ["predict", "paths_in_folder"]

_FORMATS = {"png": (".png",), "jpg": (".jpg", ".jpeg"), "jpeg": (".jpg", ".jpeg"),
            "fits": (".fits", ".fit", ".fits.gz")}


def predict(ds, model, n_samples, label_cols, save_loc):
    """Predict every batch of ``ds`` ``n_samples`` times and save the results.

    Parameters
    ----------
    ds : tf.data.Dataset
        Batches of ``(images, id_str)``: images (B, H, W, C) float32 in [0, 1] (NHWC), ``id_str``
        strings (B,). The ids are read from the dataset and key the output rows.
    model : keras.Model
        A zoobot Keras model (ZoobotTree, ``get_model`` model, finetuned model, encoder).
    n_samples : int
        Predictions per galaxy (Monte Carlo dropout samples when the model's dropout is active; the
        encoder of zoobot models runs once per batch).
    label_cols : list of str
        One name per model output (e.g. ``schema.label_cols``).
    save_loc : str or path-like, optional
        ``.parquet``, ``.csv`` or ``.hdf5``/``.h5`` (layout in
        docs/components/predictions_and_representations.md); None: do not save.

    Returns
    -------
    numpy.ndarray
        (n_galaxies, n_outputs, n_samples) float32 in dataset order.

    Raises
    ------
    ValueError
        (E13) unknown ``save_loc`` extension (checked before any compute); (E10) ``label_cols`` of the
        wrong width; a dataset that does not yield ``(images, id_str)``.
    ChannelMismatchError, PixelScaleError
        (E7, E8) on the first batch.

    Examples
    --------
    >>> predictions = predict(ds, model, n_samples=5, label_cols=schema.label_cols,
    ...                       save_loc='predictions.parquet')  # doctest: +SKIP
    """
    from zoobot.shared import save_predictions
    from zoobot.shared.prediction_runner import requested_dropout, resolve_label_cols
    from zoobot.tensorflow.predictions.predict_on_catalog import _make_step, _mc_layers, describe_model

    n_samples = check_int("n_samples", n_samples, minimum=1)
    if save_loc is not None:
        save_predictions.prediction_format(save_loc)  # E13 before any compute
    if not isinstance(ds, tf.data.Dataset):
        raise TypeError(f"ds must be a tf.data.Dataset of (images, id_str) batches, got {type(ds).__name__}")
    spec = describe_model(model)
    label_cols = resolve_label_cols(label_cols, spec)
    mc_before = [(layer, layer.mc_active) for layer in _mc_layers(model)]
    step, dropout_active = _make_step(spec, requested_dropout(model, None), n_samples)
    try:
        predictions, ids = _predict_batches(ds, step, spec, len(label_cols))
    finally:
        for layer, state in mc_before:
            layer.mc_active = state
    if save_loc is not None:
        metadata = {
            "model_class": type(model).__name__,
            "n_samples": n_samples,
            "test_time_dropout": bool(dropout_active),
            "test_time_augmentation": False,
            "backend": "tensorflow",
        }
        save_predictions.save(predictions, ids, label_cols, save_loc, kind=spec.kind, metadata=metadata,
                              schema=spec.schema)
    return predictions


def _predict_batches(ds, step, spec, n_outputs: int):
    """``(predictions, ids)`` of every ``(images, id_str)`` batch of ``ds``, run through the compiled ``step``."""
    from zoobot.tensorflow.estimators.define_model import check_images

    outputs, ids = [], []
    # a transient bar on a terminal only (a log file would keep every redraw)
    for i, element in enumerate(tqdm(ds, desc="predict", leave=False, disable=not is_terminal(sys.stderr))):
        if not isinstance(element, (tuple, list)) or len(element) < 2:
            raise ValueError(
                "ds must yield (images, id_str) batches so that predictions can be keyed by id_str; build it "
                "with preprocess_dataset(..., PreprocessingConfig(label_cols=[], ...)) or "
                "GalaxyDataModule(...).predict_dataloader()."
            )
        images, batch_ids = element[0], element[1]
        if i == 0:
            check_images(images, spec.channels, where="predict_on_dataset.predict")
        out = step(images).numpy()
        if out.shape[1] != n_outputs:
            raise ValueError(
                f"The model returned {out.shape[1]} outputs per galaxy but {n_outputs} label_cols were "
                f"given (expected width {n_outputs}, got width {out.shape[1]})."
            )
        outputs.append(out)
        ids.extend(i.decode() if isinstance(i, bytes) else str(i) for i in batch_ids.numpy())
    if not outputs:
        raise ValueError("ds yielded no batches")
    return np.concatenate(outputs).astype(np.float32), ids


def paths_in_folder(folder, file_format, recursive=False):
    """The image files of one format in a folder, sorted.

    Parameters
    ----------
    folder : str or path-like
    file_format : {'png', 'jpg', 'jpeg', 'fits'}
        ``'jpg'`` and ``'jpeg'`` both match ``.jpg`` and ``.jpeg`` files; matching ignores case.
    recursive : bool, default False
        Also search subfolders.

    Returns
    -------
    list of str

    Raises
    ------
    FileNotFoundError
        If ``folder`` does not exist.
    ValueError
        (E13) unknown ``file_format``.

    Examples
    --------
    >>> paths_in_folder('images', 'png')  # doctest: +SKIP
    ['images/a.png', 'images/b.png']
    """
    if file_format not in _FORMATS:
        raise unknown_option_error("file_format", file_format, list(_FORMATS))
    folder = pathlib.Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"No folder {os.fspath(folder)!r} (working directory {os.getcwd()!r}).")
    suffixes = _FORMATS[file_format]
    candidates = folder.rglob("*") if recursive else folder.iterdir()
    return sorted(os.fspath(p) for p in candidates if p.is_file() and p.name.lower().endswith(suffixes))
