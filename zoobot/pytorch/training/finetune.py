"""Finetune a pretrained Zoobot encoder on your own labels (see docs/guides/finetuning.md).

The usual case: a few hundred labelled galaxies, a pretrained encoder, a laptop. Read top to bottom:

1. loss helpers and :class:`LinearHead`;
2. encoder blocks: which layers ``n_blocks`` unfreezes, per architecture;
3. :class:`FinetuneableZoobotAbstract`: the encoder (exactly one of ``name``, ``encoder``,
   ``zoobot_checkpoint_loc``; arguments checked by :class:`~zoobot.shared.training_config.FinetuneConfig`),
   freezing, learning rates, the cosine schedule, logging, ``predict``, checkpoints;
4. the three tasks: :class:`FinetuneableZoobotClassifier`, :class:`FinetuneableZoobotRegressor`,
   :class:`FinetuneableZoobotTree`;
5. :func:`get_trainer` and :func:`load_pretrained_zoobot`.

Feature replay and the catalog label checks are Lightning callbacks
(:mod:`zoobot.pytorch.training.callbacks`) that every finetuning model adds to its fits. The block table,
what "frozen" means, and how replay works: docs/guides/finetuning.md.

Examples
--------
>>> from zoobot.pytorch.training import finetune                                   # doctest: +SKIP
>>> model = finetune.FinetuneableZoobotClassifier(                                 # doctest: +SKIP
...     name='hf_hub:mwalmsley/zoobot-encoder-convnext_nano', num_classes=2, n_blocks=0)
>>> trainer = finetune.get_trainer(save_dir, accelerator='cpu', max_epochs=100)    # doctest: +SKIP
>>> trainer.fit(model, datamodule)                                                 # doctest: +SKIP
>>> best = finetune.FinetuneableZoobotClassifier.load_from_checkpoint(             # doctest: +SKIP
...     trainer.checkpoint_callback.best_model_path)
>>> probabilities = best.predict(datamodule)  # (N, 2)                             # doctest: +SKIP
"""
from __future__ import annotations

import inspect
import logging
import os
import pathlib
import warnings
from typing import Iterable

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from zoobot.pytorch.estimators import pretrained_encoders
from zoobot.pytorch.training.callbacks import CheckCatalogLabels, FeatureReplayCallback
from zoobot.pytorch.training.feature_cache import FeatureCache
from zoobot.shared import calibration
from zoobot.shared.errors import ChannelMismatchError, check_pixel_range, unknown_option_error
from zoobot.shared.training_config import FinetuneConfig
from zoobot.shared.validation import check_fraction, check_int

__all__ = [
    "FinetuneableZoobotAbstract",
    "FinetuneableZoobotClassifier",
    "FinetuneableZoobotRegressor",
    "FinetuneableZoobotTree",
    "LinearHead",
    "LinearClassifier",
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
    "MONITOR",
]

logger = logging.getLogger(__name__)

#: The metric ``get_trainer``'s checkpointing and early stopping watch.
MONITOR = "finetuning/val_loss"


# =============================================================================================
# 1. losses and the linear head
# =============================================================================================

def cross_entropy_loss(y_pred: torch.Tensor, y: torch.Tensor, label_smoothing: float = 0.0,
                       weight: torch.Tensor | None = None) -> torch.Tensor:
    """Mean cross-entropy of logits ``y_pred`` (B, K) against integer class ids ``y`` (B,).

    Examples
    --------
    >>> import torch
    >>> round(float(cross_entropy_loss(torch.zeros(2, 4), torch.tensor([0, 3]))), 4)  # ln 4
    1.3863
    """
    return F.cross_entropy(y_pred, y.long(), weight=weight, label_smoothing=float(label_smoothing))


