"""Finetune a pretrained Zoobot encoder on your own labels, with Keras (docs/guides/finetuning.md).

The twin of :mod:`zoobot.pytorch.training.finetune`: the same classes, arguments, defaults and
behaviour, as ``keras.Model`` subclasses. Read top to bottom: loss helpers and :class:`LinearHead`;
the encoder blocks that ``n_blocks`` unfreezes, per architecture; :class:`LayerwiseAdamW` (one learning
rate per block inside one AdamW); :class:`FinetuneableZoobotAbstract` (the encoder from exactly one of
``name``, ``encoder``, ``zoobot_checkpoint_loc``; freezing; the train/test/predict steps; ``.keras``
files); the three tasks :class:`FinetuneableZoobotClassifier`, :class:`FinetuneableZoobotRegressor`,
:class:`FinetuneableZoobotTree`; then :func:`get_trainer` (a
:class:`~zoobot.tensorflow.training.trainer.Trainer` fits), :func:`load_pretrained_zoobot` and the
upstream :func:`run_finetuning`. Which weights train, feature replay and the checkpoint format are in
docs/guides/finetuning.md ("How finetuning works inside (TensorFlow)").
"""
from __future__ import annotations

import contextlib
import contextvars
import inspect
import logging
import os
import pathlib
import re
import warnings

import keras
import numpy as np
import tensorflow as tf

from zoobot.shared import checkpoints
from zoobot.shared.errors import ChannelMismatchError, format_examples, unknown_option_error
from zoobot.shared.training_config import FinetuneConfig
from zoobot.shared.validation import check_fraction, check_int
from zoobot.tensorflow.distributed import MultiWorkerModelMixin
from zoobot.tensorflow.estimators import define_model, pretrained_encoders
from zoobot.tensorflow.estimators.model_io import read_keras_config as _read_keras_config
from zoobot.tensorflow.training import trainer as trainer_module
from zoobot.tensorflow.training.callbacks import LABEL_ERROR_MARKER, NONFINITE_LOSS_MARKER, all_layers
from zoobot.tensorflow.training.feature_cache import FeatureCache
from zoobot.tensorflow.training.trainer import is_datamodule

__all__ = [
    "FinetuneableZoobotAbstract",
    "FinetuneableZoobotClassifier",
    "FinetuneableZoobotRegressor",
    "FinetuneableZoobotTree",
    "LinearHead",
    "LinearClassifier",
    "LayerwiseAdamW",
    "EncoderBlock",
    "get_trainer",
    "load_pretrained_zoobot",
    "load_pretrained_encoder",
    "freeze_batchnorm_layers",
    "get_encoder_blocks",
    "cross_entropy_loss",
    "mse_loss",
    "l1_loss",
    "finetune_dirichlet_loss",
    "dirichlet_loss",
    "run_finetuning",
    "MONITOR",
]

logger = logging.getLogger(__name__)

#: The metric ``get_trainer``'s checkpointing and early stopping watch.
MONITOR = "finetuning/val_loss"



# =============================================================================================
# 1. losses and the linear head
# =============================================================================================

def cross_entropy_loss(y_pred, y, label_smoothing: float = 0.0, weight=None) -> tf.Tensor:
    """Mean cross-entropy of logits ``y_pred`` (B, K) against integer class ids ``y`` (B,).

    The same definition as ``torch.nn.functional.cross_entropy``: with class weights ``w`` the mean
    is ``sum_i w[y_i] l_i / sum_i w[y_i]``; label smoothing ``e`` mixes in ``e / K`` of the
    (weighted) loss against every class.

    Parameters
    ----------
    y_pred : tensor (B, K)
        Logits.
    y : tensor (B,)
        Class ids (any numeric dtype).
    label_smoothing : float, default 0.0
    weight : sequence or tensor (K,), optional
        Per-class weights.

    Returns
    -------
    tf.Tensor
        Scalar float32.

    Examples
    --------
    >>> round(float(cross_entropy_loss(np.zeros((2, 4), 'float32'), np.array([0, 3]))), 4)  # ln 4
    1.3863
    """
    logits = tf.cast(y_pred, tf.float32)
    log_p = tf.nn.log_softmax(logits, axis=-1)
    classes = tf.cast(tf.reshape(y, [-1]), tf.int32)
    n_classes = tf.cast(tf.shape(log_p)[-1], tf.float32)
    nll = -tf.gather(log_p, classes, axis=1, batch_dims=1)
    if weight is None:
        w_target = tf.ones_like(nll)
        smooth = -tf.reduce_sum(log_p, axis=-1)
    else:
        weight = tf.cast(tf.convert_to_tensor(weight), tf.float32)
        w_target = tf.gather(weight, classes)
        smooth = -tf.reduce_sum(log_p * weight[tf.newaxis, :], axis=-1)
    denominator = tf.reduce_sum(w_target)
    loss = (1.0 - label_smoothing) * tf.reduce_sum(w_target * nll)
    if label_smoothing:
        loss += label_smoothing / n_classes * tf.reduce_sum(smooth)
    return loss / denominator


def mse_loss(y_pred, y) -> tf.Tensor:
    """Mean squared error over the batch.

    Examples
    --------
    >>> float(mse_loss(np.array([1., 2.], 'float32'), np.array([0., 0.], 'float32')))
    2.5
    """
    y_pred = tf.cast(y_pred, tf.float32)
    return tf.reduce_mean(tf.square(y_pred - tf.cast(y, tf.float32)))


def l1_loss(y_pred, y) -> tf.Tensor:
    """Mean absolute error over the batch.

    Examples
    --------
    >>> float(l1_loss(np.array([1., -2.], 'float32'), np.array([0., 0.], 'float32')))
    1.5
    """
    y_pred = tf.cast(y_pred, tf.float32)
    return tf.reduce_mean(tf.abs(y_pred - tf.cast(y, tf.float32)))


def finetune_dirichlet_loss(y_pred, y, question_index_groups) -> tf.Tensor:
    """Dirichlet-multinomial loss of a finetuned tree head: summed over questions, mean over galaxies (a scalar).

    Predictions first, as the other finetuning losses. The per-galaxy, per-question losses are
    ``zoobot.tensorflow.training.losses.calculate_multiquestion_loss`` (labels first).

    Parameters
    ----------
    y_pred : tensor (B, n_answers)
        Concentrations.
    y : tensor (B, n_answers)
        Vote counts.
    question_index_groups : list of (int, int)
        ``schema.question_index_groups``.

    Examples
    --------
    >>> float(finetune_dirichlet_loss(np.ones((2, 3), 'float32'), np.zeros((2, 3), 'float32'), [(0, 2)]))  # no votes
    0.0
    """
    from zoobot.tensorflow.training import losses

    per_galaxy = losses.calculate_multiquestion_loss(tf.cast(y, tf.float32), tf.cast(y_pred, tf.float32),
                                                     question_index_groups, sum_over_questions=True)
    return tf.reduce_mean(per_galaxy)


def dirichlet_loss(y_pred, y, question_index_groups) -> tf.Tensor:
    """Deprecated name of :func:`finetune_dirichlet_loss` (three public functions were called ``dirichlet_loss``).

    Warns
    -----
    DeprecationWarning
        Naming ``finetune_dirichlet_loss``.
    """
    warnings.warn("zoobot.tensorflow.training.finetune.dirichlet_loss is deprecated: use finetune_dirichlet_loss "
                  "(the same loss: summed over questions, mean over galaxies).", DeprecationWarning, stacklevel=2)
    return finetune_dirichlet_loss(y_pred, y, question_index_groups)


@keras.saving.register_keras_serializable(package="zoobot")
class LinearHead(keras.layers.Layer):
    """Dropout -> Dense(input_dim -> output_dim) -> optional activation. Output (B, output_dim), never squeezed.

    Parameters
    ----------
    input_dim : int
        Encoder features.
    output_dim : int
        Outputs (classes, 1 for regression).
    dropout_prob : float, default 0.5
    activation : str or callable, optional
        Applied to the output (e.g. ``'sigmoid'``); any ``keras.activations`` name.

    Examples
    --------
    >>> LinearHead(8, 1)(np.zeros((1, 8), 'float32')).shape
    TensorShape([1, 1])
    """

    def __init__(self, input_dim: int, output_dim: int, dropout_prob: float = 0.5, activation=None):
        super().__init__(name="linear_head")
        self.input_dim = check_int("input_dim", input_dim, minimum=1)
        self.output_dim = check_int("output_dim", output_dim, minimum=1)
        self.dropout_prob = check_fraction("dropout_prob", dropout_prob, allow_one=False)
        self.activation = keras.activations.get(activation) if activation is not None else None
        self.dropout = keras.layers.Dropout(self.dropout_prob, name="head_dropout")
        self.dense = keras.layers.Dense(self.output_dim, name="head_dense")
        self.dense.build((None, self.input_dim))
        self.built = True

    def call(self, inputs, training=None):
        x = self.dense(self.dropout(inputs, training=training))
        return self.activation(x) if self.activation is not None else x

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.output_dim)

    def get_config(self):
        activation = None if self.activation is None else keras.activations.serialize(self.activation)
        return {"input_dim": self.input_dim, "output_dim": self.output_dim, "dropout_prob": self.dropout_prob,
                "activation": activation}

    @classmethod
    def from_config(cls, config):
        config = {k: config[k] for k in ("input_dim", "output_dim", "dropout_prob", "activation") if k in config}
        if isinstance(config.get("activation"), dict):
            config["activation"] = keras.activations.deserialize(config["activation"])
        return cls(**config)


#: Upstream v1 name of :class:`LinearHead`.
LinearClassifier = LinearHead


def _is_batchnorm(layer) -> bool:
    return isinstance(layer, keras.layers.BatchNormalization)


_all_layers = all_layers


def freeze_batchnorm_layers(model) -> None:
    """Freeze every BatchNorm layer of ``model``: inference mode (statistics fixed) and no training.

    Keras runs a BatchNormalization layer with ``trainable = False`` in inference mode, so this
    is all it takes (the finetuning classes handle it themselves).

    Examples
    --------
    >>> m = keras.Sequential([keras.Input((4, 4, 1)), keras.layers.Conv2D(2, 3), keras.layers.BatchNormalization()])
    >>> freeze_batchnorm_layers(m)
    >>> m.layers[1].trainable, len(m.trainable_weights)   # the Conv2D's kernel and bias
    (False, 2)
    """
    for layer in _all_layers(model):
        if _is_batchnorm(layer):
            layer.trainable = False


# =============================================================================================
# 2. encoder blocks
# =============================================================================================

