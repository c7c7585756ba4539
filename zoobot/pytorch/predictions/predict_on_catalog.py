"""Predict every galaxy of a catalog with a PyTorch model, and save the results
(docs/components/predictions_and_representations.md).

:func:`predict` works with any zoobot model: a ZoobotTree (Dirichlet concentrations per answer), the
finetuned classifier (class probabilities), regressor (one value) and tree, or an encoder alone
(features). The argument checks and the chunked, resumable writing are
:mod:`zoobot.shared.prediction_runner`'s. What is PyTorch's own: :func:`describe_model`, **one**
:class:`~zoobot.pytorch.datasets.GalaxyDataModule` loader for all rows (carrying each image's row index),
and a plain loop under ``torch.inference_mode`` where Monte Carlo dropout runs the encoder once and the
head ``n_samples`` times. With several devices (``trainer_kwargs={'devices': 4}``) a Lightning Trainer
shards the catalog (DDP) and the results are gathered by row index.
"""
from __future__ import annotations

import contextlib
import os
from typing import Callable, Iterator, Sequence

import lightning as L
import numpy as np
import pandas as pd
import torch
from torch import nn

from zoobot.shared import calibration
from zoobot.shared.errors import unknown_option_error
from zoobot.shared import prediction_runner  # run_chunked_prediction is called through the module (tests swap it)
from zoobot.shared.prediction_runner import (
    ModelSpec,
    check_predict_arguments,
    plan_prediction,
    requested_dropout,
)
from zoobot.shared.validation import is_int

__all__ = ["predict", "describe_model", "ModelSpec"]

_DROPOUT_TYPES = (nn.modules.dropout._DropoutNd,)
# precisions (Lightning spelling) that run under autocast on a GPU
_AUTOCAST = {"16-mixed": torch.float16, "16": torch.float16, 16: torch.float16,
             "bf16-mixed": torch.bfloat16, "bf16": torch.bfloat16}


