"""Train a Zoobot model from scratch with Keras, the twin of ``train_with_pytorch_lightning``.

:func:`train` (the user documentation's argument list, as PyTorch's, plus the TensorFlow-only TFRecord
``*_records`` and upstream v1 keywords) and :func:`train_default_zoobot_from_scratch` (upstream v2's list and
defaults) build one :class:`~zoobot.shared.training_config.TrainConfig`; :func:`_train` does the Keras part:

1. TensorFlow checks and the catalogs (E1-E5, split 70/10/20); claim ``save_dir`` (resume, overwrite or refuse);
2. ``tf.data`` pipelines (GalaxyDataModule or TFRecord shards) and a ``ZoobotTree`` (in a ``MirroredStrategy``
   scope with several GPUs), first batch checked (E7, E8, E10);
3. ``fit`` with the callbacks of :mod:`zoobot.tensorflow.training.callbacks`, held by a
   :class:`~zoobot.tensorflow.training.trainer.Trainer` (checkpoints, ``logs/metrics.csv``, early stopping, the
   loss guard, ``backup/`` for ``resume=True``);
4. the best weights restored, calibrated on the validation votes, tested; returns ``(model, trainer)``.

See docs/components/training.md and docs/reliability.md.
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import pathlib
import shutil
import warnings

import keras
import numpy as np
import tensorflow as tf

from zoobot.shared import interrupts
from zoobot.shared.run_dir import claim_save_dir
from zoobot.tensorflow.distributed import (check_workers_agree, cluster_resolver, multi_worker_strategy, shard_by_data,
                                           worker_save_dir)
from zoobot.shared.schedules import (DEFAULT_TRAIN_CONCENTRATION_FLOOR, DEFAULT_TRAIN_FRACTION_LOSS_WEIGHT,
                                     resolve_train_schedule)
from zoobot.shared.training_config import TrainConfig, resolve_device_count, write_run_config, write_split_catalogs
from zoobot.shared.validation import available_cpus, check_choice
from zoobot.tensorflow.training.callbacks import (
    AtomicBackupAndRestore,
    CSVLogger,
    EarlyStopping,
    EpochMetrics,
    ModelCheckpoint,
    NonFiniteLossGuard,
    RandomStateBackup,
    all_layers,
    atomic_save,
    backup_epoch,
    optimizer_step,
    scalar,
    skip_epochs,
)
from zoobot.tensorflow.training.console import fit_verbosity

__all__ = ["train", "train_default_zoobot_from_scratch", "rename_metrics"]

#: Metric that picks the best checkpoint and drives early stopping (Keras logs it as ``val_loss``).
MONITOR = "validation/supervised_loss"
_KERAS_MONITOR = "val_loss"


def train(
    save_dir,
    schema,
    catalog=None,
    train_catalog=None,
    val_catalog=None,
    test_catalog=None,
    model_architecture="efficientnet",
    batch_size=256,
    epochs=1000,
    patience=8,
    color=False,
    resize_size=224,
    crop_scale_bounds=(0.7, 0.8),
    crop_ratio_bounds=(0.9, 1.1),
    nodes=1,
    gpus=2,
    num_workers=4,
    prefetch_factor=4,
    mixed_precision=False,
    random_state=42,
    wandb_logger=None,
    *,
    dropout_rate=0.2,
    learning_rate=1e-3,
    betas=(0.9, 0.999),
    weight_decay=0.01,
    scheduler_params=None,
    timm_kwargs=None,
    sync_batchnorm=False,
    compile_encoder=False,
    save_top_k=3,
    checkpoint_file_template=None,
    extra_callbacks=None,
    check_valid_paths=True,
    resume=True,
    overwrite=False,
    architecture_name=None,
    resize_after_crop=None,
    train_records=None,
    val_records=None,
    test_records=None,
    requested_img_size=None,
    always_augment=False,
    eager=False,
):
    """Train a :class:`~zoobot.tensorflow.estimators.define_model.ZoobotTree` from scratch with Keras.

    (Long only for its documented argument list: the body builds a TrainConfig and calls ``_train``.)

    The arguments, defaults and behaviour are those of
    ``zoobot.pytorch.training.train_with_pytorch_lightning.train``; see there for the full description.
    Differences that follow from the framework are listed here.

    Over 80 lines only for its numpydoc; the body is 2 lines.

    Parameters
    ----------
    save_dir : str or path-like
        Output folder: ``checkpoints/`` (``epoch=N.keras`` best checkpoints and ``last.keras``),
        ``logs/metrics.csv``, ``config.json``, the split catalogs, and ``backup/`` (Keras
        ``BackupAndRestore``, used to resume).
    schema : zoobot.shared.schemas.Schema
        Decision tree; every catalog needs one vote-count column per ``schema.label_cols``.
    catalog, train_catalog, val_catalog, test_catalog : DataFrame, optional
        One catalog (split 70/10/20 with ``random_state``) or explicit splits.
    model_architecture : str
        A Keras encoder of ``define_model.ENCODER_NAMES`` (``'efficientnet'`` = ``efficientnet_b0``;
        ``'tiny_cnn'`` for tests). Also accepted as ``architecture_name``.
    batch_size : int
        Galaxies per batch per device (the global batch is ``batch_size`` x the number of GPUs).
    epochs, patience : int
        Maximum epochs; epochs without improvement of ``validation/supervised_loss`` before stopping.
    color : bool
        True: 3-channel RGB input; False: 1-channel greyscale (mean of R, G, B).
    resize_size : int
        Side of the model input after cropping. Also accepted as ``resize_after_crop``.
    crop_scale_bounds, crop_ratio_bounds : (float, float)
        Random resized crop augmentation (area fraction and aspect ratio ranges).
    nodes : int
        Machines (workers). More than 1: ``tf.distribute.MultiWorkerMirroredStrategy`` over the cluster in
        ``TF_CONFIG`` or SLURM's variables; every worker runs the same call, only the chief (worker 0) writes
        ``save_dir`` (docs/guides/scaling_out.md).
    gpus : int
        Maximum GPUs to use; fewer available: those are used, with a warning (none: CPU). More than
        one: ``tf.distribute.MirroredStrategy`` (the model is built inside its scope).
    num_workers, prefetch_factor : int
        Parallel decode/augment calls of the ``tf.data`` pipeline, and batches prefetched.
    mixed_precision : bool
        The ``mixed_float16`` Keras policy on GPU (ignored with a warning on CPU). The previous global
        policy is restored afterwards.
    random_state : int
        Seeds Python, NumPy, TensorFlow, the augmentations and the catalog split.
    wandb_logger : wandb Run, optional
        Metrics are also sent with ``wandb_logger.log``; ``save_dir/logs/metrics.csv`` is always written.
    dropout_rate, learning_rate, betas, weight_decay, scheduler_params, timm_kwargs, compile_encoder
        Passed to ZoobotTree (keyword-only). ``timm_kwargs`` go to the Keras application constructor.
        ``scheduler_params=None`` (default) is the training recipe's schedule: a short warm-up, then cosine
        decay to 1 % of ``learning_rate`` at ``epochs``; ``{}`` is a constant rate. Models made here use a
        Dirichlet head floor of 0.1 (``model.concentration_floor``). See docs/guides/training_recipe.md.
        The Keras encoder trains like timm's: BatchNorm momentum 0.9, no stochastic depth.
    sync_batchnorm : bool
        Accepted for parity; Keras' MirroredStrategy keeps per-replica BatchNorm statistics (ignored).
    save_top_k : int
        Best checkpoints kept (``last.keras`` is kept as well); -1 keeps all.
    checkpoint_file_template : str, optional
        File name template of the best checkpoints (default ``'{epoch}'``, giving ``epoch=3.keras``
        as Lightning gives ``epoch=3.ckpt``). Keys: ``epoch`` and the logged metrics.
    extra_callbacks : list of keras.callbacks.Callback, optional
    check_valid_paths : bool
        Check every ``file_loc`` exists before training (E5).
    resume : bool
        If ``save_dir/backup`` holds a backup, continue that run from it (its ``config.json`` must
        record the same arguments, apart from e.g. ``epochs``/``patience``/``gpus``). A folder holding
        the checkpoints of another run is refused (``SaveDirInUseError``) unless ``overwrite=True``.
    overwrite : bool
        Delete the run already in ``save_dir`` and start afresh (as in PyTorch).
    train_records, val_records, test_records : list of str, optional, keyword-only
        [TF only] TFRecord shards (e.g. ``ShardConfig.train_tfrecord_locs()``) instead of catalogs;
        train and val are required together, and no catalog may be given. Shards hold
        ``schema.label_cols``.
    requested_img_size : int, optional, keyword-only
        (Upstream 1.x.) With shards: resize the stored images to this size before augmentation. With catalogs
        images are decoded at their own size (the argument is then unused, with a warning).
    always_augment : bool, keyword-only
        (Upstream 1.x.) Augment validation and test images too (test-time augmentation).
    eager : bool, keyword-only
        (Upstream 1.x.) Run Keras eagerly (``run_eagerly=True``), for debugging.

    Returns
    -------
    (model, trainer)
        ``model``: the ZoobotTree with the weights of the best checkpoint (lowest
        ``validation/supervised_loss``), ``input_size`` set; ``trainer``: the
        :class:`~zoobot.tensorflow.training.trainer.Trainer` that held the run's callbacks
        (``history``, ``checkpoint_callback.best_model_path``, ``callback_metrics``, ``test_metrics``).

    Raises
    ------
    CatalogError, FileNotFoundError
        E1-E5 for bad catalogs, before any model is built.
    ValueError
        Neither/both of ``catalog`` and ``train_catalog``+``val_catalog``; catalogs and records together;
        bad argument values; an unknown architecture (E13); resuming a run recorded with other arguments.
    RuntimeError
        ``nodes > 1`` without a ``TF_CONFIG``/SLURM cluster of that size; workers that would resume from
        different epochs (``save_dir`` not shared by all of them).
    TypeError
        Both spellings of an aliased keyword given with different values.
    FloatingPointError
        The loss became NaN or infinite (the message names the epoch and step).

    Examples
    --------
    >>> from zoobot.shared import schemas
    >>> from zoobot.tensorflow.training import train_with_keras
    >>> model, trainer = train_with_keras.train(
    ...     save_dir='results/run', schema=schemas.decals_dr5_ortho_schema, catalog=catalog,
    ...     model_architecture='efficientnet', gpus=2)  # doctest: +SKIP
    """
    arguments = dict(locals())  # exactly the parameters: nothing else is defined yet
    return _train(TrainConfig.from_arguments("train", "tensorflow", **arguments))


def train_default_zoobot_from_scratch(
    save_dir,
    schema,
    catalog=None,
    train_catalog=None,
    val_catalog=None,
    test_catalog=None,
    train_urls=None,
    val_urls=None,
    test_urls=None,
    cache_dir=None,
    epochs=1000,
    patience=8,
    architecture_name="efficientnet_b0",
    timm_kwargs=None,
    batch_size=128,
    dropout_rate=0.2,
    learning_rate=1e-3,
    betas=(0.9, 0.999),
    weight_decay=0.01,
    scheduler_params=None,
    color=False,
    resize_after_crop=224,
    crop_scale_bounds=(0.7, 0.8),
    crop_ratio_bounds=(0.9, 1.1),
    nodes=1,
    gpus=2,
    sync_batchnorm=False,
    num_workers=4,
    prefetch_factor=4,
    mixed_precision=False,
    compile_encoder=False,
    wandb_logger=None,
    checkpoint_file_template=None,
    auto_insert_metric_name=True,
    save_top_k=3,
    extra_callbacks=None,
    random_state=42,
    *,
    check_valid_paths=True,
    resume=True,
    model_architecture=None,
    resize_size=None,
    train_records=None,
    val_records=None,
    test_records=None,
    requested_img_size=None,
    always_augment=False,
    eager=False,
):
    """Train a ZoobotTree from scratch, with the upstream Zoobot v2 argument list and defaults.

    (Long only for its documented argument list: the body builds a TrainConfig and calls ``_train``.)

    The same implementation as :func:`train` (see there for every argument and the behaviour); only
    the names and defaults differ: ``architecture_name='efficientnet_b0'``, ``resize_after_crop=224``,
    ``batch_size=128``.

    Over 80 lines only for its numpydoc; the body is 19 lines.

    Parameters
    ----------
    train_urls, val_urls, test_urls, cache_dir
        WebDataset shards (upstream). Not implemented: pass catalogs, or TFRecord shards as
        ``train_records``/``val_records``/``test_records``.
    auto_insert_metric_name : bool
        ``epoch=3.keras`` (True) or ``3.keras`` (False) for the template ``'{epoch}'``.
    model_architecture, resize_size : keyword-only
        The seed spellings of ``architecture_name`` and ``resize_after_crop``.

    Returns
    -------
    (model, trainer)
        As :func:`train`.

    Raises
    ------
    NotImplementedError
        If any ``*_urls`` is given.
    ValueError, TypeError, CatalogError, FileNotFoundError, FloatingPointError, RuntimeError
        As :func:`train`.

    Examples
    --------
    >>> model, trainer = train_default_zoobot_from_scratch(
    ...     'results/run', schema, catalog=catalog, architecture_name='efficientnet_b0')  # doctest: +SKIP
    """
    arguments = dict(locals())  # exactly the parameters: nothing else is defined yet
    for name in ("train_urls", "val_urls", "test_urls", "cache_dir"):
        del arguments[name]
    urls = {"train_urls": train_urls, "val_urls": val_urls, "test_urls": test_urls}
    given = [name for name, value in urls.items() if value is not None]
    if given:
        raise NotImplementedError(
            f"Training from WebDataset shards ({', '.join(given)}) is not implemented in this zoobot version. "
            "Pass catalogs instead (catalog=... or train_catalog=..., val_catalog=...), or TFRecord shards as "
            "train_records=..., val_records=... (see zoobot.tensorflow.data_utils.create_shards.ShardConfig)."
        )
    if cache_dir is not None:
        warnings.warn(
            f"cache_dir={cache_dir!r} is only used with WebDataset shards (*_urls), which this zoobot version "
            "does not support; it is ignored.",
            UserWarning,
            stacklevel=2,
        )
    return _train(TrainConfig.from_arguments("train_default_zoobot_from_scratch", "tensorflow", **arguments))


# ---------------------------------------------------------------------------------------------
# 1. the TensorFlow checks (TrainConfig checked the rest; no framework work yet)
# ---------------------------------------------------------------------------------------------


def _tensorflow_config(config: TrainConfig) -> TrainConfig:
    """The TensorFlow checks on top of :class:`TrainConfig`'s (one machine, a Keras encoder, catalogs or
    TFRecord shards), then the catalogs validated and split (E1-E5) - before any model work."""
    if config.nodes > 1:
        cluster_resolver(config.nodes)  # TF_CONFIG or SLURM must describe `nodes` workers (clear error if not)
    from zoobot.tensorflow.estimators.define_model import ENCODER_NAMES

    check_choice("TensorFlow encoder architecture", config.architecture_name, ENCODER_NAMES)
    records = {k: getattr(config, k) for k in ("train_records", "val_records", "test_records")}
    if all(v is None for v in records.values()):
        if config.requested_img_size is not None:
            warnings.warn(
                "requested_img_size is only used with TFRecord shards; catalog images are decoded at their own "
                "size and cropped/resized to resize_size.",
                UserWarning,
                stacklevel=4,
            )
        return config.with_split_catalogs()
    catalogs = [k for k in ("catalog", "train_catalog", "val_catalog", "test_catalog") if getattr(config, k) is not None]
    if catalogs:
        raise ValueError(
            f"Pass either catalogs or TFRecord shards (train_records/val_records/test_records), not both: got "
            f"{', '.join(catalogs)} and records."
        )
    if records["train_records"] is None or records["val_records"] is None:
        raise ValueError("Training from shards needs both train_records and val_records (test_records optional).")
    return dataclasses.replace(config, **{k: _record_list(k, v) for k, v in records.items() if v is not None})


def _record_list(name: str, value) -> list:
    if isinstance(value, (str, os.PathLike)):
        value = [value]
    locs = [os.fspath(v) for v in value]
    if not locs:
        raise ValueError(f"{name} is empty: give the TFRecord shard files, e.g. shard_config.train_tfrecord_locs().")
    missing = [loc for loc in locs if not os.path.isfile(loc)]
    if missing:
        from zoobot.shared.errors import format_examples

        raise FileNotFoundError(f"{len(missing)} file(s) of {name} do not exist: {format_examples(missing)}.")
    return locs


# ---------------------------------------------------------------------------------------------
# 2. data
# ---------------------------------------------------------------------------------------------


def _catalog_datasets(config: TrainConfig, global_batch_size: int):
    """(train, val, test or None) datasets from the catalogs, through the TF GalaxyDataModule."""
    from zoobot.tensorflow.datasets import GalaxyDataModule

    datamodule = GalaxyDataModule(
        label_cols=list(config.schema.label_cols),
        train_catalog=config.train_catalog,
        val_catalog=config.val_catalog,
        test_catalog=config.test_catalog,
        greyscale=not config.color,
        crop_scale_bounds=config.crop_scale_bounds,
        crop_ratio_bounds=config.crop_ratio_bounds,
        resize_after_crop=config.resize_after_crop,
        batch_size=global_batch_size,
        num_workers=min(config.num_workers, available_cpus()),
        prefetch_factor=config.prefetch_factor,
        seed=config.random_state,
        test_time_augmentation=config.always_augment,
        check_valid_paths=False,  # checked already
    )
    datamodule.setup("fit")
    train_ds, val_ds = datamodule.train_dataloader(), datamodule.val_dataloader()
    test_ds = None
    if config.test_catalog is not None:
        datamodule.setup("test")
        test_ds = datamodule.test_dataloader()
    return train_ds, val_ds, test_ds


def _preprocessing_record(config: TrainConfig, channels: int, train_catalog):
    """What the model remembers of its images (:mod:`zoobot.shared.preprocessing`); shards hold PNG-encoded
    pixels of unknown origin, so their formats stay unknown."""
    from zoobot.shared.preprocessing import Preprocessing

    return Preprocessing.for_training(
        config.resize_after_crop, channels, config.crop_scale_bounds, config.crop_ratio_bounds,
        None if train_catalog is None else train_catalog["file_loc"])


def _shard_dataset(records, config: TrainConfig, global_batch_size: int, train: bool):
    """Batches of (images NHWC float32 [0, 1], vote counts (B, n_answers)) from TFRecord shards,
    augmented with the same transforms as the catalog pipeline."""
    from zoobot.tensorflow.data_utils import tfrecord_datasets
    from zoobot.tensorflow.datasets.transforms import default_transforms, image_to_float

    label_cols = list(config.schema.label_cols)
    train_transform, eval_transform = default_transforms(
        greyscale=not config.color,
        resize_after_crop=config.resize_after_crop,
        crop_scale_bounds=config.crop_scale_bounds,
        crop_ratio_bounds=config.crop_ratio_bounds,
        test_time_augmentation=config.always_augment,
    )
    transform = train_transform if train else eval_transform
    requested = config.requested_img_size
    seed = config.random_state
    raw = tfrecord_datasets.get_dataset(records, label_cols, global_batch_size, shuffle=train, seed=seed)
    seeds = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True).batch(2)

    def to_example(element, image_seed):
        image = element["matrix"]
        if requested is not None:  # (upstream 1.x) the size images are loaded at, before augmentation
            image = tf.clip_by_value(tf.image.resize(image_to_float(image), (requested, requested), antialias=True),
                                     0.0, 1.0)
        labels = tf.stack([element[col] for col in label_cols], axis=-1)
        return transform(image, image_seed), labels

    parallel = tf.data.AUTOTUNE if config.num_workers > 0 else None
    dataset = tf.data.Dataset.zip((raw.unbatch(), seeds)).map(to_example, num_parallel_calls=parallel,
                                                              deterministic=True)
    dataset = dataset.batch(global_batch_size, drop_remainder=train)
    rows = _shard_row_count(records)
    if rows is not None:  # a known length lets Keras show progress and not warn at the end of each epoch
        batches = rows // global_batch_size if train else -(-rows // global_batch_size)
        if batches > 0:
            dataset = dataset.apply(tf.data.experimental.assert_cardinality(batches))
    return dataset.prefetch(config.prefetch_factor if config.num_workers > 0 else tf.data.AUTOTUNE)


def _shard_row_count(records):
    """Galaxies in ``records`` from the ``shard_config.json`` of their shard folder, when ``records`` are all
    the shards of one split; None otherwise (the dataset length then stays unknown)."""
    folders = {pathlib.Path(r).resolve().parent for r in records}
    if len(folders) != 1:
        return None
    folder = folders.pop()
    config_path = folder.parent / "shard_config.json"
    if not config_path.is_file():
        return None
    try:
        config = json.loads(config_path.read_text())
    except (OSError, ValueError):
        return None
    split = next((name for name, rel in (config.get("split_dirs") or {}).items()
                  if (folder.parent / rel).resolve() == folder), None)
    count = (config.get("row_counts") or {}).get(split)
    all_shards = {p.resolve() for p in folder.glob("*.tfrecord")}
    if not isinstance(count, int) or {pathlib.Path(r).resolve() for r in records} != all_shards:
        return None
    return count


@contextlib.contextmanager
def _image_errors_named(catalogs):
    """Turn a TensorFlow decode error from the data pipeline into the error of the unreadable file.

    A corrupt image stops a ``tf.data`` pipeline with an error that names neither the galaxy nor the
    file. On such an error the catalogs are checked file by file (only then: it reads every image) and
    the error of the first unreadable one (E6 ``ImageLoadError``, or E7/E8, naming ``id_str`` and
    ``file_loc``) is raised instead; TFRecord shards are not checked (the original error is raised).
    """
    try:
        yield
    except tf.errors.OpError as err:
        from zoobot.tensorflow.predictions.predict_on_catalog import _image_problems

        for catalog in catalogs:
            if catalog is None:
                continue
            problems = _image_problems(catalog, limit=1)
            if problems:
                raise next(iter(problems.values())) from err
        raise


def _check_first_batch(dataset, channels: int, schema, where: str) -> None:
    """E7/E8 on the first batch's images and E10 on its label width, before training starts."""
    from zoobot.tensorflow.estimators.define_model import check_images

    element = next(iter(dataset.take(1)), None)
    if element is None:
        raise ValueError(f"The {where} data yielded no batch: is it smaller than batch_size (the last partial "
                         "training batch is dropped)?")
    images, labels = element[0], element[1]
    check_images(images, channels, where=f"the first {where} batch")
    width = int(labels.shape[-1]) if labels.shape.rank == 2 else 1
    if width != schema.n_answers:
        raise ValueError(
            f"The {where} labels have width {width} but schema {schema.name or ''} has {schema.n_answers} answers "
            f"(expected width {schema.n_answers}, got {width})."
        )