class EncoderBlock:
    """One trainable unit of an encoder: some Keras layers, found by layer-name prefix."""

    def __init__(self, name: str, layers: list):
        self.name = name
        self.layers = list(layers)

    def all_layers(self) -> list:
        """The block's layers and every layer inside them."""
        seen, out = set(), []
        for unit in self.layers:
            for layer in _all_layers(unit):
                if id(layer) not in seen:
                    seen.add(id(layer))
                    out.append(layer)
        return out

    def variables(self) -> list:
        """Every weight of the block (trainable or not), without duplicates."""
        seen, out = set(), []
        for layer in self.layers:
            for v in layer.weights:
                if id(v) not in seen:
                    seen.add(id(v))
                    out.append(v)
        return out

    def batchnorms(self) -> list:
        return [layer for layer in self.all_layers() if _is_batchnorm(layer)]

    def __repr__(self) -> str:
        n = sum(int(np.prod(v.shape)) for v in self.variables())
        return f"EncoderBlock({self.name!r}, {len(self.layers)} layers, {n} weights)"


#: The architectures with a block table, for error messages.
BLOCK_FAMILIES = ("efficientnet", "resnet", "convnext", "tiny_cnn",
                  *(f"keras-hub {name}" for name in pretrained_encoders.KERAS_HUB_BLOCK_RULES))

_CONVNEXT_STAGE = re.compile(r"_stage_(\d+)_")
_CONVNEXT_DOWN = re.compile(r"_downsampling_block_(\d+)$")
_CONVNEXT_STEM = re.compile(r"(^|_)stem$")
_EFFNET_BLOCK = re.compile(r"^block(\d+)[a-z]_")
_RESNET_STAGE = re.compile(r"^conv(\d)_")
_TINY_BLOCK = re.compile(r"^block(\d+)_")


def _units(model) -> list:
    """Layers of ``model`` in order, opening nested models that are not themselves blocks.

    The encoder built for ImageNet weights wraps the Keras application in an outer model (with a
    ``Rescaling``); its layers are what the block table describes.
    """
    out = []
    for layer in getattr(model, "layers", []):
        if isinstance(layer, keras.layers.InputLayer):
            continue
        nested = isinstance(layer, keras.Model) and _family(layer) is not None
        out.extend(_units(layer) if nested else [layer])
    return out


def _family(model) -> str | None:
    if family := pretrained_encoders.keras_hub_block_family(model):  # keras-hub backbones (timm weights)
        return family
    names = [layer.name for layer in getattr(model, "layers", [])]
    if any(_CONVNEXT_STAGE.search(n) for n in names):
        return "convnext"
    if "stem_conv" in names and any(_EFFNET_BLOCK.match(n) for n in names):
        return "efficientnet"
    if "conv1_conv" in names and any(n.startswith("conv2_block") for n in names):
        return "resnet"
    if "block1_conv" in names and any(_TINY_BLOCK.match(n) for n in names):
        return "tiny_cnn"
    for layer in getattr(model, "layers", []):  # a wrapper around an application
        if isinstance(layer, keras.Model) and _family(layer) is not None:
            return _family(layer)
    return None


def _block_key(family: str, name: str):
    """(order, block name) of a layer name, or None for layers between blocks."""
    if family.startswith("keras_hub:"):
        return pretrained_encoders.keras_hub_block_key(family, name)
    if family == "convnext":
        if match := _CONVNEXT_STAGE.search(name):
            return int(match.group(1)) + 1, f"stage_{match.group(1)}"
        if match := _CONVNEXT_DOWN.search(name):
            return int(match.group(1)) + 2, f"stage_{int(match.group(1)) + 1}"
        if _CONVNEXT_STEM.search(name):
            return 0, "stem"
        return None
    if family == "efficientnet":
        if name.startswith("stem_"):
            return 0, "stem"
        if match := _EFFNET_BLOCK.match(name):
            return int(match.group(1)), f"block{match.group(1)}"
        if name.startswith("top_"):
            return 1000, "top"
        return None
    if family == "resnet":
        if name.startswith("pool1_"):
            return 1, "conv1"
        if match := _RESNET_STAGE.match(name):
            return int(match.group(1)), f"conv{match.group(1)}"
        return None
    if match := _TINY_BLOCK.match(name):  # tiny_cnn
        return int(match.group(1)), f"block{match.group(1)}"
    return None


def get_encoder_blocks(encoder) -> list[EncoderBlock]:
    """The encoder's blocks, **top (nearest the head) first**, covering every layer with weights.

    Blocks are found by Keras layer-name prefix (see the module docstring). Layers outside the
    table (EfficientNet's input ``normalization``, ConvNeXt's final ``layer_normalization``, ...)
    join the block before them (the bottom block if none).

    Parameters
    ----------
    encoder : keras.Model

    Returns
    -------
    list of EncoderBlock
        Empty if the architecture has no block table.

    Examples
    --------
    >>> from zoobot.tensorflow.estimators.tiny_cnn import get_tiny_cnn
    >>> [b.name for b in get_encoder_blocks(get_tiny_cnn(1))]
    ['block4', 'block3', 'block2', 'block1']
    """
    family = _family(encoder)
    if family is None:
        return []
    blocks: dict = {}
    pending, current = [], None
    for unit in _units(encoder):
        key = _block_key(family, unit.name)
        if key is None:
            if current is None:
                pending.append(unit)  # before the first block: joins the bottom block
            else:
                blocks[current][1].append(unit)
            continue
        order, name = key
        if name not in blocks:
            blocks[name] = (order, [])
        blocks[name][1].append(unit)
        current = name
    if not blocks:
        return []
    ordered = sorted(blocks.items(), key=lambda item: item[1][0])
    ordered[0][1][1][:0] = pending
    return [EncoderBlock(name, layers) for name, (_, layers) in ordered][::-1]


# =============================================================================================
# 3. per-weight learning rates
# =============================================================================================

@keras.saving.register_keras_serializable(package="zoobot")
class LayerwiseAdamW(keras.optimizers.Adam):
    """AdamW in which every weight has its own learning-rate factor (PyTorch's parameter groups).

    For a weight with factor ``s`` each step applies, with ``lr`` the optimiser's current learning
    rate (what schedules change): decoupled weight decay ``w -= lr * s * weight_decay * w``, then
    the Adam step with learning rate ``lr * s``, ``w -= lr * s * m_hat / (sqrt(v_hat) + epsilon)``
    -- exactly ``torch.optim.AdamW`` with a parameter group of learning rate ``lr * s`` (including
    where epsilon enters, which differs from ``keras.optimizers.AdamW``). Scaling gradients instead
    would do nothing: Adam's steps do not depend on the gradient scale.

    Parameters
    ----------
    learning_rate : float
        The base learning rate (the head's).
    weight_decay : float
        Decoupled weight decay, as ``torch.optim.AdamW(weight_decay=...)``.
    lr_factors : dict, optional
        ``{id(variable): factor}``; weights not listed train with factor 1.
    beta_1, beta_2, epsilon : float
        Adam's constants (defaults of ``torch.optim.AdamW``: 0.9, 0.999, 1e-8).
    **kwargs
        Passed to ``keras.optimizers.Adam`` (e.g. ``global_clipnorm``).

    Examples
    --------
    >>> v = keras.Variable(np.ones(3, 'float32'))
    >>> opt = LayerwiseAdamW(learning_rate=0.1, weight_decay=0.0, lr_factors={id(v): 0.5})
    >>> opt.apply([np.array([1., -1., 2.], 'float32')], [v])
    >>> np.round(np.asarray(v), 4)   # first Adam step moves each weight by lr * factor
    array([0.95, 1.05, 0.95], dtype=float32)
    """

    def __init__(self, learning_rate=1e-4, weight_decay=0.05, lr_factors=None, beta_1=0.9, beta_2=0.999,
                 epsilon=1e-8, name="layerwise_adamw", **kwargs):
        kwargs.pop("weight_decay", None)
        super().__init__(learning_rate=learning_rate, beta_1=beta_1, beta_2=beta_2, epsilon=epsilon,
                         name=name, **kwargs)
        self.decoupled_weight_decay = float(weight_decay or 0.0)
        self._lr_factors_by_id = dict(lr_factors or {})
        self._factor_list = []

    def build(self, var_list):
        super().build(var_list)
        self._factor_list = [float(self._lr_factors_by_id.get(id(v), 1.0)) for v in var_list]

    def lr_factor(self, variable) -> float:
        """The learning-rate factor of a (built) variable."""
        return self._factor_list[self._get_variable_index(variable)]

    def update_step(self, gradient, variable, learning_rate):
        ops = keras.ops
        lr = ops.cast(learning_rate, variable.dtype) * self.lr_factor(variable)
        gradient = ops.cast(gradient, variable.dtype)
        step = ops.cast(self.iterations + 1, variable.dtype)
        if self.decoupled_weight_decay:
            self.assign_sub(variable, variable * (lr * self.decoupled_weight_decay))
        index = self._get_variable_index(variable)
        m, v = self._momentums[index], self._velocities[index]
        self.assign_add(m, (gradient - m) * (1 - self.beta_1))
        self.assign_add(v, (ops.square(gradient) - v) * (1 - self.beta_2))
        # torch.optim.AdamW's form: epsilon is added to the bias-corrected sqrt(v) (Keras' Adam adds it before)
        bias_1 = 1 - ops.power(ops.cast(self.beta_1, variable.dtype), step)
        bias_2 = 1 - ops.power(ops.cast(self.beta_2, variable.dtype), step)
        denominator = ops.sqrt(v) / ops.sqrt(bias_2) + self.epsilon
        self.assign_sub(variable, (lr / bias_1) * m / denominator)

    def get_config(self):
        config = super().get_config()
        config["weight_decay"] = self.decoupled_weight_decay  # factors are per run: not serialised
        return config


# =============================================================================================
# 4. the shared keras.Model
# =============================================================================================


# the .keras file being loaded (named in messages), and whether its versions were checked already
_LOADING_PATH = contextvars.ContextVar("zoobot_finetune_loading_path", default=None)
_VERSIONS_CHECKED = contextvars.ContextVar("zoobot_finetune_versions_checked", default=False)


@contextlib.contextmanager
def _loading(path, checked: bool):
    tokens = (_LOADING_PATH.set(str(path)), _VERSIONS_CHECKED.set(checked))
    try:
        yield
    finally:
        _LOADING_PATH.reset(tokens[0])
        _VERSIONS_CHECKED.reset(tokens[1])


