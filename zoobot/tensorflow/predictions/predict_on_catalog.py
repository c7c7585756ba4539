"""Predict every galaxy of a catalog with a Keras model, and save the results
(docs/components/predictions_and_representations.md).

The twin of :mod:`zoobot.pytorch.predictions.predict_on_catalog`: the same arguments, return value and
files, the argument checks and the chunked, resumable writing of :mod:`zoobot.shared.prediction_runner`.
What is TensorFlow's own: :func:`describe_model` (ZoobotTree, ``get_model`` functional models, finetuned
models, encoders), one ``predict_dataloader`` of a :class:`~zoobot.tensorflow.datasets.GalaxyDataModule`
for all rows, and a compiled step (Monte Carlo dropout runs the encoder once and the head ``n_samples``
times). An unreadable image stops a ``tf.data`` pipeline, so with ``on_bad_image='record'`` the rows where
it stopped (one batch) are checked one by one, the bad ones recorded and the rest predicted; a new
pipeline goes on with the remaining rows.
"""
from __future__ import annotations

import contextlib
import os
import weakref

import keras
import numpy as np
import pandas as pd
import tensorflow as tf

from zoobot.shared import calibration
from zoobot.shared.errors import ImageLoadError, unknown_option_error
from zoobot.shared import prediction_runner  # run_chunked_prediction is called through the module (tests swap it)
from zoobot.shared.prediction_runner import (
    ModelSpec,
    check_predict_arguments,
    plan_prediction,
    requested_dropout,
)
from zoobot.shared.validation import is_int

__all__ = ["predict", "describe_model", "ModelSpec"]

