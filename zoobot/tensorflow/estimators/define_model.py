"""Keras models of the TensorFlow backend: ``ZoobotTree`` and its Dirichlet head (see docs/components/training.md).

A zoobot model is an **encoder** (:mod:`~zoobot.tensorflow.estimators.encoders`; images NHWC float32 in
[0, 1] -> pooled features) followed by a **Dirichlet head** (Dropout -> Dense -> ScaledSigmoid, one
concentration in (1, 101) per answer), trained with :mod:`zoobot.tensorflow.estimators.losses`.

Read top to bottom: ``create_encoder`` (architecture, registry or hub names), the head, Monte Carlo
dropout in one pass (:func:`mc_dropout_samples`), first-batch checks (:func:`check_images`, E7/E8),
learning-rate schedules as Keras callbacks, :class:`ZoobotTree`, and :func:`load_zoobot_model` for
``.keras`` files (E11). The upstream v1 functional API (``get_model``, ``load_model``, ``load_weights``,
``ZoobotModel``) and the deprecated names live in :mod:`zoobot.tensorflow._compat`; this module gives
them on first use.
"""
from __future__ import annotations

import json
import pathlib

import keras
import numpy as np
import tensorflow as tf

from zoobot.shared import calibration, checkpoints, schedules
from zoobot.shared.errors import ChannelMismatchError, unknown_option_error
from zoobot.shared.zoobot_tree_args import (
    answer_to_question_index,
    campaign_questions,
    check_model_keywords,
    check_output_dim,
    resolve_tree_description,
)
from zoobot.shared.hub import registry_cfg as _registry_cfg
from zoobot.shared.validation import check_fraction, check_int
from zoobot.tensorflow.distributed import MultiWorkerModelMixin
from zoobot.tensorflow._compat import (  # noqa: F401  (old names, given here as before)
    ZoobotModel,
    get_model,
    get_tensorflow_encoder,
    load_model,
    load_weights,
)
from zoobot.tensorflow._compat import define_model_dirichlet_loss as dirichlet_loss  # noqa: F401
from zoobot.tensorflow.estimators import custom_layers, losses, tiny_cnn  # noqa: F401  (tiny_cnn: examples)
from zoobot.tensorflow.estimators.custom_layers import get_dirichlet_head, get_tensorflow_dirichlet_head
from zoobot.tensorflow.estimators.encoders import (
    ENCODER_NAMES,
    get_encoder,
    get_encoder_dim,
    resolve_encoder_name,
)
from zoobot.tensorflow.estimators.encoders import check_channels as _check_channels
from zoobot.tensorflow.estimators.losses import get_dirichlet_loss_func, per_question_dirichlet_loss  # noqa: F401
from zoobot.tensorflow.estimators.model_io import (  # noqa: F401  (re-exported; private names used by training)
    _LOADING_PATH,
    _VERSIONS_CHECKED,
    _check_keras_file_version,
    _first_images,
    _read_keras_config,
    _versions_checked,
    check_images,
    load_zoobot_model,
)

__all__ = [
    "ENCODER_NAMES",
    "ZoobotTree",
    "ZoobotModel",
    "get_encoder",
    "get_encoder_dim",
    "create_encoder",
    "get_tensorflow_dirichlet_head",
    "get_dirichlet_head",
    "get_dirichlet_loss_func",
    "per_question_dirichlet_loss",
    "mc_dropout_samples",
    "check_images",
    "get_scheduler_callbacks",
    "get_model",
    "load_model",
    "load_weights",
    "load_zoobot_model",
]

# ---------------------------------------------------------------------------------------------
# 1. encoders
# ---------------------------------------------------------------------------------------------

