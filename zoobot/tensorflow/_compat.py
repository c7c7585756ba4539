"""Old names of the TensorFlow backend, in one place: the upstream v1 functional API and deprecated aliases.

- The functional API (:func:`get_model`, :func:`load_model`, :func:`load_weights`, :class:`ZoobotModel`) is
  documented upstream, so it works without a warning; new code uses ``define_model.ZoobotTree``.
- Renamed functions warn ``DeprecationWarning`` naming the replacement (``get_tensorflow_encoder``,
  ``define_model.dirichlet_loss``, ``training.losses.dirichlet_loss``).
- :func:`alias_module` keeps old import paths (``zoobot.data_utils``,
  ``zoobot.tensorflow.estimators.preprocess``) giving the canonical module objects.

The modules that used to hold these names import them from here; this module imports only the layers
below them (``encoders``, ``custom_layers``, ``losses``, ``model_io``). See docs/compatibility.md.
"""
from __future__ import annotations

import pathlib

import keras
import tensorflow as tf

from zoobot.shared import checkpoints
from zoobot.shared.deprecation import alias_module, deprecated_alias
from zoobot.shared.validation import check_int
from zoobot.tensorflow.estimators import custom_layers, encoders, model_io
from zoobot.tensorflow.estimators import losses as _losses

__all__ = [
    "ZoobotModel",
    "get_model",
    "load_model",
    "load_weights",
    "GalaxyAugmentation",
    "get_tensorflow_encoder",
    "define_model_dirichlet_loss",
    "losses_dirichlet_loss",
    "alias_module",
]

#: Upstream v0: the augmentation layer that :func:`get_model` puts first (defined with the other Keras layers).
GalaxyAugmentation = custom_layers.GalaxyAugmentation

#: ``define_model.get_tensorflow_encoder``: the backend-named spelling of :func:`~zoobot.tensorflow.estimators.encoders.get_encoder`.
get_tensorflow_encoder = deprecated_alias(
    encoders.get_encoder, "zoobot.tensorflow.estimators.define_model.get_tensorflow_encoder",
    "zoobot.tensorflow.estimators.define_model.get_encoder")

#: ``zoobot.tensorflow.training.losses.dirichlet_loss(labels_for_q, concentrations_for_q)``: one question's loss.
losses_dirichlet_loss = deprecated_alias(
    _losses.single_question_dirichlet_loss, "zoobot.tensorflow.training.losses.dirichlet_loss",
    "zoobot.tensorflow.training.losses.single_question_dirichlet_loss")

#: ``zoobot.tensorflow.estimators.define_model.dirichlet_loss(preds, labels, question_index_groups, ...)``.
define_model_dirichlet_loss = deprecated_alias(
    _losses.per_question_dirichlet_loss, "zoobot.tensorflow.estimators.define_model.dirichlet_loss",
    "zoobot.tensorflow.estimators.define_model.per_question_dirichlet_loss")

# ---------------------------------------------------------------------------------------------
# the upstream v1 functional API
# ---------------------------------------------------------------------------------------------

@keras.saving.register_keras_serializable(package="zoobot")
class ZoobotModel(keras.Model):
    """A functional Keras model (built by :func:`get_model`) whose ``predict`` checks the first batch.

    ``predict`` raises E7 (channels) or E8 (pixels outside [0, 1]) before any compute, and accepts
    datasets of ``(images, id_str)`` (the ids are ignored), as ``ZoobotTree.predict`` does. Everything
    else is ``keras.Model``'s functional API (``ZoobotModel(inputs, outputs, name=...)``).

    Attributes
    ----------
    channels, input_size : int
        From the input shape.
    """

    @property
    def channels(self) -> int:
        return int(self.input_shape[-1])

    @property
    def input_size(self) -> int:
        return int(self.input_shape[1]) if self.input_shape[1] is not None else 224

    def predict(self, x, batch_size=None, verbose="auto", steps=None, callbacks=None):
        """``keras.Model.predict`` after the first-batch checks (E7, E8)."""
        if hasattr(x, "predict_dataloader") and not isinstance(x, tf.data.Dataset):
            if getattr(x, "predict_catalog", None) is not None and hasattr(x, "setup"):
                x.setup("predict")
            x = x.predict_dataloader()
        images = model_io._first_images(x)
        if images is not None:
            model_io.check_images(images, self.channels, where=f"{self.name}.predict")
        return super().predict(x, batch_size=batch_size, verbose=verbose, steps=steps, callbacks=callbacks)

    def get_config(self):
        config = super().get_config()
        config.update(checkpoints.version_metadata())
        return config

    @classmethod
    def from_config(cls, config, custom_objects=None):
        config = dict(config)
        if not model_io._VERSIONS_CHECKED.get():
            checkpoints.check_format_version(config, model_io._LOADING_PATH.get() or "the ZoobotModel being loaded")
        for key in checkpoints.VERSION_KEYS:
            config.pop(key, None)
        return super().from_config(config, custom_objects=custom_objects)