def _snake(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


def _force_inference(layer) -> None:
    """Make a weightless stochastic layer (dropout, stochastic depth) ignore ``training=True``."""
    if "_zoobot_original_call" in layer.__dict__:
        return
    original = layer.call

    def call(*args, training=None, **kwargs):
        return original(*args, training=False, **kwargs)

    layer.__dict__["_zoobot_original_call"] = original
    object.__setattr__(layer, "call", call)


def _restore_call(layer) -> None:
    if "_zoobot_original_call" in layer.__dict__:
        del layer.__dict__["_zoobot_original_call"]
        del layer.__dict__["call"]


def _is_stochastic(layer) -> bool:
    """Weightless leaf layers that behave differently in training (Dropout family, stochastic depth)."""
    if layer.weights or getattr(layer, "_layers", None):
        return False
    try:
        return "training" in inspect.signature(layer.call).parameters
    except (TypeError, ValueError):
        return False


class FinetuneableZoobotAbstract(MultiWorkerModelMixin, keras.Model):
    """Shared machinery of the finetuning models; use a subclass (Classifier, Regressor, Tree).

    Parameters
    ----------
    name : str, optional
        Pretrained encoder: ``'local-dir:/folder'`` (holding ``encoder.keras``), a registry or
        ``'hf-hub:owner/repo'`` name published with Keras weights, or a Keras architecture /
        ``'tiny_cnn'`` (random init). See :func:`zoobot.tensorflow.estimators.define_model.create_encoder`.
        (The Keras model's own name is the snake-case class name.)
    encoder : keras.Model or keras.layers.Layer, optional
        Any Keras model mapping (B, H, W, C) to (B, D).
    zoobot_checkpoint_loc : str, optional
        A ``.keras`` file of a ``ZoobotTree`` (or of a finetuned model) whose encoder to use.
        Alias ``checkpoint_loc``.
    n_blocks : int, default 0
        Encoder blocks to train, from the top; 0 = head only, -1 = all.
    lr_decay : float, default 0.75
        Learning-rate factor per block down from the top. Alias ``layer_decay``.
    weight_decay : float, default 0.05
        AdamW (decoupled) weight decay.
    learning_rate : float, default 1e-4
        Head learning rate (and the top block's).
    dropout_prob : float, default 0.5
        Dropout before the head.
    always_train_batchnorm : bool, default False
        Let BatchNorm layers of frozen blocks update and train (see the module docstring).
    cosine_schedule : bool, default False
        Cosine learning-rate schedule per epoch: ``warmup_epochs`` linear warm-up, decay to
        ``max_learning_rate_reduction_factor`` at ``max_cosine_epochs`` (multiplies the learning
        rate of every block).
    warmup_epochs, max_cosine_epochs, max_learning_rate_reduction_factor
        The schedule's settings (defaults 0, 100, 0.01).
    from_scratch : bool, default False
        Train every weight at ``learning_rate`` (ignores ``n_blocks``).
    prog_bar : bool, default True
        Show a progress bar while fitting (one line per epoch when the output is not a terminal).
    visualize_images : bool, default False
        Log the first training images once, to loggers with ``log_image`` (e.g. wandb).
    seed : int, default 42
        Seeds Python, NumPy and TensorFlow (``keras.utils.set_random_seed``) before the encoder
        and head are built.
    n_layers : int, default 0
        Deprecated spelling of ``n_blocks`` (DeprecationWarning).
    cache_features : bool or None, keyword-only
        None (default): cache frozen-encoder features when the encoder is frozen; True: insist;
        False: never. The speed-up needs a deterministic training transform, e.g.
        ``GalaxyDataModule(train_transform=EvalTransform(...))`` (then no image is read after the
        first epoch); with the default random augmentations the cache never hits. See
        :mod:`zoobot.tensorflow.training.feature_cache`.
    checkpoint_loc, encoder_dim, layer_decay, training_mode : keyword-only
        Upstream spellings: ``checkpoint_loc`` = ``zoobot_checkpoint_loc``; ``encoder_dim`` gives
        the feature dimension of a custom ``encoder`` whose output shape is unknown;
        ``layer_decay`` = ``lr_decay``; ``training_mode='head_only'``/``'full'`` =
        ``n_blocks=0``/``-1``.

    Attributes
    ----------
    encoder, head : keras layers
    encoder_name : str or None
        The ``name`` argument.
    channels : int
        Input channels the encoder expects.
    input_size : int
        Image size the encoder was pretrained at (224 unless known otherwise).
    encoder_dim : int
    blocks : list of EncoderBlock
        Top first.
    n_blocks : int
        Trained blocks (resolved: -1 becomes the count).
    hparams : dict
        The hyperparameters (JSON primitives) stored in ``.keras`` files.
    feature_cache : FeatureCache or None

    Raises
    ------
    TypeError
        Instantiating this abstract class; conflicting alias spellings.
    ValueError
        Not exactly one encoder source; ``n_blocks`` larger than the encoder's block count;
        (E13) ``n_blocks > 0`` for an architecture without a block table, unknown ``training_mode``.
    """

    def __init__(
        self,
        name: str | None = None,
        encoder=None,
        zoobot_checkpoint_loc: str | None = None,
        n_blocks: int = 0,
        lr_decay: float = 0.75,
        weight_decay: float = 0.05,
        learning_rate: float = 1e-4,
        dropout_prob: float = 0.5,
        always_train_batchnorm: bool = False,
        cosine_schedule: bool = False,
        warmup_epochs: int = 0,
        max_cosine_epochs: int = 100,
        max_learning_rate_reduction_factor: float = 0.01,
        from_scratch: bool = False,
        prog_bar: bool = True,
        visualize_images: bool = False,
        seed: int = 42,
        n_layers: int = 0,
        *,
        cache_features: bool | None = None,
        checkpoint_loc: str | None = None,
        encoder_dim: int | None = None,
        layer_decay: float | None = None,
        training_mode: str | None = None,
    ):
        if type(self) is FinetuneableZoobotAbstract:
            raise TypeError(
                "FinetuneableZoobotAbstract is abstract: use FinetuneableZoobotClassifier, "
                "FinetuneableZoobotRegressor or FinetuneableZoobotTree."
            )
        arguments = {k: v for k, v in locals().items() if k not in ("self", "__class__")}
        config = FinetuneConfig.from_arguments(stacklevel=4, **arguments)  # aliases resolved, values checked
        super().__init__(name=_snake(type(self).__name__))
        config.apply_to(self)  # learning_rate, lr_decay, ..., seed, cache_features, cosine_params
        keras.utils.set_random_seed(config.seed)
        source, info = self._build_encoder(config)
        self._describe_encoder(config, info)
        self.blocks = get_encoder_blocks(self.encoder)
        self.n_blocks = self._check_n_blocks(config.n_blocks)
        self._freeze()
        config.check_cache_features(self.encoder_is_frozen)
        use_cache = config.cache_features is not False and self.encoder_is_frozen
        self.feature_cache = FeatureCache(self.encoder_dim) if use_cache else None
        #: True while the Trainer feeds replayed features instead of images (see ``use_replayed_features``).
        self.replaying_features = False
        #: 'val' or 'test': the metric names of the evaluation step (the Trainer sets it).
        self.eval_split = "val"
        #: Forward passes per image in ``predict`` (``predict(..., n_samples=n)`` sets it).
        self.predict_n_samples = 1
        self.loss_tracker = keras.metrics.Mean(name="loss")
        self.hparams = config.hparams(source=source, architecture=self.architecture, channels=self.channels,
                                      input_size=self.input_size, encoder_dim=self.encoder_dim)

    # ------------------------------------------------------------------------- construction
    def _build_encoder(self, config: FinetuneConfig) -> tuple[str, dict]:
        """Set ``self.encoder`` from the one source given; returns which, and what is known of the encoder."""
        source = config.encoder_source()
        if source == "name":
            self.encoder = define_model.create_encoder(config.name, pretrained=True)
            return source, _registry_info(config.name)
        if source == "encoder":
            encoder = config.encoder
            if not isinstance(encoder, keras.layers.Layer):
                raise TypeError(f"encoder must be a Keras model or layer, got {type(encoder).__name__}"
                                + (" (a PyTorch module? use zoobot.pytorch.training.finetune)"
                                   if hasattr(encoder, "parameters") else ""))
            self.encoder = encoder
            return source, {}
        model = _load_zoobot_file(config.zoobot_checkpoint_loc)
        self.encoder = _encoder_of(model, config.zoobot_checkpoint_loc)
        return source, {
            "architecture": getattr(model, "architecture_name", None) or getattr(model, "architecture", None),
            "channels": getattr(model, "channels", None),
            "input_size": getattr(model, "input_size", None),
            "preprocessing": getattr(model, "preprocessing", None),
        }

    def _describe_encoder(self, config: FinetuneConfig, info: dict) -> None:
        """Channels, feature dimension, architecture, input size and preprocessing record of the encoder."""
        self.encoder_name = config.name
        self.channels = int(_encoder_channels(self.encoder) or info.get("channels") or 3)
        self.encoder_dim = config.check_encoder_dim(_known_output_dim(self.encoder))
        if self.encoder_dim is None:
            self.encoder_dim = define_model.get_encoder_dim(self.encoder, channels=self.channels)
        self.architecture = info.get("architecture") or _encoder_architecture(self.encoder)
        self.input_size = int(info.get("input_size") or _encoder_input_size(self.encoder) or 224)
        #: How the training images were prepared (:class:`zoobot.shared.preprocessing.Preprocessing`): set
        #: by ``Trainer.fit`` on a GalaxyDataModule, saved in the ``.keras`` config, used by ``predict``. Until
        #: fitted, a model finetuned from a ZoobotTree file carries that model's record.
        self.preprocessing = info.get("preprocessing")

    def _check_n_blocks(self, n_blocks: int) -> int:
        if self.from_scratch:
            return len(self.blocks) if self.blocks else n_blocks
        if not self.blocks:
            if n_blocks > 0:
                raise unknown_option_error(
                    f"encoder architecture for n_blocks={n_blocks} ({self.encoder.name!r} has no block "
                    "table; use n_blocks=0 (head only) or -1 (everything at learning_rate))",
                    self.encoder.name, BLOCK_FAMILIES)
            return n_blocks  # 0 or -1 (all, as one block)
        if n_blocks == -1:
            return len(self.blocks)
        if n_blocks > len(self.blocks):
            raise ValueError(
                f"n_blocks={n_blocks} but this {self.architecture or self.encoder.name} encoder has only "
                f"{len(self.blocks)} blocks ({', '.join(b.name for b in self.blocks[::-1])}). Use "
                f"n_blocks <= {len(self.blocks)}, or -1 for all."
            )
        return n_blocks

    def _freeze(self) -> None:
        """Set ``trainable`` per layer; frozen layers run in inference mode during training."""
        all_layers = _all_layers(self.encoder)
        for layer in all_layers:
            _restore_call(layer)
        self.encoder.trainable = True
        if self.from_scratch or (not self.blocks and self.n_blocks == -1):
            self.trained_blocks, self.frozen_blocks = list(self.blocks), []
            return
        if not self.blocks:  # no block table, head only
            self.trained_blocks, self.frozen_blocks = [], []
            frozen = all_layers
        else:
            self.trained_blocks = self.blocks[:self.n_blocks]
            self.frozen_blocks = self.blocks[self.n_blocks:]
            frozen = [layer for block in self.frozen_blocks for layer in block.all_layers()]
        keep_bn = self.always_train_batchnorm
        for layer in frozen:
            if getattr(layer, "_layers", None):  # containers stay trainable; their leaves decide
                continue
            if keep_bn and _is_batchnorm(layer):
                continue
            layer.trainable = False
            if _is_stochastic(layer):
                _force_inference(layer)

    @property
    def encoder_is_frozen(self) -> bool:
        """True when no encoder weight trains and every encoder layer runs in inference mode."""
        if self.always_train_batchnorm and any(b.batchnorms() for b in self.frozen_blocks):
            return False
        return not self.encoder.trainable_weights

    def lr_factors(self) -> dict:
        """``{id(variable): factor}`` of every trainable encoder weight (the head: 1)."""
        if self.from_scratch or (not self.blocks and self.n_blocks == -1):
            return {}
        factors, trained = {}, []
        for i, block in enumerate(self.trained_blocks):
            factor = self.lr_decay ** i
            trained.append(factor)
            for v in block.variables():
                factors[id(v)] = factor
        if self.always_train_batchnorm:
            lowest = min(trained) if trained else 1.0
            for block in self.frozen_blocks:
                for bn in block.batchnorms():
                    for v in bn.weights:
                        factors[id(v)] = lowest
        return factors

    def param_groups(self) -> list[dict]:
        """The learning rate of each group of weights: head, trained blocks top first, frozen BatchNorms.

        Each group is ``{'name': ..., 'lr': ..., 'variables': [...]}`` (the twin of PyTorch's
        optimiser parameter groups; only weights that train are listed).
        """
        head = [v for v in self.head.trainable_weights]
        if self.from_scratch or (not self.blocks and self.n_blocks == -1):
            return [{"name": "all", "lr": self.learning_rate, "variables": head + list(self.encoder.trainable_weights)}]
        groups = [{"name": "head", "lr": self.learning_rate, "variables": head}]
        lrs = []
        for i, block in enumerate(self.trained_blocks):
            lr = self.learning_rate * self.lr_decay ** i
            lrs.append(lr)
            groups.append({"name": f"encoder.{block.name}", "lr": lr,
                           "variables": [v for v in block.variables() if v.trainable]})
        if self.always_train_batchnorm:
            bn = [v for block in self.frozen_blocks for layer in block.batchnorms() for v in layer.trainable_weights]
            if bn:
                groups.append({"name": "frozen_batchnorm", "lr": min(lrs) if lrs else self.learning_rate,
                               "variables": bn})
        return groups

    def lr_multiplier(self, epoch: int) -> float:
        """The schedule's learning-rate multiplier for ``epoch`` (0-based): cosine or 1."""
        if self.cosine_params is None:
            return 1.0
        p = self.cosine_params
        return define_model.EpochCosineDecay(1.0, p["warmup_epochs"], p["max_epochs"], p["min_lr_factor"])(epoch)

    def compile(self, optimizer=None, gradient_clip_val=None, **kwargs):
        """Compile with the finetuning rules: :class:`LayerwiseAdamW` (per-block learning rates), no Keras loss.

        :class:`~zoobot.tensorflow.training.trainer.Trainer` calls this; call it yourself only to
        use ``model.fit`` directly. The loss and metrics are the model's own (see ``train_step``).

        Parameters
        ----------
        optimizer : keras optimizer, optional
            Default: ``LayerwiseAdamW(learning_rate, weight_decay, lr_factors())``.
        gradient_clip_val : float, optional
            Clip the global gradient norm.
        **kwargs
            Passed to ``keras.Model.compile`` (``loss``/``metrics`` are not allowed).
        """
        for key in ("loss", "metrics", "weighted_metrics", "loss_weights"):
            if kwargs.get(key) is not None:
                raise TypeError(f"{type(self).__name__}.compile does not take {key}=: the model computes its own "
                                "finetuning loss and metrics.")
            kwargs.pop(key, None)
        if optimizer is None:
            optimizer = LayerwiseAdamW(learning_rate=self.learning_rate, weight_decay=self.weight_decay,
                                       lr_factors=self.lr_factors(), global_clipnorm=gradient_clip_val)
        kwargs.setdefault("jit_compile", False)
        super().compile(optimizer=optimizer, **kwargs)
        # built now, not while the train step is traced: a step that creates variables is traced twice
        self.optimizer.build(self.trainable_variables)

    # ------------------------------------------------------------------------- forward
    def build(self, input_shape=None):
        self.built = True

    def encode(self, x, training=None):
        """Encoder features (B, encoder_dim); a frozen encoder always runs in inference mode."""
        if self.encoder_is_frozen:
            return self.encoder(x, training=False)
        return self.encoder(x, training=training)

    def call(self, inputs, training=None):
        """Raw head output for images (B, H, W, C) in [0, 1] (logits for the classifier)."""
        _check_static_channels(inputs, self.channels)
        return self.head(self.encode(inputs, training=training), training=training)

    def _features(self, x, training: bool, stage: str):
        """Features for a train/eval step: the batch itself when replaying, else through the feature cache."""
        if self.replaying_features:  # the batch holds encoder features: head-only steps
            return tf.ensure_shape(tf.cast(x, tf.float32), [None, self.encoder_dim])
        if self.feature_cache is not None:
            return self.feature_cache.encode(self.encoder, x, stage)
        return self.encode(x, training=training)

    def use_replayed_features(self, on: bool) -> None:
        """Switch the train/test steps to batches of encoder features (True) or back to images (False).

        The Trainer does this around a fit that takes the feature-replay fast path (see
        :class:`~zoobot.tensorflow.training.feature_cache.FeatureReplay`); the compiled steps are
        traced again. Only for a frozen encoder.
        """
        if on and not self.encoder_is_frozen:
            raise ValueError("Replayed features need a frozen encoder (n_blocks=0).")
        self.replaying_features = bool(on)
        self.train_function = self.test_function = None

    def output_from_features(self, features, training=None):
        """The model output for encoder features (what ``call`` returns after the encoder)."""
        return self.head(features, training=training)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.head.compute_output_shape((input_shape[0], self.encoder_dim))[-1])

    # ------------------------------------------------------------------------- steps
    def _unpack(self, data):
        """(images, labels) from a tuple/list batch or a dict batch with 'image' and 'label' (or label columns)."""
        if isinstance(data, dict):
            if "image" not in data:
                raise KeyError(f"dict batches need an 'image' key; got keys {sorted(data)}")
            if "label" in data:
                return data["image"], data["label"]
            keys = self._dict_label_keys(data)
            y = tf.stack([tf.cast(data[k], tf.float32) for k in keys], axis=1)
            return data["image"], (y[:, 0] if len(keys) == 1 else y)
        if isinstance(data, (tuple, list)) and len(data) >= 2:
            return data[0], data[1]
        raise TypeError(
            "training/validation batches must be (images, labels) or a dict with 'image' and labels; "
            f"got {type(data).__name__}"
        )

    def _dict_label_keys(self, batch: dict) -> list[str]:
        keys = [k for k, v in batch.items() if k not in ("image", "id_str", "index", "file_loc", "matrix")]
        if len(keys) != 1:
            raise KeyError(f"dict batch has label keys {keys}; {type(self).__name__} needs exactly one (or a 'label' key).")
        return keys

    def train_step(self, data):
        x, y = self._unpack(data)
        y = self._prepare_labels(y)
        with tf.GradientTape() as tape:
            features = self._features(x, training=True, stage="train")
            output = self.output_from_features(features, training=True)
            loss = self.compute_loss_value(output, y)
        variables = self.trainable_variables
        gradients = tape.gradient(loss, variables)
        # a NaN/inf loss stops training before the weights are touched (the Trainer names epoch and step)
        with tf.control_dependencies([tf.debugging.check_numerics(loss, NONFINITE_LOSS_MARKER)]):
            gradients = [g if g is None or isinstance(g, tf.IndexedSlices) else tf.identity(g) for g in gradients]
            self.optimizer.apply(gradients, variables)
        return self._update_metrics(loss, output, y, "train")

    def test_step(self, data):
        x, y = self._unpack(data)
        y = self._prepare_labels(y)
        features = self._features(x, training=False, stage="val")
        output = self.output_from_features(features, training=False)
        loss = self.compute_loss_value(output, y)
        return self._update_metrics(loss, output, y, self.eval_split)

    def predict_step(self, data):
        x = _images_of(data)
        if self.predict_n_samples == 1:
            return self.predict_output(x)
        return tf.stack([self.predict_output(x) for _ in range(self.predict_n_samples)], axis=-1)

    def _update_metrics(self, loss, output, y, split: str) -> dict:
        batch = tf.cast(tf.shape(output)[0], tf.float32)
        self.loss_tracker.update_state(loss, sample_weight=batch)
        self.update_task_metric(output, y)
        logs = {f"finetuning/{split}_loss": self.loss_tracker.result()}
        metric = self.task_metric
        if metric is not None:
            logs[f"finetuning/{split}_{self.task_metric_name}"] = metric.result()
        return self._reduceable(logs)  # across workers (get_trainer(num_nodes=...)): logs Keras can average

    @property
    def metrics(self):
        return [m for m in (self.loss_tracker, self.task_metric) if m is not None]

    # hooks for the task subclasses
    task_metric = None
    task_metric_name = None

    def _prepare_labels(self, y):
        raise NotImplementedError

    def compute_loss_value(self, output, y):
        raise NotImplementedError

    def update_task_metric(self, output, y) -> None:
        """Task metrics (accuracy, RMSE); none by default."""

    def predict_output(self, x):
        """What :meth:`predict` returns for a batch, (B, n_outputs)."""
        raise NotImplementedError

    def check_labels(self, labels, where: str = "the labels") -> None:
        """Check a batch of labels before training (E14 and friends); ``labels`` as numpy, (N,) or (N, n)."""

    def check_label_cols(self, label_cols) -> None:
        """Check a data module's label columns fit the task."""
        if len(label_cols) != 1:
            raise ValueError(f"{type(self).__name__} predicts one value per galaxy, but the data module has "
                             f"{len(label_cols)} label columns {list(label_cols)}; use one.")

    def check_catalog_labels(self, catalog, label_cols, name: str) -> None:
        """Check every label of a catalog before any model work (E2, E14, ...), naming rows and ``id_str``."""
        from zoobot.shared.catalogs import validate_catalog

        self.check_label_cols(label_cols)
        kind, extra = self._catalog_label_kind()
        validate_catalog(catalog, label_cols=list(label_cols), require_file_loc=False, label_kind=kind, name=name,
                         **extra)

    def _catalog_label_kind(self) -> tuple[str, dict]:
        """(label_kind, extra validate_catalog keywords) of this task's labels."""
        return "regression", {}

    # ------------------------------------------------------------------------- predict
    def predict(self, x, batch_size=None, verbose="auto", steps=None, callbacks=None, n_samples=1):
        """Predict, checking the first batch (E7 channels, E8 pixel range) first [S ``model.predict``].

        Parameters
        ----------
        x : array (N, H, W, C), tf.data.Dataset or TF GalaxyDataModule
            Datasets may yield images, ``(images, id_str)``, ``(images, labels)`` or dicts with
            ``'image'``; only the images are used. A data module's predict set is used.
        batch_size, verbose, steps, callbacks
            As ``keras.Model.predict``.
        n_samples : int, default 1
            Forward passes per image (dropout is off at prediction, so they agree unless the
            encoder has stochastic layers of its own).

        Returns
        -------
        ndarray
            (N, n_outputs), or (N, n_outputs, n_samples) if ``n_samples > 1``. Classifier:
            softmax probabilities; regressor: (N, 1) values; tree: concentrations.

        Raises
        ------
        ChannelMismatchError
            (E7) images with the wrong number of channels or layout.
        PixelScaleError
            (E8) images outside [0, 1].
        """
        n_samples = check_int("n_samples", n_samples, minimum=1)
        if is_datamodule(x):
            if getattr(x, "predict_catalog", None) is None:
                raise ValueError("predict got a data module without predict_catalog; pass "
                                 "GalaxyDataModule(..., predict_catalog=catalog) or a dataset/array of images.")
            x.setup("predict")
            x = x.predict_dataloader()
        images = _first_images(x)
        if images is not None:
            define_model.check_images(images, self.channels, where=f"{type(self).__name__}.predict")
        if n_samples != self.predict_n_samples:
            self.predict_n_samples = n_samples
            self.predict_function = None  # retrace with the new number of samples
        if verbose == "auto":
            verbose = 1 if self.prog_bar and _interactive() else 0
        return super().predict(x, batch_size=batch_size, verbose=verbose, steps=steps, callbacks=callbacks)

    # ------------------------------------------------------------------------- serialisation
    def _save_all_hparams(self, task_hparams: dict) -> None:
        from zoobot.shared.training_config import to_jsonable

        self.hparams = {**self.hparams, **to_jsonable(task_hparams)}

    def get_config(self):
        record = {} if self.preprocessing is None else {"preprocessing": self.preprocessing.to_dict()}
        return {**dict(self.hparams), "encoder": keras.saving.serialize_keras_object(self.encoder),
                **record, **checkpoints.version_metadata()}

    @classmethod
    def from_config(cls, config):
        if cls is FinetuneableZoobotAbstract:
            raise TypeError("FinetuneableZoobotAbstract is abstract")
        config = dict(config)
        path = _LOADING_PATH.get() or f"the {cls.__name__} configuration being loaded"
        if not _VERSIONS_CHECKED.get():
            checkpoints.check_format_version(config, path)
        encoder_config = config.pop("encoder", None)
        provenance = {k: config.pop(k, None) for k in ("name", "zoobot_checkpoint_loc", "encoder_source",
                                                       "label_cols")}
        info = {k: config.pop(k, None) for k in ("architecture", "channels", "input_size")}
        record = config.pop("preprocessing", None)
        if isinstance(encoder_config, dict):
            encoder = keras.saving.deserialize_keras_object(encoder_config)
        elif info["architecture"] in define_model.ENCODER_NAMES:
            encoder = define_model.get_encoder(info["architecture"], channels=int(info["channels"] or 3))
        else:
            raise ValueError(f"{path} records no encoder architecture zoobot can rebuild.")
        kwargs = checkpoints.drop_unknown_hparams(config, _constructor_arguments(cls), f"{cls.__name__} from {path}")
        model = cls(encoder=encoder, **kwargs)
        model._restore_provenance(provenance, info)
        from zoobot.shared.preprocessing import carry_record, restore_record

        carry_record(model, restore_record(record, channels=model.channels))
        return model

    def _restore_provenance(self, provenance: dict, info: dict) -> None:
        """Keep where the encoder first came from (and its pretrained input size) in the hyperparameters."""
        for key, value in provenance.items():
            if value is not None:
                self.hparams[key] = value
        self.encoder_name = provenance.get("name")
        if info.get("architecture"):
            self.architecture = self.hparams["architecture"] = info["architecture"]
        if info.get("input_size"):
            self.input_size = self.hparams["input_size"] = int(info["input_size"])

    def get_compile_config(self):
        return None  # the Trainer compiles with the finetuning rules

    def get_build_config(self):
        return None  # built by __init__

    @classmethod
    def load_from_checkpoint(cls, checkpoint_path, map_location=None, hparams_file=None, strict=None,
                             weights_only=None, **overrides):
        """Load a finetuned model from a ``.keras`` file, offline (the twin of Lightning's method).

        The model (encoder included) is rebuilt from the file's config and its weights are loaded;
        nothing is downloaded.

        Parameters
        ----------
        checkpoint_path : str or path-like
            E.g. ``trainer.checkpoint_callback.best_model_path``.
        map_location : None or str
            A TensorFlow device (e.g. ``'/CPU:0'``) on which to create the model; default: TensorFlow's choice.
        hparams_file : None
            Not supported (hyperparameters live in the ``.keras`` file).
        strict : bool, optional
            True (default): the file's weights must match the model exactly.
        weights_only : None or True
            ``.keras`` files never hold pickled objects.
        **overrides
            Hyperparameters replacing the stored ones (e.g. ``learning_rate``, ``n_blocks``);
            ``encoder=`` replaces the stored encoder architecture (its weights still come from the file).

        Returns
        -------
        FinetuneableZoobotAbstract
            An instance of this class.

        Raises
        ------
        FileNotFoundError
            No such file.
        CheckpointVersionError
            (E11) the file was written by a newer, incompatible zoobot.
        TypeError
            The file holds another kind of model.

        Warns
        -----
        UserWarning
            Older ``format_version``; hyperparameters this version does not know (dropped).
        """
        if cls is FinetuneableZoobotAbstract:
            raise TypeError("Call load_from_checkpoint on the concrete class, e.g. FinetuneableZoobotClassifier.")
        if hparams_file is not None:
            raise ValueError("hparams_file is not supported: zoobot stores hyperparameters inside the .keras file")
        if weights_only is False:
            raise ValueError("zoobot .keras files hold no pickled objects: weights_only=False has no meaning")
        path = pathlib.Path(os.fspath(checkpoint_path))
        if not path.is_file():
            raise FileNotFoundError(f"No checkpoint file at {path}")
        if path.suffix != ".keras":
            raise unknown_option_error("finetuned model file extension (TensorFlow)", path.suffix, [".keras"])
        file_config = _read_keras_config(path)
        registered = str(file_config.get("registered_name") or "")
        stored_class = registered.split(">", 1)[-1]
        if stored_class != cls.__name__:
            if stored_class in _FINETUNE_CLASS_NAMES or stored_class == "ZoobotTree":
                raise TypeError(f"{path} holds a {stored_class}, not a {cls.__name__}: load it with "
                                f"{stored_class}.load_from_checkpoint.")
            raise TypeError(f"{path} is not a zoobot finetuned model (it holds {registered or 'an unknown model'}).")
        inner = dict(file_config.get("config") or {})
        checkpoints.check_format_version(inner, path)
        device = tf.device(map_location) if map_location is not None else contextlib.nullcontext()
        with device:
            if not overrides:
                with _loading(path, checked=True):
                    model = keras.saving.load_model(str(path), compile=False)
            else:
                with _loading(path, checked=True):
                    stored = keras.saving.load_model(str(path), compile=False)
                    config = {**inner, **{k: v for k, v in overrides.items() if k != "encoder"}}
                    if "encoder" in overrides:
                        config["encoder"] = keras.saving.serialize_keras_object(overrides["encoder"])
                    model = cls.from_config(config)
                _copy_weights(stored, model, path, strict=strict is not False)
        model.checkpoint_path = str(path)
        return model

    @classmethod
    def load_from_name(cls, name: str, **kwargs):
        """Download ``<ClassName>.keras`` from a Hub repo (or use the cached copy) and load it.

        Parameters
        ----------
        name : str
            ``'hf-hub:owner/repo'`` (or ``hf_hub:`` / plain ``owner/repo``).
        **kwargs
            Passed to :meth:`load_from_checkpoint`.

        Raises
        ------
        FileNotFoundError
            Not cached and offline (``HF_HUB_OFFLINE=1``) or the download failed.
        """
        if cls is FinetuneableZoobotAbstract:
            raise TypeError("Call load_from_name on the concrete class, e.g. FinetuneableZoobotClassifier.")
        repo = name
        for prefix in ("hf-hub:", "hf_hub:"):
            if repo.startswith(prefix):
                repo = repo[len(prefix):]
        try:
            from huggingface_hub import hf_hub_download, try_to_load_from_cache
        except ImportError:
            from zoobot.shared.errors import missing_dependency

            raise missing_dependency("huggingface_hub", "Loading finetuned models from the Hub", "pytorch") from None
        repo_id, _, revision = repo.partition("@")
        filename = f"{cls.__name__}.keras"
        cached = try_to_load_from_cache(repo_id, filename, revision=revision or None)
        if not isinstance(cached, str):
            from zoobot.shared.pretrained import hub_reachable

            reachable, why = hub_reachable()  # fail now rather than after huggingface_hub's ~23 s of retries
            if not reachable:
                raise FileNotFoundError(
                    f"{filename} of Hub repo {repo_id!r} is not in the local Hugging Face cache and the Hub cannot "
                    f"be reached ({why}). Run once with network access so it is cached, or download the file and "
                    "use load_from_checkpoint(path).")
        try:
            path = cached if isinstance(cached, str) else hf_hub_download(repo_id, filename, revision=revision or None)
        except Exception as err:
            raise FileNotFoundError(
                f"Could not get {filename} of Hub repo {repo_id!r} ({type(err).__name__}: {err}). Run once with "
                "network access so it is cached, or download the file and use load_from_checkpoint(path)."
            ) from err
        return cls.load_from_checkpoint(path, **kwargs)

    # ------------------------------------------------------------------------- sanity check
    def linear_sanity_check(self, train_dataset, val_dataset) -> float:
        """Fit a logistic regression on frozen features of the train set; return its val accuracy."""
        try:
            from sklearn.linear_model import LogisticRegression
        except ImportError:
            from zoobot.shared.errors import missing_dependency

            raise missing_dependency("scikit-learn", "run_linear_sanity_check", "pca") from None
        encode = tf.function(lambda x: self.encoder(x, training=False))
        feats = {}
        for split, dataset in (("train", train_dataset), ("val", val_dataset)):
            xs, ys = [], []
            for batch in dataset:
                x, y = self._unpack(batch)
                xs.append(np.asarray(encode(x)))
                ys.append(np.asarray(y).reshape(-1))
            feats[split] = (np.concatenate(xs), np.concatenate(ys).astype(int))
        clf = LogisticRegression(max_iter=1000).fit(*feats["train"])
        accuracy = float(clf.score(*feats["val"]))
        self.linear_sanity_check_accuracy = accuracy
        logger.info("Linear sanity check: logistic regression on frozen features reaches val accuracy %.3f", accuracy)
        return accuracy