def create_encoder(name: str, pretrained: bool = True, channels: int | None = None, **kwargs) -> keras.Model:
    """Create an encoder (images (B, H, W, C) in [0, 1] -> features (B, D)) from a name.

    The twin of ``zoobot.pytorch.estimators.define_model.create_encoder``, with the same names:

    ==================================================  ==========================================================
    name                                                what you get
    ==================================================  ==========================================================
    ``'zoobot-encoder-...'`` (registry) or              the pretrained Zoobot encoder: its timm weights converted
    ``'hf-hub:owner/repo'`` (legacy ``'hf_hub:'``)      by keras-hub (EfficientNet, ResNet, ... families; E13
                                                        for ConvNeXt/MaxViT: use ``zoobot.pytorch``)
    ``'local-dir:/path/to/folder'``                     a timm folder (``config.json`` + ``model.safetensors``)
                                                        or the ``encoder.keras`` in it (no network at all)
    ``'efficientnet_b0'``, ``'convnext_tiny'``, ...       a Keras architecture of :data:`ENCODER_NAMES`, **randomly
                                                        initialised** (as timm names are in PyTorch)
    ``'tiny_cnn'``                                      the 4-convolution test encoder
    ==================================================  ==========================================================

    Parameters
    ----------
    name : str
    pretrained : bool, default True
        Load the pretrained weights (registry, ``hf-hub:`` and ``local-dir:`` names). Architecture
        names are always randomly initialised (a ``UserWarning`` says so when ``pretrained=True``;
        Keras' ImageNet weights are available through ``get_encoder(name,
        weights='imagenet')``).
    channels : int, optional
        Input channels. Default: the pretrained model's, else 3.
    **kwargs
        Passed to the Keras application constructor (architecture names only).

    Returns
    -------
    keras.Model

    Raises
    ------
    ValueError
        (E13) unknown name or prefix, or a pretrained encoder with PyTorch-only weights.
    ChannelMismatchError
        (E7) ``channels`` differs from a loaded encoder's.
    FileNotFoundError
        ``local-dir:`` folder without ``encoder.keras``; a Hub file that is not cached while offline.

    Examples
    --------
    >>> create_encoder('tiny_cnn', channels=1).output_shape
    (None, 128)
    """
    import warnings

    if not isinstance(pretrained, bool):
        raise TypeError(f"pretrained must be True or False, got {pretrained!r}")
    if channels is not None:
        channels = _check_channels(channels)
    source, ident = _parse_encoder_name(name)
    if source == "tiny_cnn":
        return get_encoder("tiny_cnn", channels=channels or 3)
    if source == "keras":
        if pretrained:
            warnings.warn(
                f"{name!r} is an architecture, not a pretrained Zoobot encoder: it is randomly initialised. "
                "For Zoobot weights use a registry name or 'hf-hub:owner/repo' (published with Keras weights); "
                "pass pretrained=False to silence this warning.",
                UserWarning,
                stacklevel=2,
            )
        return get_encoder(ident, channels=channels or 3, **kwargs)
    if source == "local-dir":
        return _load_local_encoder(pathlib.Path(ident).expanduser(), channels)
    return _create_hub_encoder(source, ident, pretrained, channels)


def _registry():
    try:
        from zoobot.shared import pretrained as registry
    except ImportError:  # the registry is optional for the TensorFlow backend
        return None
    return registry


def _accepted_encoder_names() -> list:
    registry = _registry()
    names = []
    if registry is not None:
        try:
            names = [str(getattr(cfg, "name", cfg)) for cfg in registry.list_pretrained()]
        except Exception:  # the registry must never hide the real error
            names = []
    return names + list(ENCODER_NAMES) + ["hf-hub:<owner>/<repo>", "local-dir:<folder>"]


def _parse_encoder_name(name) -> tuple:
    """``(source, identifier)``: source in 'tiny_cnn', 'keras', 'local-dir', 'hf-hub', 'registry'."""
    from zoobot.shared.hub import parse_encoder_source
    from zoobot.shared.training_config import resolve_architecture_name

    parsed = parse_encoder_source(name, "Accepted: " + ", ".join(_accepted_encoder_names()))
    if parsed is not None:
        return parsed
    architecture = resolve_architecture_name(name.strip())
    if architecture in ENCODER_NAMES:
        return "keras", architecture
    raise unknown_option_error("encoder name (TensorFlow)", name, _accepted_encoder_names())


def _load_local_encoder(folder: pathlib.Path, channels):
    from zoobot.tensorflow.estimators import pretrained_encoders

    if pretrained_encoders.is_timm_folder(folder):  # config.json + model.safetensors: through keras-hub
        return pretrained_encoders.load_timm_encoder(folder, channels)
    path = folder / "encoder.keras" if folder.is_dir() else folder
    if not path.is_file():
        raise FileNotFoundError(
            f"local-dir:{folder} has no encoder.keras. A Keras encoder folder holds encoder.keras "
            "(save one with encoder.save('folder/encoder.keras')); a timm folder holds config.json and "
            "model.safetensors."
        )
    encoder = load_zoobot_model(path)
    encoder = getattr(encoder, "encoder", encoder)
    _check_loaded_channels(encoder, channels, path)
    return encoder


def _check_loaded_channels(encoder, channels, where) -> None:
    got = encoder.input_shape[-1] if getattr(encoder, "input_shape", None) is not None else None
    if channels is not None and got is not None and got != channels:
        raise ChannelMismatchError(
            f"{where} takes {got}-channel images but channels={channels} was requested (expected C={got}, got "
            f"C={channels}). Fix: pass channels={got} ({'greyscale=True' if got == 1 else 'greyscale=False'} "
            "for the data)."
        )


def _keras_file_of(cfg):
    """The Keras weights file a registry entry publishes, or None."""
    files = getattr(cfg, "backend_files", None) or {}
    if isinstance(files, dict):
        for key in ("tensorflow", "keras", "tf"):
            value = files.get(key)
            if value:
                return value if isinstance(value, str) else next(iter(value), None)
        return None
    return next((f for f in files if str(f).endswith(".keras")), None)