def get_model(output_dim, input_size, weights_loc=None, include_top=True, expect_partial=False, channels=1,
              use_imagenet_weights=False, dropout_rate=0.2, test_time_dropout=True, *,
              architecture_name="efficientnet_b0", crop_size=None, resize_size=None,
              always_augment=False) -> keras.Model:
    """Build an (uncompiled) functional Keras model: [augmentation] -> encoder -> Dirichlet head (upstream v1).

    Parameters
    ----------
    output_dim : int
        Answers of the decision tree.
    input_size : int
        Side of the square input images.
    weights_loc : str, optional
        ``.weights.h5`` or ``.keras`` file to load (see :func:`load_weights`).
    include_top : bool, default True
        False: return the (augmentation +) pooled encoder only.
    expect_partial : bool, default False
        Allow weights files that do not match every layer.
    channels : int, default 1
    use_imagenet_weights : bool, default False
        Keras ImageNet weights for the encoder (downloaded; needs ``channels=3``).
    dropout_rate : float, default 0.2
    test_time_dropout : bool, default True
        Head dropout stays on at inference (:class:`MCDropout`), so repeated ``predict`` calls
        give Monte Carlo samples.
    architecture_name : str, keyword-only, default 'efficientnet_b0'
    crop_size, resize_size : int, optional, keyword-only
        Upstream v0: start with :class:`~zoobot.tensorflow.estimators.custom_layers.GalaxyAugmentation`
        (rotation, flips, random crop ``crop_size``, resize ``resize_size``), active only in
        training; at inference a central crop + resize.
    always_augment : bool, keyword-only, default False
        Augment at inference too (test-time augmentation).

    Returns
    -------
    keras.Model

    Examples
    --------
    >>> model = get_model(34, 32, architecture_name='tiny_cnn')
    >>> model.output_shape
    (None, 34)
    """
    output_dim = check_int("output_dim", output_dim, minimum=1)
    input_size = check_int("input_size", input_size, minimum=1)
    channels = encoders.check_channels(channels)
    inputs = keras.Input(shape=(input_size, input_size, channels), name="image")
    x = inputs
    if crop_size is not None or resize_size is not None or always_augment:
        x = custom_layers.GalaxyAugmentation(crop_size=crop_size, resize_size=resize_size,
                                             always_augment=always_augment, name="augmentation")(x)
    encoder_kwargs = {"weights": "imagenet"} if use_imagenet_weights else {}
    encoder = encoders.get_encoder(architecture_name, channels=channels, **encoder_kwargs)
    features = encoder(x)
    if include_top:
        head = custom_layers.get_dirichlet_head(int(features.shape[-1]), output_dim, test_time_dropout, dropout_rate)
        outputs = head(features)
    else:
        outputs = features
    model = ZoobotModel(inputs, outputs, name="zoobot" if include_top else "zoobot_encoder")
    if weights_loc is not None:
        load_weights(model, weights_loc, expect_partial=expect_partial)
    return model


def load_weights(model, checkpoint_loc, expect_partial=False):
    """Load weights into ``model`` from a ``.weights.h5`` or ``.keras`` file.

    Parameters
    ----------
    model : keras.Model
    checkpoint_loc : str or path-like
        A Keras weights file, or a ``.keras`` model file whose weights fit ``model``.
    expect_partial : bool
        Skip layers whose weights do not match (instead of raising).

    Returns
    -------
    keras.Model
        ``model``, for chaining.

    Raises
    ------
    FileNotFoundError
        If ``checkpoint_loc`` does not exist.
    """
    path = pathlib.Path(checkpoint_loc)
    if not path.exists():
        raise FileNotFoundError(f"No weights file at {path}")
    if path.suffix == ".keras":
        model_io._check_keras_file_version(path)
    model.load_weights(str(path), skip_mismatch=bool(expect_partial))
    return model


def load_model(checkpoint_loc, include_top, input_size, output_dim=34, expect_partial=False, channels=1,
               dropout_rate=0.2):
    """Load a trained model (upstream v1).

    A ``.keras`` file (e.g. ``save_dir/checkpoints/last.keras`` from ``train``) is loaded whole,
    with its own architecture; ``include_top=False`` then returns its encoder. Any other file is
    treated as weights for ``get_model(output_dim, input_size, channels=..., dropout_rate=...)``.

    Parameters
    ----------
    checkpoint_loc : str or path-like
    include_top : bool
    input_size : int
    output_dim, expect_partial, channels, dropout_rate
        Used to build the model for a weights file.

    Returns
    -------
    keras.Model

    Raises
    ------
    CheckpointVersionError
        (E11) the file was written by a newer, incompatible zoobot.
    """
    path = pathlib.Path(checkpoint_loc)
    if path.suffix == ".keras":
        model = model_io.load_zoobot_model(path)
        if not include_top:
            return _without_head(model)
        return model
    return get_model(output_dim, input_size, weights_loc=path, include_top=include_top,
                     expect_partial=expect_partial, channels=channels, dropout_rate=dropout_rate)


def _without_head(model):
    """The encoder part of a loaded model: ``model.encoder``, or a functional model's output before its head."""
    encoder = getattr(model, "encoder", None)
    if isinstance(encoder, keras.Model):
        return encoder
    try:
        head = model.get_layer("dirichlet_head")
    except ValueError:
        return model
    return ZoobotModel(model.inputs, head.input, name="zoobot_encoder")
