"""The Dirichlet head and the small Keras layers of zoobot's TensorFlow models.

- :class:`MCDropout` (alias :data:`PermaDropout`): dropout that stays on at inference, so that
  repeated predictions are Monte Carlo dropout samples.
- :class:`ScaledSigmoid`: ``1 + 100 * sigmoid(x)``, the last layer of the Dirichlet head, mapping
  logits to Dirichlet concentrations in the open range (1, 101).
- :class:`GalaxyAugmentation`: the optional augmentation at the start of :func:`~zoobot.tensorflow.
  estimators.define_model.get_model` (rotation, flips, crop, resize), active in training only
  unless ``always_augment=True``.

- :func:`get_dirichlet_head`: Dropout -> Dense -> ScaledSigmoid.

The layers are registered with Keras (package ``zoobot``), so models containing them save to and
load from ``.keras`` files without ``custom_objects``.
"""
from __future__ import annotations

import keras
import tensorflow as tf

from zoobot.shared.validation import check_fraction, check_int

__all__ = ["MCDropout", "PermaDropout", "ScaledSigmoid", "GalaxyAugmentation", "get_tensorflow_dirichlet_head",
           "get_dirichlet_head"]


@keras.saving.register_keras_serializable(package="zoobot")
class MCDropout(keras.layers.Dropout):
    """Dropout that is active in training **and** at inference (Monte Carlo dropout).

    Each call drops a fresh random set of units, so calling a model with this layer ``n`` times
    gives ``n`` samples from the approximate posterior (Gal & Ghahramani 2016). Set the attribute
    ``mc_active = False`` to make it behave like ordinary dropout (off unless ``training``):
    :class:`~zoobot.tensorflow.estimators.define_model.ZoobotTree` does this while tracing its
    evaluation step, as the PyTorch twin does in validation and testing. The attribute is read when
    Keras traces a step function, so set it before the first ``evaluate``/``predict`` call.

    Parameters
    ----------
    rate : float
        Fraction of the inputs to drop, in [0, 1).
    **kwargs
        Passed to :class:`keras.layers.Dropout` (``noise_shape``, ``seed``, ``name``...).

    Examples
    --------
    >>> import numpy as np
    >>> layer = MCDropout(0.5, seed=0)
    >>> out = np.asarray(layer(np.ones((1, 1000), dtype='float32'), training=False))
    >>> bool(0.3 < (out == 0).mean() < 0.7)   # about half dropped even though training=False
    True
    """

    def __init__(self, rate, **kwargs):
        super().__init__(rate, **kwargs)
        self.mc_active = True

    def call(self, inputs, training=None):
        return super().call(inputs, training=bool(training) or self.mc_active)


#: Upstream (Zoobot 0.x/1.x) name of :class:`MCDropout`: the same class.
PermaDropout = MCDropout


@keras.saving.register_keras_serializable(package="zoobot")
class ScaledSigmoid(keras.layers.Layer):
    """``alpha = 1 + 100 * sigmoid(x)``: logits to Dirichlet concentrations in (1, 101).

    The lower bound 1 keeps each Dirichlet unimodal; the upper bound keeps the loss finite.
    The output is float32 even under a mixed-precision policy, so the loss sees exact values.

    Examples
    --------
    >>> import numpy as np
    >>> np.asarray(ScaledSigmoid()(np.array([[0.0]], dtype='float32')))
    array([[51.]], dtype=float32)
    """

    #: lowest concentration; ``ZoobotTree.concentration_floor`` sets it per model (``train()`` uses 0.1)
    offset = 1.0

    def __init__(self, **kwargs):
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)

    def call(self, inputs):
        inputs = keras.ops.cast(inputs, "float32")
        return self.offset + 100.0 * keras.ops.sigmoid(inputs)

    def compute_output_shape(self, input_shape):
        return input_shape