def _create_hub_encoder(source: str, ident: str, pretrained: bool, channels):
    cfg = _registry_cfg(ident) if source == "registry" else _registry_cfg(f"hf-hub:{ident}")
    repo = ident
    if cfg is not None:
        repo = str(cfg.hub_id)
        for prefix in ("hf-hub:", "hf_hub:"):
            if repo.startswith(prefix):
                repo = repo[len(prefix):]
    cfg_channels = getattr(cfg, "channels", None)
    if not pretrained and cfg is not None and getattr(cfg, "architecture", None) in ENCODER_NAMES:
        return get_encoder(cfg.architecture, channels=channels or cfg_channels or 3)
    keras_file = _keras_file_of(cfg) if cfg is not None else "encoder.keras"
    if not str(keras_file or "").endswith(".keras"):  # timm weights: keras-hub converts them (or says why not)
        from zoobot.tensorflow.estimators import pretrained_encoders

        return pretrained_encoders.create_hub_encoder(repo, cfg, pretrained, channels)
    try:
        from huggingface_hub import hf_hub_download, try_to_load_from_cache
    except ImportError:
        from zoobot.shared.errors import missing_dependency

        raise missing_dependency("huggingface_hub", f"downloading {ident}", "pytorch") from None
    repo_id, _, revision = repo.partition("@")
    cached = try_to_load_from_cache(repo_id, str(keras_file), revision=revision or None)
    if not isinstance(cached, str):
        from zoobot.shared.pretrained import hub_reachable, hub_unavailable_error

        reachable, why = hub_reachable()  # fail now rather than after huggingface_hub's ~23 s of retries
        if not reachable:
            from huggingface_hub import constants

            raise hub_unavailable_error(repo, f"the Hub cannot be reached ({why})", constants.HF_HUB_CACHE,
                                        offline_set=bool(constants.HF_HUB_OFFLINE), filename=str(keras_file))
    try:
        path = cached if isinstance(cached, str) else hf_hub_download(
            repo_id=repo_id, filename=str(keras_file), revision=revision or None)
    except Exception as err:  # offline, missing file, no network
        raise FileNotFoundError(
            f"Could not get {keras_file} of hf-hub:{repo} ({type(err).__name__}: {err}). If the repo publishes "
            "PyTorch-only weights, use zoobot.pytorch; otherwise download it once online or use "
            "'local-dir:/folder/with/encoder.keras'."
        ) from err
    encoder = load_zoobot_model(path)
    encoder = getattr(encoder, "encoder", encoder)
    _check_loaded_channels(encoder, channels, f"hf-hub:{repo}")
    return encoder


# ---------------------------------------------------------------------------------------------
# 3. Monte Carlo dropout in one pass
# ---------------------------------------------------------------------------------------------

def _apply_head(head, features, dropout: bool):
    """Run the head's layers in order; dropout layers are applied only when ``dropout``."""
    layers = head.layers if isinstance(head, keras.Sequential) else None
    if layers is None:
        return head(features, training=False)
    x = features
    for layer in layers:
        if isinstance(layer, keras.layers.Dropout):
            if dropout:
                x = keras.layers.Dropout.call(layer, x, training=True)
        else:
            x = layer(x, training=False)
    return x


def mc_dropout_samples(encoder, head, images, n_samples=1, dropout=True):
    """Predictions of ``n_samples`` Monte Carlo dropout samples, running the encoder only once.

    The encoder (in inference mode: BatchNorm statistics fixed) computes the features once;
    the head runs ``n_samples`` times with its dropout on (``dropout=True``) or off.

    Parameters
    ----------
    encoder : keras.Model
    head : keras.Sequential
        E.g. from :func:`get_tensorflow_dirichlet_head`.
    images : tensor (B, H, W, C)
    n_samples : int
    dropout : bool
        Apply the head's dropout layers. False: all samples are equal (computed once).

    Returns
    -------
    tf.Tensor (B, output_dim, n_samples)

    Examples
    --------
    >>> encoder = get_encoder('tiny_cnn', channels=1)
    >>> head = get_tensorflow_dirichlet_head(128, 3, True, 0.5)
    >>> mc_dropout_samples(encoder, head, np.zeros((2, 32, 32, 1), 'float32'), n_samples=4).shape
    TensorShape([2, 3, 4])
    """
    n_samples = check_int("n_samples", n_samples, minimum=1)
    features = encoder(images, training=False)
    if not dropout:
        single = _apply_head(head, features, dropout=False)
        return tf.repeat(single[..., tf.newaxis], n_samples, axis=-1)
    samples = [_apply_head(head, features, dropout=True) for _ in range(n_samples)]
    return tf.stack(samples, axis=-1)


# ---------------------------------------------------------------------------------------------
# 5. learning-rate schedules (zoobot.shared.schedules) as Keras callbacks
# ---------------------------------------------------------------------------------------------