# ---------------------------------------------------------------------------------------------
# 3. metric names, the model's training recipe, calibration
# ---------------------------------------------------------------------------------------------


def rename_metrics(logs: dict, split: str = "fit") -> dict:
    """Keras log names -> the PyTorch backend's metric names.

    ``loss`` -> ``train/supervised_loss``, ``val_loss`` -> ``validation/supervised_loss``,
    ``question_loss/q`` -> ``train/question_loss/q``, ``val_question_loss/q`` ->
    ``validation/question_loss/q``; with ``split='test'`` every name gets ``test/``. ``learning_rate``
    becomes ``lr``.

    Examples
    --------
    >>> rename_metrics({'loss': 1.0, 'val_loss': 2.0, 'val_question_loss/bar': 0.5, 'learning_rate': 0.1})
    {'train/supervised_loss': 1.0, 'validation/supervised_loss': 2.0, 'validation/question_loss/bar': 0.5, 'lr': 0.1}
    >>> rename_metrics({'loss': 3.0}, split='test')
    {'test/supervised_loss': 3.0}
    """
    out = {}
    for key, value in (logs or {}).items():
        if key in ("learning_rate", "lr"):
            out["lr"] = value
            continue
        if split == "test":
            prefix, name = "test", key
        elif key.startswith("val_"):
            prefix, name = "validation", key[len("val_"):]
        else:
            prefix, name = "train", key
        if name == "loss":
            name = "supervised_loss"
        out[f"{prefix}/{name}"] = value
    return out