def predict(
    catalog,
    model,
    n_samples=1,
    label_cols=None,
    save_loc=None,
    datamodule_kwargs=None,
    trainer_kwargs=None,
    *,
    test_time_dropout=None,
    test_time_augmentation=False,
    on_bad_image="record",
    check_valid_paths=True,
    chunk_size=4096,
    shard=None,
    calibrate=True,
):
    """Predict the galaxies of a catalog; optionally save the predictions to a file.

    (Over 80 lines only for its numpydoc; the body is a dozen lines.)

    Parameters
    ----------
    catalog : pandas.DataFrame
        Columns ``id_str`` (unique) and ``file_loc`` (jpg/png/fits paths); other columns are ignored.
    model : torch.nn.Module
        A ZoobotTree, a finetuned model (classifier, regressor, tree) or an encoder. The preprocessing
        it records (``model.preprocessing``: size, crop, FITS scaling; docs/components/preprocessing.md)
        is used unless ``datamodule_kwargs`` say otherwise; else its ``channels`` and ``input_size``
        attributes (defaults: channels of the first convolution, 224 pixels).
    n_samples : int, default 1
        Predictions per galaxy. With dropout active (MC dropout) they differ: their spread measures
        the model's uncertainty.
    label_cols : list of str, optional
        One name per model output. Default: from the model (schema label columns, ``class_{i}``,
        ``prediction`` or ``feat_{i}``).
    save_loc : str or path-like, optional
        Write the predictions here (``.parquet`` recommended, ``.csv``, ``.hdf5``/``.h5``; layout in
        docs/components/predictions_and_representations.md).
        Failed images are listed in ``<stem>_failures.csv``.
    datamodule_kwargs : dict, optional
        Overrides for the :class:`~zoobot.pytorch.datasets.GalaxyDataModule`, e.g. ``batch_size``,
        ``num_workers``, ``resize_after_crop``, ``crop_scale_bounds``, ``fits_scaling``. A value that
        contradicts the model's recorded preprocessing is used, with one warning naming both.
    trainer_kwargs : dict, optional
        Where to run: ``accelerator`` ('auto', 'cpu', 'gpu'), ``devices`` (an int > 1 or a list of
        several devices runs one process per device with a Lightning Trainer), ``num_nodes``,
        ``precision`` ('16-mixed', 'bf16-mixed' autocast on GPU), ``strategy``.
    test_time_dropout : bool, optional (keyword-only)
        None: follow the model (a ZoobotTree built with ``test_time_dropout=True`` samples with MC
        dropout; finetuned models do not). True/False: force dropout on/off.
    test_time_augmentation : bool, default False (keyword-only)
        Use the random training augmentations (one new augmentation per sample); otherwise images are
        centre-cropped and resized deterministically.
    on_bad_image : {'record', 'raise'}, default 'record' (keyword-only)
        'record': an unreadable image gives a NaN row, is listed in the failures file, and one warning
        sums up the failures. 'raise': stop with ImageLoadError (E6).
    check_valid_paths : bool, default True (keyword-only)
        Check that every file exists before starting (E5). Set False to record missing files as failures.
    chunk_size : int, default 4096 (keyword-only)
        Rows per finished chunk stored in ``<save_loc>.partial/`` (what a killed run keeps) and per row
        group of a parquet file. Images are read by one loader whatever the chunk size.
    shard : tuple or str, optional (keyword-only)
        Predict only part ``rank`` of ``world_size`` parts of the catalog (a stable hash of ``id_str``):
        ``(rank, world_size)``, ``'R/N'`` or ``'auto'`` (from torchrun/SLURM/TF_CONFIG variables). The
        part is written to ``<stem>.part-R-of-N<suffix>`` and the returned rows are the part's, in catalog
        order; merge the parts with :func:`zoobot.shared.sharding.merge_parts` (docs/guides/scaling_out.md).
    calibrate : bool, default True (keyword-only)
        Multiply a tree model's concentrations by its per-question calibration scale
        (``model.concentration_scale``, fitted on the validation votes by ``train()`` or tree finetuning
        and stored in the checkpoint; see docs/guides/training_recipe.md). False: the raw concentrations.
        Vote fractions are the same either way. Models without a scale are unaffected.

    Returns
    -------
    numpy.ndarray
        float32 (n_galaxies, n_outputs, n_samples), rows in catalog order (matched by ``id_str``);
        NaN rows for images that could not be read.

    Raises
    ------
    CatalogError
        (E1) ``id_str`` or ``file_loc`` missing; (E3) duplicate ``id_str``; (E4) empty catalog.
    FileNotFoundError
        (E5) missing files when ``check_valid_paths=True``.
    ImageLoadError
        (E6) an unreadable image when ``on_bad_image='raise'``.
    ChannelMismatchError
        (E7) ``datamodule_kwargs['greyscale']`` contradicts the model's channels.
    ValueError
        (E10) ``label_cols`` of the wrong length; (E13) unknown file extension or option; ``chunk_size``
        not a positive integer; a malformed ``shard``.

    Warns
    -----
    UserWarning
        Once, with the number of images that failed (``on_bad_image='record'``). Once, when
        ``datamodule_kwargs`` contradict the recorded preprocessing; when FITS images meet a model
        trained on JPEG/PNG (or the reverse); when a loaded model records no training size.

    Examples
    --------
    >>> from zoobot.pytorch.predictions import predict_on_catalog
    >>> predictions = predict_on_catalog.predict(catalog, model, n_samples=5,
    ...                                          save_loc='predictions.parquet')  # doctest: +SKIP
    >>> predictions.shape  # doctest: +SKIP
    (1000, 34, 5)
    """
    args = check_predict_arguments(
        n_samples=n_samples, save_loc=save_loc, datamodule_kwargs=datamodule_kwargs, trainer_kwargs=trainer_kwargs,
        test_time_dropout=test_time_dropout, test_time_augmentation=test_time_augmentation,
        on_bad_image=on_bad_image, chunk_size=chunk_size, shard=shard)
    spec = describe_model(model)
    plan = plan_prediction(catalog, spec, label_cols, args, check_valid_paths=check_valid_paths,
                           calibrate=calibrate, layout="NCHW")
    runner = _Runner(plan, requested_dropout(model, args.test_time_dropout))
    common = plan.run_kwargs(save_loc, "pytorch", runner.dropout_active, lambda: _weight_records(model))
    if runner.distributed:
        return _predict_distributed(runner, plan, save_loc, common)
    rows = calibration.scaled_rows(runner.predict_rows, plan.scale, spec.schema)
    return prediction_runner.run_chunked_prediction(plan.catalog, rows, save_loc=save_loc, **common)


