"""The Zoobot model for decision-tree vote counts (see docs/components/training.md).

A :class:`ZoobotTree` is an image encoder (:mod:`~zoobot.pytorch.estimators.encoders`) followed by a
Dirichlet head (dropout -> linear -> ``1 + 100 * sigmoid``) predicting one concentration per answer,
trained with :mod:`zoobot.pytorch.estimators.losses`; encoders and loss helpers are re-exported here.
Read top to bottom: head, checkpoints, learning-rate schedule, then the LightningModule.

Examples
--------
>>> import torch
>>> from zoobot.shared import schemas
>>> model = ZoobotTree(output_dim=2, schema=schemas.gz_rings_schema, architecture_name='tiny_cnn')
>>> model(torch.rand(3, 1, 32, 32)).shape
torch.Size([3, 2])
"""
from __future__ import annotations

import contextlib
import inspect
import logging
import math
from typing import Iterable, Iterator

import lightning as L
import numpy as np
import torch

from zoobot.pytorch._compat import define_model_dirichlet_loss as dirichlet_loss  # noqa: F401  (deprecated name)
from zoobot.pytorch.estimators import losses
from zoobot.pytorch.estimators.custom_layers import (  # noqa: F401  (the head: re-exported)
    MCDropout,
    ScaledSigmoid,
    get_dirichlet_head,
    get_pytorch_dirichlet_head,
)
from zoobot.pytorch.estimators.encoders import (  # noqa: F401  (get_pytorch_encoder: re-exported, upstream name)
    check_channels,
    get_encoder,
    get_encoder_dim,
    get_pytorch_encoder,
    is_convnet,
)
from zoobot.pytorch.estimators.losses import get_dirichlet_loss_func, per_question_dirichlet_loss  # noqa: F401
from zoobot.pytorch.estimators.pretrained_encoders import create_encoder  # noqa: F401  (re-exported)
from zoobot.pytorch.estimators.tiny_cnn import TinyCNN  # noqa: F401  (used in the examples)
from zoobot.shared import calibration
from zoobot.shared.errors import ChannelMismatchError, check_pixel_range
from zoobot.shared.validation import check_int
from zoobot.shared.zoobot_tree_args import (
    campaign_questions,
    check_model_keywords,
    check_output_dim,
    resolve_tree_description,
)

__all__ = [
    "ZoobotTree",
    "get_pytorch_encoder",
    "get_encoder",
    "get_encoder_dim",
    "create_encoder",
    "get_pytorch_dirichlet_head",
    "get_dirichlet_head",
    "get_dirichlet_loss_func",
    "per_question_dirichlet_loss",
    "load_zoobot_checkpoint",
]

logger = logging.getLogger(__name__)

#: Earlier private names, still imported by other modules: use encoders.is_convnet / encoders.check_channels.
_is_convnet = is_convnet
_check_channels = check_channels



# ---------------------------------------------------------------------------------------------
# checkpoints
# ---------------------------------------------------------------------------------------------