def _constructor_arguments(cls) -> set:
    names = set()
    for klass in cls.__mro__:
        if klass is keras.Model:
            break
        if "__init__" in vars(klass):
            names |= {n for n, p in inspect.signature(klass.__init__).parameters.items()
                      if n != "self" and p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)}
    return names


def _copy_weights(source, target, path, strict: bool) -> None:
    """Copy every encoder/head weight from a loaded model into a rebuilt one (matched by order)."""
    pairs = [(source.encoder, target.encoder), (source.head, target.head)]
    for src, dst in pairs:
        src_w, dst_w = src.weights, dst.weights
        if len(src_w) != len(dst_w) or any(tuple(a.shape) != tuple(b.shape) for a, b in zip(src_w, dst_w)):
            if strict:
                raise ValueError(
                    f"The weights in {path} do not fit the model rebuilt with these overrides ({src.name}: "
                    f"{len(src_w)} weights in the file, {len(dst_w)} in the model). Overrides may change "
                    "training settings, not the architecture (or pass strict=False to load what fits)."
                )
            for a, b in zip(src_w, dst_w):
                if tuple(a.shape) == tuple(b.shape):
                    b.assign(a)
            continue
        for a, b in zip(src_w, dst_w):
            b.assign(a)


def _load_zoobot_file(checkpoint_loc):
    path = pathlib.Path(os.fspath(checkpoint_loc))
    if not path.is_file():
        raise FileNotFoundError(f"No checkpoint file at {path} (zoobot_checkpoint_loc).")
    registered = str(_read_keras_config(path).get("registered_name") or "") if path.suffix == ".keras" else ""
    if registered.startswith("zoobot>") and registered.split(">", 1)[1] in _FINETUNE_CLASS_NAMES:
        inner = _read_keras_config(path).get("config") or {}
        checkpoints.check_format_version(inner, path)
        with _loading(path, checked=True):
            return keras.saving.load_model(str(path), compile=False)
    return define_model.load_zoobot_model(path)