def _predict_distributed(runner, plan, save_loc, common) -> np.ndarray:
    """Every process predicts its shard of the whole catalog, the results are gathered by row index, then the
    chunked writer only takes them over (only the first process writes files)."""
    if plan.args.shard is not None:
        raise ValueError("shard runs one process per part; give one device per process (trainer_kwargs "
                         "devices=1) and launch one process per part instead (docs/guides/scaling_out.md).")
    catalog = plan.catalog
    everything, failures = runner.predict_distributed(catalog)
    positions = pd.Index(catalog["id_str"])

    def gathered_rows(rows):
        yield (np.arange(len(rows)), everything[positions.get_indexer(rows["id_str"])],
               failures[failures["id_str"].isin(set(rows["id_str"]))])

    if not runner.is_global_zero:
        common.pop("resume_key", None)
    predictions = prediction_runner.run_chunked_prediction(
        catalog, calibration.scaled_rows(gathered_rows, plan.scale, plan.spec.schema),
        save_loc=save_loc if runner.is_global_zero else None, progress=runner.is_global_zero, **common
    )
    runner.barrier()
    return predictions


# ---------------------------------------------------------------------------------------------
# what kind of model is it?
# ---------------------------------------------------------------------------------------------


def _class_names(model) -> set:
    return {cls.__name__ for cls in type(model).__mro__}


def describe_model(model) -> ModelSpec:
    """Read a model's output kind, default label columns, channels and input size.

    Parameters
    ----------
    model : torch.nn.Module
        A ZoobotTree, finetuned model, ZoobotEncoder or any encoder mapping (B, C, H, W) to (B, D).

    Returns
    -------
    ModelSpec

    Raises
    ------
    TypeError
        If ``model`` is not a torch module (e.g. a checkpoint path).

    Examples
    --------
    >>> from zoobot.shared import schemas
    >>> from zoobot.pytorch.estimators.define_model import ZoobotTree
    >>> spec = describe_model(ZoobotTree(2, schema=schemas.gz_rings_schema, architecture_name='tiny_cnn'))
    >>> spec.kind, spec.label_cols, spec.channels
    ('tree', ['ring_yes', 'ring_no'], 1)
    """
    if not isinstance(model, nn.Module):
        hint = ""
        if isinstance(model, (str, os.PathLike)):
            hint = (" To predict with a saved model, load it first, e.g. "
                    "ZoobotTree.load_from_checkpoint(path) or FinetuneableZoobotClassifier.load_from_checkpoint(path).")
        raise TypeError(f"model must be a torch.nn.Module (a zoobot model), got {type(model).__name__}.{hint}")
    names = _class_names(model)
    channels = _model_channels(model)
    input_size = int(getattr(model, "input_size", None) or 224)
    schema = getattr(model, "schema", None)
    if not hasattr(schema, "label_cols"):
        schema = None

    if "FinetuneableZoobotClassifier" in names:
        from zoobot.shared.save_predictions import classifier_output_names

        n = int(getattr(model, "num_classes"))
        trained_on = (getattr(model, "hparams", None) or {}).get("label_cols")  # recorded by fit
        return ModelSpec(model, "generic", "classifier", classifier_output_names(n, trained_on), channels,
                         input_size)
    if "FinetuneableZoobotRegressor" in names:
        return ModelSpec(model, "generic", "regressor", ["prediction"], channels, input_size)
    if {"ZoobotTree", "FinetuneableZoobotTree"} & names or schema is not None:
        if schema is not None:
            return ModelSpec(model, "tree", "tree", list(schema.label_cols), channels, input_size, schema)
        n = int(getattr(model, "output_dim"))
        # no schema (upstream v1 question_index_groups): concentrations without question names
        return ModelSpec(model, "generic", "tree", [f"answer_{i}" for i in range(n)], channels, input_size)
    dim = _feature_dim(model, channels)
    return ModelSpec(model, "generic", "features", [f"feat_{i}" for i in range(dim)], channels, input_size)


def _model_channels(model) -> int:
    channels = getattr(model, "channels", None)
    if is_int(channels) and channels in (1, 3):
        return int(channels)
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            return int(module.in_channels)
    return 3


def _feature_dim(model, channels: int) -> int:
    for attr in ("encoder_dim", "num_features"):
        value = getattr(model, attr, None)
        if is_int(value) and value > 0:
            return int(value)
    from zoobot.pytorch.estimators.define_model import get_encoder_dim

    return get_encoder_dim(model, channels=channels)