def read_checkpoint(checkpoint_path, map_location=None) -> dict:
    """The contents of a zoobot ``.ckpt`` file, read with ``torch.load(weights_only=True)`` (no pickled code).

    Raises
    ------
    FileNotFoundError
        No such file.
    ValueError
        The file cannot be read: the message names it and the likely cause (empty, truncated, a ``.keras``
        file, a text file; :func:`zoobot.shared.checkpoints.unreadable_checkpoint_error`).
    """
    import os

    from zoobot.shared.checkpoints import unreadable_checkpoint_error

    path = os.fspath(checkpoint_path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"No checkpoint file at {checkpoint_path}")
    try:
        checkpoint = torch.load(path, map_location=map_location or "cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - torch's errors name neither the file nor the cause
        raise unreadable_checkpoint_error(path, err) from err
    if not isinstance(checkpoint, dict):
        raise ValueError(f"{checkpoint_path} holds a {type(checkpoint).__name__}, not a zoobot checkpoint "
                         "(a dict with 'state_dict' and 'hyper_parameters').")
    return checkpoint


def load_zoobot_checkpoint(cls, checkpoint_path, map_location=None, strict: bool | None = None, **overrides):
    """Rebuild a zoobot LightningModule from a checkpoint, safely and offline.

    Reads the file with ``torch.load(weights_only=True)``, checks its ``format_version`` (E11 if newer
    than this installation), drops hyperparameters the class does not know (with a warning), applies
    ``overrides`` and loads the weights. Used by ``ZoobotTree.load_from_checkpoint``; the finetuning
    classes can use it too.

    Parameters
    ----------
    cls : type
        The LightningModule class.
    checkpoint_path : str or path-like
    map_location : optional
        As for ``torch.load``; default 'cpu'.
    strict : bool, optional
        Strict ``load_state_dict`` (default True).
    **overrides
        Hyperparameters replacing the stored ones.

    Returns
    -------
    LightningModule
    """
    from zoobot.shared.checkpoints import check_format_version, drop_unknown_hparams

    checkpoint = read_checkpoint(checkpoint_path, map_location)
    check_format_version(checkpoint, checkpoint_path)
    known = set(inspect.signature(cls.__init__).parameters) - {"self"}
    hparams = drop_unknown_hparams(
        checkpoint.get("hyper_parameters", {}), known, where=f"{cls.__name__} from {checkpoint_path}"
    )
    hparams.update(overrides)
    model = cls(**hparams)
    model._versions_checked = True
    model.on_load_checkpoint(checkpoint)
    model.load_state_dict(checkpoint["state_dict"], strict=True if strict is None else strict)
    return model


# ---------------------------------------------------------------------------------------------
# the LightningModule
# ---------------------------------------------------------------------------------------------

def time_encoder_pass(encoder, n_images: int, channels: int, size: int) -> float:
    """Seconds of one forward and backward pass of ``encoder`` over ``n_images`` grey images of ``size`` px.

    For :func:`zoobot.shared.cpu_speed.warn_if_gpu_sized`. Runs in eval mode (no BatchNorm statistics
    change, no dropout draws) with ``torch.autograd.grad`` (nothing is stored in ``.grad``), after one untimed
    pass over one image; the encoder's mode is restored.

    Examples
    --------
    >>> time_encoder_pass(TinyCNN(1), 2, 1, 32) > 0
    True
    """
    import time

    was_training = encoder.training
    params = [p for p in encoder.parameters() if p.requires_grad]

    def one_pass(n):
        start = time.perf_counter()
        features = encoder(torch.full((n, int(channels), int(size), int(size)), 0.5))
        if params:
            torch.autograd.grad(features.float().sum(), params, allow_unused=True)
        return time.perf_counter() - start

    try:
        encoder.eval()
        one_pass(1)  # the first pass of a process sets up kernels and memory: not timed
        return one_pass(int(n_images))
    finally:
        encoder.train(was_training)


def cosine_scheduler(optimizer, warmup_epochs: int, max_epochs: int, min_lr_factor: float):
    """The cosine schedule of ``scheduler_params`` (docs/guides/training_recipe.md) as torch's own schedulers.

    Stepped once per epoch, it gives each parameter group ``lr * m(epoch)``: warm-up ``m = (e + 1) / w`` for
    ``e < w`` (``LinearLR``), cosine decay from 1 at ``e = w`` to ``min_lr_factor`` at ``max_epochs``
    (``CosineAnnealingLR``), then ``min_lr_factor`` (``ConstantLR``), chained by ``SequentialLR``.
    ``CosineAnnealingLR``'s floor ``eta_min`` is one number for every group, so an optimiser whose groups
    start at different learning rates (finetuning's layer-wise decay) gets ``LambdaLR`` with the same
    multiplier (:func:`cosine_lambda`) instead.

    Examples
    --------
    >>> opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)
    >>> sched = cosine_scheduler(opt, warmup_epochs=2, max_epochs=4, min_lr_factor=0.1)
    >>> lrs = []
    >>> for _ in range(6):
    ...     lrs.append(round(opt.param_groups[0]["lr"], 6)); opt.step(); sched.step()
    >>> lrs
    [0.5, 1.0, 1.0, 0.55, 0.1, 0.1]
    """
    from torch.optim import lr_scheduler

    warmup_epochs, max_epochs, min_lr_factor = int(warmup_epochs), int(max_epochs), float(min_lr_factor)
    base = {group["lr"] for group in optimizer.param_groups}
    if len(base) > 1:
        return lr_scheduler.LambdaLR(optimizer, cosine_lambda(warmup_epochs, max_epochs, min_lr_factor))
    (lr,) = base
    phases, milestones = [], []
    if warmup_epochs:
        # (e + 1) / w: reaches 1 at e = w - 1 (LinearLR's total_iters must be >= 1, hence max for w = 1)
        phases.append(lr_scheduler.LinearLR(optimizer, start_factor=1 / warmup_epochs, end_factor=1.0,
                                            total_iters=max(warmup_epochs - 1, 1)))
        milestones.append(warmup_epochs)
    phases.append(lr_scheduler.CosineAnnealingLR(optimizer, T_max=max_epochs - warmup_epochs,
                                                 eta_min=lr * min_lr_factor))
    milestones.append(max_epochs)
    # CosineAnnealingLR would rise again after T_max; the schedule holds the floor instead
    phases.append(lr_scheduler.ConstantLR(optimizer, factor=min_lr_factor, total_iters=2**62))
    return lr_scheduler.SequentialLR(optimizer, phases, milestones)


def upgrade_cosine_scheduler_state(checkpoint: dict, cosine_params: dict | None) -> None:
    """Let a run checkpointed before the cosine schedule moved to ``SequentialLR`` resume (in place).

    Such checkpoints hold a ``LambdaLR`` state (``lr_lambdas``), which ``SequentialLR.load_state_dict``
    cannot read. It is replaced by the state of a fresh :func:`cosine_scheduler` stepped to the same epoch
    (the schedule depends on nothing else), so the resumed run gets the same rates as before.
    """
    if not cosine_params or cosine_params.get("name", "cosine") != "cosine":
        return
    states = checkpoint.get("lr_schedulers") or []
    for i, state in enumerate(states):
        if "lr_lambdas" not in state or len(set(state.get("base_lrs", []))) != 1:
            continue  # already new, or layer-wise groups (still LambdaLR, same state)
        optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=state["base_lrs"][0])
        fresh = cosine_scheduler(optimizer, cosine_params["warmup_epochs"], cosine_params["max_epochs"],
                                 cosine_params["min_lr_factor"])
        for _ in range(int(state["last_epoch"])):
            optimizer.step()
            fresh.step()
        states[i] = fresh.state_dict()