def _warn_if_gpu_sized(model, architecture_name, channels, size, batch_size, train_catalog, steps_per_epoch,
                       epochs):
    from zoobot.shared.cpu_speed import warn_if_gpu_sized
    from zoobot.tensorflow.estimators.define_model import time_encoder_pass

    n_train = len(train_catalog) if train_catalog is not None else (steps_per_epoch or 1) * batch_size
    warn_if_gpu_sized(lambda n: time_encoder_pass(model.encoder, n, channels, size),
                      architecture_name=architecture_name, image_size=size, batch_size=batch_size,
                      n_train=n_train, epochs=epochs, stacklevel=4)


def _train_encoder_like_timm(encoder) -> None:
    """Train the Keras encoder as timm's is trained in the PyTorch backend (issue 13, measured with
    ``benchmarks/bench_science.py``; docs/guides/training_recipe.md):

    - BatchNorm running statistics updated with PyTorch's momentum 0.1 (Keras ``momentum=0.9``) rather than
      Keras' 0.99, which lags behind the weights over a run of a few hundred steps per epoch;
    - no stochastic depth: Keras' EfficientNet hard-codes ``drop_connect_rate=0.2`` (its ``block*_drop``
      layers), timm's ``efficientnet_b0`` defaults to ``drop_path_rate=0``.
    """
    for layer in all_layers(encoder)[1:]:
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.momentum = 0.9
        elif isinstance(layer, keras.layers.Dropout) and layer.name.startswith("block") and layer.name.endswith("_drop"):
            layer.rate = 0.0