@keras.saving.register_keras_serializable(package="zoobot")
class GalaxyAugmentation(keras.layers.Layer):
    """Training-time augmentation inside a Keras model (upstream Zoobot 0.x style).

    In training (or always, with ``always_augment=True``): random rotation by 0-360 degrees
    (reflect padding), random horizontal and vertical flips, a random ``crop_size`` square crop,
    then a resize to ``resize_size``. At inference: a central ``crop_size`` crop, then the resize,
    so predictions are deterministic.

    Parameters
    ----------
    crop_size : int or None
        Side of the square crop, in pixels of the input image. ``None``: no crop.
    resize_size : int or None
        Side of the output image. ``None``: no resize.
    always_augment : bool
        Augment at inference too (test-time augmentation).
    seed : int or None
        Seed of the random operations.

    Examples
    --------
    >>> import numpy as np
    >>> aug = GalaxyAugmentation(crop_size=48, resize_size=32)
    >>> aug(np.zeros((2, 64, 64, 1), dtype='float32')).shape
    TensorShape([2, 32, 32, 1])
    """

    def __init__(self, crop_size=None, resize_size=None, always_augment=False, seed=None, **kwargs):
        super().__init__(**kwargs)
        self.crop_size = check_int("crop_size", crop_size, minimum=1, allow_none=True)
        self.resize_size = check_int("resize_size", resize_size, minimum=1, allow_none=True)
        self.always_augment = bool(always_augment)
        self.seed = seed
        # factor 0.5 = rotations in [-180, 180] degrees, i.e. the full circle
        self.rotation = keras.layers.RandomRotation(0.5, fill_mode="reflect", seed=seed)
        self.flip = keras.layers.RandomFlip("horizontal_and_vertical", seed=seed)

    def build(self, input_shape):
        self.rotation.build(input_shape)
        self.flip.build(input_shape)

    def call(self, inputs, training=None):
        augment = bool(training) or self.always_augment
        x = inputs
        if augment:
            x = self.rotation(x, training=True)
            x = self.flip(x, training=True)
        if self.crop_size is not None:
            if augment:
                size = tf.stack([self.crop_size, self.crop_size, tf.shape(x)[-1]])
                # an independent crop window per image
                x = tf.map_fn(lambda image: tf.image.random_crop(image, size, seed=self.seed), x)
            else:
                height, width = tf.shape(x)[1], tf.shape(x)[2]
                top = (height - self.crop_size) // 2
                left = (width - self.crop_size) // 2
                x = tf.image.crop_to_bounding_box(x, top, left, self.crop_size, self.crop_size)
        if self.resize_size is not None:
            x = tf.image.resize(x, (self.resize_size, self.resize_size), antialias=True)
        return x

    def compute_output_shape(self, input_shape):
        size = self.resize_size or self.crop_size
        if size is None:
            return input_shape
        return (input_shape[0], size, size, input_shape[-1])

    def get_config(self):
        config = super().get_config()
        config.update(
            crop_size=self.crop_size,
            resize_size=self.resize_size,
            always_augment=self.always_augment,
            seed=self.seed,
        )
        return config


# ---------------------------------------------------------------------------------------------
# the Dirichlet head, built from these layers
# ---------------------------------------------------------------------------------------------

def get_tensorflow_dirichlet_head(encoder_dim: int, output_dim: int, test_time_dropout: bool,
                                  dropout_rate: float) -> keras.Sequential:
    """The Dirichlet head: [MCDropout if test_time_dropout else Dropout] -> Dense -> ScaledSigmoid.

    Parameters
    ----------
    encoder_dim : int
        Features from the encoder.
    output_dim : int
        Answers of the decision tree (``schema.n_answers``).
    test_time_dropout : bool
        Keep dropout on at inference (Monte Carlo dropout).
    dropout_rate : float
        Dropout probability, in [0, 1).

    Returns
    -------
    keras.Sequential
        (B, encoder_dim) -> concentrations (B, output_dim) in (1, 101).

    Examples
    --------
    >>> head = get_tensorflow_dirichlet_head(128, 34, test_time_dropout=True, dropout_rate=0.2)
    >>> [type(layer).__name__ for layer in head.layers]
    ['MCDropout', 'Dense', 'ScaledSigmoid']
    """
    encoder_dim = check_int("encoder_dim", encoder_dim, minimum=1)
    output_dim = check_int("output_dim", output_dim, minimum=1)
    dropout_rate = check_fraction("dropout_rate", dropout_rate, allow_one=False)
    dropout_cls = MCDropout if test_time_dropout else keras.layers.Dropout
    return keras.Sequential(
        [
            keras.Input(shape=(encoder_dim,)),
            dropout_cls(dropout_rate, name="head_dropout"),
            keras.layers.Dense(output_dim, name="head_dense"),
            ScaledSigmoid(name="concentrations"),
        ],
        name="dirichlet_head",
    )


#: Backend-neutral alias of :func:`get_tensorflow_dirichlet_head` (same object).
get_dirichlet_head = get_tensorflow_dirichlet_head
