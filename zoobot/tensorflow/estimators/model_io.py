"""Reading ``.keras`` files with a format-version check (E11), and first-batch checks of data given to ``predict``.

TensorFlow only (PyTorch reads checkpoints in ``define_model.read_checkpoint`` and checks inputs in
``ZoobotTree.forward``). :func:`load_zoobot_model` loads any Keras model and checks the versions recorded
by zoobot models; import it from :mod:`zoobot.tensorflow.estimators.define_model`, which registers the
zoobot classes it may meet. :func:`check_images` raises E7 (channels, layout) or E8 (pixels outside [0, 1])
on the first batch. See docs/reliability.md.
"""
from __future__ import annotations

import contextlib
import contextvars
import json
import pathlib
import zipfile

import keras
import numpy as np
import tensorflow as tf

from zoobot.shared import checkpoints
from zoobot.shared.errors import ChannelMismatchError, check_pixel_range, unknown_option_error

__all__ = ["load_zoobot_model", "check_images", "read_keras_config"]

# the loading path of the .keras file being deserialised, named in E11 messages
_LOADING_PATH = contextvars.ContextVar("zoobot_keras_loading_path", default=None)



def _first_images(data):
    """The images of the first batch of ``data`` (array, tensor, tf.data.Dataset, data module), or None."""
    if hasattr(data, "predict_dataloader") and not isinstance(data, tf.data.Dataset):
        if getattr(data, "predict_catalog", None) is not None and hasattr(data, "setup"):
            data.setup("predict")
        data = data.predict_dataloader()
    if isinstance(data, tf.data.Dataset):
        element = next(iter(data.take(1)), None)
        if element is None:
            return None
    elif isinstance(data, (np.ndarray, tf.Tensor)) or hasattr(data, "__array__") and hasattr(data, "shape"):
        return data[:64]
    else:
        return None  # generators, PyDatasets: not peeked (peeking would consume them)
    if isinstance(element, (tuple, list)):
        element = element[0]
    if isinstance(element, dict):
        for key in ("image", "images", "matrix"):
            if key in element:
                return element[key]
        return None
    return element


def check_images(images, channels, where="the data") -> None:
    """E7/E8 checks of a batch of images for a model taking ``channels``-channel NHWC input.

    Parameters
    ----------
    images : array or tensor (B, H, W, C)
    channels : int
        Channels the model expects.
    where : str
        Named in messages.

    Raises
    ------
    ChannelMismatchError
        (E7) not 4-D, or the channel axis differs (with a hint when the batch looks NCHW).
    PixelScaleError
        (E8) values outside [0, 1].

    Warns
    -----
    UserWarning
        If the maximum is <= 1.5/255 (images divided by 255 twice).

    Examples
    --------
    >>> check_images(np.zeros((2, 32, 32, 3), 'float32'), channels=1)
    Traceback (most recent call last):
    ...
    zoobot.shared.errors.ChannelMismatchError: ...
    """
    shape = tuple(int(d) if d is not None else None for d in images.shape)
    if len(shape) != 4:
        raise ChannelMismatchError(
            f"{where}: expected a batch of images of shape (batch, height, width, {channels}) (NHWC), got shape "
            f"{shape}. Fix: add a batch axis, or batch the dataset."
        )
    if shape[-1] != channels:
        looks_nchw = shape[1] in (1, 3) and shape[-1] not in (1, 3)
        if looks_nchw:
            fix = "the batch looks NCHW (PyTorch layout): transpose it to NHWC, e.g. np.transpose(x, (0, 2, 3, 1))"
        elif channels == 1:
            fix = "make the images greyscale (GalaxyDataModule(greyscale=True) / train(color=False))"
        else:
            fix = "use colour images (GalaxyDataModule(greyscale=False) / train(color=True))"
        raise ChannelMismatchError(
            f"{where}: the model expects C={channels} channel(s) but the images have C={shape[-1]} (tensor shape "
            f"{shape}, layout NHWC). Fix: {fix}."
        )
    values = tf.convert_to_tensor(images)
    if not values.dtype.is_floating:
        values = tf.cast(values, tf.float32)
    if int(tf.size(values)) == 0:
        return
    check_pixel_range(float(tf.reduce_min(values)), float(tf.reduce_max(values)), layout="NHWC")


def read_keras_config(path: pathlib.Path) -> dict:
    """The ``config.json`` inside a ``.keras`` file (a zip), or a ValueError naming the file."""
    try:
        with zipfile.ZipFile(path) as archive:
            return json.loads(archive.read("config.json"))
    except (zipfile.BadZipFile, KeyError, json.JSONDecodeError) as err:
        raise ValueError(f"{path} is not a readable .keras file ({err}).") from None


def _check_keras_file_version(path: pathlib.Path) -> None:
    """E11 for zoobot models (their config records the versions); other Keras files are not checked."""
    config = read_keras_config(path)
    registered = str(config.get("registered_name") or "")
    if registered.startswith("zoobot>"):
        checkpoints.check_format_version(config.get("config") or {}, path)


def load_zoobot_model(path, compile=True) -> keras.Model:
    """Load a ``.keras`` file written by zoobot (or any Keras model), checking its format version.

    Parameters
    ----------
    path : str or path-like
    compile : bool
        ZoobotTree models are always compiled (by their constructor).

    Returns
    -------
    keras.Model

    Raises
    ------
    FileNotFoundError
    CheckpointVersionError
        (E11) newer format than this zoobot reads; the message names the file and both versions.
    """
    path = pathlib.Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"No .keras file at {path}")
    if path.suffix != ".keras":
        raise unknown_option_error("model file extension", path.suffix, [".keras"])
    config = read_keras_config(path)
    registered = str(config.get("registered_name") or "")
    zoobot_model = registered.startswith("zoobot>")
    token = _LOADING_PATH.set(str(path))
    try:
        if zoobot_model:
            # checked here with the path; from_config must not warn a second time
            checkpoints.check_format_version(config.get("config") or {}, path)
            with _versions_checked():
                return keras.saving.load_model(str(path), compile=compile)
        return keras.saving.load_model(str(path), compile=compile)
    finally:
        _LOADING_PATH.reset(token)


_VERSIONS_CHECKED = contextvars.ContextVar("zoobot_versions_checked", default=False)


@contextlib.contextmanager
def _versions_checked():
    token = _VERSIONS_CHECKED.set(True)
    try:
        yield
    finally:
        _VERSIONS_CHECKED.reset(token)


_read_keras_config = read_keras_config  # the name define_model re-exports