def _calibrate(model, val_ds, save_dir, checkpoint_paths) -> None:
    """Fit the per-question concentration scale on the validation votes (zoobot.shared.calibration),
    set ``model.calibration`` and save it into the best and last ``.keras`` files (their config)."""
    from zoobot.shared import calibration

    alphas, counts = [], []
    for images, labels in val_ds:
        features = model.encoder(images, training=False)
        alphas.append(model.head(features, training=False).numpy().astype(np.float64))
        counts.append(labels.numpy().astype(np.float64))
    if not alphas:
        return
    model.calibration = calibration.fit_record(np.concatenate(counts), np.concatenate(alphas),
                                               model.question_names, model.question_index_groups, save_dir=save_dir)
    weights = model.get_weights()
    for path in dict.fromkeys(p for p in checkpoint_paths if p):
        if os.path.isfile(path):
            # the saved file holds these weights only for the best one: rewrite each with its own weights
            model.load_weights(path)
            atomic_save(model, path)
    model.set_weights(weights)


# ---------------------------------------------------------------------------------------------
# 4. the implementation shared by both public names
# ---------------------------------------------------------------------------------------------


def _train(config: TrainConfig, *, devices: list | None = None):
    """Fit, restore the best checkpoint, calibrate, test: the Keras part of a run; returns ``(model, trainer)``.

    The order: TensorFlow checks and catalogs (:func:`_tensorflow_config`), devices (a multi-worker strategy
    when ``nodes > 1``), ``save_dir`` claim, then the model work. ``devices`` (device names to mirror over)
    overrides the GPU resolution (tests).
    """
    config = _tensorflow_config(config)
    distribution = _Distribution(devices, config)
    # on several workers only the chief writes save_dir; the others write to a temporary folder, starting from a
    # copy of the run already there (resume: every worker restores the chief's backup)
    with worker_save_dir(config.save_dir, distribution.strategy, copy_run=not config.overwrite) as run_dir:
        return _train_in(pathlib.Path(run_dir), config, distribution)


