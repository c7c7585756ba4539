"""Representations: the encoder's features of every galaxy in a catalog.

See docs/components/predictions_and_representations.md.

A trained encoder turns each image into a vector (e.g. 640 numbers for ConvNeXt-nano) that sums up
its morphology. These vectors are useful for similarity search, clustering, anomaly detection or as
input to a simple model (see :func:`zoobot.shared.compress_representations.create_pca_embedding`
to compress them).

- :class:`ZoobotEncoder` wraps any encoder as a LightningModule whose ``forward`` returns the features;
- :func:`get_representations` computes them for a catalog and returns (and optionally saves) a table
  ``id_str, feat_0, ..., feat_{d-1}``. It accepts an encoder, a ZoobotTree or finetuned model (its
  encoder is used), a checkpoint path or a pretrained encoder name.

Examples
--------
>>> from zoobot.pytorch.training import representations
>>> table = representations.get_representations(
...     catalog, 'hf-hub:mwalmsley/zoobot-encoder-convnext_nano', save_loc='features.parquet')  # doctest: +SKIP
"""
from __future__ import annotations

import os
import pathlib

import lightning as L
import numpy as np
import pandas as pd
import torch
from torch import nn

from zoobot.shared.errors import ChannelMismatchError, check_pixel_range, unknown_option_error
from zoobot.shared.validation import check_int
from zoobot.shared.save_predictions import write_table as _write_table

__all__ = ["ZoobotEncoder", "get_representations"]

_TABLE_EXTENSIONS = (".parquet", ".csv")