class cosine_lambda:  # noqa: N801 (used like a function)
    """Picklable multiplier ``m(epoch)`` of :func:`cosine_scheduler` for ``LambdaLR`` (its state_dict holds only
    these numbers). Only for optimisers whose groups start at different learning rates, where
    ``CosineAnnealingLR`` (one absolute floor for all groups) cannot give each group ``min_lr_factor`` x its own.

    Examples
    --------
    >>> [round(cosine_lambda(2, 4, 0.1)(e), 6) for e in range(6)]
    [0.5, 1.0, 1.0, 0.55, 0.1, 0.1]
    """

    def __init__(self, warmup_epochs: int, max_epochs: int, min_lr_factor: float):
        self.warmup_epochs, self.max_epochs, self.min_lr_factor = warmup_epochs, max_epochs, min_lr_factor

    def __call__(self, epoch: int) -> float:
        w, m, f = self.warmup_epochs, self.max_epochs, self.min_lr_factor
        if epoch < w:
            return (epoch + 1) / w
        if epoch >= m:
            return float(f)
        return float(f + (1 - f) * (1 + math.cos(math.pi * (epoch - w) / (m - w))) / 2)


class ZoobotTree(L.LightningModule):
    """Encoder + Dirichlet head trained on decision-tree vote counts (docs/components/training.md).

    Parameters
    ----------
    output_dim : int
        Number of answers (``schema.n_answers``); checked against the schema (E10).
    question_answer_pairs, dependencies : dict, optional
        The decision tree (see :class:`zoobot.shared.schemas.Schema`).
    architecture_name : str, default 'efficientnet_b0'
        Encoder: a timm name, ``'efficientnet'`` or ``'tiny_cnn'``.
    channels : int, default 1
        Input channels (1 greyscale, 3 colour).
    test_time_dropout : bool, default True
        Keep dropout active at prediction (Monte Carlo dropout). Always off in validation/test.
    compile_encoder : bool, default False
        ``torch.compile`` the encoder (in place; checkpoints stay interchangeable).
    timm_kwargs : dict, optional
        Extra arguments for ``timm.create_model`` (JSON values only, stored in checkpoints).
    dropout_rate : float, default 0.2
        Dropout before the head's linear layer.
    learning_rate : float, default 1e-3
    betas : tuple of float, default (0.9, 0.999)
    weight_decay : float, default 0.01
        AdamW settings.
    scheduler_params : dict, optional
        ``None``/``{}`` constant; ``{'name': 'plateau', 'patience': 5}``; ``{'name': 'cosine', 'warmup_epochs': w,
        'max_epochs': m, 'min_lr_factor': f}`` (upstream keys accepted).
    schema : Schema or dict, optional (keyword-only)
        The decision tree as a Schema (or ``Schema.to_dict()``, or a prebuilt schema name).
    question_index_groups : list of (int, int), optional (keyword-only)
        Upstream v1 alternative to a schema; questions are then logged as ``question_{i}``.

    Attributes
    ----------
    schema : Schema or None
    label_cols : list of str or None
    question_index_groups : list of (int, int)
    encoder, head : torch.nn.Module
    predict_n_samples : int or None
        None (default): ``predict_step`` returns (B, output_dim) like upstream. An int n: it returns
        (B, output_dim, n) MC-dropout samples, running the encoder once per batch.

    Raises
    ------
    ValueError
        (E10) ``output_dim`` differs from the schema's number of answers; not exactly one tree description.
    ChannelMismatchError
        (E7) at ``forward`` for images with the wrong channels or NHWC layout.
    PixelScaleError
        (E8) on the first batch if pixels are outside [0, 1].

    Examples
    --------
    >>> from zoobot.shared import schemas
    >>> schema = schemas.decals_dr5_ortho_schema
    >>> model = ZoobotTree(output_dim=schema.n_answers, schema=schema, architecture_name='tiny_cnn')
    >>> model.predict(np.random.rand(4, 1, 32, 32).astype('float32'), n_samples=3).shape
    (4, 34, 3)
    """

    #: Image side the model expects (224 unless the training pipeline set another ``resize_after_crop``);
    #: saved in checkpoints as ``zoobot_input_size`` and restored on loading.
    input_size = 224
    #: How the training images were prepared (:class:`zoobot.shared.preprocessing.Preprocessing`), set
    #: when fitting on a GalaxyDataModule, saved in checkpoints (key ``preprocessing``) and restored on
    #: loading; ``predict`` uses it by default. None for a model built in memory and never fitted.
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
        super().__init__()
        from zoobot.shared.schedules import normalise_scheduler_params

        schema, groups, question_names = resolve_tree_description(
            question_answer_pairs, dependencies, schema, question_index_groups)
        output_dim = check_output_dim(output_dim, schema, groups)
        channels = check_channels(channels)
        timm_kwargs = check_model_keywords(timm_kwargs, betas, learning_rate, weight_decay,
                                           why="checkpoints load with weights_only=True")
        scheduler_params = normalise_scheduler_params(scheduler_params)

        # JSON primitives only: checkpoints then load with torch.load(weights_only=True)
        self.save_hyperparameters({
            "output_dim": int(output_dim),
            "question_answer_pairs": None,
            "dependencies": None,
            "architecture_name": architecture_name,
            "channels": channels,
            "test_time_dropout": bool(test_time_dropout),
            "compile_encoder": bool(compile_encoder),
            "timm_kwargs": timm_kwargs,
            "dropout_rate": float(dropout_rate),
            "learning_rate": float(learning_rate),
            "betas": [float(b) for b in betas],
            "weight_decay": float(weight_decay),
            "scheduler_params": scheduler_params,
            "schema": schema.to_dict() if schema is not None else None,
            "question_index_groups": [list(g) for g in groups] if schema is None else None,
        })
        self.schema = schema
        self.label_cols = list(schema.label_cols) if schema is not None else None
        self.question_index_groups = groups
        self.question_names = question_names
        self.campaigns = campaign_questions(question_names)
        self.output_dim = int(output_dim)
        self.channels = channels
        self.architecture_name = architecture_name
        self.test_time_dropout = bool(test_time_dropout)
        self.learning_rate = float(learning_rate)
        self.betas = tuple(float(b) for b in betas)
        self.weight_decay = float(weight_decay)
        self.scheduler_params = scheduler_params
        self.predict_n_samples: int | None = None
        #: post-hoc calibration record (zoobot.shared.calibration), set by train(); None: uncalibrated
        self.calibration: dict | None = None
        #: weight of the vote-fraction term added to the training loss (losses.vote_fraction_nll); 0 unless
        #: set, e.g. by train() (docs/guides/training_recipe.md). Validation and test losses never include it.
        self.fraction_loss_weight = 0.0

        self.encoder = get_encoder(architecture_name, channels=channels, **timm_kwargs)
        self.encoder_dim = get_encoder_dim(self.encoder, channels=channels)
        self.head = get_pytorch_dirichlet_head(self.encoder_dim, self.output_dim, self.test_time_dropout, dropout_rate)
        self.loss_func = losses.get_multiquestion_loss(groups, sum_over_questions=False, reduction="none")

        self.channels_last = is_convnet(self.encoder)
        if self.channels_last:
            self.encoder.to(memory_format=torch.channels_last)
        if compile_encoder:
            self.encoder.compile()
        self._pixels_checked = False
        self._versions_checked = False

    # ---------------------------------------------------------------- forward and input checks
    def _check_input(self, x: torch.Tensor) -> None:
        """E7 on every call (shape only, free); E8 on the first batch after each reset (one min/max)."""
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"ZoobotTree expects a torch.Tensor (B, C, H, W), got {type(x).__name__}")
        if x.ndim != 4 or x.shape[1] != self.channels:
            shape = tuple(x.shape)
            if x.ndim == 4 and x.shape[-1] == self.channels and x.shape[1] != self.channels:
                layout = f"got shape {shape}, which looks NHWC (channels last); PyTorch models take NCHW. " \
                         "Fix: x.permute(0, 3, 1, 2)"
            elif x.ndim == 3:
                layout = f"got shape {shape} with no batch axis. Fix: x.unsqueeze(0)"
            else:
                layout = (f"got {x.shape[1] if x.ndim == 4 else '?'} channels (shape {shape}, NCHW). Fix: use "
                          f"{'greyscale=True' if self.channels == 1 else 'greyscale=False'} in the data module "
                          f"(color={self.channels == 3} in train), or build the model with the data's channels")
            raise ChannelMismatchError(
                f"ZoobotTree expects images (B, C, H, W) with C={self.channels} (NCHW); {layout}."
            )
        if not self._pixels_checked:
            self._pixels_checked = True
            if x.numel():
                check_pixel_range(float(x.min()), float(x.max()), layout="NCHW")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Concentrations (B, output_dim) in (1, 101) for images (B, C, H, W) float32 in [0, 1]."""
        return self.head(self.encode(x))

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Pooled encoder features (B, encoder_dim), after the input checks."""
        self._check_input(x)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return self.encoder(x)

    def _head_dropout_active(self) -> bool:
        dropout = self.head[0]
        if dropout.p == 0:
            return False
        return self.training or bool(getattr(dropout, "mc_active", False))

    def mc_dropout_forward(self, x: torch.Tensor, n_samples: int) -> torch.Tensor:
        """``n_samples`` Monte Carlo dropout predictions, running the encoder once.

        The encoder is deterministic at inference (dropout sits only in the head), so sampling only the
        head gives the same distribution as ``n_samples`` full forward passes, at about ``1/n_samples`` of
        the cost. With the same seed the dropout masks are drawn in the same order as in ``n_samples``
        calls of ``forward``, so the results match those calls exactly.

        Parameters
        ----------
        x : Tensor (B, C, H, W)
        n_samples : int
            Samples per image (>= 1).

        Returns
        -------
        Tensor (B, output_dim, n_samples)
        """
        n_samples = check_int("n_samples", n_samples, minimum=1)
        features = self.encode(x)
        if not self._head_dropout_active():
            return self.head(features).unsqueeze(-1).expand(-1, -1, int(n_samples)).contiguous()
        return torch.stack([self.head(features) for _ in range(int(n_samples))], dim=-1)

    @contextlib.contextmanager
    def _mc_dropout(self, active: bool) -> Iterator[None]:
        layers = [m for m in self.modules() if isinstance(m, MCDropout)]
        before = [m.mc_active for m in layers]
        for m in layers:
            m.mc_active = active
        try:
            yield
        finally:
            for m, state in zip(layers, before):
                m.mc_active = state

    # ---------------------------------------------------------------- batches
    def _unpack(self, batch):
        """(images, labels (B, n_answers)) from a tuple or dict batch."""
        if isinstance(batch, dict):
            if "image" not in batch:
                raise KeyError(f"dict batches need an 'image' key; got keys {sorted(batch)}")
            x = batch["image"]
            if "label" in batch:
                y = batch["label"]
            elif self.label_cols is not None and all(c in batch for c in self.label_cols):
                y = torch.stack([torch.as_tensor(batch[c]) for c in self.label_cols], dim=1)
            else:
                missing = [c for c in (self.label_cols or []) if c not in batch][:5]
                raise KeyError(
                    "dict batches need a 'label' tensor or one key per label column; missing e.g. "
                    f"{missing or ['label']} (batch keys: {sorted(batch)[:10]})"
                )
        elif isinstance(batch, (tuple, list)) and len(batch) >= 2:
            x, y = batch[0], batch[1]
        else:
            raise TypeError("training batches must be (images, labels) or a dict with 'image' and labels")
        if y.ndim == 1:
            y = y.unsqueeze(1)
        return x, y

    def question_totals(self, labels: torch.Tensor) -> torch.Tensor:
        """Votes per galaxy and question, (B, n_questions)."""
        owners = self.loss_func._owners.to(labels.device)
        columns = self.loss_func._columns.to(labels.device)
        labels = labels.to(torch.float32).index_select(1, columns)
        return torch.zeros(labels.shape[0], len(self.question_index_groups), device=labels.device).index_add_(
            1, owners, labels)

    def _step(self, batch, split: str) -> torch.Tensor:
        x, y = self._unpack(batch)
        predictions = self(x)
        question_losses = self.loss_func(y, predictions)  # (B, n_questions)
        loss = question_losses.sum(dim=1).mean()
        batch_size = x.shape[0]
        if split == "train" and self.fraction_loss_weight:
            # the optimised loss, as Keras logs it in the TensorFlow backend; validation stays the DM NLL
            fraction_loss = self.loss_func.vote_fraction_nll(y, predictions).sum(dim=1).mean()
            self.log("train/fraction_loss", fraction_loss, on_step=False, on_epoch=True, batch_size=batch_size,
                     sync_dist=True)
            loss = loss + self.fraction_loss_weight * fraction_loss
        # epoch means; sync_dist averages across devices once per epoch (a no-op on one device)
        self.log(f"{split}/supervised_loss", loss, on_step=False, on_epoch=True, prog_bar=True,
                 batch_size=batch_size, sync_dist=True)
        self._log_question_losses(split, question_losses.detach(), y)
        return loss

    def _log_question_losses(self, split: str, question_losses: torch.Tensor, labels: torch.Tensor) -> None:
        """Mean loss per question over the galaxies with votes for it (and per campaign for ortho trees)."""
        asked = self.question_totals(labels) > 0
        n_asked = asked.sum(dim=0).tolist()
        sums = question_losses.sum(dim=0)
        for q, name in enumerate(self.question_names):
            if n_asked[q]:
                self.log(f"{split}/question_loss/{name}", sums[q] / n_asked[q], on_step=False, on_epoch=True,
                         batch_size=int(n_asked[q]), sync_dist=True)
        for campaign, indices in self.campaigns.items():
            campaign_asked = asked[:, indices].any(dim=1)
            n = int(campaign_asked.sum())
            if n:
                value = question_losses[:, indices].sum(dim=1)[campaign_asked].mean()
                self.log(f"{split}/campaign_loss/{campaign}", value, on_step=False, on_epoch=True, batch_size=n,
                         sync_dist=True)

    def training_step(self, batch, batch_idx):
        return self._step(batch, "train")

    def validation_step(self, batch, batch_idx, dataloader_idx: int = 0):
        with self._mc_dropout(False):
            return self._step(batch, "validation")

    def test_step(self, batch, batch_idx, dataloader_idx: int = 0):
        with self._mc_dropout(False):
            return self._step(batch, "test")

    def predict_step(self, batch, batch_idx, dataloader_idx: int = 0):
        """Concentrations for a predict batch.

        Batches may be images, a tuple whose first item is images, or a dict with ``'image'``. Dicts from
        the id-carrying dataset (:class:`~zoobot.pytorch.datasets.GalaxyDataset` with ``return_index=True``)
        come back as ``{'predictions': ..., 'index': ..., 'failed': ...}`` so rows can be matched by id.

        Returns (B, output_dim), or (B, output_dim, n) when ``predict_n_samples = n``.
        """
        extras = {}
        if isinstance(batch, dict):
            x = batch["image"]
            extras = {k: v for k, v in batch.items() if k != "image"}
        elif isinstance(batch, (tuple, list)):
            x = batch[0]
        else:
            x = batch
        with self._mc_dropout(self.test_time_dropout):
            if self.predict_n_samples is None:
                predictions = self(x)
            else:
                predictions = self.mc_dropout_forward(x, self.predict_n_samples)
        if extras:
            return {"predictions": predictions, **extras}
        return predictions

    # ---------------------------------------------------------------- hooks
    def on_fit_start(self):
        self._pixels_checked = False
        from zoobot.shared.preprocessing import carry_record, record_of_fit

        record = record_of_fit(getattr(self._trainer, "datamodule", None))
        if record is not None:
            carry_record(self, record)

    def on_validation_start(self):
        self._pixels_checked = False

    def on_test_start(self):
        self._pixels_checked = False

    def on_predict_start(self):
        self._pixels_checked = False

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        from zoobot.shared.checkpoints import version_metadata

        checkpoint.update(version_metadata())
        # not a constructor argument (the signature is fixed), but predict() needs it
        checkpoint["zoobot_input_size"] = int(self.input_size)
        if self.preprocessing is not None:
            checkpoint["preprocessing"] = self.preprocessing.to_dict()
        if self.calibration:
            checkpoint[calibration.CHECKPOINT_KEY] = self.calibration
        if self.concentration_floor != ScaledSigmoid.offset:
            checkpoint["zoobot_concentration_floor"] = self.concentration_floor

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        if not self._versions_checked:  # resuming a fit through the Trainer
            from zoobot.shared.checkpoints import check_format_version

            trainer = getattr(self, "_trainer", None)
            path = getattr(trainer, "ckpt_path", None) if trainer is not None else None
            check_format_version(checkpoint, path or "the checkpoint being restored")
            self._versions_checked = True
        if "zoobot_input_size" in checkpoint:
            self.input_size = int(checkpoint["zoobot_input_size"])
        upgrade_cosine_scheduler_state(checkpoint, self.scheduler_params)
        from zoobot.shared.preprocessing import carry_record, restore_record

        carry_record(self, restore_record(checkpoint.get("preprocessing"), channels=self.channels,
                                          input_size=checkpoint.get("zoobot_input_size")))
        self.calibration = checkpoint.get(calibration.CHECKPOINT_KEY) or None
        self.concentration_floor = checkpoint.get("zoobot_concentration_floor", ScaledSigmoid.offset)

    @property
    def concentration_floor(self) -> float:
        """Lowest concentration the head outputs: ``alpha = floor + 100 * sigmoid(z)`` (1 unless set, e.g. by
        ``train()``; stored in the checkpoint as ``zoobot_concentration_floor``)."""
        return float(self.head[-1].offset)

    @concentration_floor.setter
    def concentration_floor(self, value: float) -> None:
        if not 0 < float(value) <= ScaledSigmoid.offset:
            raise ValueError(f"concentration_floor must be in (0, 1], got {value!r}")
        self.head[-1].offset = float(value)

    @property
    def concentration_scale(self) -> np.ndarray | None:
        """Per-question scale that ``predict_on_catalog.predict`` applies to the concentrations
        (from :attr:`calibration`), or None when the model is uncalibrated."""
        return calibration.scale_from_record(self.calibration, self.question_names)

    @classmethod
    def load_from_checkpoint(cls, checkpoint_path, map_location=None, hparams_file=None, strict=None,
                             weights_only=None, **kwargs):
        """Load a saved ZoobotTree (``torch.load(weights_only=True)``, version-checked, offline).

        Parameters
        ----------
        checkpoint_path : str or path-like
        map_location : optional
            As in ``torch.load``; default CPU.
        hparams_file : None
            Not supported (hyperparameters live in the checkpoint).
        strict : bool, optional
            Strict weight loading (default True).
        weights_only : None or True
            Always True: zoobot checkpoints hold only tensors and JSON values.
        **kwargs
            Hyperparameter overrides, e.g. ``test_time_dropout=False``.

        Raises
        ------
        CheckpointVersionError
            (E11) the file was written by a newer, incompatible zoobot.
        """
        if hparams_file is not None:
            raise ValueError("hparams_file is not supported: zoobot stores hyperparameters inside the checkpoint")
        if weights_only is False:
            raise ValueError("zoobot checkpoints always load with weights_only=True (they hold no pickled objects)")
        return load_zoobot_checkpoint(cls, checkpoint_path, map_location=map_location, strict=strict, **kwargs)

    # ---------------------------------------------------------------- optimisation
    def configure_optimizers(self):
        optimizer = torch.optim.AdamW(
            self.parameters(), lr=self.learning_rate, betas=self.betas, weight_decay=self.weight_decay
        )
        params = self.scheduler_params
        if params is None:
            return optimizer
        if params["name"] == "plateau":
            scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
                optimizer, mode="min", patience=params["patience"], min_lr=1e-6
            )
            return {"optimizer": optimizer, "lr_scheduler": {
                "scheduler": scheduler, "monitor": "validation/supervised_loss", "interval": "epoch"}}
        scheduler = cosine_scheduler(optimizer, params["warmup_epochs"], params["max_epochs"], params["min_lr_factor"])
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "epoch"}}

    # ---------------------------------------------------------------- predict
    def predict(self, data, n_samples: int = 1, batch_size: int = 256) -> np.ndarray:
        """Predict concentrations for images, in input order (what ``model.predict(...)`` does in Keras).

        Parameters
        ----------
        data : DataLoader, GalaxyDataModule, Tensor or ndarray
            A DataLoader (batches of images, ``(images, ...)`` or dicts with ``'image'``), a data module
            (its predict set), or images (N, C, H, W) float32 in [0, 1].
        n_samples : int, default 1
            MC-dropout samples per image (the encoder runs once per batch).
        batch_size : int, default 256
            Batch size when ``data`` is a tensor/array.

        Returns
        -------
        ndarray
            (N, output_dim), or (N, output_dim, n_samples) if ``n_samples > 1``.
        """
        n_samples = check_int("n_samples", n_samples, minimum=1)
        was_training = self.training
        self.eval()
        self._pixels_checked = False
        outputs = []
        try:
            with torch.inference_mode(), self._mc_dropout(self.test_time_dropout):
                for x in _iterate_images(data, batch_size):
                    x = x.to(self.device, dtype=torch.float32)
                    outputs.append(self.mc_dropout_forward(x, n_samples).cpu())
        finally:
            self.train(was_training)
        if not outputs:
            raise ValueError("predict got no images")
        result = torch.cat(outputs).numpy()
        return result[..., 0] if n_samples == 1 else result


def _iterate_images(data, batch_size: int) -> Iterable[torch.Tensor]:
    """Yield image batches (B, C, H, W) from tensors, arrays, DataLoaders and data modules."""
    from tqdm.auto import tqdm

    if isinstance(data, np.ndarray):
        data = torch.from_numpy(data)
    if isinstance(data, torch.Tensor):
        if data.ndim != 4:
            raise ChannelMismatchError(f"predict expects images (N, C, H, W); got shape {tuple(data.shape)}")
        for start in range(0, len(data), batch_size):
            yield data[start:start + batch_size]
        return
    if hasattr(data, "predict_dataloader") and hasattr(data, "setup"):
        data.setup("predict")
        data = data.predict_dataloader()
    try:
        total = len(data)
    except TypeError:
        total = None
    for batch in tqdm(data, total=total, desc="predict", disable=total is not None and total < 10):
        if isinstance(batch, dict):
            batch = batch["image"]
        elif isinstance(batch, (tuple, list)):
            batch = batch[0]
        yield torch.as_tensor(batch)