def _train_in(save_dir: pathlib.Path, config: TrainConfig, distribution):
    """The run, writing into ``save_dir`` (the chief's real folder, or another worker's temporary one)."""
    resuming = _claim_run(save_dir, config)
    start_epoch = backup_epoch(save_dir / "backup") if resuming else 0
    if config.nodes > 1:  # each worker restores its copy of the chief's backup: all must start from the same epoch
        check_workers_agree(distribution.strategy, start_epoch, "the epoch to start from (a resumed run's backup)")
    keras.utils.set_random_seed(config.random_state)
    datasets = _Datasets(config, distribution.n_replicas, several_workers=config.nodes > 1)
    fit_ds, steps_per_epoch = datasets.for_fit(start_epoch)
    with distribution.precision():
        with distribution.strategy.scope():
            model = _build_model(config)
        if not distribution.on_gpu:  # GPU-sized settings on a CPU: say how long a batch will take
            _warn_if_gpu_sized(model, config.architecture_name, model.channels, config.resize_after_crop,
                               config.batch_size, config.train_catalog, steps_per_epoch, config.epochs)
        trainer = _assemble_trainer(save_dir, config, start_epoch)
        trainer.strategy = distribution.strategy
        # the run is recorded when training starts, not before (a run that fails while set up leaves no trace)
        write_run_config(save_dir, config, backend="tensorflow")
        if config.train_catalog is not None:
            write_split_catalogs(save_dir, config.train_catalog, config.val_catalog, config.test_catalog)
        _fit(model, trainer, fit_ds, datasets, steps_per_epoch)
        _best_calibrated_and_tested(model, trainer, datasets)
    return model, trainer


