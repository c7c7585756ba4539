"""The Lightning callbacks that training from scratch and finetuning assemble their runs from.

- :class:`RecordRun` writes ``config.json`` and the split catalogs when training starts;
- :class:`NoteEpoch` tells :mod:`zoobot.shared.interrupts` which epoch runs;
- :class:`NonFiniteLossGuard` stops at the first NaN/infinite loss with an error naming the epoch and step;
- :class:`SeedEachEpoch` reseeds every epoch, so that a resumed run repeats an uninterrupted one;
- :class:`LearningRateLogger` logs the learning rate as ``lr`` (the name both backends use);
- :class:`CheckCatalogLabels` and :class:`FeatureReplayCallback`, which every finetuning model adds to its fits
  (``configure_callbacks``): label checks before any model work, and frozen-encoder features computed once.

Checkpoints and early stopping are Lightning's own ``ModelCheckpoint`` and ``EarlyStopping``.
See docs/how_the_code_fits_together.md.
"""
from __future__ import annotations

import contextlib
import logging
import math
import time
import warnings

import lightning as L
import torch

from zoobot.pytorch.training.feature_cache import MIN_HIT_RATE, encode_rows, is_deterministic_transform
from zoobot.shared.training_config import write_run_config, write_split_catalogs

__all__ = ["RecordRun", "NoteEpoch", "NonFiniteLossGuard", "SeedEachEpoch", "LearningRateLogger",
           "CheckCatalogLabels", "check_datamodule_labels", "FeatureReplayCallback"]

#: The finetuning callbacks log where users of finetuning look (and always have): the finetune module's logger.
logger = logging.getLogger("zoobot.pytorch.training.finetune")


class RecordRun(L.Callback):
    """Writes ``config.json`` (:meth:`~zoobot.shared.training_config.TrainConfig.to_record`) and the split
    catalogs when training starts, on the main process only.

    Not before: a run that fails while it is set up (e.g. asking for a GPU on a CPU-only machine) leaves the
    folder as it was.
    """

    def __init__(self, save_dir, config, catalogs, backend: str = "pytorch"):
        self.save_dir, self.config, self.catalogs, self.backend = save_dir, config, catalogs, backend

    def on_fit_start(self, trainer, pl_module):
        if trainer.is_global_zero:
            write_run_config(self.save_dir, self.config, backend=self.backend)
            write_split_catalogs(self.save_dir, *self.catalogs)


class NoteEpoch(L.Callback):
    """Tells :mod:`zoobot.shared.interrupts` which epoch runs, for the message of an interrupted run."""

    def on_train_epoch_start(self, trainer, pl_module):
        from zoobot.shared import interrupts

        interrupts.note_epoch(trainer.current_epoch, trainer.max_epochs)


class NonFiniteLossGuard(L.Callback):
    """Stop training with a ``FloatingPointError`` as soon as the training loss or the monitored validation
    loss is NaN or infinite, naming the epoch and step.

    Kept next to Lightning's ``EarlyStopping(check_finite=True)`` because that one only looks at the
    monitored metric once per epoch and stops quietly; this guard checks every training step *before* the
    backward pass, so the weights stay those of the last finite step, and raises an error that says where
    and why.

    Parameters
    ----------
    monitor : str
        The validation metric checked after each validation run.
    """

    def __init__(self, monitor: str = "validation/supervised_loss"):
        self.monitor = monitor

    def on_before_backward(self, trainer, pl_module, loss):
        if isinstance(loss, torch.Tensor) and not bool(loss.detach().isfinite().all()):
            value = float(loss.detach().float().mean())
            batch_idx = trainer.fit_loop.epoch_loop.batch_progress.current.ready - 1
            raise FloatingPointError(non_finite_message("training loss", value, trainer, batch_idx))

    def on_validation_end(self, trainer, pl_module):
        if trainer.sanity_checking:
            return
        value = trainer.callback_metrics.get(self.monitor)
        if value is not None and not math.isfinite(float(value)):
            raise FloatingPointError(non_finite_message(self.monitor, float(value), trainer, None))