def _encoder_of(model, path):
    encoder = getattr(model, "encoder", None)
    if encoder is None:
        raise ValueError(
            f"{path} holds a {type(model).__name__} without an encoder: zoobot_checkpoint_loc takes a ZoobotTree "
            "or finetuned model .keras file. For a bare encoder use name='local-dir:/folder' (with encoder.keras) "
            "or encoder=keras.saving.load_model(path)."
        )
    return encoder


def _registry_info(name: str) -> dict:
    try:
        from zoobot.shared import pretrained

        cfg = pretrained.get_pretrained_cfg(name)
    except Exception:  # architecture names and local files are not in the registry
        return {}
    return {"architecture": getattr(cfg, "architecture", None), "channels": getattr(cfg, "channels", None),
            "input_size": getattr(cfg, "input_size", None)}


def _encoder_channels(encoder) -> int | None:
    try:
        shape = encoder.input_shape
    except (AttributeError, ValueError):
        return None
    if isinstance(shape, (tuple, list)) and shape and isinstance(shape[-1], int):
        return int(shape[-1])
    return None


def _encoder_input_size(encoder) -> int | None:
    try:
        shape = encoder.input_shape
    except (AttributeError, ValueError):
        return None
    if isinstance(shape, (tuple, list)) and len(shape) == 4 and isinstance(shape[1], int):
        return int(shape[1])
    return None