def time_encoder_pass(encoder, n_images: int, channels: int, size: int) -> float:
    """Seconds of one forward and backward pass of ``encoder`` over ``n_images`` grey images of ``size`` px.

    For :func:`zoobot.shared.cpu_speed.warn_if_gpu_sized`. Runs with ``training=False`` (no BatchNorm
    statistics change, no dropout draws) under a ``GradientTape`` whose gradients are discarded. Eager, as
    the first steps of a fit are; one untimed pass first builds the layers.

    Examples
    --------
    >>> time_encoder_pass(tiny_cnn.get_tiny_cnn(1), 2, 1, 32) > 0
    True
    """
    import time

    x = tf.fill((int(n_images), int(size), int(size), int(channels)), 0.5)
    encoder(x, training=False)  # builds the layers, outside the timing
    start = time.perf_counter()
    with tf.GradientTape() as tape:
        features = encoder(x, training=False)
    if encoder.trainable_weights:
        tape.gradient(tf.reduce_sum(tf.cast(features, tf.float32)), encoder.trainable_weights)
    return time.perf_counter() - start


class EpochCosineDecay:
    """The cosine schedule of ``scheduler_params`` (docs/guides/training_recipe.md) per epoch, from Keras's
    ``CosineDecay``; ``EpochCosineDecay(...)(epoch)`` is the learning rate of ``epoch`` (from 0).

    ``learning_rate * m(epoch)``: warm-up ``m = (e + 1) / w`` for ``e < w``, cosine decay from 1 at ``e = w``
    to ``min_lr_factor`` at ``max_epochs``, then ``min_lr_factor``, the same numbers as the PyTorch
    backend's schedulers. Keras's warm-up starts at ``initial_learning_rate`` (0 here) at step 0; ours gives
    the first epoch ``1 / w`` rather than nothing, so a warm-up epoch reads the schedule at its end
    (step ``e + 1``) and a decay epoch at its start (step ``e``). Computed in float64, so the rate assigned
    to the optimiser is the formula's value rounded once.

    Examples
    --------
    >>> [round(EpochCosineDecay(1.0, 2, 4, 0.1)(e), 6) for e in range(6)]
    [0.5, 1.0, 1.0, 0.55, 0.1, 0.1]
    """

    def __init__(self, learning_rate, warmup_epochs, max_epochs, min_lr_factor):
        self.warmup_epochs = int(warmup_epochs)
        self.schedule = keras.optimizers.schedules.CosineDecay(
            initial_learning_rate=np.float64(0.0 if self.warmup_epochs else learning_rate),
            decay_steps=int(max_epochs) - self.warmup_epochs, alpha=float(min_lr_factor),
            warmup_target=np.float64(learning_rate) if self.warmup_epochs else None, warmup_steps=self.warmup_epochs)

    def __call__(self, epoch, lr=None) -> float:
        step = epoch + 1 if epoch < self.warmup_epochs else epoch
        return float(self.schedule(np.float64(step)))


def get_scheduler_callbacks(scheduler_params, learning_rate) -> list:
    """Keras callbacks that apply ``scheduler_params`` (docs/guides/training_recipe.md) to a compiled model.

    ``None``/``{}``: none (constant LR). ``{'name': 'plateau', 'patience': p}``: ReduceLROnPlateau
    on the validation loss (factor 0.1, min_lr 1e-6). ``{'name': 'cosine', ...}``:
    Keras's ``LearningRateScheduler`` sets the LR of each epoch from :class:`EpochCosineDecay` (never
    ``learning_rate`` squared); Keras logs it as ``learning_rate``.

    Examples
    --------
    >>> get_scheduler_callbacks(None, 1e-3)
    []
    >>> type(get_scheduler_callbacks({'name': 'plateau'}, 1e-3)[0]).__name__
    'ReduceLROnPlateau'
    """
    params = schedules.normalise_scheduler_params(scheduler_params)
    if params is None:
        return []
    if params["name"] == "plateau":
        return [keras.callbacks.ReduceLROnPlateau(monitor="val_loss", factor=0.1, patience=params["patience"],
                                                  min_lr=1e-6, mode="min")]
    return [keras.callbacks.LearningRateScheduler(
        EpochCosineDecay(learning_rate, params["warmup_epochs"], params["max_epochs"], params["min_lr_factor"]))]


# ---------------------------------------------------------------------------------------------
# 6. ZoobotTree
# ---------------------------------------------------------------------------------------------