def _weight_records(model: nn.Module):
    """``(header, bytes)`` of every tensor of the model, for :func:`~zoobot.shared.prediction_runner.resume_key`."""
    for name, tensor in model.state_dict().items():
        tensor = tensor.detach().cpu().contiguous().reshape(-1)
        yield f"{name}|{tensor.dtype}|{tensor.numel()}", tensor.view(torch.uint8).numpy().tobytes()


# ---------------------------------------------------------------------------------------------
# dropout control
# ---------------------------------------------------------------------------------------------


@contextlib.contextmanager
def _inference_state(model: nn.Module, dropout) -> Iterator[None]:
    """Eval mode, with dropout layers forced on/off (``dropout`` True/False) or left (None); restored after."""
    was_training = {m: m.training for m in model.modules()}
    mc_before = {m: m.mc_active for m in model.modules() if hasattr(m, "mc_active")}
    model.eval()
    try:
        if dropout is not None:
            for module in model.modules():
                if isinstance(module, _DROPOUT_TYPES):
                    module.train(dropout)
                    if hasattr(module, "mc_active"):
                        module.mc_active = dropout
        yield
    finally:
        for module, training in was_training.items():
            module.training = training
        for module, active in mc_before.items():
            module.mc_active = active


def _active_dropout(module: nn.Module) -> list:
    return [m for m in module.modules() if isinstance(m, _DROPOUT_TYPES) and m.p > 0
            and (m.training or getattr(m, "mc_active", False))]


def _sampler(spec: ModelSpec) -> Callable[[torch.Tensor, int], torch.Tensor]:
    """``run(x, n) -> (B, outputs, n)`` for the model in its current (inference) state.

    Without active dropout the model runs once and the result is repeated. With dropout only in the
    head of a zoobot model (``forward = head(encode(x))``: ZoobotTree and the finetuned models) the
    encoder runs once and the head ``n`` times. Otherwise the whole model runs ``n`` times.
    """
    model = spec.model
    active = _active_dropout(model)
    post = _postprocess(spec.family)
    head = getattr(model, "head", None)
    splits = bool({"ZoobotTree", "FinetuneableZoobotAbstract"} & _class_names(model))
    encode = getattr(model, "encode", None) if splits else None
    head_only = (
        callable(encode) and isinstance(head, nn.Module)
        and {id(m) for m in active} <= {id(m) for m in head.modules()}
    )
    predict_output = getattr(model, "predict_output", None)
    if callable(predict_output):  # finetuned models: softmax / (B, 1) / concentrations
        def full(x):
            return _as_2d(predict_output(x)).float()
    else:
        def full(x):
            return post(model(x))

    def run(x: torch.Tensor, n: int) -> torch.Tensor:
        if not active:
            return full(x).unsqueeze(-1).expand(-1, -1, n)
        if head_only:
            features = encode(x)
            return torch.stack([post(head(features)) for _ in range(n)], dim=-1)
        return torch.stack([full(x) for _ in range(n)], dim=-1)

    return run


def _as_2d(out) -> torch.Tensor:
    out = out[0] if isinstance(out, (tuple, list)) else out
    return out.reshape(out.shape[0], -1)


def _postprocess(family: str) -> Callable[[torch.Tensor], torch.Tensor]:
    """Raw model/head output -> what predict returns (classifier logits -> softmax probabilities)."""
    if family == "classifier":
        return lambda out: torch.softmax(_as_2d(out).float(), dim=1)
    return lambda out: _as_2d(out).float()


# ---------------------------------------------------------------------------------------------
# running the model
# ---------------------------------------------------------------------------------------------


def _device_request(trainer_kwargs: dict) -> tuple[str, list, int]:
    """(accelerator 'cpu'|'cuda', device indices, nodes) from Lightning-style trainer kwargs."""
    accelerator = str(trainer_kwargs.get("accelerator", "auto")).lower()
    devices = trainer_kwargs.get("devices", "auto")
    nodes = int(trainer_kwargs.get("num_nodes", 1))
    if accelerator not in ("auto", "cpu", "gpu", "cuda"):
        raise unknown_option_error("trainer_kwargs['accelerator']", accelerator, ["auto", "cpu", "gpu", "cuda"])
    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    use_gpu = accelerator in ("gpu", "cuda") or (accelerator == "auto" and gpus > 0)
    if use_gpu and gpus == 0:
        raise RuntimeError(f"trainer_kwargs asks for accelerator={accelerator!r} but torch sees no GPU; "
                           "use accelerator='cpu' (or 'auto').")
    if isinstance(devices, str) and devices.strip().lstrip("-").isdigit():
        devices = int(devices)
    if devices in ("auto", -1, None):
        indices = list(range(gpus)) if use_gpu else [0]
    elif isinstance(devices, (list, tuple)):
        indices = [int(d) for d in devices]
    elif is_int(devices) and devices >= 1:
        indices = list(range(int(devices)))
    else:
        raise ValueError(f"trainer_kwargs['devices'] must be 'auto', a positive int or a list, got {devices!r}")
    return ("cuda" if use_gpu else "cpu"), indices, nodes


