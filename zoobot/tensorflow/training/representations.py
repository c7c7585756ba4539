"""Representations: the encoder's features of every galaxy in a catalog (docs/components/predictions_and_representations.md).

The twin of :mod:`zoobot.pytorch.training.representations`. A trained encoder turns each image into a
vector (e.g. 1280 numbers for EfficientNet-B0) that sums up its morphology; use it for similarity
search, clustering, anomaly detection, or as input to a simple model
(:func:`zoobot.shared.compress_representations.create_pca_embedding` compresses it).

- :class:`ZoobotEncoder` wraps any Keras encoder as a model whose ``call`` returns the features;
- :func:`get_representations` computes them for a catalog and returns (and optionally saves) a table
  ``id_str, feat_0, ..., feat_{d-1}``. It accepts an encoder, a ZoobotTree or finetuned model (its
  encoder is used), a ``.keras`` file or a pretrained encoder name.

Examples
--------
>>> from zoobot.tensorflow.training import representations
>>> table = representations.get_representations(catalog, model, save_loc='features.parquet')  # doctest: +SKIP
"""
from __future__ import annotations

import os
import pathlib

import keras
import numpy as np
import pandas as pd

from zoobot.shared.errors import ChannelMismatchError, unknown_option_error
from zoobot.shared.validation import check_int
from zoobot.shared.save_predictions import write_table as _write_table

__all__ = ["ZoobotEncoder", "get_representations"]

_TABLE_EXTENSIONS = (".parquet", ".csv")


@keras.saving.register_keras_serializable(package="zoobot")
class ZoobotEncoder(keras.Model):
    """An encoder as a Keras model: ``call(images) -> features (B, encoder_dim)``.

    Parameters
    ----------
    encoder : keras.Model
        Maps images (B, H, W, C) float32 in [0, 1] to pooled features (B, D).
    channels : int, optional
        Input channels; default: the encoder's input shape, else 3.
    input_size : int, optional
        Image side the encoder expects; default: its input shape, else 224.

    Attributes
    ----------
    encoder : keras.Model
    channels, input_size, encoder_dim : int

    Raises
    ------
    ChannelMismatchError
        (E7) in ``predict`` / ``call`` if the images' channels differ from ``channels``.

    Examples
    --------
    >>> from zoobot.tensorflow.estimators.define_model import get_encoder
    >>> encoder = ZoobotEncoder(get_encoder('tiny_cnn', channels=3))
    >>> encoder(np.random.rand(2, 32, 32, 3).astype('float32')).shape
    TensorShape([2, 128])
    """

    def __init__(self, encoder, channels: int | None = None, input_size: int | None = None):
        super().__init__(name="zoobot_encoder")
        from zoobot.tensorflow.estimators.define_model import get_encoder_dim
        from zoobot.tensorflow.predictions.predict_on_catalog import _model_channels, _model_input_size

        if not isinstance(encoder, keras.Model):
            raise TypeError(f"encoder must be a keras.Model, got {type(encoder).__name__}")
        self.encoder = encoder
        self.channels = int(channels) if channels is not None else _model_channels(encoder)
        self.input_size = int(input_size) if input_size is not None else _model_input_size(encoder)
        self.encoder_dim = get_encoder_dim(encoder, channels=self.channels)
        self.built = True

    def call(self, inputs, training=None):
        shape = getattr(inputs, "shape", None)
        if shape is not None and (len(shape) != 4 or (shape[-1] is not None and shape[-1] != self.channels)):
            raise ChannelMismatchError(
                f"ZoobotEncoder expects images (B, H, W, C) with C={self.channels} (NHWC); got shape {tuple(shape)}. "
                f"Fix: greyscale={self.channels == 1} in the data module, or build the encoder for "
                f"{shape[-1] if len(shape) == 4 else '?'} channels."
            )
        return self.encoder(inputs, training=training)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.encoder_dim)

    def predict(self, x, batch_size=None, verbose="auto", steps=None, callbacks=None):
        """``keras.Model.predict`` after checking the first batch (E7 channels, E8 pixel range)."""
        from zoobot.tensorflow.estimators.define_model import _first_images, check_images

        images = _first_images(x)
        if images is not None:
            check_images(images, self.channels, where="ZoobotEncoder.predict")
        return super().predict(x, batch_size=batch_size, verbose=verbose, steps=steps, callbacks=callbacks)

    def get_config(self):
        from zoobot.shared.checkpoints import version_metadata

        return {
            "encoder": keras.saving.serialize_keras_object(self.encoder),
            "channels": self.channels,
            "input_size": self.input_size,
            **version_metadata(),
        }

    @classmethod
    def from_config(cls, config):
        from zoobot.shared.checkpoints import VERSION_KEYS, check_format_version
        from zoobot.tensorflow.estimators import define_model

        config = dict(config)
        if not define_model._VERSIONS_CHECKED.get():
            check_format_version(config, define_model._LOADING_PATH.get() or "the ZoobotEncoder being loaded")
        for key in VERSION_KEYS:
            config.pop(key, None)
        config["encoder"] = keras.saving.deserialize_keras_object(config["encoder"])
        return cls(**config)

    @classmethod
    def load_from_name(cls, name: str, channels: int | None = None, **kwargs) -> "ZoobotEncoder":
        """A pretrained encoder by name (registry short name, ``hf-hub:owner/repo``, ``local-dir:/folder``).

        Parameters
        ----------
        name : str
        channels : int, optional
            Input channels; default the pretrained model's.
        **kwargs
            Passed to :func:`~zoobot.tensorflow.estimators.define_model.create_encoder`.

        Raises
        ------
        ValueError
            (E13) unknown name, or PyTorch-only weights.
        FileNotFoundError
            ``local-dir:`` folder without ``encoder.keras``; weights not cached while offline.
        """
        from zoobot.tensorflow.estimators.define_model import create_encoder

        return cls(create_encoder(name, pretrained=True, channels=channels, **kwargs), channels=channels)