@keras.saving.register_keras_serializable(package="zoobot")
class QuestionLosses(keras.metrics.Metric):
    """Per-question loss, averaged over the galaxies with votes for that question.

    ``result()`` is a dict ``{'question_loss/<question>': value}`` (plus
    ``'campaign_loss/<suffix>'`` for schemas whose questions end in campaign suffixes such as
    ``-dr5``), which Keras logs as separate metrics.
    """

    def __init__(self, question_index_groups, question_names, name="question_losses", dtype=None):
        super().__init__(name=name, dtype=dtype)
        self.question_index_groups = losses.validate_question_index_groups(question_index_groups)
        self.question_names = [str(q) for q in question_names]
        n = len(self.question_index_groups)
        self._columns, self._owners = answer_to_question_index(self.question_index_groups)
        self.campaigns = list(campaign_questions(self.question_names).items())
        self.loss_sums = self.add_variable(shape=(n,), initializer="zeros", name="loss_sums")
        self.counts = self.add_variable(shape=(n,), initializer="zeros", name="counts")
        n_campaigns = max(len(self.campaigns), 1)
        self.campaign_sums = self.add_variable(shape=(n_campaigns,), initializer="zeros", name="campaign_sums")
        self.campaign_counts = self.add_variable(shape=(n_campaigns,), initializer="zeros", name="campaign_counts")

    def update_state(self, y_true, y_pred, sample_weight=None):
        y_pred = tf.cast(y_pred, tf.float32)
        y_true = tf.cast(y_true, tf.float32)
        per_question = losses._multiquestion_nll(y_true, y_pred, self._columns, self._owners,
                                                 len(self.question_index_groups))
        totals = tf.stack([tf.reduce_sum(y_true[:, s:e + 1], axis=1) for s, e in self.question_index_groups], axis=1)
        answered = tf.cast(totals > 0, tf.float32)
        self.loss_sums.assign_add(tf.reduce_sum(per_question, axis=0))
        self.counts.assign_add(tf.reduce_sum(answered, axis=0))
        if self.campaigns:
            sums, counts = [], []
            for _, indices in self.campaigns:
                campaign_loss = tf.reduce_sum(tf.gather(per_question, indices, axis=1), axis=1)
                has_votes = tf.cast(tf.reduce_max(tf.gather(answered, indices, axis=1), axis=1) > 0, tf.float32)
                sums.append(tf.reduce_sum(campaign_loss))
                counts.append(tf.reduce_sum(has_votes))
            self.campaign_sums.assign_add(tf.stack(sums))
            self.campaign_counts.assign_add(tf.stack(counts))

    def result(self):
        means = self.loss_sums / tf.maximum(self.counts, 1.0)
        out = {f"question_loss/{q}": means[i] for i, q in enumerate(self.question_names)}
        if self.campaigns:
            campaign_means = self.campaign_sums / tf.maximum(self.campaign_counts, 1.0)
            out.update({f"campaign_loss/{suffix}": campaign_means[i] for i, (suffix, _) in enumerate(self.campaigns)})
        return out

    def reset_state(self):
        for variable in (self.loss_sums, self.counts, self.campaign_sums, self.campaign_counts):
            variable.assign(tf.zeros_like(variable))

    def get_config(self):
        return {
            "question_index_groups": [list(g) for g in self.question_index_groups],
            "question_names": self.question_names,
            "name": self.name,
        }