def mse_loss(y_pred: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Mean squared error over the batch.

    Examples
    --------
    >>> import torch
    >>> float(mse_loss(torch.tensor([1., 2.]), torch.tensor([0., 0.])))
    2.5
    """
    return F.mse_loss(y_pred, y.to(y_pred.dtype))


def l1_loss(y_pred: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Mean absolute error over the batch.

    Examples
    --------
    >>> import torch
    >>> float(l1_loss(torch.tensor([1., -2.]), torch.tensor([0., 0.])))
    1.5
    """
    return F.l1_loss(y_pred, y.to(y_pred.dtype))


def finetune_dirichlet_loss(y_pred: torch.Tensor, y: torch.Tensor, question_index_groups) -> torch.Tensor:
    """Dirichlet-multinomial loss of a finetuned tree head: summed over questions, mean over galaxies (a scalar).

    Predictions first, as the other finetuning losses. The per-galaxy, per-question losses are
    ``zoobot.pytorch.training.losses.calculate_multiquestion_loss`` (labels first).

    Parameters
    ----------
    y_pred : Tensor (B, n_answers)
        Concentrations.
    y : Tensor (B, n_answers)
        Vote counts.
    question_index_groups : list of (int, int)
        ``schema.question_index_groups``.

    Examples
    --------
    >>> import torch
    >>> float(finetune_dirichlet_loss(torch.ones(2, 3), torch.zeros(2, 3), [(0, 2)]))  # no votes: exactly 0
    0.0
    """
    from zoobot.pytorch.training import losses

    return losses.calculate_multiquestion_loss(y, y_pred, question_index_groups).sum(dim=1).mean()


def dirichlet_loss(y_pred: torch.Tensor, y: torch.Tensor, question_index_groups) -> torch.Tensor:
    """Deprecated name of :func:`finetune_dirichlet_loss` (three public functions were called ``dirichlet_loss``).

    Warns
    -----
    DeprecationWarning
        Naming ``finetune_dirichlet_loss``.
    """
    warnings.warn("zoobot.pytorch.training.finetune.dirichlet_loss is deprecated: use finetune_dirichlet_loss "
                  "(the same loss: summed over questions, mean over galaxies).", DeprecationWarning, stacklevel=2)
    return finetune_dirichlet_loss(y_pred, y, question_index_groups)


class LinearHead(nn.Module):
    """Dropout -> Linear(input_dim, output_dim) -> optional activation. Output (B, output_dim), never squeezed.

    Parameters
    ----------
    input_dim : int
        Encoder features.
    output_dim : int
        Outputs (classes, 1 for regression).
    dropout_prob : float, default 0.5
    activation : callable, optional
        Applied to the output (e.g. ``torch.sigmoid``).

    Examples
    --------
    >>> import torch
    >>> LinearHead(8, 1).eval()(torch.zeros(1, 8)).shape
    torch.Size([1, 1])
    """

    def __init__(self, input_dim: int, output_dim: int, dropout_prob: float = 0.5, activation=None):
        super().__init__()
        input_dim = check_int("input_dim", input_dim, minimum=1)
        output_dim = check_int("output_dim", output_dim, minimum=1)
        dropout_prob = check_fraction("dropout_prob", dropout_prob, allow_one=False)
        self.output_dim = int(output_dim)
        self.dropout = nn.Dropout(p=float(dropout_prob))
        self.linear = nn.Linear(int(input_dim), int(output_dim))
        self.activation = activation

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.linear(self.dropout(x))
        return self.activation(x) if self.activation is not None else x


#: Upstream v1 name of :class:`LinearHead`.
LinearClassifier = LinearHead


def freeze_batchnorm_layers(model: nn.Module) -> None:
    """Put every BatchNorm layer of ``model`` in eval mode and stop its weights training.

    Their running statistics then stay fixed. Call it again after ``model.train()`` (which switches
    them back to training mode); the finetuning classes handle this themselves.

    Examples
    --------
    >>> m = nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2)).train()
    >>> freeze_batchnorm_layers(m)
    >>> m[1].training, m[1].weight.requires_grad
    (False, False)
    """
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.eval()
            for param in module.parameters():
                param.requires_grad = False


# =============================================================================================
# 2. encoder blocks
# =============================================================================================

class EncoderBlock:
    """One trainable unit of an encoder: some modules plus loose parameters (e.g. ViT's cls_token)."""

    def __init__(self, name: str, modules: list, params: list | None = None):
        self.name = name
        self.modules = list(modules)
        self.extra_params = list(params or [])

    def parameters(self) -> list[nn.Parameter]:
        seen, out = set(), []
        for p in [p for m in self.modules for p in m.parameters()] + self.extra_params:
            if id(p) not in seen:
                seen.add(id(p))
                out.append(p)
        return out

    def batchnorms(self) -> list[nn.Module]:
        return [m for mod in self.modules for m in mod.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]

    def __repr__(self) -> str:
        return f"EncoderBlock({self.name!r}, {sum(p.numel() for p in self.parameters())} parameters)"


#: The architectures with a block table, for error messages.
BLOCK_FAMILIES = ("efficientnet", "resnet", "convnext/maxvit", "vit", "tiny_cnn")


def _block_family(encoder: nn.Module) -> tuple[str | None, list[tuple[str, nn.Module]]]:
    """(family, [(name, module), ...] input side first) from the encoder's structure."""
    from zoobot.pytorch.estimators.tiny_cnn import TinyCNN

    has = lambda *names: all(hasattr(encoder, n) for n in names)  # noqa: E731
    if isinstance(encoder, TinyCNN):
        return "tiny_cnn", [(f"blocks.{i}", b) for i, b in enumerate(encoder.blocks)]
    if has("conv_stem", "bn1", "blocks"):
        return "efficientnet", [("conv_stem", encoder.conv_stem), ("bn1", encoder.bn1)] + [
            (f"blocks.{i}", b) for i, b in enumerate(encoder.blocks)]
    if has("conv1", "bn1", "layer1", "layer2", "layer3", "layer4"):
        return "resnet", [(n, getattr(encoder, n)) for n in ("conv1", "bn1", "layer1", "layer2", "layer3", "layer4")]
    if has("stem", "stages"):
        return "convnext/maxvit", [("stem", encoder.stem)] + [(f"stages.{i}", s) for i, s in enumerate(encoder.stages)]
    if has("patch_embed", "blocks"):
        return "vit", [("patch_embed", encoder.patch_embed)] + [(f"blocks.{i}", b) for i, b in enumerate(encoder.blocks)]
    return None, []


def get_encoder_blocks(encoder: nn.Module) -> list[EncoderBlock]:
    """The encoder's blocks, **top (nearest the head) first**, covering every encoder parameter.

    Layers outside the block table (EfficientNet's ``conv_head``/``bn2``, ConvNeXt's final norms,
    ...) join the top block; loose parameters of the encoder itself (ViT's ``cls_token``,
    ``pos_embed``) join the bottom block.

    Parameters
    ----------
    encoder : nn.Module

    Returns
    -------
    list of EncoderBlock
        Empty if the architecture has no block table.

    Examples
    --------
    >>> from zoobot.pytorch.estimators.tiny_cnn import TinyCNN
    >>> [b.name for b in get_encoder_blocks(TinyCNN(1))]
    ['blocks.3', 'blocks.2', 'blocks.1', 'blocks.0']
    """
    encoder = getattr(encoder, "_orig_mod", encoder)
    family, named = _block_family(encoder)
    if family is None:
        return []
    blocks = [EncoderBlock(name, [module]) for name, module in named]
    in_blocks = {id(m) for _, m in named}
    containers = {id(getattr(encoder, n)) for n in ("blocks", "stages") if hasattr(encoder, n)}
    for _, child in encoder.named_children():
        if id(child) not in in_blocks and id(child) not in containers:
            blocks[-1].modules.append(child)
    blocks[0].extra_params.extend(p for _, p in encoder.named_parameters(recurse=False))
    covered = {id(p) for b in blocks for p in b.parameters()}
    leftover = [p for p in encoder.parameters() if id(p) not in covered]
    blocks[-1].extra_params.extend(leftover)  # anything deeper that the table missed trains with the top
    return blocks[::-1]


# =============================================================================================
# 3. the shared LightningModule
# =============================================================================================

class FinetuneableZoobotAbstract(L.LightningModule):
    """Shared machinery of the finetuning models; use a subclass (Classifier, Regressor, Tree).

    Parameters
    ----------
    name : str, optional
        Pretrained encoder: registry short name (``'zoobot-encoder-convnext_nano'``),
        ``'hf-hub:owner/repo'`` / ``'hf_hub:owner/repo'``, ``'local-dir:/folder'``, or a timm
        architecture / ``'tiny_cnn'`` (random init). See
        :func:`~zoobot.pytorch.estimators.pretrained_encoders.create_encoder`.
    encoder : nn.Module, optional
        Any module mapping (B, C, H, W) to (B, D).
    zoobot_checkpoint_loc : str, optional
        A ``ZoobotTree`` (or finetuned) checkpoint whose encoder to use. Alias ``checkpoint_loc``.
    n_blocks : int, default 0
        Encoder blocks to train, from the top; 0 = head only, -1 = all.
    lr_decay : float, default 0.75
        Learning-rate factor per block down from the top. Alias ``layer_decay``.
    weight_decay : float, default 0.05
        AdamW weight decay.
    learning_rate : float, default 1e-4
        Head learning rate (and the top block's).
    dropout_prob : float, default 0.5
        Dropout before the head.
    always_train_batchnorm : bool, default False
        Let BatchNorm layers of frozen blocks update and train (see the module docstring).
    cosine_schedule : bool, default False
        Cosine learning-rate schedule per epoch: ``warmup_epochs`` linear warm-up, decay to
        ``max_learning_rate_reduction_factor`` at ``max_cosine_epochs``.
    warmup_epochs, max_cosine_epochs, max_learning_rate_reduction_factor
        The schedule's settings (defaults 0, 100, 0.01).
    from_scratch : bool, default False
        Train every weight at ``learning_rate`` (ignores ``n_blocks``).
    prog_bar : bool, default True
        Show the losses in the progress bar.
    visualize_images : bool, default False
        Log the first training images once, to loggers with ``log_image`` (e.g. wandb).
    seed : int, default 42
        Seeds Python, NumPy and torch (``lightning.seed_everything``) before the head is built.
    n_layers : int, default 0
        Deprecated spelling of ``n_blocks`` (DeprecationWarning).
    cache_features : bool or None, keyword-only
        None (default): reuse frozen-encoder features when the encoder is frozen; True: insist;
        False: never. Fastest (no image read after the first pass) with ``trainer.fit(model, datamodule)``
        on a ``GalaxyDataModule`` whose ``train_transform`` is deterministic, e.g.
        ``GalaxyDataModule(..., train_transform=EvalTransform(channels=3, resize_after_crop=224))``; the
        default random augmentations reuse nothing. See :mod:`~zoobot.pytorch.training.feature_cache`.
    checkpoint_loc, encoder_dim, layer_decay, training_mode : keyword-only
        Upstream spellings: ``checkpoint_loc`` = ``zoobot_checkpoint_loc``; ``encoder_dim`` gives
        the feature dimension of a custom ``encoder`` that has no ``num_features``;
        ``layer_decay`` = ``lr_decay``; ``training_mode='head_only'``/``'full'`` =
        ``n_blocks=0``/``-1``.

    Attributes
    ----------
    encoder, head : nn.Module
    channels : int
        Input channels the encoder expects.
    input_size : int
        Image size the encoder was pretrained at (224 unless its config says otherwise).
    encoder_dim : int
    blocks : list of EncoderBlock
        Top first.
    n_blocks : int
        Trained blocks (resolved: -1 becomes the count).

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
        encoder: nn.Module | None = None,
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
        super().__init__()
        arguments = {k: v for k, v in locals().items() if k not in ("self", "__class__")}
        config = FinetuneConfig.from_arguments(stacklevel=4, **arguments)  # aliases resolved, values checked
        config.apply_to(self)  # learning_rate, lr_decay, ..., seed, cache_features, cosine_params
        L.seed_everything(config.seed, verbose=False)
        source = self._build_encoder(config)
        self.channels = pretrained_encoders.encoder_channels(self.encoder)
        known = getattr(self.encoder, "num_features", None)
        self.encoder_dim = config.check_encoder_dim(known if isinstance(known, int) else None)
        if self.encoder_dim is None:
            from zoobot.pytorch.estimators.define_model import get_encoder_dim

            self.encoder_dim = get_encoder_dim(self.encoder, channels=self.channels)
        self.architecture = pretrained_encoders.encoder_architecture(self.encoder)
        self.input_size = pretrained_encoders.encoder_input_size(self.encoder)
        #: How the training images were prepared (:class:`zoobot.shared.preprocessing.Preprocessing`): set
        #: when fitting on a GalaxyDataModule, saved in checkpoints, used by ``predict`` by default. Until
        #: fitted, a model finetuned from a ZoobotTree checkpoint carries that model's record.
        self.preprocessing = None
        if source == "zoobot_checkpoint_loc":
            self._inherit_preprocessing(config.zoobot_checkpoint_loc)
        self._use_channels_last()

        self.blocks = get_encoder_blocks(self.encoder)
        self.n_blocks = self._check_n_blocks(config.n_blocks)
        self._freeze()
        self.train()  # frozen blocks to eval mode (Lightning keeps each module's mode as it finds it)
        config.check_cache_features(self.encoder_is_frozen)
        self.feature_cache = FeatureCache()
        #: The callback that replays frozen-encoder features during fits (added by ``configure_callbacks``).
        self.feature_replay = FeatureReplayCallback()
        self._inputs_checked = False
        self._batch_idx = 0

        from zoobot.shared.checkpoints import version_metadata

        self._base_hparams = config.hparams(
            source=source, architecture=self.architecture, channels=self.channels, input_size=self.input_size,
            encoder_dim=self.encoder_dim, encoder_kwargs=pretrained_encoders.encoder_build_kwargs(self.encoder))
        self._base_hparams.update(version_metadata())

    # ------------------------------------------------------------------------- construction
    def _build_encoder(self, config: FinetuneConfig) -> str:
        """Set ``self.encoder`` from the one source given; returns which (``'name'``, ``'encoder'``, ...)."""
        source = config.encoder_source()
        if source == "name":
            self.encoder = pretrained_encoders.create_encoder(config.name, pretrained=True)
        elif source == "encoder":
            if not isinstance(config.encoder, nn.Module):
                raise TypeError(f"encoder must be a torch.nn.Module, got {type(config.encoder).__name__}")
            self.encoder = config.encoder
        else:
            self.encoder = load_pretrained_zoobot(config.zoobot_checkpoint_loc)
        return source

    def _use_channels_last(self) -> None:
        """Convolutional encoders run 1.4-2x faster on CPU in channels_last (as in ZoobotTree); state dicts,
        and so checkpoints, do not depend on the memory format."""
        from zoobot.pytorch.estimators.define_model import _is_convnet

        self.channels_last = _is_convnet(self.encoder)
        if self.channels_last:
            self.encoder.to(memory_format=torch.channels_last)

    def _check_n_blocks(self, n_blocks: int) -> int:
        if self.from_scratch:
            return len(self.blocks) if self.blocks else n_blocks
        if not self.blocks:
            if n_blocks > 0:
                raise unknown_option_error(
                    f"encoder architecture for n_blocks={n_blocks} ({type(self.encoder).__name__} has no block "
                    "table; use n_blocks=0 (head only) or -1 (everything at learning_rate))",
                    type(self.encoder).__name__, BLOCK_FAMILIES)
            return n_blocks  # 0 or -1 (all, as one block)
        if n_blocks == -1:
            return len(self.blocks)
        if n_blocks > len(self.blocks):
            raise ValueError(
                f"n_blocks={n_blocks} but this {self.architecture or type(self.encoder).__name__} encoder has only "
                f"{len(self.blocks)} blocks ({', '.join(b.name for b in self.blocks[::-1])}). Use "
                f"n_blocks <= {len(self.blocks)}, or -1 for all."
            )
        return n_blocks

    def _freeze(self) -> None:
        """Set requires_grad per block; remember which blocks are frozen (train() keeps them in eval)."""
        for p in self.encoder.parameters():
            p.requires_grad = False
        if self.from_scratch or (not self.blocks and self.n_blocks == -1):
            for p in self.encoder.parameters():
                p.requires_grad = True
            self.trained_blocks, self.frozen_blocks = list(self.blocks), []
            return
        self.trained_blocks = self.blocks[:self.n_blocks]
        self.frozen_blocks = self.blocks[self.n_blocks:]
        for block in self.trained_blocks:
            for p in block.parameters():
                p.requires_grad = True
        if self.always_train_batchnorm:
            for block in self.frozen_blocks:
                for bn in block.batchnorms():
                    for p in bn.parameters():
                        p.requires_grad = True

    @property
    def encoder_is_frozen(self) -> bool:
        """True when no encoder weight trains and every encoder layer runs in eval mode during training."""
        if self.always_train_batchnorm and any(b.batchnorms() for b in self.frozen_blocks):
            return False
        return not any(p.requires_grad for p in self.encoder.parameters())

    def _frozen_modules(self) -> list[nn.Module]:
        if self.from_scratch or (not self.blocks and self.n_blocks == -1):
            return []
        if not self.trained_blocks:  # head only: the whole encoder (containers included) is a fixed function
            return [self.encoder]
        return [m for block in self.frozen_blocks for m in block.modules]

    def train(self, mode: bool = True):
        """As ``nn.Module.train``, but frozen encoder blocks stay in eval mode (BatchNorm statistics fixed)."""
        super().train(mode)
        if mode:
            for module in self._frozen_modules():
                module.eval()
            if self.always_train_batchnorm:
                for block in self.frozen_blocks:
                    for bn in block.batchnorms():
                        bn.train(True)
        return self

    # ------------------------------------------------------------------------- optimisation
    def param_groups(self) -> list[dict]:
        """The optimiser's parameter groups: head, then trained blocks top first (and frozen BatchNorms).

        Each group is ``{'params': [...], 'lr': ..., 'name': ...}``.
        """
        head_params = [p for p in self.head.parameters()]
        if self.from_scratch or (not self.blocks and self.n_blocks == -1):
            return [{"params": head_params + list(self.encoder.parameters()), "lr": self.learning_rate,
                     "name": "all"}]
        groups = [{"params": head_params, "lr": self.learning_rate, "name": "head"}]
        lrs = []
        for i, block in enumerate(self.trained_blocks):
            lr = self.learning_rate * self.lr_decay ** i
            lrs.append(lr)
            groups.append({"params": block.parameters(), "lr": lr, "name": f"encoder.{block.name}"})
        if self.always_train_batchnorm:
            bn_params = [p for block in self.frozen_blocks for bn in block.batchnorms() for p in bn.parameters()]
            if bn_params:
                groups.append({"params": bn_params, "lr": min(lrs) if lrs else self.learning_rate,
                               "name": "frozen_batchnorm"})
        return groups

    def configure_optimizers(self):
        optimizer = torch.optim.AdamW(self.param_groups(), weight_decay=self.weight_decay)
        if self.cosine_params is None:
            return optimizer
        from zoobot.pytorch.estimators.define_model import cosine_scheduler

        p = self.cosine_params
        scheduler = cosine_scheduler(optimizer, p["warmup_epochs"], p["max_epochs"], p["min_lr_factor"])
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "epoch"}}

    # ------------------------------------------------------------------------- forward
    def _check_input(self, x) -> None:
        """E7 on every call (shape only), E8 once per stage (one min/max)."""
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"{type(self).__name__} expects a torch.Tensor (B, C, H, W), got {type(x).__name__}")
        if x.ndim != 4 or x.shape[1] != self.channels:
            shape = tuple(x.shape)
            if x.ndim == 4 and x.shape[-1] == self.channels:
                fix = "it looks NHWC (channels last); PyTorch models take NCHW: x.permute(0, 3, 1, 2)"
            elif x.ndim != 4:
                fix = "give a batch (B, C, H, W)" + (": x.unsqueeze(0)" if x.ndim == 3 else "")
            else:
                fix = (f"use greyscale={self.channels == 1} in GalaxyDataModule, or an encoder built for "
                       f"{x.shape[1]} channels (create_encoder(name, channels={x.shape[1]}))")
            raise ChannelMismatchError(
                f"The encoder expects images (B, C, H, W) with C={self.channels} (NCHW), got shape {shape}. Fix: {fix}."
            )
        if not self._inputs_checked:
            self._inputs_checked = True
            if x.numel():
                check_pixel_range(float(x.min()), float(x.max()), layout="NCHW")

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Encoder features (B, encoder_dim). No gradient graph when no encoder weight trains.

        During a fit with feature replay (see :meth:`on_fit_start`) the batches already are the features
        (B, encoder_dim) and pass straight through.
        """
        if self._replaying():
            return self._check_features(x)
        self._check_input(x)
        if not any(p.requires_grad for p in self.encoder.parameters()):
            with torch.no_grad():
                if self._use_cache():
                    return self.feature_cache.encode(self._run_encoder, x, stage=self._stage())
                return self._run_encoder(x)
        return self._run_encoder(x)

    def _run_encoder(self, x: torch.Tensor) -> torch.Tensor:
        """The encoder on checked images, in channels_last memory format for convolutional encoders."""
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return self.encoder(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Raw head output for images (B, C, H, W) in [0, 1] (logits for the classifier)."""
        return self.head(self.encode(x))

    # ------------------------------------------------------------------------- feature cache
    def _stage(self) -> str:
        trainer = self._trainer
        if trainer is not None and trainer.training:
            return "train"
        return "val"

    def _replaying(self) -> bool:
        """True while this fit's batches of the current stage are precomputed features (feature replay)."""
        return self.feature_replay.serves_features(self._trainer, self._stage())

    def _check_features(self, x) -> torch.Tensor:
        if not isinstance(x, torch.Tensor) or x.ndim != 2 or x.shape[1] != self.encoder_dim:
            shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            raise RuntimeError(
                f"feature replay: expected batches of encoder features (B, {self.encoder_dim}) from the data module's "
                f"datasets, got {shape}. Was the data module's dataset replaced during fit? Pass cache_features=False "
                "to read images every epoch."
            )
        dtype = self._head_dtype()
        return x if x.dtype == dtype else x.to(dtype)

    def _head_dtype(self) -> torch.dtype:
        """Floating dtype of the head's weights."""
        for p in self.head.parameters():
            if p.is_floating_point():
                return p.dtype
        return torch.float32

    def _use_cache(self) -> bool:
        if self.cache_features is False or not self.encoder_is_frozen:
            return False
        trainer = self._trainer
        if trainer is None or not (trainer.training or trainer.validating or trainer.sanity_checking):
            return False
        if trainer.state.fn != "fit":
            return False
        if self.encoder.training:  # frozen encoders are put in eval mode by train()
            return False
        return self.feature_cache.enabled(self._stage())

    def configure_callbacks(self):
        """Lightning hook: every fit of this model, whatever Trainer runs it, checks the catalogs' labels first
        (:class:`~zoobot.pytorch.training.callbacks.CheckCatalogLabels`) and replays frozen-encoder features
        (:class:`~zoobot.pytorch.training.callbacks.FeatureReplayCallback`).

        Both act only during ``fit``, so ``test``/``validate``/``predict`` add nothing. The two callbacks a reused
        Trainer still holds from an earlier fit are replaced quietly (Lightning would log that they are overridden).
        """
        trainer = getattr(self, "_trainer", None)
        if trainer is None or trainer.state.fn != "fit":
            return []
        trainer.callbacks = [c for c in trainer.callbacks
                             if not isinstance(c, (CheckCatalogLabels, FeatureReplayCallback))]
        return [CheckCatalogLabels(), self.feature_replay]

    def on_fit_start(self) -> None:
        label_cols = getattr(getattr(self.trainer, "datamodule", None), "label_cols", None)
        if label_cols:  # names the prediction columns (ring_pred_mean, not class_1_pred_mean)
            self.hparams["label_cols"] = self._base_hparams["label_cols"] = [str(c) for c in label_cols]
        if self._frozen_modules():
            # frozen blocks run in eval mode on purpose; Lightning would warn about them at every fit
            warnings.filterwarnings("ignore", message=r"Found \d+ module\(s\) in eval mode at the start of training")
            logger.info("Frozen encoder blocks run in eval mode (fixed BatchNorm statistics, no dropout).")
        if self.training:
            self.train()  # re-apply the frozen blocks' eval mode, in case modules were switched by hand
        self._remember_preprocessing(getattr(self._trainer, "datamodule", None))
        self._inputs_checked = False
        if getattr(self, "run_linear_sanity_check", False):
            self._linear_sanity_check()

    def on_validation_start(self) -> None:
        self._inputs_checked = False

    def on_test_start(self) -> None:
        self._inputs_checked = False

    def on_predict_start(self) -> None:
        self._inputs_checked = False

    # ------------------------------------------------------------------------- steps
    def _unpack(self, batch) -> tuple[torch.Tensor, torch.Tensor]:
        """(images, labels) from a tuple/list batch or a dict batch with 'image' and 'label' (or label columns)."""
        if isinstance(batch, dict):
            if "image" not in batch:
                raise KeyError(f"dict batches need an 'image' key; got keys {sorted(batch)}")
            x = batch["image"]
            if "label" in batch:
                y = batch["label"]
            else:
                label_keys = self._dict_label_keys(batch)
                y = torch.stack([torch.as_tensor(batch[k]) for k in label_keys], dim=1)
                if y.shape[1] == 1:
                    y = y[:, 0]
            return x, torch.as_tensor(y)
        if isinstance(batch, (tuple, list)) and len(batch) >= 2:
            return batch[0], torch.as_tensor(batch[1])
        raise TypeError(
            "training/validation batches must be (images, labels) or a dict with 'image' and labels; "
            f"got {type(batch).__name__}"
        )

    def _dict_label_keys(self, batch: dict) -> list[str]:
        keys = [k for k, v in batch.items() if k not in ("image", "id_str", "index", "file_loc")
                and isinstance(v, torch.Tensor)]
        if len(keys) != 1:
            raise KeyError(
                f"dict batch has label keys {keys}; {type(self).__name__} needs exactly one (or a 'label' key)."
            )
        return keys

    def _step(self, batch, split: str) -> torch.Tensor:
        x, y = self._unpack(batch)
        y = self._prepare_labels(y, x.shape[0])
        output = self(x)
        loss = self.compute_loss(output, y)
        if split == "train" and not bool(torch.isfinite(loss.detach())):
            raise FloatingPointError(
                f"The training loss became {float(loss.detach())} at epoch {self.current_epoch}, step "
                f"{self.global_step}: training stopped. Usual causes: a learning_rate too high, or corrupt "
                "labels/images."
            )
        self.log(f"finetuning/{split}_loss", loss, on_step=False, on_epoch=True, prog_bar=self.prog_bar,
                 batch_size=x.shape[0])
        self.log_metrics(split, output.detach(), y)
        if split == "train" and self.visualize_images and self.current_epoch == 0 and self._batch_idx == 0:
            self._log_images(x)
        return loss

    def training_step(self, batch, batch_idx):
        self._batch_idx = batch_idx
        return self._step(batch, "train")

    def validation_step(self, batch, batch_idx, dataloader_idx: int = 0):
        return self._step(batch, "val")

    def test_step(self, batch, batch_idx, dataloader_idx: int = 0):
        return self._step(batch, "test")

    def predict_step(self, batch, batch_idx, dataloader_idx: int = 0):
        """Predictions for a batch of images (or ``(images, ...)``, or a dict with ``'image'``): see :meth:`predict`."""
        x = _images_of(batch)
        return self.predict_output(x)

    def _log_images(self, x: torch.Tensor) -> None:
        log_image = getattr(self.logger, "log_image", None)
        if callable(log_image):
            log_image(key="finetuning/train_images", images=[img for img in x[:8].detach().cpu()])

    def _catalog_label_kind(self) -> tuple[str, dict]:
        """(label_kind, extra validate_catalog keywords) of this task's labels."""
        return "regression", {}

    def _check_catalog_labels(self, catalog, label_cols: list, name: str) -> None:
        """Task-specific checks of a catalog's labels beyond validate_catalog (none by default)."""

    # hooks for the task subclasses
    def _prepare_labels(self, y: torch.Tensor, batch_size: int) -> torch.Tensor:
        raise NotImplementedError

    def compute_loss(self, output: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def log_metrics(self, split: str, output: torch.Tensor, y: torch.Tensor) -> None:
        """Task metrics (accuracy, RMSE); none by default."""

    def predict_output(self, x: torch.Tensor) -> torch.Tensor:
        """What :meth:`predict` returns for a batch, (B, n_outputs)."""
        raise NotImplementedError

    # ------------------------------------------------------------------------- predict
    @torch.no_grad()
    def predict(self, data, n_samples: int = 1, batch_size: int = 64) -> np.ndarray:
        """Predict for images, in input order.

        Parameters
        ----------
        data : DataLoader, GalaxyDataModule, Tensor or ndarray
            A DataLoader (batches of images, ``(images, ...)`` or dicts with ``'image'``), a data
            module (its predict set), or images (N, C, H, W) float32 in [0, 1].
        n_samples : int, default 1
            Forward passes per image (dropout is off at prediction, so they agree unless the model
            was given stochastic layers).
        batch_size : int, default 64
            Batch size for tensor/array input.

        Returns
        -------
        ndarray
            (N, n_outputs), or (N, n_outputs, n_samples) if ``n_samples > 1``. Classifier:
            softmax probabilities; regressor: (N, 1) values; tree: concentrations.
        """
        n_samples = check_int("n_samples", n_samples, minimum=1)
        was_training = self.training
        self.eval()
        self._inputs_checked = False
        outputs = []
        try:
            with self.feature_replay.paused():  # images here, even if called during a fit
                for x in _iterate_images(data, batch_size):
                    x = x.to(self.device, dtype=torch.float32)
                    samples = [self.predict_output(x).cpu() for _ in range(n_samples)]
                    outputs.append(torch.stack(samples, dim=-1))
        finally:
            self.train(was_training)
        if not outputs:
            raise ValueError("predict got no images")
        result = torch.cat(outputs).numpy()
        return result[..., 0] if n_samples == 1 else result

    # ------------------------------------------------------------------------- checkpoints
    def _save_all_hparams(self, task_hparams: dict) -> None:
        from zoobot.shared.training_config import to_jsonable

        self.save_hyperparameters({**self._base_hparams, **to_jsonable(task_hparams)})

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        from zoobot.shared.checkpoints import version_metadata

        checkpoint["hyper_parameters"] = dict(checkpoint.get("hyper_parameters", {}))
        checkpoint["hyper_parameters"].update(version_metadata())
        checkpoint.update(version_metadata())
        checkpoint["zoobot_model_class"] = type(self).__name__
        if self.preprocessing is not None:
            checkpoint["preprocessing"] = self.preprocessing.to_dict()

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        from zoobot.pytorch.estimators.define_model import upgrade_cosine_scheduler_state
        from zoobot.shared.preprocessing import carry_record, restore_record

        upgrade_cosine_scheduler_state(checkpoint, self.cosine_params)
        carry_record(self, restore_record(checkpoint.get("preprocessing"), channels=self.channels))

    def _inherit_preprocessing(self, checkpoint_loc) -> None:
        from zoobot.shared.preprocessing import carry_record, restore_record

        checkpoint = _load_checkpoint_file(checkpoint_loc)
        carry_record(self, restore_record(checkpoint.get("preprocessing"), channels=self.channels,
                                          input_size=checkpoint.get("zoobot_input_size")))

    def _remember_preprocessing(self, datamodule) -> None:
        from zoobot.shared.preprocessing import carry_record, record_of_fit

        record = record_of_fit(datamodule)
        if record is not None:
            carry_record(self, record)

    @classmethod
    def load_from_checkpoint(cls, checkpoint_path, map_location=None, hparams_file=None, strict=None,
                             weights_only=None, **overrides):
        """Load a finetuned model saved by Lightning, offline.

        The encoder is rebuilt from the stored architecture and channels with random weights
        (nothing is downloaded), then all weights come from the checkpoint
        (``torch.load(weights_only=True)``).

        Parameters
        ----------
        checkpoint_path : str or path-like
        map_location : optional
            Where to put the weights (``torch.load``); default CPU.
        hparams_file : None
            Not supported (hyperparameters live in the checkpoint).
        strict : bool, optional
            Strict ``load_state_dict`` (default True).
        weights_only : None or True
            Always True.
        **overrides
            Hyperparameters replacing the stored ones (e.g. ``learning_rate``); ``encoder=`` must be
            given again when the model was finetuned from a custom in-memory encoder.

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
        ValueError
            The model used a custom encoder and ``encoder=`` was not passed again.

        Warns
        -----
        UserWarning
            Older ``format_version``; hyperparameters this version does not know (dropped).
        """
        if cls is FinetuneableZoobotAbstract:
            raise TypeError("Call load_from_checkpoint on the concrete class, e.g. FinetuneableZoobotClassifier.")
        if hparams_file is not None:
            raise ValueError("hparams_file is not supported: zoobot stores hyperparameters inside the checkpoint")
        if weights_only is False:
            raise ValueError("zoobot checkpoints always load with weights_only=True (they hold no pickled objects)")
        checkpoint = _load_checkpoint_file(checkpoint_path)
        hparams = cls._checked_hparams(checkpoint, checkpoint_path)
        provenance = {k: hparams.pop(k, None) for k in ("name", "zoobot_checkpoint_loc", "encoder_source",
                                                        "label_cols")}
        model = cls(**cls._constructor_kwargs(hparams, overrides, checkpoint_path))
        state = checkpoint.get("state_dict")
        if state is None:
            raise ValueError(f"{checkpoint_path} holds no 'state_dict': not a Lightning checkpoint.")
        model.load_state_dict(state, strict=True if strict is None else bool(strict))
        model.on_load_checkpoint(checkpoint)  # the preprocessing record; a tree's calibration record
        # keep the original provenance (where the encoder first came from) in the hyperparameters
        for key, value in provenance.items():
            if value is not None:
                model.hparams[key] = value
                model._base_hparams[key] = value
        if map_location is not None:
            model = model.to(map_location if not callable(map_location) else "cpu")
        model.checkpoint_path = os.fspath(checkpoint_path)
        return model

    @classmethod
    def _checked_hparams(cls, checkpoint: dict, checkpoint_path) -> dict:
        """The checkpoint's hyperparameters, after checking its format version (E11) and that it holds a
        finetuned model of this class."""
        from zoobot.shared.checkpoints import VERSION_KEYS, check_format_version

        hparams = dict(checkpoint.get("hyper_parameters") or {})
        versions = hparams if "format_version" in hparams else checkpoint
        check_format_version({k: versions.get(k) for k in VERSION_KEYS if versions.get(k) is not None},
                             checkpoint_path)
        written_by = checkpoint.get("zoobot_model_class")
        if written_by is not None and written_by != cls.__name__:
            raise ValueError(f"{checkpoint_path} holds a {written_by}, not a {cls.__name__}: load it with "
                             f"{written_by}.load_from_checkpoint(path).")
        if "n_blocks" not in hparams:
            raise ValueError(
                f"{checkpoint_path} is not a finetuned-model checkpoint (no finetuning hyperparameters). A ZoobotTree "
                "checkpoint loads with ZoobotTree.load_from_checkpoint(path); to finetune its encoder pass "
                f"{cls.__name__}(zoobot_checkpoint_loc=path, ...)."
            )
        return hparams

    @classmethod
    def _constructor_kwargs(cls, hparams: dict, overrides: dict, checkpoint_path) -> dict:
        """Constructor keywords from stored hyperparameters: the encoder rebuilt with random weights (or the
        ``encoder=`` override), unknown hyperparameters dropped with a warning, ``overrides`` on top."""
        from zoobot.shared.checkpoints import drop_unknown_hparams

        overrides = dict(overrides)
        encoder = overrides.pop("encoder", None)
        architecture = hparams.pop("architecture", None)
        channels = int(hparams.pop("channels", 3) or 3)
        encoder_kwargs = hparams.pop("encoder_kwargs", None) or {}
        hparams.pop("input_size", None)
        if encoder is None:
            if architecture is None:
                raise ValueError(
                    f"{checkpoint_path} was finetuned from a custom in-memory encoder (not a timm, registry or "
                    "tiny_cnn model), so zoobot cannot rebuild it. Build the same encoder again and pass it: "
                    f"{cls.__name__}.load_from_checkpoint(path, encoder=my_encoder)."
                )
            encoder = pretrained_encoders.rebuild_encoder(architecture, channels, encoder_kwargs)
        kwargs = drop_unknown_hparams(hparams, _constructor_arguments(cls),
                                      where=f"{cls.__name__} from {checkpoint_path}")
        kwargs.update(overrides)
        kwargs["encoder"] = encoder
        for key in ("name", "zoobot_checkpoint_loc", "checkpoint_loc"):
            kwargs.pop(key, None)
        return kwargs

    @classmethod
    def load_from_name(cls, name: str, **kwargs):
        """Download ``<ClassName>.ckpt`` from a Hub repo (or use the cached copy) and load it.

        Parameters
        ----------
        name : str
            ``'hf-hub:owner/repo'`` (or ``hf_hub:`` / plain ``owner/repo``).
        **kwargs
            Passed to :meth:`load_from_checkpoint`.

        Raises
        ------
        FileNotFoundError
            Not cached and offline (``HF_HUB_OFFLINE=1``) or the download failed; the message says what to do.
        """
        if cls is FinetuneableZoobotAbstract:
            raise TypeError("Call load_from_name on the concrete class, e.g. FinetuneableZoobotClassifier.")
        repo = name
        for prefix in ("hf-hub:", "hf_hub:"):
            if repo.startswith(prefix):
                repo = repo[len(prefix):]
        path = _hub_file(repo, f"{cls.__name__}.ckpt")
        return cls.load_from_checkpoint(path, **kwargs)

    # ------------------------------------------------------------------------- sanity check
    def _linear_sanity_check(self) -> None:
        """Fit a logistic regression on frozen features of (part of) the train set and log its val accuracy."""
        trainer = self.trainer
        try:
            from sklearn.linear_model import LogisticRegression
        except ImportError:
            from zoobot.shared.errors import missing_dependency

            raise missing_dependency("scikit-learn", "run_linear_sanity_check", "pca") from None
        datamodule = trainer.datamodule
        if datamodule is None:
            logger.info("run_linear_sanity_check needs a datamodule; skipped")
            return
        was_training = self.training
        self.eval()
        try:
            feats = {}
            for split, loader in (("train", datamodule.train_dataloader()), ("val", datamodule.val_dataloader())):
                xs, ys = [], []
                with torch.no_grad():
                    for batch in loader:
                        x, y = self._unpack(batch)
                        xs.append(self._run_encoder(x.to(self.device)).cpu().numpy())
                        ys.append(y.cpu().numpy())
                feats[split] = (np.concatenate(xs), np.concatenate(ys).astype(int))
        finally:
            self.train(was_training)
        clf = LogisticRegression(max_iter=1000).fit(*feats["train"])
        accuracy = float(clf.score(*feats["val"]))
        self.linear_sanity_check_accuracy = accuracy
        logger.info("Linear sanity check: logistic regression on frozen features reaches val accuracy %.3f", accuracy)


def _constructor_arguments(cls) -> set:
    names = set()
    for klass in cls.__mro__:
        if klass is L.LightningModule:
            break
        if "__init__" in vars(klass):
            names |= {n for n, p in inspect.signature(klass.__init__).parameters.items()
                      if n != "self" and p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)}
    return names


def _load_checkpoint_file(path) -> dict:
    from zoobot.pytorch.estimators.define_model import read_checkpoint

    return read_checkpoint(path)


def _hub_file(repo: str, filename: str) -> str:
    """Path of ``filename`` of Hub ``repo`` in the local cache, downloading it only if missing."""
    try:
        from huggingface_hub import hf_hub_download, try_to_load_from_cache
    except ImportError:
        from zoobot.shared.errors import missing_dependency

        raise missing_dependency("huggingface_hub", "Loading finetuned models from the Hub", "pytorch") from None
    repo_id, _, revision = repo.partition("@")
    cache_dir = str(pretrained_encoders.hub_cache_dir())
    cached = try_to_load_from_cache(repo_id, filename, cache_dir=cache_dir, revision=revision or None)
    if isinstance(cached, str):
        return cached
    hint = (f"Either run once with network access so it is cached, download it elsewhere with "
            f"`hf download {repo_id} {filename}` and copy the Hugging Face cache (HF_HOME), or download the file "
            f"and use load_from_checkpoint(path).")
    if pretrained_encoders.hub_offline():
        raise FileNotFoundError(f"{filename} of Hub repo {repo_id!r} is not in the local cache ({cache_dir}) and "
                                f"HF_HUB_OFFLINE=1 forbids downloading it. {hint}")
    from zoobot.shared.pretrained import hub_reachable

    reachable, why = hub_reachable()  # fail now rather than after huggingface_hub's ~23 s of retries
    if not reachable:
        raise FileNotFoundError(f"{filename} of Hub repo {repo_id!r} is not in the local cache ({cache_dir}) and the "
                                f"Hub cannot be reached ({why}). {hint}")
    try:
        return hf_hub_download(repo_id, filename, revision=revision or None, cache_dir=cache_dir)
    except Exception as err:
        raise FileNotFoundError(f"Could not download {filename} from Hub repo {repo_id!r} ({type(err).__name__}: "
                                f"{err}). {hint}") from err


def _images_of(batch) -> torch.Tensor:
    if isinstance(batch, dict):
        return batch["image"]
    if isinstance(batch, (tuple, list)):
        return batch[0]
    return batch


def _iterate_images(data, batch_size: int) -> Iterable[torch.Tensor]:
    """Image batches (B, C, H, W) from a tensor, ndarray, DataLoader or data module (its predict set)."""
    from tqdm.auto import tqdm

    if isinstance(data, np.ndarray):
        data = torch.from_numpy(np.ascontiguousarray(data))
    if isinstance(data, torch.Tensor):
        if data.ndim == 3:
            raise ChannelMismatchError(f"predict expects images (N, C, H, W); got shape {tuple(data.shape)}. "
                                       "Fix: add the batch axis, x[None].")
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
    for batch in tqdm(data, total=total, desc="predict", disable=total is None or total < 10):
        yield torch.as_tensor(_images_of(batch))


# =============================================================================================
# 4. the tasks
# =============================================================================================

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
    ``forward`` returns logits (B, num_classes); ``predict_step`` and ``predict`` return softmax
    probabilities. Logged: ``finetuning/{train,val,test}_{loss,acc}``.

    Raises
    ------
    ValueError
        (E14) at training time, labels that are not integers in ``[0, num_classes)``.

    Examples
    --------
    >>> model = FinetuneableZoobotClassifier(name='tiny_cnn', num_classes=3)
    >>> model.predict(np.random.rand(2, 3, 32, 32).astype('float32')).shape
    (2, 3)
    """

    def __init__(self, num_classes: int, label_smoothing: float = 0.0, class_weights=None,
                 run_linear_sanity_check: bool = False, **kwargs):
        try:
            num_classes = check_int("num_classes", num_classes, minimum=2)
        except ValueError as err:
            raise ValueError(f"{err} (binary tasks use num_classes=2)") from None
        label_smoothing = check_fraction("label_smoothing", label_smoothing, allow_one=False)
        super().__init__(**kwargs)
        import torchmetrics

        self.num_classes = int(num_classes)
        self.label_smoothing = label_smoothing
        self.run_linear_sanity_check = bool(run_linear_sanity_check)
        weights = None
        if class_weights is not None:
            weights = torch.as_tensor(np.asarray(class_weights, dtype=np.float32))
            if weights.shape != (self.num_classes,) or not bool(torch.isfinite(weights).all()) or bool(
                    (weights <= 0).any()):
                raise ValueError(f"class_weights must be {self.num_classes} positive finite numbers (one per class), "
                                 f"got {class_weights!r}")
        self.register_buffer("class_weights", weights, persistent=False)
        self.head = LinearHead(self.encoder_dim, self.num_classes, self.dropout_prob)
        self.metrics = nn.ModuleDict({
            f"{split}_acc": torchmetrics.Accuracy(task="multiclass", num_classes=self.num_classes)
            for split in ("train", "val", "test")})
        self._save_all_hparams({
            "num_classes": self.num_classes, "label_smoothing": label_smoothing,
            "class_weights": None if weights is None else weights.tolist(),
            "run_linear_sanity_check": self.run_linear_sanity_check})

    def _prepare_labels(self, y: torch.Tensor, batch_size: int) -> torch.Tensor:
        y = y.reshape(-1) if y.ndim == 2 and y.shape[1] == 1 else y
        if y.ndim != 1 or y.shape[0] != batch_size:
            raise ValueError(f"Classification labels must be class ids of shape (B,) = ({batch_size},); got shape "
                             f"{tuple(y.shape)}. Use one label column holding integers 0..{self.num_classes - 1}.")
        bad = ~torch.isfinite(y.float()) | (y.float() != torch.round(y.float())) | (y < 0) | (y >= self.num_classes)
        if bool(bad.any()):
            from zoobot.shared.errors import format_examples

            values = sorted({float(v) for v in y[bad].detach().cpu().tolist()})
            raise ValueError(
                f"Classification labels must be integers in [0, {self.num_classes}) (num_classes={self.num_classes}); "
                f"got {format_examples(values)}. Encode classes as 0..{self.num_classes - 1}, or raise num_classes."
            )
        return y.long()

    def _catalog_label_kind(self):
        return "class", {"num_classes": self.num_classes}

    def compute_loss(self, output, y):
        return cross_entropy_loss(output, y, label_smoothing=self.label_smoothing, weight=self.class_weights)

    def log_metrics(self, split, output, y):
        metric = self.metrics[f"{split}_acc"]
        metric(output, y)
        self.log(f"finetuning/{split}_acc", metric, on_step=False, on_epoch=True, prog_bar=self.prog_bar)

    def predict_output(self, x):
        return F.softmax(self(x), dim=1)


_REGRESSION_LOSSES = {"mse": "mse", "l1": "l1", "mae": "l1"}


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
    ``forward`` returns shape (B,) for every batch size (also B = 1); ``predict`` returns (N, 1).
    Logged: ``finetuning/{train,val,test}_{loss,rmse}``.

    Examples
    --------
    >>> import torch
    >>> model = FinetuneableZoobotRegressor(name='tiny_cnn', unit_interval=True).eval()
    >>> model(torch.rand(1, 3, 32, 32)).shape
    torch.Size([1])
    """

    def __init__(self, loss: str = "mse", unit_interval: bool = False, **kwargs):
        if loss not in _REGRESSION_LOSSES:
            raise unknown_option_error("regression loss", loss, list(_REGRESSION_LOSSES))
        super().__init__(**kwargs)
        import torchmetrics

        self.loss_name = _REGRESSION_LOSSES[loss]
        self.loss_func = mse_loss if self.loss_name == "mse" else l1_loss
        self.unit_interval = bool(unit_interval)
        self.head = LinearHead(self.encoder_dim, 1, self.dropout_prob,
                               activation=torch.sigmoid if self.unit_interval else None)
        self.metrics = nn.ModuleDict({f"{split}_rmse": torchmetrics.MeanSquaredError(squared=False)
                                      for split in ("train", "val", "test")})
        self._save_all_hparams({"loss": self.loss_name, "unit_interval": self.unit_interval})

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Predictions (B,) for images (B, C, H, W)."""
        return self.head(self.encode(x))[:, 0]

    def _prepare_labels(self, y: torch.Tensor, batch_size: int) -> torch.Tensor:
        y = y.reshape(-1) if y.ndim == 2 and y.shape[1] == 1 else y
        if y.ndim != 1 or y.shape[0] != batch_size:
            raise ValueError(f"Regression labels must have shape (B,) = ({batch_size},), one label column; "
                             f"got shape {tuple(y.shape)}.")
        y = y.float()
        if self.unit_interval:
            bad = ~torch.isfinite(y) | (y < 0) | (y > 1)
            if bool(bad.any()):
                from zoobot.shared.errors import format_examples

                values = sorted({float(v) for v in y[bad].detach().cpu().tolist()})
                raise ValueError(f"unit_interval=True needs labels in [0, 1]; got {format_examples(values)}. "
                                 "Rescale the labels or use unit_interval=False.")
        return y

    def _check_catalog_labels(self, catalog, label_cols, name):
        if len(label_cols) != 1:
            raise ValueError(f"{type(self).__name__} predicts one number per galaxy, but the data module has "
                             f"{len(label_cols)} label columns {label_cols}; use one.")
        if self.unit_interval:
            values = catalog[label_cols[0]].to_numpy(dtype=float)
            bad = (values < 0) | (values > 1)
            if bad.any():
                from zoobot.shared.errors import format_examples

                raise ValueError(
                    f"{name}: unit_interval=True needs labels in [0, 1], but {int(bad.sum())} row(s) of "
                    f"{label_cols[0]!r} are outside, e.g. {format_examples(sorted(set(values[bad].tolist())))} "
                    f"(id_str {format_examples(catalog['id_str'][bad].tolist())}). Rescale the labels or use "
                    "unit_interval=False."
                )

    def compute_loss(self, output, y):
        return self.loss_func(output, y)

    def log_metrics(self, split, output, y):
        metric = self.metrics[f"{split}_rmse"]
        metric(output, y)
        self.log(f"finetuning/{split}_rmse", metric, on_step=False, on_epoch=True, prog_bar=self.prog_bar)

    def predict_output(self, x):
        return self(x)[:, None]


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
    Head: dropout (``dropout_prob``, off at prediction) -> linear -> ``1 + 100 * sigmoid``. Loss:
    :func:`finetune_dirichlet_loss` (sum over questions, mean over galaxies). ``predict`` returns concentrations
    (N, n_answers). Logged: ``finetuning/{train,val,test}_loss``.

    Calibration: after every validation epoch a per-question concentration scale is fitted to that
    epoch's validation votes and predictions (:mod:`zoobot.shared.calibration`); each checkpoint stores
    the scale of its own weights (key ``zoobot_calibration``) and ``predict_on_catalog.predict`` applies
    it (``calibrate=False``: raw). See docs/guides/training_recipe.md.

    Examples
    --------
    >>> from zoobot.shared import schemas
    >>> model = FinetuneableZoobotTree(schema=schemas.gz_rings_schema, name='tiny_cnn')
    >>> model.predict(np.random.rand(2, 3, 32, 32).astype('float32')).shape
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
        from zoobot.pytorch.estimators.define_model import get_pytorch_dirichlet_head

        self.schema = schema
        self.label_cols = list(schema.label_cols)
        self.question_index_groups = [tuple(int(i) for i in g) for g in schema.question_index_groups]
        self.head = get_pytorch_dirichlet_head(self.encoder_dim, len(self.label_cols), test_time_dropout=False,
                                               dropout_rate=self.dropout_prob)
        self._save_all_hparams({"schema": schema.to_dict()})
        #: post-hoc calibration record (zoobot.shared.calibration) of the current weights; None: uncalibrated
        self.calibration: dict | None = None
        self._validation_outputs: list | None = None

    # ------------------------------------------------------------------------- calibration
    @property
    def concentration_scale(self):
        """Per-question scale ``predict_on_catalog.predict`` applies (None when uncalibrated)."""
        return calibration.scale_from_record(self.calibration, [q.text for q in self.schema.questions])

    def on_validation_epoch_start(self):
        self._validation_outputs = None if self.trainer.sanity_checking else []

    def on_validation_epoch_end(self):
        """Fit the concentration scale to this epoch's validation votes (before ModelCheckpoint saves)."""
        outputs, self._validation_outputs = self._validation_outputs, None
        if outputs:
            alphas, counts = (torch.cat(parts).numpy() for parts in zip(*outputs))
            self.calibration = calibration.fit_record(counts, alphas, [q.text for q in self.schema.questions],
                                                      self.question_index_groups)

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        super().on_save_checkpoint(checkpoint)
        if self.calibration:
            checkpoint[calibration.CHECKPOINT_KEY] = self.calibration

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        super().on_load_checkpoint(checkpoint)  # the preprocessing record and the scheduler state, as the others
        self.calibration = checkpoint.get(calibration.CHECKPOINT_KEY) or None

    def _dict_label_keys(self, batch: dict) -> list[str]:
        missing = [c for c in self.label_cols if c not in batch]
        if missing:
            from zoobot.shared.errors import format_examples

            raise KeyError(f"dict batch lacks label columns of the schema: {format_examples(missing)}")
        return self.label_cols

    def _prepare_labels(self, y: torch.Tensor, batch_size: int) -> torch.Tensor:
        if y.ndim == 1:
            y = y[:, None]
        if y.shape != (batch_size, len(self.label_cols)):
            raise ValueError(
                f"Vote-count labels must have shape (B, n_answers) = ({batch_size}, {len(self.label_cols)}) for "
                f"schema {self.schema.name!r}; got {tuple(y.shape)}. Use the schema's label_cols as label columns."
            )
        return y.float()

    def _catalog_label_kind(self):
        return "counts", {}

    def _check_catalog_labels(self, catalog, label_cols, name):
        if list(label_cols) != self.label_cols:
            raise ValueError(
                f"The data module's label_cols must be the schema's label_cols in order (schema {self.schema.name!r}, "
                f"{len(self.label_cols)} answers); got {len(label_cols)} columns starting {list(label_cols)[:3]}. "
                "Use GalaxyDataModule(label_cols=schema.label_cols, ...)."
            )

    def compute_loss(self, output, y):
        if self._validation_outputs is not None and self.trainer.validating:
            self._validation_outputs.append((output.detach().float().cpu(), y.detach().float().cpu()))
        return finetune_dirichlet_loss(output, y, self.question_index_groups)

    def predict_output(self, x):
        return self(x)


# =============================================================================================
# 5. trainer and pretrained encoders
# =============================================================================================

def get_trainer(save_dir, file_template: str = "{epoch}", save_top_k: int = 1, max_epochs: int = 100,
                patience: int = 10, devices="auto", accelerator="auto", logger=None, overwrite: bool = False,
                **trainer_kwargs):
    """A Lightning ``Trainer`` set up for finetuning.

    One run per ``save_dir`` (docs/reliability.md): ``fit`` into a folder that holds another run's
    checkpoints is refused with :class:`~zoobot.shared.run_dir.SaveDirInUseError`, unless it resumes
    (``trainer.fit(..., ckpt_path=save_dir/checkpoints/last.ckpt)``) or ``overwrite=True``.

    Parameters
    ----------
    save_dir : str or path-like
        Checkpoints go to ``save_dir/checkpoints`` (best by ``finetuning/val_loss`` and
        ``last.ckpt``); metrics to ``save_dir/logs/metrics.csv`` unless ``logger`` is given.
    file_template : str, default '{epoch}'
        Checkpoint file name template (Lightning ``ModelCheckpoint(filename=...)``).
    save_top_k : int, default 1
    max_epochs : int, default 100
    patience : int, default 10
        Early stopping patience (epochs without improvement of ``finetuning/val_loss``).
    devices, accelerator
        As in Lightning (``'auto'``, ``'cpu'``, ``'gpu'``, ...).
    logger : Lightning logger, False or None
        None: a CSVLogger in ``save_dir/logs``; False: no logging.
    overwrite : bool, default False
        ``fit`` deletes the run already in ``save_dir`` (its checkpoints, logs and ``config.json``) and starts
        afresh, instead of being refused.
    **trainer_kwargs
        Passed to ``lightning.Trainer`` (``callbacks`` are added to ours).

    Returns
    -------
    lightning.Trainer
        ``trainer.checkpoint_callback.best_model_path`` is the best checkpoint after ``fit``.

    Examples
    --------
    >>> import tempfile
    >>> trainer = get_trainer(tempfile.mkdtemp(), accelerator='cpu', max_epochs=1)
    >>> trainer.checkpoint_callback.monitor
    'finetuning/val_loss'
    """
    from lightning.pytorch.callbacks import EarlyStopping, LearningRateMonitor, ModelCheckpoint
    from lightning.pytorch.loggers import CSVLogger

    from zoobot.pytorch.training.console import console_trainer_kwargs
    from zoobot.pytorch.training.callbacks import NoteEpoch, SeedEachEpoch

    from zoobot.shared.run_dir import check_save_dir

    check_save_dir(save_dir, "the finetuning checkpoints and logs")
    check_int("max_epochs", max_epochs, minimum=1)  # Lightning reads -1 as "no limit": a finetune that never ends
    save_dir = pathlib.Path(save_dir)
    checkpoint_callback = ModelCheckpoint(
        dirpath=str(save_dir / "checkpoints"), filename=file_template, monitor=MONITOR, mode="min",
        save_top_k=save_top_k, save_last=True)
    callbacks = [checkpoint_callback,
                 EarlyStopping(monitor=MONITOR, mode="min", patience=patience, check_finite=True), NoteEpoch(),
                 SeedEachEpoch(None)]  # the model's seed per epoch: a resumed finetune repeats an uninterrupted one
    if logger is None:
        logger = CSVLogger(save_dir=str(save_dir), name="logs", version="")
    if logger:
        callbacks.append(LearningRateMonitor(logging_interval="epoch"))
    callbacks.extend(trainer_kwargs.pop("callbacks", None) or [])
    # every metric is logged per epoch, so the interval only decides whether Lightning warns about short epochs
    trainer_kwargs.setdefault("log_every_n_steps", 1)
    trainer_kwargs = console_trainer_kwargs({**trainer_kwargs, "callbacks": callbacks})  # quiet, log-file friendly
    return _FinetuneTrainer(default_root_dir=str(save_dir), max_epochs=max_epochs, devices=devices,
                            accelerator=accelerator, logger=logger, overwrite=overwrite, **trainer_kwargs)


class _FinetuneTrainer(L.Trainer):
    """Lightning's ``Trainer`` that claims its ``save_dir`` when ``fit`` starts (one run per ``save_dir``).

    Without the claim, Lightning's ``ModelCheckpoint`` writes ``last-v1.ckpt`` / ``epoch=0-v1.ckpt`` next to
    another run's ``last.ckpt``. The first ``fit`` of this trainer claims the folder; later ones continue its run.
    """

    def __init__(self, *args, overwrite: bool = False, **kwargs):
        super().__init__(*args, **kwargs)
        self._overwrite = bool(overwrite)
        self._claimed = False

    def fit(self, model, train_dataloaders=None, val_dataloaders=None, datamodule=None, ckpt_path=None, **kwargs):
        from zoobot.shared.run_dir import claim_save_dir_for_fit

        if not self._claimed:
            claim_save_dir_for_fit(self.default_root_dir, resuming=ckpt_path is not None, overwrite=self._overwrite,
                                   last="last.ckpt", clear=self.is_global_zero)
            self._claimed = True
        return super().fit(model, train_dataloaders, val_dataloaders, datamodule, ckpt_path, **kwargs)


def load_pretrained_zoobot(checkpoint_loc) -> nn.Module:
    """The encoder of a saved ``ZoobotTree`` (or finetuned model) checkpoint, offline.

    Reads the checkpoint with ``torch.load(weights_only=True)``, rebuilds the encoder from the
    stored architecture and channels, and loads its weights.

    Parameters
    ----------
    checkpoint_loc : str or path-like

    Returns
    -------
    nn.Module
        The encoder, in train mode, on the CPU.

    Raises
    ------
    FileNotFoundError
        No such file.
    CheckpointVersionError
        (E11) written by a newer, incompatible zoobot.
    ValueError
        The checkpoint does not record an architecture zoobot can rebuild.
    """
    from zoobot.shared.checkpoints import VERSION_KEYS, check_format_version

    checkpoint = _load_checkpoint_file(checkpoint_loc)
    hparams = dict(checkpoint.get("hyper_parameters") or {})
    versions = hparams if "format_version" in hparams else checkpoint
    check_format_version({k: versions.get(k) for k in VERSION_KEYS if versions.get(k) is not None}, checkpoint_loc)
    architecture = hparams.get("architecture") or hparams.get("architecture_name") or hparams.get("model_architecture")
    if not architecture:
        raise ValueError(
            f"{checkpoint_loc} records no encoder architecture (hyperparameter 'architecture_name' of ZoobotTree or "
            "'architecture' of a finetuned model), so its encoder cannot be rebuilt. Build the encoder yourself and "
            "pass encoder=."
        )
    from zoobot.shared.training_config import resolve_architecture_name

    architecture = resolve_architecture_name(architecture)
    channels = int(hparams.get("channels") or 1)
    build_kwargs = hparams.get("encoder_kwargs") or hparams.get("timm_kwargs") or {}
    encoder = pretrained_encoders.rebuild_encoder(architecture, channels, build_kwargs)
    prefixes = ("encoder._orig_mod.", "encoder.")
    state = {}
    for key, value in checkpoint["state_dict"].items():
        for prefix in prefixes:
            if key.startswith(prefix):
                state[key[len(prefix):]] = value
                break
    if not state:
        raise ValueError(f"{checkpoint_loc} holds no encoder weights (no 'encoder.' keys in its state_dict).")
    encoder.load_state_dict(state, strict=True)
    return encoder


#: Upstream v1 name of :func:`load_pretrained_zoobot`.
load_pretrained_encoder = load_pretrained_zoobot