def get_representations(catalog, model, save_loc=None, batch_size=256, datamodule_kwargs=None,
                        trainer_kwargs=None) -> pd.DataFrame:
    """Encoder features of every galaxy in a catalog, keyed by ``id_str``.

    Parameters
    ----------
    catalog : pandas.DataFrame
        ``id_str`` and ``file_loc`` columns.
    model : ZoobotEncoder, keras.Model, str or path-like
        A :class:`ZoobotEncoder`; a ZoobotTree or finetuned model (its ``encoder`` is used, with the
        model's channels and input size); any encoder model; a ``.keras`` file; or a pretrained encoder
        name (``'local-dir:...'``, ``'hf-hub:...'`` with Keras weights).
    save_loc : str or path-like, optional
        ``.parquet`` (recommended) or ``.csv``: ``id_str, feat_0, ..., feat_{d-1}`` (float32).
    batch_size : int, default 256
    datamodule_kwargs : dict, optional
        Overrides for the data module (a ``batch_size`` here wins over the argument).
    trainer_kwargs : dict, optional
        Device, as in :func:`~zoobot.tensorflow.predictions.predict_on_catalog.predict`.

    Returns
    -------
    pandas.DataFrame
        One row per galaxy in catalog order: ``id_str`` then ``feat_0 .. feat_{d-1}`` (float32); NaN
        rows for images that could not be read (one warning counts them).

    Raises
    ------
    ValueError
        (E13) unknown ``save_loc`` extension or encoder name.
    TypeError
        ``model`` of an unsupported type.
    CatalogError, FileNotFoundError
        E1-E5 for a bad catalog, missing files or a missing ``.keras`` file.

    Examples
    --------
    >>> table = get_representations(catalog, model)  # doctest: +SKIP
    >>> table.columns[:3].tolist()  # doctest: +SKIP
    ['id_str', 'feat_0', 'feat_1']
    """
    from zoobot.tensorflow.predictions.predict_on_catalog import predict

    if save_loc is not None and pathlib.Path(os.fspath(save_loc)).suffix.lower() not in _TABLE_EXTENSIONS:
        raise unknown_option_error(
            f"representations file extension (save_loc={os.fspath(save_loc)!r})",
            pathlib.Path(os.fspath(save_loc)).suffix, _TABLE_EXTENSIONS,
        )
    batch_size = check_int("batch_size", batch_size, minimum=1)
    encoder = _as_encoder(model)
    options = {"batch_size": int(batch_size), **dict(datamodule_kwargs or {})}
    features = predict(catalog, encoder, n_samples=1, datamodule_kwargs=options, trainer_kwargs=trainer_kwargs,
                       test_time_dropout=False, on_bad_image="record")[:, :, 0]
    ids = catalog["id_str"].astype(str).to_numpy()
    table = pd.DataFrame(features.astype(np.float32), columns=[f"feat_{i}" for i in range(features.shape[1])])
    table.insert(0, "id_str", ids)
    if save_loc is not None:
        _write_table(table, save_loc)
    return table


def _as_encoder(model) -> ZoobotEncoder:
    """A ZoobotEncoder from any of the accepted ``model`` forms."""
    if isinstance(model, ZoobotEncoder):
        return model
    if isinstance(model, (str, os.PathLike)):
        name = os.fspath(model)
        if os.path.isfile(name):
            from zoobot.tensorflow.estimators.define_model import load_zoobot_model

            model = load_zoobot_model(name)
        elif name.endswith(".keras"):
            raise FileNotFoundError(f"No .keras file at {name!r} (working directory {os.getcwd()!r}).")
        else:
            return ZoobotEncoder.load_from_name(name)
    if isinstance(model, keras.Model):
        inner = getattr(model, "encoder", None)
        if isinstance(inner, keras.Model):
            from zoobot.shared.preprocessing import carry_record

            # the encoder prepares images as the model it came from was trained
            return carry_record(ZoobotEncoder(inner, channels=getattr(model, "channels", None),
                                              input_size=getattr(model, "input_size", None)),
                                getattr(model, "preprocessing", None))
        return ZoobotEncoder(model)
    raise TypeError(
        f"model must be a ZoobotEncoder, a zoobot model, an encoder model, a .keras file or a pretrained "
        f"encoder name; got {type(model).__name__}."
    )