def non_finite_message(what: str, value: float, trainer, batch_idx) -> str:
    """The error of :class:`NonFiniteLossGuard`: what became ``value``, where, the usual causes."""
    where = f"epoch {trainer.current_epoch}, step {trainer.global_step}"
    if batch_idx is not None:
        where += f" (batch {batch_idx} of the epoch)"
    return (
        f"The {what} became {value} at {where}: training stopped. Usual causes: a learning_rate too high for "
        "this batch size, or corrupt labels/images. The last finite checkpoint is in the checkpoints folder."
    )


class SeedEachEpoch(L.Callback):
    """Reseed Python, NumPy and torch at the start of every training epoch from ``(random_state, epoch)``.

    A run resumed from ``last.ckpt`` then draws the same augmentations and dropout masks as an
    uninterrupted one (the batch order is seeded the same way by the data module's sampler).

    Parameters
    ----------
    random_state : int or None
        None: the module's ``seed`` attribute (finetuning models), if it has one.
    """

    def __init__(self, random_state: int | None):
        self.random_state = None if random_state is None else int(random_state)

    def on_train_epoch_start(self, trainer, pl_module):
        random_state = self.random_state if self.random_state is not None else getattr(pl_module, "seed", None)
        if random_state is None:
            return
        seed = (int(random_state) * 1_000_003 + trainer.current_epoch) % 2**32
        L.seed_everything(seed, workers=True, verbose=False)


class LearningRateLogger(L.Callback):
    """Log the learning rate of each epoch as ``lr`` (the metric name both backends use).

    Lightning's ``LearningRateMonitor`` (used by ``finetune.get_trainer``) names the metric after the
    optimiser (``lr-AdamW``) unless a scheduler is configured with a name, and resumed runs compare
    ``metrics.csv`` columns across backends.
    """

    def on_train_epoch_start(self, trainer, pl_module):
        if trainer.optimizers:
            lr = float(trainer.optimizers[0].param_groups[0]["lr"])
            pl_module.log("lr", lr, on_step=False, on_epoch=True, batch_size=1)


# ---------------------------------------------------------------------------------------------
# finetuning: label checks and feature replay
# ---------------------------------------------------------------------------------------------


class CheckCatalogLabels(L.Callback):
    """Check every label of the data module's catalogs when a finetuning fit starts, before any model work
    (E2, E14), naming rows: :func:`check_datamodule_labels`."""

    def on_fit_start(self, trainer, pl_module):
        check_datamodule_labels(pl_module, getattr(trainer, "datamodule", None))


def check_datamodule_labels(model, datamodule) -> None:
    """Validate the labels of ``datamodule``'s train/val/test catalogs for the task of ``model``.

    Works with data modules that expose ``label_cols`` and ``train_catalog``/``val_catalog``/``test_catalog``
    DataFrames (``GalaxyDataModule``); others are checked batch by batch. The task decides the label kind
    (``model._catalog_label_kind()``) and any extra check (``model._check_catalog_labels``).

    Raises
    ------
    CatalogError
        Missing or invalid labels, naming the catalog, rows and ``id_str``.
    """
    label_cols = list(getattr(datamodule, "label_cols", None) or [])
    if not label_cols:
        return
    import pandas as pd

    from zoobot.shared.catalogs import validate_catalog

    kind, extra = model._catalog_label_kind()
    for split in ("train", "val", "test"):
        catalog = getattr(datamodule, f"{split}_catalog", None)
        if isinstance(catalog, pd.DataFrame) and len(catalog) and all(c in catalog for c in label_cols):
            validate_catalog(catalog, label_cols=label_cols, require_file_loc=False, label_kind=kind,
                             name=f"{split}_catalog", **extra)
            model._check_catalog_labels(catalog, label_cols, f"{split}_catalog")