_TRAINER_KEYS = ("accelerator", "devices", "precision", "num_nodes", "strategy", "logger", "enable_progress_bar")


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
    model : keras.Model, str or path-like
        A ZoobotTree, a ``get_model`` model, a finetuned model or an encoder; or a ``.keras`` file
        written by zoobot (loaded, version-checked). The preprocessing it records (``model.preprocessing``:
        size, crop, FITS scaling; docs/components/preprocessing.md) is used unless ``datamodule_kwargs``
        say otherwise; else its ``channels`` and ``input_size`` attributes (defaults: the model's input
        shape, else 224 pixels).
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
        Overrides for the :class:`~zoobot.tensorflow.datasets.GalaxyDataModule`, e.g. ``batch_size``,
        ``num_workers``, ``resize_after_crop``, ``crop_scale_bounds``, ``fits_scaling``. A value that
        contradicts the model's recorded preprocessing is used, with one warning naming both.
    trainer_kwargs : dict, optional
        Where to run: ``accelerator`` ('auto', 'cpu', 'gpu'). ``devices`` other than 1/'auto' raise
        ``NotImplementedError`` (one device per call in the TensorFlow backend).
    test_time_dropout : bool, optional (keyword-only)
        None: follow the model (a ZoobotTree built with ``test_time_dropout=True`` samples with MC
        dropout). True/False: force the Monte Carlo dropout layers on/off.
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
        group of a parquet file. Images are read by one pipeline whatever the chunk size.
    shard : tuple or str, optional (keyword-only)
        Predict only part ``rank`` of ``world_size`` parts of the catalog (a stable hash of ``id_str``):
        ``(rank, world_size)``, ``'R/N'`` or ``'auto'`` (from torchrun/SLURM/TF_CONFIG variables). The
        part is written to ``<stem>.part-R-of-N<suffix>`` and the returned rows are the part's, in catalog
        order; merge the parts with :func:`zoobot.shared.sharding.merge_parts` (docs/guides/scaling_out.md).
    calibrate : bool, default True (keyword-only)
        Multiply a tree model's concentrations by its per-question calibration scale
        (``model.concentration_scale``, fitted on the validation votes by ``train()`` or tree finetuning
        and stored in the ``.keras`` file; see docs/guides/training_recipe.md). False: the raw
        concentrations. Vote fractions are the same either way. Models without a scale are unaffected.

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
    >>> from zoobot.tensorflow.predictions import predict_on_catalog
    >>> predictions = predict_on_catalog.predict(catalog, model, n_samples=5,
    ...                                          save_loc='predictions.parquet')  # doctest: +SKIP
    >>> predictions.shape  # doctest: +SKIP
    (1000, 34, 5)
    """
    args = check_predict_arguments(
        n_samples=n_samples, save_loc=save_loc, datamodule_kwargs=datamodule_kwargs, trainer_kwargs=trainer_kwargs,
        test_time_dropout=test_time_dropout, test_time_augmentation=test_time_augmentation,
        on_bad_image=on_bad_image, chunk_size=chunk_size, shard=shard)
    device = _device(args.trainer_kwargs)
    model = _as_model(model)
    spec = describe_model(model)
    plan = plan_prediction(catalog, spec, label_cols, args, check_valid_paths=check_valid_paths,
                           calibrate=calibrate, layout="NHWC")
    runner = _Runner(plan, requested_dropout(model, args.test_time_dropout), device)
    common = plan.run_kwargs(save_loc, "tensorflow", runner.dropout_active, lambda: _weight_records(model))
    rows = calibration.scaled_rows(runner.predict_rows, plan.scale, spec.schema)
    return prediction_runner.run_chunked_prediction(plan.catalog, rows, save_loc=save_loc, **common)


# ---------------------------------------------------------------------------------------------
# what kind of model is it?
# ---------------------------------------------------------------------------------------------


def _class_names(model) -> set:
    return {cls.__name__ for cls in type(model).__mro__}


def _as_model(model):
    if isinstance(model, (str, os.PathLike)):
        from zoobot.tensorflow.estimators.define_model import load_zoobot_model

        return load_zoobot_model(model)
    if not isinstance(model, keras.Model):
        raise TypeError(f"model must be a keras.Model (a zoobot model) or a .keras file, got {type(model).__name__}.")
    return model


def describe_model(model) -> ModelSpec:
    """Read a model's output kind, default label columns, channels and input size.

    Parameters
    ----------
    model : keras.Model
        A ZoobotTree, ``get_model`` model, finetuned model, ZoobotEncoder or any encoder mapping
        (B, H, W, C) to (B, D).

    Returns
    -------
    ModelSpec

    Examples
    --------
    >>> from zoobot.shared import schemas
    >>> from zoobot.tensorflow.estimators.define_model import ZoobotTree
    >>> spec = describe_model(ZoobotTree(2, schema=schemas.gz_rings_schema, architecture_name='tiny_cnn'))
    >>> spec.kind, spec.label_cols, spec.channels
    ('tree', ['ring_yes', 'ring_no'], 1)
    """
    names = _class_names(model)
    channels = _model_channels(model)
    input_size = _model_input_size(model)
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
        return ModelSpec(model, "generic", "tree", [f"answer_{i}" for i in range(n)], channels, input_size)
    dim = _output_dim(model, channels)
    if _has_dirichlet_head(model):  # get_model(...) functional models: concentrations without a schema
        return ModelSpec(model, "generic", "tree", [f"answer_{i}" for i in range(dim)], channels, input_size)
    return ModelSpec(model, "generic", "features", [f"feat_{i}" for i in range(dim)], channels, input_size)


def _model_channels(model) -> int:
    channels = getattr(model, "channels", None)
    if is_int(channels) and channels in (1, 3):
        return int(channels)
    shape = _input_shape(model)
    if shape is not None and shape[-1] in (1, 3):
        return int(shape[-1])
    return 3


def _input_shape(model):
    try:
        shape = model.input_shape
    except (AttributeError, ValueError, RuntimeError):
        return None
    if isinstance(shape, list):
        shape = shape[0]
    return tuple(shape) if shape is not None else None


def _model_input_size(model) -> int:
    size = getattr(model, "input_size", None)
    if is_int(size) and size > 0:
        return int(size)
    shape = _input_shape(model)
    if shape is not None and len(shape) == 4 and shape[1] is not None:
        return int(shape[1])
    return 224


def _output_dim(model, channels: int) -> int:
    for attr in ("output_dim", "encoder_dim"):
        value = getattr(model, attr, None)
        if is_int(value) and value > 0:
            return int(value)
    from zoobot.tensorflow.estimators.define_model import get_encoder_dim

    return get_encoder_dim(model, channels=channels)


def _has_dirichlet_head(model) -> bool:
    from zoobot.tensorflow.estimators.custom_layers import ScaledSigmoid

    def walk(layer):
        yield layer
        for inner in getattr(layer, "layers", []) or []:
            yield from walk(inner)

    return any(isinstance(layer, ScaledSigmoid) for layer in walk(model))


def _device(trainer_kwargs: dict) -> str | None:
    """The TensorFlow device to run on (None: TensorFlow's default placement)."""
    unknown = [k for k in trainer_kwargs if k not in _TRAINER_KEYS]
    if unknown:
        raise unknown_option_error("trainer_kwargs key (TensorFlow predict)", unknown[0], _TRAINER_KEYS)
    accelerator = str(trainer_kwargs.get("accelerator", "auto")).lower()
    if accelerator not in ("auto", "cpu", "gpu", "cuda"):
        raise unknown_option_error("trainer_kwargs['accelerator']", accelerator, ["auto", "cpu", "gpu", "cuda"])
    devices = trainer_kwargs.get("devices", "auto")
    if devices not in ("auto", 1, -1, None, [0], (0,), "1"):
        raise NotImplementedError(
            f"trainer_kwargs devices={devices!r}: the TensorFlow backend predicts on one device per call. Split "
            "the catalog and run one predict() per GPU (with CUDA_VISIBLE_DEVICES), or use the PyTorch backend."
        )
    if int(trainer_kwargs.get("num_nodes", 1)) != 1:
        raise NotImplementedError("num_nodes > 1 is not supported by the TensorFlow backend's predict().")
    gpus = tf.config.list_physical_devices("GPU")
    if accelerator == "cpu":
        return "/cpu:0"
    if accelerator in ("gpu", "cuda"):
        if not gpus:
            raise RuntimeError(f"trainer_kwargs asks for accelerator={accelerator!r} but TensorFlow sees no GPU; "
                               "use accelerator='cpu' (or 'auto').")
        return "/gpu:0"
    return None


def _weight_records(model):
    """``(header, bytes)`` of every variable of the model, for :func:`~zoobot.shared.prediction_runner.resume_key`."""
    for variable in model.weights:
        value = np.ascontiguousarray(variable.numpy())
        yield f"{variable.path}|{value.dtype}|{value.size}", value.tobytes()


# ---------------------------------------------------------------------------------------------
# dropout control and the compiled step
# ---------------------------------------------------------------------------------------------


def _mc_layers(model) -> list:
    from zoobot.tensorflow.estimators.custom_layers import MCDropout

    found, stack = [], [model]
    while stack:
        layer = stack.pop()
        if isinstance(layer, MCDropout):
            found.append(layer)
        stack.extend(getattr(layer, "layers", []) or [])
    return found


# compiled steps per model, reused by later calls (tracing a model costs seconds)
_STEPS: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def _make_step(spec: ModelSpec, dropout, samples: int):
    """A compiled ``step(images) -> (B, outputs, samples)`` and whether dropout is active.

    Zoobot models with an ``encoder`` and a ``head`` run the encoder once and the head ``samples``
    times (:func:`~zoobot.tensorflow.estimators.define_model.mc_dropout_samples`); other models run
    ``samples`` times with their Monte Carlo dropout layers set on/off as requested. Steps are traced
    once per (model, dropout, samples) and cached.
    """
    key = (dropout, int(samples), spec.family, spec.channels)
    cache = _STEPS.setdefault(spec.model, {})
    if key not in cache:
        cache[key] = _build_step(spec, dropout, samples)
    step, active = cache[key]
    if dropout is not None:  # a cached generic step was traced with these flags; keep the layers consistent
        for layer in _mc_layers(spec.model):
            layer.mc_active = bool(dropout)
    return step, active


def _build_step(spec: ModelSpec, dropout, samples: int):
    from zoobot.tensorflow.estimators.define_model import mc_dropout_samples

    model = spec.model
    signature = tf.TensorSpec([None, None, None, spec.channels], tf.float32)
    encoder, head = getattr(model, "encoder", None), getattr(model, "head", None)
    mc_layers = _mc_layers(model)
    predict_output = getattr(model, "predict_output", None)
    # finetuned models' predict_output is already final (e.g. softmax probabilities); raw classifier logits
    # are turned into probabilities here
    post = _softmax if spec.family == "classifier" and not callable(predict_output) else _identity

    if isinstance(encoder, keras.Model) and isinstance(head, keras.Model) and not callable(predict_output):
        has_dropout = any(isinstance(layer, keras.layers.Dropout) and layer.rate > 0 for layer in head.layers)
        active = has_dropout and (dropout if dropout is not None else bool(mc_layers))

        @tf.function(input_signature=[signature])
        def step(images):
            out = mc_dropout_samples(encoder, head, images, samples, dropout=active)
            return tf.cast(post(tf.reshape(out, [tf.shape(out)[0], -1, samples])), tf.float32)

        return step, active

    for layer in mc_layers:
        if dropout is not None:
            layer.mc_active = bool(dropout)
    active = any(layer.mc_active and layer.rate > 0 for layer in mc_layers)

    def once(images):
        out = predict_output(images) if callable(predict_output) else model(images, training=False)
        out = out[0] if isinstance(out, (tuple, list)) else out
        return tf.cast(post(tf.reshape(out, [tf.shape(out)[0], -1])), tf.float32)

    @tf.function(input_signature=[signature])
    def step(images):
        if not active:
            single = once(images)
            return tf.repeat(single[..., tf.newaxis], samples, axis=-1)
        return tf.stack([once(images) for _ in range(samples)], axis=-1)

    return step, active


def _softmax(out):
    return tf.nn.softmax(out, axis=-1)


def _identity(out):
    return out


# ---------------------------------------------------------------------------------------------
# running the model
# ---------------------------------------------------------------------------------------------


class _Runner:
    """Runs one model over the rows of a catalog."""

    def __init__(self, plan, dropout, device):
        spec = plan.spec
        self.spec = spec
        self.n_outputs = len(plan.label_cols)
        self.n_samples = plan.args.n_samples
        self.test_time_augmentation = plan.args.test_time_augmentation
        self.on_bad_image = plan.args.on_bad_image
        self.datamodule_options = plan.options
        self.device = device
        self.mc_before = [(layer, layer.mc_active) for layer in _mc_layers(spec.model)]
        self.step, self.dropout_active = _make_step(spec, dropout, self.samples_per_pass)
        self._checked = False

    # one pass gives n_samples samples (MC dropout), or one sample per pass with augmentation
    @property
    def passes(self) -> int:
        return self.n_samples if self.test_time_augmentation else 1

    @property
    def samples_per_pass(self) -> int:
        return 1 if self.test_time_augmentation else self.n_samples

    def predict_rows(self, rows: pd.DataFrame):
        """Yield ``(positions, predictions, failures)`` per batch over ``rows``, all read by one pipeline.

        An unreadable image stops the pipeline: with ``on_bad_image='record'`` the next unfinished rows
        (one batch) are then predicted one check at a time (:meth:`predict_chunk`) and a new pipeline goes
        on with the rest.
        """
        from zoobot.shared.prediction_runner import PassCollector

        done = np.zeros(len(rows), dtype=bool)
        window = max(1, -(-int(self.datamodule_options.get("batch_size", 256)) // self.passes))
        try:
            while not done.all():
                todo = np.flatnonzero(~done)
                subset = rows.iloc[todo].reset_index(drop=True)
                collector = PassCollector(self.passes, self.n_outputs)
                try:
                    for items, out in self._batches(subset):
                        positions, predictions, _ = collector.add(items, out, np.zeros(len(items), dtype=bool))
                        if len(positions):
                            done[todo[positions]] = True
                            yield todo[positions], predictions, None
                except _ImageReadError as err:
                    if self.on_bad_image == "raise":
                        raise _as_image_error(err.cause, rows.iloc[np.flatnonzero(~done)]) from err.cause
                    stopped = np.flatnonzero(~done)[:window]
                    predictions, failures = self.predict_chunk(rows.iloc[stopped].reset_index(drop=True))
                    done[stopped] = True
                    yield stopped, predictions, failures
        finally:
            for layer, state in self.mc_before:
                layer.mc_active = state

    def predict_chunk(self, chunk: pd.DataFrame):
        """``(predictions, failures)`` of a few rows that may hold unreadable images: checked one by one."""
        predictions = np.full((len(chunk), self.n_outputs, self.n_samples), np.nan, dtype=np.float32)
        failures = []
        try:
            self._predict_rows(chunk, np.arange(len(chunk)), predictions)
        except _ImageReadError as err:
            bad = _find_bad_images(chunk)
            if not bad:  # TensorFlow cannot decode something the file check accepts: isolate it
                bad = {}
                self._bisect(chunk, np.arange(len(chunk)), predictions, bad)
                if len(chunk) > 1 and len(bad) == len(chunk):  # not one image: the pipeline itself fails
                    raise err.cause
            else:
                good = np.array([i for i in range(len(chunk)) if i not in bad], dtype=int)
                if len(good):
                    self._bisect(chunk, good, predictions, bad)
            for row, message in sorted(bad.items()):
                predictions[row] = np.nan
                failures.append((str(chunk["id_str"].iloc[row]), str(chunk["file_loc"].iloc[row]), message))
        return predictions, pd.DataFrame(failures, columns=["id_str", "file_loc", "error"])

    def _bisect(self, chunk, rows, predictions, bad: dict) -> None:
        """Predict ``rows``; on a read error, split them until the unreadable images are isolated."""
        try:
            self._predict_rows(chunk, rows, predictions)
        except _ImageReadError as err:
            if len(rows) == 1:
                bad[int(rows[0])] = _short_error(err.cause)
                return
            middle = len(rows) // 2
            self._bisect(chunk, rows[:middle], predictions, bad)
            self._bisect(chunk, rows[middle:], predictions, bad)

    def _predict_rows(self, chunk: pd.DataFrame, rows: np.ndarray, predictions: np.ndarray) -> None:
        """Fill ``predictions[rows]`` (every sample) from one pipeline over ``chunk.iloc[rows]``."""
        from zoobot.shared.prediction_runner import PassCollector

        collector = PassCollector(self.passes, self.n_outputs)
        for items, out in self._batches(chunk.iloc[rows].reset_index(drop=True)):
            positions, complete, _ = collector.add(items, out, np.zeros(len(items), dtype=bool))
            predictions[rows[positions]] = complete

    def _batches(self, rows: pd.DataFrame):
        """Yield ``(items, out)`` per batch of one pipeline reading ``rows`` ``passes`` times each
        (:func:`~zoobot.shared.prediction_runner.repeat_rows`): item numbers and model outputs."""
        from zoobot.shared.prediction_runner import repeat_rows
        from zoobot.tensorflow.datasets import GalaxyDataModule
        from zoobot.tensorflow.estimators.define_model import check_images

        repeated = repeat_rows(rows, self.passes)
        position = {id_str: item for item, id_str in enumerate(repeated["id_str"].astype(str))}
        datamodule = GalaxyDataModule(label_cols=None, predict_catalog=repeated, check_valid_paths=False,
                                      **self.datamodule_options)
        dataset = datamodule.predict_dataloader()
        device = tf.device(self.device) if self.device else contextlib.nullcontext()
        # no progress bar of its own: the runner's advances per batch (and tqdm.auto would call iter(dataset)
        # once more, starting a second pipeline)
        for images, ids in _read_batches(dataset):
            if not self._checked:
                check_images(images, self.spec.channels, where="predict")
                self._checked = True
            try:
                with device:
                    out = self.step(images).numpy()
            except tf.errors.ResourceExhaustedError:
                raise  # out of memory: its own error, never an image problem
            except tf.errors.OpError as err:
                raise _model_error(err, tuple(images.shape), self.spec) from err
            if out.shape[1] != self.n_outputs:
                raise ValueError(
                    f"The model returned {out.shape[1]} outputs per galaxy but {self.n_outputs} label_cols "
                    f"were expected (expected width {self.n_outputs}, got width {out.shape[1]})."
                )
            yield np.array([position[i.decode() if isinstance(i, bytes) else str(i)] for i in ids.numpy()]), out


class _ImageReadError(Exception):
    """The input pipeline stopped while reading or decoding images (``cause``: the original error).

    Only this becomes a recorded failure: errors of the model, of its input shape or of memory come from
    the compiled step, outside the pipeline, and stop the prediction with their own message.
    """

    def __init__(self, cause: BaseException):
        super().__init__(str(cause))
        self.cause = cause


def _read_batches(dataset):
    """Iterate ``dataset``, turning the errors of reading an image (and only those) into :class:`_ImageReadError`.

    Out of memory is never an image problem: ``ResourceExhaustedError`` passes through unchanged.
    """
    iterator = iter(dataset)
    while True:
        try:
            batch = next(iterator)
        except StopIteration:
            return
        except tf.errors.ResourceExhaustedError:
            raise
        except (tf.errors.OpError, ImageLoadError, OSError) as err:
            raise _ImageReadError(err) from err
        yield batch


def _model_error(err, shape: tuple, spec: ModelSpec) -> RuntimeError:
    """A model (or input shape) error of the compiled step, in a few words: TensorFlow's own message without
    the Python traceback it embeds."""
    kept, after_file = [], False
    for line in str(getattr(err, "message", err)).splitlines():
        line = line.strip()
        skip = after_file or line.startswith(("File ", "Graph execution error", "Detected at node", "[["))
        after_file = line.startswith("File ")  # the next line is that frame's source code
        if line and not skip:
            kept.append(line)
    text = " ".join(kept) or str(err)
    return RuntimeError(
        f"The model failed on a batch of images of shape {shape} (model: {spec.channels} channel(s), "
        f"{spec.input_size} px): {type(err).__name__}: {text[:400]}. This is a model or settings error, not an "
        "unreadable image: no row was recorded as failed. Check the image size (--resize-size / "
        "resize_after_crop) and the model; finished chunks are kept, so rerunning resumes after them."
    )


def _find_bad_images(chunk: pd.DataFrame) -> dict:
    """``{row: message}`` of rows whose file cannot be read (checked one by one, see :func:`_image_problems`)."""
    return {row: _short_error(err) for row, err in _image_problems(chunk).items()}


def _image_problems(catalog: pd.DataFrame, limit: int | None = None) -> dict:
    """``{row: exception}`` of rows whose file :func:`zoobot.shared.images.load_image` cannot read (E5-E8,
    naming ``id_str`` and ``file_loc``); stops after ``limit`` problems."""
    from zoobot.shared.images import load_image

    problems = {}
    for row, (id_str, file_loc) in enumerate(zip(catalog["id_str"].astype(str), catalog["file_loc"])):
        try:
            load_image(file_loc, id_str=id_str)
        except (ImageLoadError, OSError, ValueError) as err:
            problems[row] = err
            if limit is not None and len(problems) >= limit:
                break
    return problems


def _short_error(err) -> str:
    text = getattr(err, "message", None) or str(err)
    return " ".join(str(text).split())[:500]


def _as_image_error(err, chunk: pd.DataFrame) -> Exception:
    """The error to raise with ``on_bad_image='raise'``: the exception :func:`load_image` raises for the first
    unreadable file (it names ``id_str`` and ``file_loc``), else an ImageLoadError quoting TensorFlow."""
    if isinstance(err, ImageLoadError):
        return err
    problems = _image_problems(chunk, limit=1)
    if problems:
        return next(iter(problems.values()))
    return ImageLoadError(f"An image of this chunk could not be read: {_short_error(err)}. Pass "
                          "on_bad_image='record' to record unreadable images as NaN rows instead.")