class _Runner:
    """Runs one model over catalog chunks, on one device (plain loop) or several (Lightning DDP)."""

    def __init__(self, plan, dropout):
        spec = plan.spec
        self.spec = spec
        self.n_outputs = len(plan.label_cols)
        self.n_samples = plan.args.n_samples
        self.dropout = dropout
        self.test_time_augmentation = plan.args.test_time_augmentation
        self.on_bad_image = plan.args.on_bad_image
        self.datamodule_options = plan.options
        self.trainer_kwargs = trainer_kwargs = plan.args.trainer_kwargs
        self.accelerator, self.devices, self.nodes = _device_request(trainer_kwargs)
        self.distributed = len(self.devices) * self.nodes > 1
        with _inference_state(spec.model, dropout):
            self.dropout_active = bool(_active_dropout(spec.model))
        self.is_global_zero = True
        self._trainer = None

    # one pass gives n_samples samples (MC dropout), or one sample per pass with augmentation
    @property
    def passes(self) -> int:
        return self.n_samples if self.test_time_augmentation else 1

    @property
    def samples_per_pass(self) -> int:
        return 1 if self.test_time_augmentation else self.n_samples

    def _loader(self, chunk: pd.DataFrame):
        from zoobot.pytorch.datasets import GalaxyDataModule

        datamodule = GalaxyDataModule(label_cols=None, predict_catalog=chunk, check_valid_paths=False,
                                      **self.datamodule_options)
        return datamodule.predict_dataloader_with_ids(on_bad_image=self.on_bad_image)

    def _failures(self, chunk: pd.DataFrame, failed: np.ndarray, dataset) -> pd.DataFrame:
        rows = np.flatnonzero(failed)
        return self._failures_of(chunk, rows, rows, dataset)

    @staticmethod
    def _failures_of(rows_catalog: pd.DataFrame, positions, dataset_indices, dataset) -> pd.DataFrame:
        """Failures table of the rows ``positions`` (read as items ``dataset_indices`` of ``dataset``).

        Only the failed rows' strings are read: called after every batch, a ``to_numpy()`` of the whole
        column (a Python string per row of an Arrow-backed column) cost O(catalog) memory and time per batch.
        """
        positions = np.asarray(positions, dtype=np.int64)
        return pd.DataFrame({
            "id_str": np.asarray(rows_catalog["id_str"].iloc[positions], dtype=str),
            "file_loc": np.asarray(rows_catalog["file_loc"].iloc[positions], dtype=str),
            "error": [dataset.describe_failure(int(i)) or "unreadable image" for i in dataset_indices],
        }, columns=["id_str", "file_loc", "error"])

    # ------------------------------------------------------------------ one device
    def predict_rows(self, rows: pd.DataFrame):
        """Yield ``(positions, predictions, failures)`` per batch over ``rows``, all read by one loader.

        With test-time augmentation the loader reads each row ``passes`` times in a row (one new
        augmentation each); a row is yielded once all its samples are in.
        """
        model = self.spec.model
        device = torch.device(f"cuda:{self.devices[0]}" if self.accelerator == "cuda" else "cpu")
        precision = self.trainer_kwargs.get("precision")
        autocast = (torch.autocast("cuda", dtype=_AUTOCAST[precision])
                    if device.type == "cuda" and precision in _AUTOCAST else contextlib.nullcontext())
        parameter = next(model.parameters(), None)
        original_device = parameter.device if parameter is not None else torch.device("cpu")
        from zoobot.shared.prediction_runner import PassCollector, repeat_rows

        loader = self._loader(repeat_rows(rows, self.passes))
        passes = PassCollector(self.passes, self.n_outputs)
        model.to(device)
        try:
            with _inference_state(model, self.dropout), torch.inference_mode(), autocast:
                run = _sampler(self.spec)
                # no progress bar of its own: the runner's advances per batch (and tqdm.auto would call
                # iter(loader) once more, starting the loader twice)
                for batch in loader:
                    x = batch["image"].to(device, non_blocking=True)
                    out = run(x, self.samples_per_pass).float().cpu().numpy()
                    self._check_width(out)
                    positions, predictions, failed = passes.add(
                        batch["index"].numpy(), out, batch["failed"].numpy().astype(bool))
                    if len(positions):
                        failures = self._failures_of(rows, positions[failed], positions[failed] * self.passes,
                                                     loader.dataset)
                        yield positions, predictions, failures
        finally:
            model.to(original_device)

    def _check_width(self, out: np.ndarray) -> None:
        if out.shape[1] != self.n_outputs:
            raise ValueError(
                f"The model returned {out.shape[1]} outputs per galaxy but {self.n_outputs} label_cols were "
                f"expected (expected width {self.n_outputs}, got width {out.shape[1]})."
            )

    # ------------------------------------------------------------------ several devices (DDP)
    def predict_distributed(self, catalog: pd.DataFrame):
        """Predict the whole catalog with a Lightning Trainer over several devices; every process
        returns the full (n, outputs, samples) array, rows matched by catalog index."""
        kwargs = dict(logger=False, enable_checkpointing=False, enable_model_summary=False)
        kwargs.update(self.trainer_kwargs)
        kwargs.setdefault("strategy", "ddp")
        trainer = L.Trainer(**kwargs)
        self._trainer = trainer
        module = _PredictionModule(self.spec, self.dropout, self.samples_per_pass)
        loader = self._loader(catalog)
        predictions = np.full((len(catalog), self.n_outputs, self.n_samples), np.nan, dtype=np.float32)
        seen = np.zeros((len(catalog), self.passes), dtype=bool)
        failed = np.zeros(len(catalog), dtype=bool)
        for p in range(self.passes):
            samples = slice(p * self.samples_per_pass, (p + 1) * self.samples_per_pass)
            local = trainer.predict(module, dataloaders=loader, return_predictions=True) or []
            for part in _gather(local):
                index = part["index"]
                self._check_width(part["predictions"])
                predictions[index, :, samples] = part["predictions"]  # padded duplicates overwrite identical rows
                failed[index] |= part["failed"]
                seen[index, p] = True
        self.is_global_zero = trainer.is_global_zero
        missing = np.flatnonzero(~seen.all(axis=1))
        if len(missing):
            raise RuntimeError(
                f"{len(missing)} galaxies got no prediction from any process (e.g. id_str "
                f"{catalog['id_str'].iloc[missing[:5]].tolist()}); the sampler lost rows."
            )
        predictions[failed] = np.nan
        return predictions, self._failures(catalog, failed, loader.dataset)

    def barrier(self) -> None:
        if self._trainer is not None:
            self._trainer.strategy.barrier("zoobot_predict_saved")


class _PredictionModule(L.LightningModule):
    """Wraps any model for ``Trainer.predict``: returns predictions with the row index of each image."""

    def __init__(self, spec: ModelSpec, dropout, samples_per_pass: int):
        super().__init__()
        self.model = spec.model
        self._spec = spec
        self._dropout = dropout
        self._samples = samples_per_pass
        self._state = None
        self._run = None

    def on_predict_start(self):
        # Lightning has just called eval(); now force the dropout layers as requested
        self._state = _inference_state(self.model, self._dropout)
        self._state.__enter__()
        self._run = _sampler(self._spec)

    def on_predict_end(self):
        if self._state is not None:
            self._state.__exit__(None, None, None)
            self._state = None

    def predict_step(self, batch, batch_idx, dataloader_idx=0):
        out = self._run(batch["image"], self._samples)
        return {
            "index": batch["index"].cpu().numpy(),
            "failed": batch["failed"].cpu().numpy().astype(bool),
            "predictions": out.float().cpu().numpy(),
        }


def _gather(local: Sequence[dict]) -> list[dict]:
    """All processes' batch results (every process gets all of them)."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return list(local)
    parts = [None] * dist.get_world_size()
    dist.all_gather_object(parts, list(local))
    return [batch for part in parts for batch in part]