def _claim_run(save_dir: pathlib.Path, config: TrainConfig) -> bool:
    """One run per save_dir: resume it, replace it (overwrite) or refuse, before any expensive work."""
    backup_dir = save_dir / "backup"
    has_backup = backup_dir.is_dir() and any(backup_dir.iterdir())
    resuming = claim_save_dir(save_dir, config, resume=config.resume, overwrite=config.overwrite,
                              resumable=has_backup)
    if not resuming and backup_dir.exists():
        shutil.rmtree(backup_dir)  # an empty backup folder: start afresh
    return resuming


class _Distribution:
    """The devices of a run: its ``tf.distribute`` strategy and whether it trains in mixed precision."""

    def __init__(self, devices, config: TrainConfig):
        if devices is None:
            n_gpus = resolve_device_count(config.gpus, len(tf.config.list_physical_devices("GPU")), "tensorflow")
            devices = [f"/gpu:{i}" for i in range(n_gpus)]
        if config.nodes > 1:  # every worker mirrors over its local devices (docs/guides/scaling_out.md)
            self.strategy = multi_worker_strategy(config.nodes)
        elif len(devices) > 1:
            self.strategy = tf.distribute.MirroredStrategy(devices=list(devices))
        elif len(devices) == 1:
            self.strategy = tf.distribute.OneDeviceStrategy(devices[0])
        else:
            self.strategy = tf.distribute.get_strategy()
        self.n_replicas = max(self.strategy.num_replicas_in_sync, 1)
        self.on_gpu = any("gpu" in str(d).lower() for d in devices)
        self.mixed = bool(config.mixed_precision) and self.on_gpu
        if config.mixed_precision and not self.on_gpu:
            warnings.warn("mixed_precision=True is ignored: training runs on the CPU, where zoobot trains in float32.",
                          UserWarning, stacklevel=4)
        if config.sync_batchnorm and len(devices) > 1:
            warnings.warn("sync_batchnorm=True is ignored by the TensorFlow backend: Keras' MirroredStrategy keeps "
                          "per-replica BatchNorm statistics.", UserWarning, stacklevel=4)

    @contextlib.contextmanager
    def precision(self):
        """The ``mixed_float16`` global policy while the run lasts (when asked for, on GPU); restored after."""
        previous = keras.mixed_precision.global_policy()
        try:
            if self.mixed:
                keras.mixed_precision.set_global_policy("mixed_float16")
            yield
        finally:
            if self.mixed:
                keras.mixed_precision.set_global_policy(previous)