def _known_output_dim(encoder) -> int | None:
    try:
        shape = encoder.output_shape
    except (AttributeError, ValueError):
        return None
    if isinstance(shape, (tuple, list)) and shape and isinstance(shape[-1], int):
        return int(shape[-1])
    return None


_KERAS_APP_NAMES = {
    **{f"efficientnetb{i}": f"efficientnet_b{i}" for i in range(8)},
    **{f"efficientnetv2-b{i}": f"efficientnetv2_b{i}" for i in range(4)},
    "efficientnetv2-s": "efficientnetv2_s", "efficientnetv2-m": "efficientnetv2_m", "efficientnetv2-l": "efficientnetv2_l",
    "resnet50": "resnet50", "resnet101": "resnet101", "resnet152": "resnet152",
    "convnext_tiny": "convnext_tiny", "convnext_small": "convnext_small", "convnext_base": "convnext_base",
    "convnext_large": "convnext_large", "tiny_cnn": "tiny_cnn",
}


def _encoder_architecture(encoder) -> str | None:
    name = getattr(encoder, "name", "")
    if name.endswith("_imagenet"):
        name = name[: -len("_imagenet")]
    return _KERAS_APP_NAMES.get(name)


def _check_static_channels(inputs, channels) -> None:
    shape = getattr(inputs, "shape", None)
    if shape is None or len(shape) == 0:
        return
    if len(shape) != 4 or (shape[-1] is not None and shape[-1] != channels):
        shape = tuple(shape)
        looks_nchw = len(shape) == 4 and shape[1] in (1, 3) and shape[-1] not in (1, 3)
        fix = ("transpose NCHW (PyTorch layout) to NHWC" if looks_nchw else
               "give a batch (B, H, W, C)" if len(shape) != 4 else
               f"use greyscale={channels == 1} in GalaxyDataModule, or an encoder built for {shape[-1]} channels")
        raise ChannelMismatchError(
            f"The encoder expects images of shape (B, H, W, {channels}) (NHWC), expected C={channels}, got tensor "
            f"shape {shape}. Fix: {fix}."
        )


def _images_of(data):
    if isinstance(data, (tuple, list)):
        data = data[0]
    if isinstance(data, dict):
        return data["image"]
    return data


def _first_images(data):
    """The images of the first batch of an array, tensor or tf.data.Dataset (None for other inputs)."""
    if isinstance(data, tf.data.Dataset):
        element = next(iter(data.take(1)), None)
        return None if element is None else _images_of(element)
    if isinstance(data, (np.ndarray, tf.Tensor)):
        return data[:64]
    return None  # generators and PyDatasets are not peeked (peeking would consume them)


def _interactive() -> bool:
    import sys

    return bool(getattr(sys.stdout, "isatty", lambda: False)())


def _label_assert(ok, message: str, bad_values):
    """In-graph label check; the Trainer turns its failure into a ValueError carrying ``message``."""
    return tf.debugging.Assert(ok, [LABEL_ERROR_MARKER + message, "got values:", bad_values], summarize=5)


# =============================================================================================
# 5. the tasks
# =============================================================================================

@keras.saving.register_keras_serializable(package="zoobot")
class FinetuneableZoobotClassifier(FinetuneableZoobotAbstract):
    """Finetune an encoder to classify galaxies into ``num_classes`` classes (cross-entropy).

    Parameters
    ----------
    num_classes : int
        Number of classes (>= 2); labels are integer class ids in ``[0, num_classes)``.
    label_smoothing : float, default 0.0
        Cross-entropy label smoothing in [0, 1).
    class_weights : sequence of float, optional
        One positive weight per class (e.g. inverse frequencies) for the cross-entropy.
    run_linear_sanity_check : bool, default False
        At the start of ``fit``, fit a logistic regression on the frozen features and log its
        validation accuracy (a baseline the finetuned model should beat).
    **kwargs
        Encoder and training options of :class:`FinetuneableZoobotAbstract`.

    Notes
    -----
    ``call`` returns logits (B, num_classes); ``predict`` returns softmax probabilities.
    Logged: ``finetuning/{train,val,test}_{loss,acc}``.

    Raises
    ------
    ValueError
        (E14) before or during training, labels that are not integers in ``[0, num_classes)``.

    Examples
    --------
    >>> model = FinetuneableZoobotClassifier(name='tiny_cnn', num_classes=3)
    >>> model.predict(np.random.rand(2, 32, 32, 3).astype('float32'), verbose=0).shape
    (2, 3)
    """

    task_metric_name = "acc"

    def __init__(self, num_classes: int, label_smoothing: float = 0.0, class_weights=None,
                 run_linear_sanity_check: bool = False, **kwargs):
        num_classes = check_int("num_classes", num_classes, minimum=2)  # binary tasks use num_classes=2
        label_smoothing = check_fraction("label_smoothing", label_smoothing, allow_one=False)
        weights = None
        if class_weights is not None:
            weights = np.asarray(class_weights, dtype=np.float32)
            if weights.shape != (int(num_classes),) or not np.isfinite(weights).all() or (weights <= 0).any():
                raise ValueError(f"class_weights must be {int(num_classes)} positive finite numbers (one per class), "
                                 f"got {class_weights!r}")
        super().__init__(**kwargs)
        self.num_classes = int(num_classes)
        self.label_smoothing = label_smoothing
        self.class_weights = None if weights is None else weights.tolist()
        self._class_weight_tensor = None if weights is None else tf.constant(weights)
        self.run_linear_sanity_check = bool(run_linear_sanity_check)
        self.head = LinearHead(self.encoder_dim, self.num_classes, self.dropout_prob)
        self.task_metric = keras.metrics.Mean(name="acc")
        self._save_all_hparams({
            "num_classes": self.num_classes, "label_smoothing": label_smoothing,
            "class_weights": self.class_weights, "run_linear_sanity_check": self.run_linear_sanity_check})
        self.built = True

    def _message(self) -> str:
        return (f"Classification labels must be integers in [0, {self.num_classes}) (num_classes={self.num_classes}). "
                f"Encode classes as 0..{self.num_classes - 1}, or raise num_classes.")

    def _prepare_labels(self, y):
        y = tf.convert_to_tensor(y)
        if y.shape.rank == 2 and y.shape[1] == 1:
            y = y[:, 0]
        if y.shape.rank != 1:
            raise ValueError(f"Classification labels must be class ids of shape (B,); got shape {tuple(y.shape)}. "
                             f"Use one label column holding integers 0..{self.num_classes - 1}.")
        values = tf.cast(y, tf.float32)
        bad = (tf.logical_not(tf.math.is_finite(values)) | (values != tf.round(values)) | (values < 0)
               | (values >= self.num_classes))
        with tf.control_dependencies([_label_assert(tf.logical_not(tf.reduce_any(bad)), self._message(),
                                                    tf.boolean_mask(values, bad))]):
            return tf.cast(tf.where(bad, tf.zeros_like(values), values), tf.int32)

    def check_labels(self, labels, where: str = "the labels") -> None:
        values = np.asarray(labels, dtype=float).reshape(-1)
        bad = ~np.isfinite(values) | (values != np.round(values)) | (values < 0) | (values >= self.num_classes)
        if bad.any():
            raise ValueError(f"{where}: {self._message()} Got {format_examples(sorted(set(values[bad].tolist())))}.")

    def _catalog_label_kind(self):
        return "class", {"num_classes": self.num_classes}

    def compute_loss_value(self, output, y):
        return cross_entropy_loss(output, y, label_smoothing=self.label_smoothing, weight=self._class_weight_tensor)

    def update_task_metric(self, output, y) -> None:
        correct = tf.cast(tf.equal(tf.argmax(output, axis=-1, output_type=tf.int32), y), tf.float32)
        self.task_metric.update_state(correct)

    def predict_output(self, x):
        return tf.nn.softmax(self(x, training=False), axis=-1)