@keras.saving.register_keras_serializable(package="zoobot")
class ZoobotTree(MultiWorkerModelMixin, keras.Model):
    """Encoder + Dirichlet head trained on Galaxy Zoo vote counts (the PyTorch ``ZoobotTree``'s twin).

    Input (B, H, W, C) float32 in [0, 1] -> Dirichlet concentrations (B, output_dim) in (1, 101).
    Compiled at construction with AdamW(``learning_rate``, ``betas``, ``weight_decay``) and the
    multi-question Dirichlet loss; ``fit``/``evaluate``/``predict`` work directly. Dropout: on in
    training; in ``predict`` (and plain ``model(x)`` calls) only if ``test_time_dropout`` (Monte
    Carlo dropout); **off** in ``evaluate``. The learning-rate schedule is applied by the callbacks
    :meth:`scheduler_callbacks` returns (``train`` adds them). Saves to and loads from ``.keras``
    (versions stored in the config and checked on load, E11).

    Parameters
    ----------
    output_dim : int
        Number of answers; must equal the schema's ``n_answers`` (E10).
    question_answer_pairs, dependencies : dict, optional
        The decision tree (see :class:`zoobot.shared.schemas.Schema`).
    architecture_name : str, default 'efficientnet_b0'
        Encoder, see :data:`ENCODER_NAMES`.
    channels : int, default 1
        Input channels (1 greyscale, 3 RGB).
    test_time_dropout : bool, default True
        Monte Carlo dropout in ``predict``.
    compile_encoder : bool, default False
        True: XLA-compile the train/predict steps (``jit_compile=True``); False: Keras' default.
    timm_kwargs : dict, optional
        Keyword arguments for the Keras backbone constructor (the name mirrors PyTorch).
    dropout_rate : float, default 0.2
    learning_rate : float, default 1e-3
    betas : (float, float), default (0.9, 0.999)
    weight_decay : float, default 0.01
    scheduler_params : dict, optional
        See :func:`zoobot.shared.schedules.normalise_scheduler_params` (E13 on unknown keys).
    schema : Schema, optional, keyword-only
        Instead of pairs + dependencies.
    question_index_groups : list of (int, int), optional, keyword-only
        Upstream v1: instead of a schema; per-question metrics are then named ``question_{i}``.

    Raises
    ------
    ValueError
        (E10) ``output_dim`` differs from the schema; no schema given; (E13) unknown architecture
        or scheduler.

    Examples
    --------
    >>> from zoobot.shared import schemas
    >>> model = ZoobotTree(34, schema=schemas.decals_dr5_ortho_schema, architecture_name='tiny_cnn')
    >>> model(np.zeros((2, 32, 32, 1), 'float32')).shape
    TensorShape([2, 34])
    """

    #: Image size the model expects by default (``train`` sets the size it trained with).
    input_size = 224
    #: How the training images were prepared (:class:`zoobot.shared.preprocessing.Preprocessing`), set by
    #: ``train``, saved in the ``.keras`` config (key ``preprocessing``); ``predict`` uses it by default.
    preprocessing = None

    def __init__(
        self,
        output_dim: int,
        question_answer_pairs: dict | None = None,
        dependencies: dict | None = None,
        architecture_name: str = "efficientnet_b0",
        channels: int = 1,
        test_time_dropout: bool = True,
        compile_encoder: bool = False,
        timm_kwargs: dict | None = None,
        dropout_rate: float = 0.2,
        learning_rate: float = 1e-3,
        betas: tuple = (0.9, 0.999),
        weight_decay: float = 0.01,
        scheduler_params: dict | None = None,
        *,
        schema=None,
        question_index_groups=None,
    ):
        super().__init__(name="zoobot_tree")
        schema, groups, question_names = resolve_tree_description(
            question_answer_pairs, dependencies, schema, question_index_groups)
        output_dim = check_output_dim(output_dim, schema, groups)
        timm_kwargs = check_model_keywords(timm_kwargs, betas, learning_rate, weight_decay,
                                           why=".keras files record them")

        self.schema = schema
        self.label_cols = list(schema.label_cols) if schema is not None else None
        self.question_index_groups = groups
        self.question_names = question_names
        self.campaigns = campaign_questions(question_names)
        self.output_dim = int(output_dim)
        self.architecture_name = resolve_encoder_name(architecture_name)
        self.channels = _check_channels(channels)
        self.test_time_dropout = bool(test_time_dropout)
        self.compile_encoder = bool(compile_encoder)
        self.timm_kwargs = timm_kwargs
        self.dropout_rate = check_fraction("dropout_rate", dropout_rate, allow_one=False)
        self.learning_rate = float(learning_rate)
        self.betas = tuple(float(b) for b in betas)
        self.weight_decay = float(weight_decay)
        self.scheduler_params = schedules.normalise_scheduler_params(scheduler_params)
        #: None (default): ``predict`` returns (N, output_dim). An int n: (N, output_dim, n) Monte Carlo
        #: dropout samples, running the encoder once per batch (``predict(..., n_samples=n)`` sets it).
        self.predict_n_samples = None
        #: weight of the vote-fraction term added to the training loss (losses.vote_fraction_nll); 0 unless
        #: set, e.g. by train() (docs/guides/training_recipe.md). Validation and test losses never include it.
        self.fraction_loss_weight = 0.0
        self._fraction_loss = losses.VoteFractionLoss(groups)

        self.encoder = get_encoder(self.architecture_name, channels=self.channels, **timm_kwargs)
        self.encoder_dim = get_encoder_dim(self.encoder, self.channels)
        self.head = get_tensorflow_dirichlet_head(self.encoder_dim, self.output_dim, self.test_time_dropout,
                                                  self.dropout_rate)
        self.build((None, None, None, self.channels))
        self.compile(**self.default_compile_kwargs())

    # --- model -----------------------------------------------------------------------------

    def build(self, input_shape):
        self.built = True

    def compile(self, *args, **kwargs):
        """``keras.Model.compile``, then build the optimiser's variables (so ``.keras`` files restore them)."""
        super().compile(*args, **kwargs)
        if self.optimizer is not None:
            self.optimizer.build(self.trainable_variables)

    def call(self, inputs, training=None):
        _check_static_channels(inputs, self.channels)
        return self.head(self.encoder(inputs, training=training), training=training)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.output_dim)

    def default_compile_kwargs(self, gradient_clip_val=None) -> dict:
        """Arguments of ``compile``: AdamW, the multi-question loss, per-question metrics.

        Parameters
        ----------
        gradient_clip_val : float, optional
            Clip the global gradient norm (``train`` uses 0.3, as the PyTorch backend).
        """
        optimizer = keras.optimizers.AdamW(
            learning_rate=self.learning_rate,
            weight_decay=self.weight_decay,
            beta_1=self.betas[0],
            beta_2=self.betas[1],
            global_clipnorm=gradient_clip_val,
        )
        return dict(
            optimizer=optimizer,
            loss=losses.get_multiquestion_loss(self.question_index_groups),
            metrics=[QuestionLosses(self.question_index_groups, self.question_names)],
            jit_compile=True if self.compile_encoder else "auto",
        )

    def scheduler_callbacks(self) -> list:
        """Keras callbacks applying ``scheduler_params`` (see :func:`get_scheduler_callbacks`)."""
        return get_scheduler_callbacks(self.scheduler_params, self.learning_rate)

    # --- steps -----------------------------------------------------------------------------

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        """The compiled (Dirichlet-multinomial) loss, plus ``fraction_loss_weight`` x the vote-fraction loss
        while training (as the PyTorch ``ZoobotTree`` adds it in its training step)."""
        loss = super().compute_loss(x, y, y_pred, sample_weight, training=training)
        if training and self.fraction_loss_weight and y is not None and loss is not None:
            loss = loss + self.fraction_loss_weight * self._fraction_loss(y, y_pred)
        return loss

    def _mc_dropout_layers(self):
        return [layer for layer in self.head.layers if isinstance(layer, custom_layers.MCDropout)]

    def test_step(self, data):
        # traced once per compile: Monte Carlo dropout is off while the evaluation step is traced
        layers = self._mc_dropout_layers()
        for layer in layers:
            layer.mc_active = False
        try:
            return super().test_step(data)
        finally:
            for layer in layers:
                layer.mc_active = True

    def predict_step(self, data):
        x = data[0] if isinstance(data, (tuple, list)) else data
        if isinstance(x, dict):
            x = x["image"]
        if self.predict_n_samples is None:
            return self(x, training=False)
        return mc_dropout_samples(self.encoder, self.head, x, self.predict_n_samples,
                                  dropout=self.test_time_dropout)

    def predict(self, x, batch_size=None, verbose="auto", steps=None, callbacks=None, n_samples=1):
        """Predict concentrations, checking the first batch (E7 channels, E8 pixel range) first.

        Parameters
        ----------
        x : array (N, H, W, C), tf.data.Dataset or TF GalaxyDataModule
            Datasets may yield images, ``(images, id_str)`` or ``(images, labels)``; the second
            element is ignored. A data module's predict set is used.
        batch_size, verbose, steps, callbacks
            As ``keras.Model.predict``.
        n_samples : int, default 1
            Monte Carlo dropout samples, drawn in one pass (the encoder runs once per batch).

        Returns
        -------
        ndarray
            (N, output_dim), or (N, output_dim, n_samples) if ``n_samples > 1``.
        """
        n_samples = check_int("n_samples", n_samples, minimum=1)
        if hasattr(x, "predict_dataloader") and not isinstance(x, tf.data.Dataset):
            if getattr(x, "predict_catalog", None) is not None and hasattr(x, "setup"):
                x.setup("predict")
            x = x.predict_dataloader()
        images = _first_images(x)
        if images is not None:
            check_images(images, self.channels, where="ZoobotTree.predict")
        wanted = None if n_samples == 1 else n_samples
        if wanted != self.predict_n_samples:
            self.predict_n_samples = wanted
            self.predict_function = None  # retrace with the new number of samples
        return super().predict(x, batch_size=batch_size, verbose=verbose, steps=steps, callbacks=callbacks)

    # --- serialisation ---------------------------------------------------------------------

    def get_config(self):
        schema = self.schema.to_dict() if self.schema is not None else None
        config = {
            "output_dim": self.output_dim,
            "question_answer_pairs": None,
            "dependencies": None,
            "architecture_name": self.architecture_name,
            "channels": self.channels,
            "test_time_dropout": self.test_time_dropout,
            "compile_encoder": self.compile_encoder,
            "timm_kwargs": dict(self.timm_kwargs),
            "dropout_rate": self.dropout_rate,
            "learning_rate": self.learning_rate,
            "betas": list(self.betas),
            "weight_decay": self.weight_decay,
            "scheduler_params": self.scheduler_params,
            "schema": schema,
            "question_index_groups": None if schema is not None else [list(g) for g in self.question_index_groups],
        }
        config["input_size"] = int(self.input_size)
        if self.preprocessing is not None:
            config["preprocessing"] = self.preprocessing.to_dict()
        if self.calibration:
            config[calibration.CHECKPOINT_KEY] = self.calibration
        if self.concentration_floor != custom_layers.ScaledSigmoid.offset:
            config["zoobot_concentration_floor"] = self.concentration_floor
        config.update(checkpoints.version_metadata())
        return config

    @property
    def calibration(self) -> dict | None:
        """Post-hoc calibration record (zoobot.shared.calibration), set by ``train()``; None: uncalibrated.
        Saved in the ``.keras`` file's config under its own key."""
        text = getattr(self, "_zoobot_calibration_json", None)
        return json.loads(text) if text else None

    @calibration.setter
    def calibration(self, record) -> None:
        # kept as JSON text: Keras would wrap a dict attribute in its own tracked structure
        self._zoobot_calibration_json = json.dumps(record) if record else None

    @property
    def concentration_floor(self) -> float:
        """Lowest concentration the head outputs: ``alpha = floor + 100 * sigmoid(z)`` (1 unless set, e.g. by
        ``train()``; saved in the ``.keras`` config as ``zoobot_concentration_floor``). Set it before the
        model is first called."""
        return float(self.head.layers[-1].offset)

    @concentration_floor.setter
    def concentration_floor(self, value: float) -> None:
        if not 0 < float(value) <= custom_layers.ScaledSigmoid.offset:
            raise ValueError(f"concentration_floor must be in (0, 1], got {value!r}")
        self.head.layers[-1].offset = float(value)

    @property
    def concentration_scale(self):
        """Per-question scale that ``predict_on_catalog.predict`` applies to the concentrations
        (from :attr:`calibration`), or None when the model is uncalibrated."""
        return calibration.scale_from_record(self.calibration, self.question_names)

    @classmethod
    def from_config(cls, config):
        from zoobot.shared.preprocessing import carry_record, restore_record

        config = dict(config)
        input_size = config.pop("input_size", None)
        prep_record = config.pop("preprocessing", None)
        cal_record = config.pop(calibration.CHECKPOINT_KEY, None)
        floor = config.pop("zoobot_concentration_floor", None)
        path = _LOADING_PATH.get() or "the ZoobotTree configuration being loaded"
        if not _VERSIONS_CHECKED.get():
            checkpoints.check_format_version(config, path)
        import inspect

        known = set(inspect.signature(cls.__init__).parameters) - {"self"}
        config = checkpoints.drop_unknown_hparams(config, known, f"ZoobotTree from {path}")
        if isinstance(config.get("schema"), dict):
            from zoobot.shared.schemas import Schema

            config["schema"] = Schema.from_dict(config["schema"])
        if config.get("betas") is not None:
            config["betas"] = tuple(config["betas"])
        model = cls(**config)
        if input_size is not None:
            model.input_size = int(input_size)
        carry_record(model, restore_record(prep_record, input_size=input_size, channels=model.channels))
        model.calibration = cal_record
        if floor is not None:
            model.concentration_floor = floor
        return model

    @classmethod
    def load_from_checkpoint(cls, checkpoint_path, map_location=None, hparams_file=None, strict=None,
                             weights_only=None, **kwargs):
        """Load a saved ZoobotTree (``.keras``), version-checked (E11), offline.

        The signature is the PyTorch twin's (Lightning's); the Lightning-only arguments must stay None.

        Parameters
        ----------
        checkpoint_path : str or path-like
            E.g. ``save_dir/checkpoints/last.keras``.
        map_location, hparams_file, strict, weights_only : None
            Accepted for parity with the PyTorch backend; ``.keras`` files hold their own config and no
            pickled objects, so any other value raises ``NotImplementedError``.
        **kwargs
            Hyperparameter overrides, e.g. ``test_time_dropout=False``: the model is rebuilt with
            them and the saved weights are copied in.

        Returns
        -------
        ZoobotTree

        Raises
        ------
        CheckpointVersionError
            (E11) the file was written by a newer, incompatible zoobot.
        TypeError
            The file holds another kind of model.
        """
        lightning_only = {"map_location": map_location, "hparams_file": hparams_file, "strict": strict}
        given = sorted(name for name, value in lightning_only.items() if value is not None)
        if given or weights_only not in (None, True):
            raise NotImplementedError(
                f"ZoobotTree.load_from_checkpoint in the TensorFlow backend does not support {given or ['weights_only=False']}"
                " (PyTorch-only arguments); leave them unset."
            )
        model = load_zoobot_model(checkpoint_path)
        if not isinstance(model, cls):
            raise TypeError(f"{checkpoint_path} holds a {type(model).__name__}, not a {cls.__name__}.")
        if not kwargs:
            return model
        config = model.get_config()
        for key in checkpoints.VERSION_KEYS:
            config.pop(key, None)
        input_size = config.pop("input_size", None)
        prep_record = config.pop("preprocessing", None)
        cal_record = config.pop(calibration.CHECKPOINT_KEY, None)
        floor = config.pop("zoobot_concentration_floor", None)
        unknown = set(kwargs) - set(config)
        if unknown:
            raise TypeError(f"Unknown ZoobotTree hyperparameter(s) {sorted(unknown)}; accepted: {sorted(config)}")
        config.update(kwargs)
        rebuilt = cls.from_config({**config, **checkpoints.version_metadata(), "input_size": input_size,
                                   "preprocessing": prep_record})
        rebuilt.set_weights(model.get_weights())
        rebuilt.calibration = cal_record
        if floor is not None:
            rebuilt.concentration_floor = floor
        return rebuilt

    def get_compile_config(self):
        return None  # rebuilt by __init__ (from_config) with the same optimiser, loss and metrics


def _check_static_channels(inputs, channels) -> None:
    shape = getattr(inputs, "shape", None)
    if shape is None or len(shape) == 0:
        return
    if len(shape) != 4 or (shape[-1] is not None and shape[-1] != channels):
        check_images_shape = tuple(shape)
        looks_nchw = len(shape) == 4 and shape[1] in (1, 3) and shape[-1] not in (1, 3)
        fix = ("transpose NCHW (PyTorch layout) to NHWC" if looks_nchw else
               ("use greyscale images (greyscale=True / color=False)" if channels == 1
                else "use colour images (greyscale=False / color=True)"))
        raise ChannelMismatchError(
            f"The model expects images of shape (batch, height, width, {channels}) (NHWC), expected C={channels}, "
            f"got tensor shape {check_images_shape}. Fix: {fix}."
        )
