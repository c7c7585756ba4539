"""``tiny_cnn``: a four-convolution encoder for tests, examples and smoke runs (Keras).

Defined identically in both backends (twin: ``zoobot.pytorch.estimators.tiny_cnn``): 4 blocks of
[Conv 3x3 'same', no bias -> BatchNorm (eps 1e-5, Keras momentum 0.9 = PyTorch 0.1) -> ReLU -> MaxPool
2x2], channels C -> 16 -> 32 -> 64 -> 128, global average pooling: 97 392 trainable parameters for C = 1.

Examples
--------
>>> import numpy as np
>>> encoder = get_tiny_cnn(channels=1)
>>> encoder(np.zeros((2, 32, 32, 1), dtype='float32')).shape
TensorShape([2, 128])
"""
from __future__ import annotations

import keras

from zoobot.shared.validation import check_int

__all__ = ["get_tiny_cnn", "TINY_CNN_WIDTHS"]

#: Output channels of the four blocks.
TINY_CNN_WIDTHS = (16, 32, 64, 128)


def get_tiny_cnn(channels: int = 1, input_shape=None, name: str = "tiny_cnn") -> keras.Model:
    """The ``tiny_cnn`` encoder: (B, H, W, C) float32 in [0, 1] -> pooled features (B, 128).

    Parameters
    ----------
    channels : int
        Input channels (1 or 3).
    input_shape : tuple of (H, W), optional
        Fixed spatial input size; default ``(None, None)`` accepts any size >= 16 px.
    name : str
        Keras name of the model.

    Returns
    -------
    keras.Model
        A functional model; blocks are named ``block1_conv``, ``block1_bn``, ... ``block4_pool``
        (finetuning picks blocks by these prefixes), then ``avg_pool``.

    Raises
    ------
    TypeError, ValueError
        If ``channels`` is not an int >= 1.
    """
    channels = check_int("channels", channels, minimum=1)
    height, width = (None, None) if input_shape is None else tuple(input_shape)[:2]
    inputs = keras.Input(shape=(height, width, channels), name="image")
    x = inputs
    for i, filters in enumerate(TINY_CNN_WIDTHS, start=1):
        x = keras.layers.Conv2D(filters, 3, strides=1, padding="same", use_bias=False, name=f"block{i}_conv")(x)
        x = keras.layers.BatchNormalization(epsilon=1e-5, momentum=0.9, name=f"block{i}_bn")(x)
        x = keras.layers.ReLU(name=f"block{i}_relu")(x)
        x = keras.layers.MaxPooling2D(2, name=f"block{i}_pool")(x)
    outputs = keras.layers.GlobalAveragePooling2D(name="avg_pool")(x)
    return keras.Model(inputs, outputs, name=name)