_REGRESSION_LOSSES = {"mse": "mse", "l1": "l1", "mae": "l1"}


@keras.saving.register_keras_serializable(package="zoobot")
class FinetuneableZoobotRegressor(FinetuneableZoobotAbstract):
    """Finetune an encoder to predict one number per galaxy.

    Parameters
    ----------
    loss : {'mse', 'l1'}, default 'mse'
        Mean squared or mean absolute error (``'mae'`` = ``'l1'``).
    unit_interval : bool, default False
        Squash the output into (0, 1) with a sigmoid; labels must then lie in [0, 1].
    **kwargs
        Encoder and training options of :class:`FinetuneableZoobotAbstract`.

    Notes
    -----
    ``call`` returns shape (B,) for every batch size (also B = 1); ``predict`` returns (N, 1).
    Logged: ``finetuning/{train,val,test}_{loss,rmse}``.

    Examples
    --------
    >>> model = FinetuneableZoobotRegressor(name='tiny_cnn', unit_interval=True)
    >>> model(np.random.rand(1, 32, 32, 3).astype('float32')).shape
    TensorShape([1])
    """

    task_metric_name = "rmse"

    def __init__(self, loss: str = "mse", unit_interval: bool = False, **kwargs):
        if loss not in _REGRESSION_LOSSES:
            raise unknown_option_error("regression loss", loss, list(_REGRESSION_LOSSES))
        super().__init__(**kwargs)
        self.loss_name = _REGRESSION_LOSSES[loss]
        self.loss_func = mse_loss if self.loss_name == "mse" else l1_loss
        self.unit_interval = bool(unit_interval)
        self.head = LinearHead(self.encoder_dim, 1, self.dropout_prob,
                               activation="sigmoid" if self.unit_interval else None)
        self.task_metric = keras.metrics.RootMeanSquaredError(name="rmse")
        self._save_all_hparams({"loss": self.loss_name, "unit_interval": self.unit_interval})
        self.built = True

    def output_from_features(self, features, training=None):
        return self.head(features, training=training)[:, 0]

    def call(self, inputs, training=None):
        """Predictions (B,) for images (B, H, W, C)."""
        return super().call(inputs, training=training)[:, 0]

    def compute_output_shape(self, input_shape):
        return (input_shape[0],)

    def _prepare_labels(self, y):
        y = tf.convert_to_tensor(y)
        if y.shape.rank == 2 and y.shape[1] == 1:
            y = y[:, 0]
        if y.shape.rank != 1:
            raise ValueError(f"Regression labels must have shape (B,), one label column; got shape {tuple(y.shape)}.")
        y = tf.cast(y, tf.float32)
        if not self.unit_interval:
            return y
        bad = tf.logical_not(tf.math.is_finite(y)) | (y < 0) | (y > 1)
        with tf.control_dependencies([_label_assert(tf.logical_not(tf.reduce_any(bad)), self._message(),
                                                    tf.boolean_mask(y, bad))]):
            return tf.identity(y)

    def _message(self) -> str:
        return "unit_interval=True needs labels in [0, 1]. Rescale the labels or use unit_interval=False."

    def check_labels(self, labels, where: str = "the labels") -> None:
        values = np.asarray(labels, dtype=float).reshape(-1)
        if self.unit_interval:
            bad = ~np.isfinite(values) | (values < 0) | (values > 1)
            if bad.any():
                raise ValueError(f"{where}: {self._message()} Got {format_examples(sorted(set(values[bad].tolist())))}.")

    def check_catalog_labels(self, catalog, label_cols, name: str) -> None:
        super().check_catalog_labels(catalog, label_cols, name)
        if self.unit_interval:
            values = catalog[label_cols[0]].to_numpy(dtype=float)
            bad = (values < 0) | (values > 1)
            if bad.any():
                raise ValueError(
                    f"{name}: unit_interval=True needs labels in [0, 1], but {int(bad.sum())} row(s) of "
                    f"{label_cols[0]!r} are outside, e.g. {format_examples(sorted(set(values[bad].tolist())))} "
                    f"(id_str {format_examples(catalog['id_str'][bad].astype(str).tolist())}). Rescale the labels or "
                    "use unit_interval=False."
                )

    def compute_loss_value(self, output, y):
        return self.loss_func(output, y)

    def update_task_metric(self, output, y) -> None:
        self.task_metric.update_state(y, output)

    def predict_output(self, x):
        return self(x, training=False)[:, tf.newaxis]


@keras.saving.register_keras_serializable(package="zoobot")
class FinetuneableZoobotTree(FinetuneableZoobotAbstract):
    """Finetune an encoder on vote counts of a (new) decision tree, with a Dirichlet head.

    Parameters
    ----------
    schema : Schema, dict or str
        The decision tree (a Schema, its ``to_dict()``, or a prebuilt schema name).
    **kwargs
        Encoder and training options of :class:`FinetuneableZoobotAbstract`.

    Notes
    -----
    Head: dropout (``dropout_prob``, off at prediction) -> dense -> ``1 + 100 * sigmoid``. Loss of
    the Dirichlet-multinomial loss (sum over questions, mean over galaxies). ``predict`` returns concentrations
    (N, n_answers). Logged: ``finetuning/{train,val,test}_loss``.

    Examples
    --------
    >>> from zoobot.shared import schemas
    >>> model = FinetuneableZoobotTree(schema=schemas.gz_rings_schema, name='tiny_cnn')
    >>> model.predict(np.random.rand(2, 32, 32, 3).astype('float32'), verbose=0).shape
    (2, 2)
    """

    def __init__(self, schema, **kwargs):
        from zoobot.shared import schemas as schemas_module

        if isinstance(schema, dict):
            schema = schemas_module.Schema.from_dict(schema)
        elif isinstance(schema, str):
            schema = schemas_module.get_schema(schema)
        elif not isinstance(schema, schemas_module.Schema):
            raise TypeError(f"schema must be a zoobot Schema, its to_dict(), or a prebuilt schema name; "
                            f"got {type(schema).__name__}")
        super().__init__(**kwargs)
        self.schema = schema
        self.label_cols = list(schema.label_cols)
        self.question_index_groups = [tuple(int(i) for i in g) for g in schema.question_index_groups]
        self.head = define_model.get_tensorflow_dirichlet_head(self.encoder_dim, len(self.label_cols),
                                                               test_time_dropout=False,
                                                               dropout_rate=self.dropout_prob)
        self._save_all_hparams({"schema": schema.to_dict()})
        self.built = True

    # ------------------------------------------------------------------------- calibration
    #: post-hoc calibration record (zoobot.shared.calibration) of the current weights; None: uncalibrated
    #: (the same property as ZoobotTree's: stored as JSON text, which Keras does not track)
    calibration = define_model.ZoobotTree.calibration

    @property
    def concentration_scale(self):
        """Per-question scale ``predict_on_catalog.predict`` applies (None when uncalibrated)."""
        from zoobot.shared.calibration import scale_from_record

        return scale_from_record(self.calibration, [q.text for q in self.schema.questions])

    def fit(self, *args, **kwargs):
        """``keras.Model.fit``; with ``validation_data``, the calibration is refitted after every epoch,
        before any checkpoint callback saves."""
        if kwargs.get("validation_data") is not None:
            kwargs["callbacks"] = [_ValidationCalibration(kwargs["validation_data"]), *(kwargs.get("callbacks") or [])]
        return super().fit(*args, **kwargs)

    def get_config(self):
        from zoobot.shared.calibration import CHECKPOINT_KEY

        config = super().get_config()
        if self.calibration:
            config[CHECKPOINT_KEY] = self.calibration
        return config

    @classmethod
    def from_config(cls, config):
        from zoobot.shared.calibration import CHECKPOINT_KEY

        config = dict(config)
        record = config.pop(CHECKPOINT_KEY, None)
        model = super().from_config(config)
        model.calibration = record
        return model

    def _dict_label_keys(self, batch: dict) -> list[str]:
        missing = [c for c in self.label_cols if c not in batch]
        if missing:
            raise KeyError(f"dict batch lacks label columns of the schema: {format_examples(missing)}")
        return self.label_cols

    def _prepare_labels(self, y):
        y = tf.convert_to_tensor(y)
        if y.shape.rank == 1:
            y = y[:, tf.newaxis]
        if y.shape.rank != 2 or (y.shape[1] is not None and y.shape[1] != len(self.label_cols)):
            raise ValueError(
                f"Vote-count labels must have shape (B, n_answers) = (B, {len(self.label_cols)}) for schema "
                f"{self.schema.name!r}; got {tuple(y.shape)}. Use the schema's label_cols as label columns."
            )
        return tf.cast(y, tf.float32)

    def check_label_cols(self, label_cols) -> None:
        if list(label_cols) != self.label_cols:
            raise ValueError(
                f"FinetuneableZoobotTree expects the schema's {len(self.label_cols)} label columns in order "
                f"(expected width {len(self.label_cols)}, got width {len(label_cols)}; schema {self.schema.name!r}). "
                f"Use GalaxyDataModule(label_cols=schema.label_cols, ...)."
            )

    def _catalog_label_kind(self):
        return "counts", {}

    def check_labels(self, labels, where: str = "the labels") -> None:
        values = np.asarray(labels, dtype=float)
        bad = ~np.isfinite(values) | (values < 0)
        if bad.any():
            raise ValueError(f"{where}: vote counts must be finite and >= 0 (use 0, not NaN, for answers with no "
                             f"votes); got {format_examples(sorted(set(values[bad].tolist())))}.")

    def compute_loss_value(self, output, y):
        return finetune_dirichlet_loss(output, y, self.question_index_groups)

    def predict_output(self, x):
        return self(x, training=False)


_FINETUNE_CLASS_NAMES = ("FinetuneableZoobotClassifier", "FinetuneableZoobotRegressor", "FinetuneableZoobotTree")