class ZoobotEncoder(L.LightningModule):
    """An encoder as a LightningModule: ``forward(images) -> features (B, encoder_dim)``.

    Parameters
    ----------
    encoder : torch.nn.Module
        Maps images (B, C, H, W) float32 in [0, 1] to pooled features (B, D).
    channels : int, optional
        Input channels; default: read from the encoder's first convolution.
    input_size : int, optional
        Image side the encoder expects; default: its pretrained config, else 224.

    Attributes
    ----------
    encoder : torch.nn.Module
    channels, input_size, encoder_dim : int

    Raises
    ------
    ChannelMismatchError
        (E7) at ``forward`` if the images' channels differ from ``channels``.

    Examples
    --------
    >>> import torch
    >>> from zoobot.pytorch.estimators.define_model import get_pytorch_encoder
    >>> encoder = ZoobotEncoder(get_pytorch_encoder('tiny_cnn', channels=3))
    >>> encoder(torch.rand(2, 3, 32, 32)).shape
    torch.Size([2, 128])
    """

    def __init__(self, encoder: nn.Module, channels: int | None = None, input_size: int | None = None):
        super().__init__()
        from zoobot.pytorch.estimators import pretrained_encoders
        from zoobot.pytorch.estimators.define_model import get_encoder_dim

        if not isinstance(encoder, nn.Module):
            raise TypeError(f"encoder must be a torch.nn.Module, got {type(encoder).__name__}")
        self.encoder = encoder
        self.channels = int(channels) if channels is not None else pretrained_encoders.encoder_channels(encoder)
        self.input_size = int(input_size) if input_size is not None else pretrained_encoders.encoder_input_size(encoder)
        self.encoder_dim = get_encoder_dim(encoder, channels=self.channels)
        self._pixels_checked = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Features (B, encoder_dim) of images (B, C, H, W) float32 in [0, 1]."""
        if x.ndim != 4 or x.shape[1] != self.channels:
            raise ChannelMismatchError(
                f"ZoobotEncoder expects images (B, C, H, W) with C={self.channels} (NCHW); got shape "
                f"{tuple(x.shape)}. Fix: greyscale={self.channels == 1} in the data module, or build the encoder "
                f"for {x.shape[1] if x.ndim == 4 else '?'} channels."
            )
        if not self._pixels_checked and x.numel():
            self._pixels_checked = True
            check_pixel_range(float(x.min()), float(x.max()), layout="NCHW")
        return self.encoder(x)

    def predict_step(self, batch, batch_idx, dataloader_idx: int = 0):
        """Features of a predict batch (images, ``(images, ...)`` or a dict with ``'image'``)."""
        if isinstance(batch, dict):
            batch = batch["image"]
        elif isinstance(batch, (tuple, list)):
            batch = batch[0]
        return self(batch)

    @classmethod
    def load_from_name(cls, name: str, channels: int | None = None, **kwargs) -> "ZoobotEncoder":
        """A pretrained encoder by name (registry short name, ``hf-hub:owner/repo``, ``local-dir:/folder``).

        Parameters
        ----------
        name : str
            e.g. ``'zoobot-encoder-convnext_nano'`` or ``'hf-hub:mwalmsley/zoobot-encoder-convnext_nano'``.
        channels : int, optional
            Input channels; default the pretrained model's.
        **kwargs
            Passed to :func:`~zoobot.pytorch.estimators.define_model.create_encoder`.

        Returns
        -------
        ZoobotEncoder

        Raises
        ------
        FileNotFoundError
            The weights are not cached and cannot be downloaded (offline).
        ValueError
            (E13) unknown name.
        """
        from zoobot.pytorch.estimators.define_model import create_encoder

        return cls(create_encoder(name, pretrained=True, channels=channels, **kwargs))


def get_representations(catalog, model, save_loc=None, batch_size=256, datamodule_kwargs=None,
                        trainer_kwargs=None) -> pd.DataFrame:
    """Encoder features of every galaxy in a catalog, keyed by ``id_str``.

    Parameters
    ----------
    catalog : pandas.DataFrame
        ``id_str`` and ``file_loc`` columns.
    model : ZoobotEncoder, torch.nn.Module, str or path-like
        A :class:`ZoobotEncoder`; a ZoobotTree or finetuned model (its ``encoder`` is used, with the
        model's channels and input size); any encoder module; a checkpoint path (ZoobotTree or finetuned
        model, rebuilt offline); or a pretrained encoder name (``'hf-hub:...'``, registry short name).
    save_loc : str or path-like, optional
        ``.parquet`` (recommended) or ``.csv``: ``id_str, feat_0, ..., feat_{d-1}`` (float32).
    batch_size : int, default 256
    datamodule_kwargs : dict, optional
        Overrides for the data module (e.g. ``num_workers``, ``resize_after_crop``; a ``batch_size``
        here wins over the argument).
    trainer_kwargs : dict, optional
        Devices, as in :func:`~zoobot.pytorch.predictions.predict_on_catalog.predict`.

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
        E1-E5 for a bad catalog, missing files or a missing checkpoint.

    Examples
    --------
    >>> table = get_representations(catalog, 'zoobot-encoder-convnext_nano')  # doctest: +SKIP
    >>> table.columns[:3].tolist()  # doctest: +SKIP
    ['id_str', 'feat_0', 'feat_1']
    """
    from zoobot.pytorch.predictions.predict_on_catalog import predict

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
    if save_loc is not None and _is_global_zero():
        _write_table(table, save_loc)
    return table


def _as_encoder(model) -> ZoobotEncoder:
    """A ZoobotEncoder from any of the accepted ``model`` forms."""
    if isinstance(model, ZoobotEncoder):
        return model
    if isinstance(model, (str, os.PathLike)):
        if os.path.isfile(model):
            from zoobot.pytorch.training.finetune import load_pretrained_zoobot

            from zoobot.shared.preprocessing import carry_record, restore_record

            from zoobot.pytorch.estimators.define_model import read_checkpoint

            checkpoint = read_checkpoint(model, map_location="cpu")
            hparams = _checkpoint_hparams(checkpoint)
            record = restore_record(checkpoint.get("preprocessing"), input_size=checkpoint.get("zoobot_input_size"),
                                    channels=hparams.get("channels"))
            return carry_record(ZoobotEncoder(load_pretrained_zoobot(model), channels=hparams.get("channels"),
                                              input_size=hparams.get("input_size")), record)
        name = os.fspath(model)
        if name.endswith((".ckpt", ".pt", ".pth")):
            raise FileNotFoundError(f"No checkpoint at {name!r} (working directory {os.getcwd()!r}).")
        return ZoobotEncoder.load_from_name(name)
    if isinstance(model, nn.Module):
        inner = getattr(model, "encoder", None)
        if isinstance(inner, nn.Module):
            from zoobot.shared.preprocessing import carry_record

            return carry_record(ZoobotEncoder(inner, channels=getattr(model, "channels", None),
                                              input_size=getattr(model, "input_size", None)),
                                getattr(model, "preprocessing", None))
        return ZoobotEncoder(model)
    raise TypeError(
        f"model must be a ZoobotEncoder, a zoobot model, an encoder module, a checkpoint path or a pretrained "
        f"encoder name; got {type(model).__name__}."
    )


def _checkpoint_hparams(checkpoint: dict) -> dict:
    hparams = dict(checkpoint.get("hyper_parameters") or {})
    return {k: hparams.get(k) for k in ("channels", "input_size") if isinstance(hparams.get(k), int)}


def _is_global_zero() -> bool:
    from lightning.pytorch.utilities import rank_zero_only

    return getattr(rank_zero_only, "rank", 0) == 0