class FeatureReplayCallback(L.Callback):
    """Frozen-encoder finetuning without re-running the encoder: see :mod:`zoobot.pytorch.training.feature_cache`.

    At ``on_fit_start`` (the last hook before Lightning makes the loaders) every train (and val) row of a
    ``GalaxyDataModule`` with a deterministic transform is encoded once and the datasets switch to serving
    features (*replay*); otherwise the model's content-keyed
    :class:`~zoobot.pytorch.training.feature_cache.FeatureCache` skips the encoder for images it has seen,
    and switches itself off when augmentations make every epoch's images new. At ``on_fit_end`` the datasets serve images again.

    Each finetuning model owns one (``model.feature_replay``) and adds it to every fit
    (``configure_callbacks``), so it works with ``get_trainer`` and with a plain ``lightning.Trainer``.
    """

    def __init__(self):
        #: Stages ('train', 'val') whose batches are features during the current fit.
        self.stages: set = set()
        self.datamodule = None
        self._paused = False
        self._cache_warned = False

    # --------------------------------------------------------------------- what the model asks
    def serves_features(self, trainer, stage: str) -> bool:
        """True while this fit's batches of ``stage`` are precomputed features."""
        if not self.stages or self._paused or trainer is None or trainer.state.fn != "fit":
            return False
        if not (trainer.training or trainer.validating or trainer.sanity_checking):
            return False
        return stage in self.stages

    @contextlib.contextmanager
    def paused(self):
        """Images, not features, inside the block (``predict`` called during a fit)."""
        paused, self._paused = self._paused, True
        try:
            yield
        finally:
            self._paused = paused

    # --------------------------------------------------------------------- hooks
    def on_fit_start(self, trainer, pl_module):
        cache = pl_module.feature_cache
        cache.clear()
        if pl_module.cache_features is None and _augments_training_images(trainer):
            cache.disable("train")  # known random augmentations: nothing to reuse (val still cached)
        self._cache_warned = False
        self.start(trainer, pl_module)

    def on_fit_end(self, trainer, pl_module):
        self.stop()
        pl_module.feature_cache.clear()

    def on_exception(self, trainer, pl_module, exception):
        self.stop()  # a failed fit gives the datasets their images back too

    def on_train_epoch_start(self, trainer, pl_module):
        pl_module.feature_cache.reset_stats("train")

    def on_train_epoch_end(self, trainer, pl_module):
        if not _caching_allowed(pl_module):
            return
        cache, epoch = pl_module.feature_cache, trainer.current_epoch
        rate = cache.hit_rate("train")
        if epoch >= 1 and rate is not None and rate < MIN_HIT_RATE and cache.enabled("train"):
            cache.disable("train")
            message = (
                f"cache_features: only {rate:.0%} of the training images in epoch {epoch} were seen "
                "before (random augmentations change them every epoch), so cached features cannot be reused; "
                "caching of training images is off for the rest of this fit. For fast frozen-encoder finetuning "
                "use a deterministic training transform."
            )
            if pl_module.cache_features is True and not self._cache_warned:
                warnings.warn(message, UserWarning, stacklevel=2)
                self._cache_warned = True
            else:
                logger.info(message)

    # --------------------------------------------------------------------- replay
    def start(self, trainer, pl_module) -> None:
        """Encode every train (and val) row once and switch the data module's datasets to serve features."""
        self.stages, self.datamodule = set(), None
        if not _caching_allowed(pl_module):
            return
        reason = self.blocker(trainer, pl_module)
        if reason is not None:
            logger.info("feature replay not used: %s.", reason)
            return
        datamodule = trainer.datamodule
        datasets = {"train": datamodule.train_dataset}
        val = getattr(datamodule, "val_dataset", None)
        if val is not None and len(val) and is_deterministic_transform(val.transform):
            datasets["val"] = val
        n_bytes = sum(len(d) for d in datasets.values()) * pl_module.encoder_dim * 4
        if n_bytes > pl_module.feature_cache.max_bytes:
            logger.info("feature replay not used: the features of %s rows need %d bytes, more than the cache's "
                        "max_bytes=%d.", " + ".join(str(len(d)) for d in datasets.values()), n_bytes,
                        pl_module.feature_cache.max_bytes)
            return
        start = time.perf_counter()
        features = self._encode(trainer, pl_module, datasets)
        for stage, dataset in datasets.items():
            dataset.use_features(features[stage])
        self.stages, self.datamodule = set(datasets), datamodule
        logger.info("feature replay: %d train + %d val rows encoded once (%.1f s); later epochs read no images%s.",
                    len(datasets["train"]), len(datasets["val"]) if "val" in datasets else 0,
                    time.perf_counter() - start,
                    "" if "val" in datasets else " (validation images are read every epoch: random val transform)")

    @staticmethod
    def _encode(trainer, pl_module, datasets: dict) -> dict:
        """Features of every row of ``datasets``, with the fit's precision and the encoder in eval mode."""
        precision = getattr(trainer, "precision_plugin", None)
        forward_context = getattr(precision, "forward_context", None) or contextlib.nullcontext
        device = pl_module.device

        def encode_batch(images: torch.Tensor) -> torch.Tensor:
            images = images.to(device)
            pl_module._check_input(images)
            with forward_context():
                return pl_module._run_encoder(images)

        encoder_was_training = pl_module.encoder.training
        pl_module.encoder.eval()  # a frozen encoder is a fixed function of the image
        try:
            return {stage: encode_rows(encode_batch, trainer.datamodule.encoding_dataloader(stage), len(dataset),
                                       pl_module.encoder_dim, desc=f"feature replay: encoding {stage} images once")
                    for stage, dataset in datasets.items()}
        finally:
            pl_module.encoder.train(encoder_was_training)
            pl_module._inputs_checked = False

    def stop(self) -> None:
        """Give the data module's datasets their images back (test/predict after fit read files again)."""
        if self.datamodule is not None:
            self.datamodule.restore_images()
        self.stages, self.datamodule = set(), None

    @staticmethod
    def blocker(trainer, pl_module) -> str | None:
        """Why this fit cannot replay features (None if it can); see :mod:`zoobot.pytorch.training.feature_cache`."""
        from zoobot.pytorch.datasets.galaxy_datamodule import GalaxyDataModule
        from zoobot.pytorch.datasets.galaxy_dataset import GalaxyDataset

        datamodule = getattr(trainer, "datamodule", None)
        if not isinstance(datamodule, GalaxyDataModule):
            return ("the fit's data does not come from zoobot's GalaxyDataModule (images are recognised by content "
                    "instead, and still read every epoch)")
        overridden = [name for name in ("train_dataloader", "val_dataloader", "_dataset", "_loader")
                      if getattr(type(datamodule), name) is not getattr(GalaxyDataModule, name)]
        if overridden:
            return f"{type(datamodule).__name__} overrides {', '.join(overridden)}"
        if pl_module.visualize_images:
            return "visualize_images=True needs the training images"
        if trainer.train_dataloader is not None or trainer.val_dataloaders is not None:
            return "this Trainer already holds data loaders from an earlier fit"
        dataset = getattr(datamodule, "train_dataset", None)
        if not isinstance(dataset, GalaxyDataset) or len(dataset) == 0:
            return "the data module has no training dataset"
        if not is_deterministic_transform(dataset.transform):
            return (f"the training transform {dataset.transform!r} is random or unknown, so every epoch sees other "
                    "images. For fast frozen-encoder finetuning use a deterministic one, e.g. GalaxyDataModule(..., "
                    "train_transform=EvalTransform(channels=3, resize_after_crop=224))")
        return None


def _caching_allowed(pl_module) -> bool:
    return pl_module.cache_features is not False and pl_module.encoder_is_frozen


def _augments_training_images(trainer) -> bool:
    """True when the fit's data module trains on zoobot's random augmentations (``TrainTransform``)."""
    datamodule = getattr(trainer, "datamodule", None) if trainer is not None else None
    transform = getattr(datamodule, "train_transform", None)
    if transform is None:
        return False
    from zoobot.pytorch.datasets.transforms import TrainTransform

    return isinstance(transform, TrainTransform)