class _Datasets:
    """The run's train/val/test ``tf.data`` pipelines (catalogs or TFRecord shards), first batch checked."""

    def __init__(self, config: TrainConfig, n_replicas: int, several_workers: bool = False):
        self.catalogs = (config.train_catalog, config.val_catalog, config.test_catalog)
        global_batch_size = config.batch_size * n_replicas
        if config.train_records is not None:
            self.train = _shard_dataset(config.train_records, config, global_batch_size, train=True)
            self.val = _shard_dataset(config.val_records, config, global_batch_size, train=False)
            self.test = (None if config.test_records is None
                         else _shard_dataset(config.test_records, config, global_batch_size, train=False))
        else:
            self.train, self.val, self.test = _catalog_datasets(config, global_batch_size)
        if several_workers:  # several workers: each takes every n-th example of the same global batches
            self.train, self.val, self.test = (shard_by_data(d) for d in (self.train, self.val, self.test))
        with self.errors_named():
            _check_first_batch(self.train, 3 if config.color else 1, config.schema, "training")

    def errors_named(self):
        """A decode error of the pipeline becomes the error of the unreadable file (:func:`_image_errors_named`)."""
        return _image_errors_named(self.catalogs)

    def for_fit(self, start_epoch: int):
        """``(dataset, steps_per_epoch)`` for ``fit``. Each epoch must see the same shuffle and augmentations
        whether or not the run was resumed: the dataset draws new seeds per iteration, so it is repeated (one
        iteration per epoch, whatever Keras does between epochs) after skipping the epochs already done."""
        steps_per_epoch = int(self.train.cardinality())
        if steps_per_epoch <= 0:  # unknown length (shards without a shard_config.json): iterate until the data ends
            return self.train, None
        skip_epochs(self.train, start_epoch)
        return self.train.repeat(), steps_per_epoch


def _build_model(config: TrainConfig):
    """The ZoobotTree of the run, compiled (call inside the strategy's scope)."""
    from zoobot.tensorflow.estimators.define_model import ZoobotTree

    schema, channels = config.schema, 3 if config.color else 1
    model = ZoobotTree(
        output_dim=schema.n_answers, schema=schema, architecture_name=config.architecture_name, channels=channels,
        test_time_dropout=True, compile_encoder=config.compile_encoder, timm_kwargs=config.timm_kwargs,
        dropout_rate=config.dropout_rate, learning_rate=config.learning_rate, betas=config.betas,
        weight_decay=config.weight_decay,
        scheduler_params=resolve_train_schedule(config.scheduler_params, config.epochs),
    )
    _train_encoder_like_timm(model.encoder)
    model.concentration_floor = DEFAULT_TRAIN_CONCENTRATION_FLOOR
    model.fraction_loss_weight = DEFAULT_TRAIN_FRACTION_LOSS_WEIGHT
    model.input_size = int(config.resize_after_crop)
    model.preprocessing = _preprocessing_record(config, channels, config.train_catalog)
    model.compile(**model.default_compile_kwargs(gradient_clip_val=0.3), run_eagerly=bool(config.eager))
    return model