class _ValidationCalibration(keras.callbacks.Callback):
    """Refit a finetuned tree's concentration scale on the validation data at the end of each epoch
    (:func:`zoobot.shared.calibration.fit_record_from_batches`), as the PyTorch twin does in
    ``on_validation_epoch_end``."""

    def __init__(self, validation_data):
        super().__init__()
        if isinstance(validation_data, (tuple, list)):  # (x, y) arrays, as keras.Model.fit accepts them
            validation_data = tf.data.Dataset.from_tensor_slices(tuple(validation_data[:2])).batch(256)
        self.validation_data = validation_data

    def on_epoch_end(self, epoch, logs=None):
        from zoobot.shared.calibration import fit_record_from_batches

        model = self.model
        model.calibration = fit_record_from_batches(
            ((self._concentrations(model, x), model._prepare_labels(y))
             for x, y in map(model._unpack, self.validation_data)),
            [q.text for q in model.schema.questions], model.question_index_groups)

    @staticmethod
    def _concentrations(model, x):
        features = x if model.replaying_features else model.encode(x, training=False)
        return model.output_from_features(features, training=False)


# =============================================================================================
# 6. trainer, pretrained encoders, upstream wrapper
# =============================================================================================

def get_trainer(save_dir, file_template: str = "{epoch}", save_top_k: int = 1, max_epochs: int = 100,
                patience: int = 10, devices="auto", accelerator="auto", logger=None, overwrite: bool = False,
                **trainer_kwargs):
    """A :class:`~zoobot.tensorflow.training.trainer.Trainer` set up for finetuning [S].

    The twin of the PyTorch ``get_trainer`` (which returns a Lightning ``Trainer``), with the same
    methods: ``fit(model, datamodule)``, ``validate``, ``test``, ``predict``. One run per ``save_dir``
    (docs/reliability.md): ``fit`` into a folder that holds another run's checkpoints is refused with
    :class:`~zoobot.shared.run_dir.SaveDirInUseError`, unless it resumes
    (``trainer.fit(..., ckpt_path=save_dir/checkpoints/last.keras)``) or ``overwrite=True``.

    Parameters
    ----------
    save_dir : str or path-like
        Checkpoints go to ``save_dir/checkpoints`` (best by ``finetuning/val_loss``, and
        ``last.keras``); metrics to ``save_dir/logs/metrics.csv`` unless ``logger`` is given.
    file_template : str, default '{epoch}'
        Checkpoint file name template, as Lightning's (``'{epoch}'`` gives ``epoch=3.keras``).
    save_top_k : int, default 1
        Best checkpoints to keep (-1: all, 0: none besides ``last.keras``).
    max_epochs : int, default 100
    patience : int, default 10
        Early stopping patience (epochs without improvement of ``finetuning/val_loss``).
    devices : 'auto', int or list, default 'auto'
        One device (TensorFlow's default placement); more than one -> NotImplementedError.
    accelerator : {'auto', 'cpu', 'gpu', 'cuda'}, default 'auto'
        'cpu' hides the GPUs from TensorFlow (or, if TensorFlow already started on them, runs
        under ``tf.device('/CPU:0')``).
    logger : logger, False or None
        None: a :class:`~zoobot.tensorflow.training.trainer.CSVLogger` in ``save_dir/logs``;
        False: no logging; or any object with ``log_metrics(metrics, step)`` (or a wandb run).
    overwrite : bool, default False
        ``fit`` deletes the run already in ``save_dir`` (its checkpoints, logs and ``config.json``) and starts
        afresh, instead of being refused.
    **trainer_kwargs
        Passed to the Trainer: ``callbacks`` (Keras callbacks, added to ours),
        ``enable_progress_bar``, ``gradient_clip_val``, ``enable_checkpointing``,
        ``limit_train_batches``, ``limit_val_batches``, ``log_every_n_steps``, and, as Lightning's,
        ``num_nodes`` (workers: more than 1 fits under ``tf.distribute.MultiWorkerMirroredStrategy`` over the
        ``TF_CONFIG``/SLURM cluster; call ``get_trainer`` before any other TensorFlow work and build the model
        inside ``trainer.strategy.scope()``; only the chief writes ``save_dir``) and ``strategy``
        (``'auto'``, ``'ddp'`` or ``'multi_worker_mirrored'``: the same thing). See docs/guides/scaling_out.md.

    Returns
    -------
    zoobot.tensorflow.training.trainer.Trainer
        ``trainer.checkpoint_callback.best_model_path`` is the best checkpoint after ``fit``.

    Examples
    --------
    >>> import tempfile
    >>> trainer = get_trainer(tempfile.mkdtemp(), accelerator='cpu', max_epochs=1)
    >>> trainer.checkpoint_callback.monitor
    'finetuning/val_loss'
    """
    from zoobot.shared.run_dir import check_save_dir

    check_save_dir(save_dir, "the finetuning checkpoints and logs")
    accepted = set(inspect.signature(trainer_module.Trainer.__init__).parameters) - {
        "self", "default_root_dir", "max_epochs", "devices", "accelerator", "logger", "overwrite"}
    unknown = sorted(set(trainer_kwargs) - accepted)
    if unknown:
        raise TypeError(f"get_trainer got unexpected keyword argument(s) {unknown}: the TensorFlow Trainer takes "
                        f"{sorted(accepted)} (Lightning-only options such as precision do not apply).")
    callbacks = list(trainer_kwargs.pop("callbacks", None) or [])
    enable_checkpointing = trainer_kwargs.get("enable_checkpointing", True)
    trainer = trainer_module.Trainer(default_root_dir=pathlib.Path(save_dir), max_epochs=max_epochs, devices=devices,
                                     accelerator=accelerator, overwrite=overwrite, **trainer_kwargs)
    write_dir = trainer.default_root_dir  # save_dir, or on a non-chief worker its temporary folder
    ours = [trainer_module.EarlyStopping(monitor=MONITOR, mode="min", patience=patience, check_finite=True)]
    if enable_checkpointing:
        ours.insert(0, trainer_module.ModelCheckpoint(
            dirpath=write_dir / "checkpoints", filename=file_template, monitor=MONITOR, mode="min",
            save_top_k=save_top_k, save_last=True))
    if logger is None:
        logger = trainer_module.CSVLogger(save_dir=write_dir, name="logs", version="")
    trainer.callbacks = ours + callbacks
    trainer.logger = logger or None
    return trainer


def load_pretrained_zoobot(checkpoint_loc):
    """The encoder of a saved ``ZoobotTree`` (or finetuned model) ``.keras`` file, offline.

    Parameters
    ----------
    checkpoint_loc : str or path-like

    Returns
    -------
    keras.Model
        The encoder.

    Raises
    ------
    FileNotFoundError
        No such file.
    CheckpointVersionError
        (E11) written by a newer, incompatible zoobot.
    ValueError
        The file holds no zoobot model with an encoder.
    """
    return _encoder_of(_load_zoobot_file(checkpoint_loc), checkpoint_loc)


#: Upstream v1 name of :func:`load_pretrained_zoobot`.
load_pretrained_encoder = load_pretrained_zoobot

_TASKS = {"classification": FinetuneableZoobotClassifier, "regression": FinetuneableZoobotRegressor,
          "tree": FinetuneableZoobotTree}
_RUN_TRAINER_KEYS = {"max_epochs", "epochs", "n_epochs", "patience", "accelerator", "devices", "save_top_k"}


def run_finetuning(config, encoder, train_dataset, val_dataset, test_dataset, save_dir):
    """Finetune ``encoder`` on datasets in one call (upstream 1.x): a thin wrapper around the finetuning classes.

    Parameters
    ----------
    config : dict
        ``task`` ('classification' (default), 'regression' or 'tree'), the task's constructor
        arguments (e.g. ``num_classes``, ``n_blocks``, ``learning_rate``, ``schema``) and trainer
        settings ``max_epochs`` (alias ``epochs``/``n_epochs``), ``patience``, ``accelerator``,
        ``devices``, ``save_top_k``. The upstream nested form ``{'finetune': {'label_dim',
        'n_epochs', 'n_layers', 'label_mode', 'prog_bar', ...}, 'trainer': {'devices', 'accelerator'}}``
        is accepted too.
    encoder : keras.Model
        The (pretrained) encoder.
    train_dataset, val_dataset : tf.data.Dataset
        Batches of ``(images, labels)``.
    test_dataset : tf.data.Dataset or None
        Evaluated with the best weights when given.
    save_dir : str or path-like

    Returns
    -------
    FinetuneableZoobotAbstract
        The model with the best checkpoint's weights.

    Raises
    ------
    TypeError
        Unknown config keys (the message lists the accepted ones).
    """
    config = _flatten_run_config(config)
    task = config.pop("task", "classification")
    if task not in _TASKS:
        raise unknown_option_error("task", task, list(_TASKS))
    cls = _TASKS[task]
    trainer_args = {k: config.pop(k) for k in list(config) if k in _RUN_TRAINER_KEYS}
    known = _constructor_arguments(cls) - {"encoder", "name", "zoobot_checkpoint_loc", "checkpoint_loc"}
    unknown = sorted(set(config) - known)
    if unknown:
        raise TypeError(f"run_finetuning: unknown config keys {unknown}; accepted: 'task', "
                        f"{sorted(known | _RUN_TRAINER_KEYS)}")
    max_epochs = trainer_args.pop("max_epochs", trainer_args.pop("epochs", trainer_args.pop("n_epochs", 100)))
    trainer_args.pop("epochs", None)
    trainer_args.pop("n_epochs", None)
    model = cls(encoder=encoder, **config)
    trainer = get_trainer(save_dir, max_epochs=max_epochs, **trainer_args)
    trainer.fit(model, (train_dataset, val_dataset))
    best = trainer.checkpoint_callback.best_model_path
    if best:
        model.load_weights(best)
    if test_dataset is not None:
        trainer.test(model, test_dataset)
    return model


def _flatten_run_config(config) -> dict:
    if not isinstance(config, dict):
        raise TypeError(f"run_finetuning needs a dict config, got {type(config).__name__}")
    config = dict(config)
    if "finetune" not in config and "trainer" not in config:
        return config
    finetune = dict(config.pop("finetune", {}) or {})
    trainer = dict(config.pop("trainer", {}) or {})
    out = dict(config)
    mode = finetune.pop("label_mode", None)
    if mode is not None:
        out["task"] = {"classification": "classification", "regression": "regression"}.get(mode, mode)
    label_dim = finetune.pop("label_dim", None)
    if label_dim is not None and out.get("task", "classification") == "classification":
        out["num_classes"] = label_dim
    for old, new in (("n_epochs", "max_epochs"), ("n_layers", "n_blocks")):
        if old in finetune:
            out[new] = finetune.pop(old)
    finetune.pop("encoder_dim", None)  # inferred from the encoder
    out.update(finetune)
    out.update({k: v for k, v in trainer.items() if k in ("devices", "accelerator")})
    return out