def _assemble_trainer(save_dir: pathlib.Path, config: TrainConfig, start_epoch: int):
    """A :class:`~zoobot.tensorflow.training.trainer.Trainer` holding the run's callbacks, in the order they run:
    the backup first (the others see the restored epoch in ``on_train_begin``), then the loss guard, the
    learning-rate schedule, the checkpoints, early stopping, the metrics file, the user's callbacks."""
    from zoobot.tensorflow.training.trainer import Trainer

    backup_dir = save_dir / "backup"
    checkpoint_dir = save_dir / "checkpoints"
    csv_logger = CSVLogger(save_dir, name="logs")
    if start_epoch:
        csv_logger.resume(start_epoch - 1)
    checkpoints = ModelCheckpoint(
        checkpoint_dir, filename=config.checkpoint_file_template or "{epoch}", monitor=_KERAS_MONITOR, mode="min",
        save_top_k=config.save_top_k, auto_insert_metric_name=config.auto_insert_metric_name,
        state_file=checkpoint_dir / "checkpoints.json", template_metrics=rename_metrics)
    epochs = config.epochs
    callbacks = [
        AtomicBackupAndRestore(str(backup_dir), delete_checkpoint=False),
        RandomStateBackup(backup_dir, start_epoch),
        NonFiniteLossGuard(val_key=_KERAS_MONITOR, val_name=MONITOR),
        checkpoints,
        EarlyStopping(monitor=_KERAS_MONITOR, mode="min", patience=config.patience),
        EpochMetrics(csv_logger, rename_metrics, wandb_logger=config.wandb_logger),
        # for the message of an interrupted run (zoobot.shared.interrupts)
        keras.callbacks.LambdaCallback(on_epoch_begin=lambda epoch, logs: interrupts.note_epoch(epoch, epochs)),
        *(config.extra_callbacks or []),
    ]
    return Trainer(default_root_dir=save_dir, max_epochs=epochs, logger=csv_logger, callbacks=callbacks)


def _fit(model, trainer, fit_ds, datasets: _Datasets, steps_per_epoch) -> None:
    callbacks = list(trainer.callbacks)
    callbacks[3:3] = model.scheduler_callbacks()  # the learning-rate schedule, after the loss guard
    # one line per epoch in a log file, with the losses PyTorch's line shows (per-question losses: metrics.csv)
    verbose, progress_callbacks = fit_verbosity(True, trainer.max_epochs,
                                                keep=("val_loss", "loss", "learning_rate", "lr"))
    with datasets.errors_named():
        trainer.history = model.fit(fit_ds, validation_data=datasets.val, epochs=trainer.max_epochs,
                                    steps_per_epoch=steps_per_epoch, callbacks=callbacks + progress_callbacks,
                                    shuffle=False, verbose=verbose)
    trainer.model = model
    history = trainer.history
    trainer.current_epoch = int(history.epoch[-1]) + 1 if history.epoch else 0
    trainer.global_step = optimizer_step(model)
    last = {k: v[-1] for k, v in history.history.items() if v}
    trainer.callback_metrics = {k: scalar(v) for k, v in rename_metrics(last).items()}


def _best_calibrated_and_tested(model, trainer, datasets: _Datasets) -> None:
    """Load the best checkpoint's weights, calibrate them on the validation votes, evaluate them on the test split."""
    checkpoints = trainer.checkpoint_callback
    best_path = checkpoints.best_model_path
    if not best_path or not os.path.isfile(best_path):
        best_path = checkpoints.last_model_path or str(checkpoints.dirpath / "last.keras")
    if os.path.isfile(best_path):
        model.load_weights(best_path)
    model.best_checkpoint_path = str(best_path)
    with datasets.errors_named():
        _calibrate(model, datasets.val, trainer.default_root_dir, [best_path, checkpoints.last_model_path])
    if datasets.test is None:
        return
    with datasets.errors_named():
        results = model.evaluate(datasets.test, return_dict=True, verbose=0)
    trainer.test_metrics = {k: scalar(v) for k, v in rename_metrics(results, split="test").items()}
    trainer.callback_metrics.update(trainer.test_metrics)
    last_epoch = trainer.history.epoch[-1] if trainer.history.epoch else 0
    metrics = next(c for c in trainer.callbacks if isinstance(c, EpochMetrics))
    metrics.add_row({"epoch": last_epoch, "step": optimizer_step(model), **trainer.test_metrics})
