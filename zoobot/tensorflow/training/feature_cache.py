"""Fast finetuning with a frozen encoder: compute each image's features once, reuse them every epoch (Keras).

The twin of :mod:`zoobot.pytorch.training.feature_cache`. With ``n_blocks=0`` the encoder is a fixed
function of the image, and running it every epoch is most of the cost of finetuning a head. Two ways
avoid it, chosen at the start of each ``fit``:

1. :class:`FeatureReplay` (run by ``FeatureReplayCallback``): the fit's data comes from zoobot's
   ``GalaxyDataModule`` with deterministic transforms (:func:`is_deterministic_transform`, e.g.
   ``train_transform=EvalTransform(...)``); every train and val row is encoded once when the first
   epoch begins and Keras then trains the head on ``(features, labels)`` datasets with the same shuffling.
2. :class:`FeatureCache`, every other case: keyed by a 64-bit fingerprint of each image's exact bytes
   (:func:`image_fingerprints`), inside the compiled steps, so stale features are never served; with
   random augmentations lookups miss and caching switches itself off (hit rate below :data:`MIN_HIT_RATE`).

Details and measurements: docs/guides/finetuning.md ("Fast head-only finetuning: feature replay").
"""
from __future__ import annotations

import logging
import sys

import numpy as np
import tensorflow as tf

from zoobot.shared.validation import check_int

__all__ = ["FeatureCache", "FeatureReplay", "image_fingerprints", "is_deterministic_transform", "encode_rows",
           "MIN_HIT_RATE", "DEFAULT_MAX_BYTES"]

logger = logging.getLogger(__name__)


def image_fingerprints(images) -> tf.Tensor:
    """Exact content keys of each image in a batch: int64 (B,), equal images give equal keys.

    Different images collide with probability about 2**-64.

    Examples
    --------
    >>> x = np.random.rand(3, 4, 4, 1).astype('float32')
    >>> keys = np.asarray(image_fingerprints(np.concatenate([x, x[:1]])))
    >>> bool(keys[0] == keys[3]), bool(keys[0] == keys[1])
    (True, False)
    """
    return tf.bitcast(tf.fingerprint(tf.convert_to_tensor(images)), tf.int64)


#: A stage whose hit rate over an epoch (after the first) is below this stops caching.
MIN_HIT_RATE = 0.1
#: Default memory cap of the cached features (per stage), in bytes.
DEFAULT_MAX_BYTES = 4 * 1024 ** 3


class FeatureCache:
    """Features of a frozen encoder, keyed by image content, for one ``fit`` (inside the graph).

    When no encoder weight trains, the encoder is a fixed function: the same image always gives
    the same features, and running it every epoch is most of the cost of finetuning a head on a
    CPU. This cache keeps the features of every image the encoder has seen during a fit, in
    ``tf.lookup`` hash tables (one per stage, 'train' and 'val'), and hands them back when **the
    same image** comes again, so from the second epoch on only the head runs.

    Images are recognised by a 64-bit fingerprint of their exact bytes (``tf.fingerprint``,
    farmhash64), so any ``tf.data`` pipeline, any shuffling, works unchanged, and stale features
    are never served: with random augmentations lookups miss, and the Trainer switches the stage
    off after its second epoch (hit rate below :data:`MIN_HIT_RATE`). Features are float32;
    memory is ``n_images x feature_dim x 4`` bytes, capped by ``max_bytes`` per stage.

    The cache is used only between :meth:`start` and :meth:`stop` (the Trainer calls them around
    ``fit``); otherwise :meth:`encode` just runs the encoder.

    Parameters
    ----------
    feature_dim : int
        Encoder output dimension.
    max_bytes : int
        Stop adding features beyond this many bytes per stage (lookups still work).

    Examples
    --------
    >>> import keras
    >>> encoder = keras.Sequential([keras.Input((2, 2, 1)), keras.layers.Flatten()])
    >>> cache = FeatureCache(4)
    >>> cache.start()
    >>> x = np.random.rand(3, 2, 2, 1).astype('float32')
    >>> first = cache.encode(encoder, x, 'train')     # computes, stores
    >>> second = cache.encode(encoder, x, 'train')    # served from the cache
    >>> bool(np.array_equal(first, second)), cache.stats('train')
    (True, {'hits': 3, 'misses': 3, 'stored': 3})
    """

    STAGES = ("train", "val")

    def __init__(self, feature_dim: int, max_bytes: int = DEFAULT_MAX_BYTES):
        self.feature_dim = check_int("feature_dim", feature_dim, minimum=1)
        self.max_rows = max(int(max_bytes) // (4 * self.feature_dim), 0)
        #: Per-epoch statistics of the last fit, ``[{'epoch': e, 'train': stats, 'val': stats}, ...]``.
        self.history: list[dict] = []
        with tf.init_scope():
            self.active = tf.Variable(False, trainable=False, name="feature_cache_active")
            self._enabled = {s: tf.Variable(True, trainable=False) for s in self.STAGES}
            self._hits = {s: tf.Variable(0, dtype=tf.int64, trainable=False) for s in self.STAGES}
            self._misses = {s: tf.Variable(0, dtype=tf.int64, trainable=False) for s in self.STAGES}
            empty = tf.fill([self.feature_dim], float("nan"))
            self._tables = {s: tf.lookup.experimental.MutableHashTable(tf.int64, tf.float32, empty)
                            for s in self.STAGES}

    # -- bookkeeping (eager) -----------------------------------------------------------------

    def start(self) -> None:
        """Forget everything and start caching (every stage enabled)."""
        self.clear()
        self.history = []
        self.active.assign(True)

    def stop(self) -> None:
        """Stop caching and free the features (:attr:`history` and the statistics stay readable)."""
        self.active.assign(False)
        for stage in self.STAGES:
            self._free(stage)

    def clear(self) -> None:
        for stage in self.STAGES:
            self._free(stage)
            self._enabled[stage].assign(True)
            self.reset_stats(stage)

    def _free(self, stage: str) -> None:
        keys, _ = self._tables[stage].export()
        if int(tf.size(keys)):
            self._tables[stage].remove(keys)

    def enabled(self, stage: str) -> bool:
        """Whether ``stage`` still uses the cache."""
        return bool(self._enabled[stage].numpy())

    def disable(self, stage: str) -> None:
        """Stop caching ``stage`` and free its features."""
        self._enabled[stage].assign(False)
        self._free(stage)

    def stats(self, stage: str) -> dict:
        """Hits and misses since the last :meth:`reset_stats`, and the number of stored images."""
        return {"hits": int(self._hits[stage].numpy()), "misses": int(self._misses[stage].numpy()),
                "stored": int(self._tables[stage].size().numpy())}

    def hit_rate(self, stage: str) -> float | None:
        """Fraction of lookups served since the last :meth:`reset_stats` (None if none were made)."""
        stats = self.stats(stage)
        total = stats["hits"] + stats["misses"]
        return None if total == 0 else stats["hits"] / total

    def reset_stats(self, stage: str) -> None:
        self._hits[stage].assign(0)
        self._misses[stage].assign(0)

    @property
    def nbytes(self) -> int:
        """Bytes of cached features."""
        return sum(self.stats(s)["stored"] for s in self.STAGES) * 4 * self.feature_dim

    # -- the work (graph-compatible) --------------------------------------------------------

    def encode(self, encoder, images, stage: str):
        """``encoder(images, training=False)``, computing only the images not seen before in ``stage``.

        Returns float32 features (B, feature_dim).
        """
        images = tf.convert_to_tensor(images)
        table, hits, misses = self._tables[stage], self._hits[stage], self._misses[stage]
        use = tf.logical_and(self.active, self._enabled[stage])
        batch = tf.shape(images)[0]
        keys = image_fingerprints(images)  # (B,)
        not_found = tf.fill(tf.stack([batch, self.feature_dim]), float("nan"))
        # the encoder appears once in the graph: it runs on the images not found (all of them when not caching)
        stored = tf.cond(use, lambda: table.lookup(keys), lambda: not_found)
        missing = tf.math.is_nan(stored[:, 0])
        index = tf.where(missing)[:, 0]
        n_missing = tf.size(index, out_type=tf.int64)

        def run_encoder():
            return tf.cast(encoder(tf.gather(images, index), training=False), tf.float32)

        computed = tf.cond(n_missing > 0, run_encoder, lambda: tf.zeros([0, self.feature_dim], tf.float32))
        computed = tf.ensure_shape(computed, [None, self.feature_dim])

        def record():
            hits.assign_add(tf.cast(batch, tf.int64) - n_missing)
            misses.assign_add(n_missing)
            room = table.size() + n_missing <= self.max_rows
            with tf.control_dependencies([tf.cond(room, lambda: table.insert(tf.gather(keys, index), computed),
                                                  tf.no_op)]):
                return tf.constant(True)

        recorded = tf.cond(use, record, lambda: tf.constant(False))
        with tf.control_dependencies([recorded]):
            features = tf.tensor_scatter_nd_update(stored, index[:, tf.newaxis], computed)
        return tf.ensure_shape(features, [None, self.feature_dim])


# =============================================================================================
# feature replay: one encoder pass over every row of a GalaxyDataModule's train and val sets
# =============================================================================================

def is_deterministic_transform(transform) -> bool:
    """Whether a data-pipeline transform is *known* to map the same image to the same tensor.

    True for no transform and for zoobot's
    :class:`~zoobot.tensorflow.datasets.transforms.EvalTransform` (centre crop + resize), also when
    wrapped in a :class:`~zoobot.tensorflow.datasets.transforms.CustomTransform` (as
    ``GalaxyDataModule(train_transform=...)`` does). False for everything else: zoobot's random
    ``TrainTransform``, subclasses, and any user callable (which may be random).

    Examples
    --------
    >>> from zoobot.tensorflow.datasets.transforms import EvalTransform, TrainTransform
    >>> is_deterministic_transform(EvalTransform(channels=1, resize_after_crop=32))
    True
    >>> is_deterministic_transform(TrainTransform(channels=1, resize_after_crop=32))
    False
    """
    from zoobot.tensorflow.datasets.transforms import CustomTransform, EvalTransform

    if transform is None:
        return True
    if type(transform) is CustomTransform:
        return is_deterministic_transform(transform.transform)
    return type(transform) is EvalTransform


def encode_rows(encode, dataset, n_rows: int, feature_dim: int, desc: str = "encoding",
                progress_bar: bool = True) -> np.ndarray:
    """Features of every row of an unshuffled dataset, in row order: float32 (n_rows, feature_dim).

    Parameters
    ----------
    encode : callable
        Images (B, H, W, C) -> features (B, feature_dim), e.g. a compiled forward pass.
    dataset : iterable
        Batches ``(images, ...)``, ``images`` or dicts with ``'image'``, covering rows 0..n_rows-1 in order.
    n_rows, feature_dim : int
        Expected size of the result.
    desc : str
        Progress-bar label.
    progress_bar : bool, default True
        Show a tqdm progress bar.

    Raises
    ------
    RuntimeError
        The dataset yielded a different number of rows, or the features have another width.

    Examples
    --------
    >>> batches = [np.ones((2, 2, 2, 1), 'float32'), np.zeros((1, 2, 2, 1), 'float32')]
    >>> encode_rows(lambda x: x.reshape(len(x), -1), batches, n_rows=3, feature_dim=4, progress_bar=False).sum(1)
    array([4., 4., 0.], dtype=float32)
    """
    from tqdm.auto import tqdm

    from zoobot.shared.console import is_terminal

    features = np.empty((int(n_rows), int(feature_dim)), dtype=np.float32)
    done = 0
    try:
        total = len(dataset)
    except TypeError:
        total = None
    # a bar on a terminal only: a log file would keep every redraw of a bar that vanishes anyway (leave=False)
    for batch in tqdm(dataset, total=total, desc=desc, leave=False,
                      disable=not progress_bar or not is_terminal(sys.stderr)):
        if isinstance(batch, dict):
            images = batch["image"]
        elif isinstance(batch, (tuple, list)):
            images = batch[0]
        else:
            images = batch
        out = np.asarray(encode(images), dtype=np.float32)
        if out.ndim != 2 or out.shape[1] != feature_dim or done + out.shape[0] > n_rows:
            raise RuntimeError(f"{desc}: expected {n_rows} feature rows of width {feature_dim}; got a batch of shape "
                               f"{out.shape} after {done} rows")
        features[done:done + out.shape[0]] = out
        done += out.shape[0]
    if done != n_rows:
        raise RuntimeError(f"{desc}: the dataset yielded {done} rows, expected {n_rows}")
    return features


class FeatureReplay:
    """Frozen-encoder features of every train and val row of a ``GalaxyDataModule``, computed once.

    The fast path of finetuning with a frozen encoder and a deterministic training transform
    (:func:`is_deterministic_transform`): the Trainer builds this before ``fit``, gives Keras
    :meth:`train_dataset` and :meth:`val_dataset` instead of the image pipelines, and calls
    :meth:`encode` at the start of the first epoch. That reads every image once, through the data
    module's own loading and transforms, runs the encoder (compiled, inference mode) and keeps the
    features (float32, ``n_rows x feature_dim``); from then on the train and test steps get
    ``(features, labels)`` batches and run the head alone: no image is read again.

    The datasets replay the image pipelines' order exactly: the training rows are shuffled with the
    data module's seed (a new order each epoch, the same sequence of orders as a fresh training
    dataset), batched by ``batch_size`` with the same drop-remainder rule; validation rows come
    in catalog order. They gather rows from ``tf.Variable`` s filled by :meth:`encode`, so they can
    be handed to Keras before the features exist.

    Parameters
    ----------
    datamodule : zoobot.tensorflow.datasets.GalaxyDataModule
        Set up for 'fit'.
    feature_dim : int
        Encoder output dimension.

    Attributes
    ----------
    rows : dict
        ``{'train': n_train, 'val': n_val}``.
    encoded : bool
        Whether :meth:`encode` ran.
    seconds : float or None
        Wall time of :meth:`encode`.
    """

    SPLITS = ("train", "val")

    def __init__(self, datamodule, feature_dim: int):
        from zoobot.tensorflow.datasets.galaxy_datamodule import catalog_labels

        self.datamodule = datamodule
        self.feature_dim = int(feature_dim)
        catalogs = {split: getattr(datamodule, f"{split}_catalog") for split in self.SPLITS}
        self.rows = {split: len(catalog) for split, catalog in catalogs.items()}
        self.labels = {split: catalog_labels(catalog, datamodule.label_cols) for split, catalog in catalogs.items()}
        # the image pipeline drops the last partial training batch exactly when its batch dimension is static
        self.drop_remainder = datamodule.train_dataloader().element_spec[0].shape[0] is not None
        self.encoded = False
        self.seconds = None
        with tf.init_scope():
            self._features = {split: tf.Variable(tf.zeros([n, self.feature_dim]), trainable=False,
                                                 name=f"replayed_{split}_features")
                              for split, n in self.rows.items()}

    @property
    def nbytes(self) -> int:
        """Bytes of the stored features."""
        return sum(self.rows.values()) * 4 * self.feature_dim

    def features(self, split: str) -> np.ndarray:
        """The stored features of ``split`` ('train' or 'val'), in catalog row order, (n_rows, feature_dim)."""
        return self._features[split].numpy()

    def _dataset(self, split: str) -> tf.data.Dataset:
        variable, labels = self._features[split], tf.constant(self.labels[split])
        rows = tf.data.Dataset.range(self.rows[split])
        if split == "train":  # as catalog_dataset: shuffle the rows (buffer = all), new order each epoch
            rows = rows.shuffle(self.rows[split], seed=self.datamodule.seed, reshuffle_each_iteration=True)
        rows = rows.batch(self.datamodule.batch_size, drop_remainder=split == "train" and self.drop_remainder)
        # gathered when iterated, so the variables may be filled after the dataset was handed to Keras
        return rows.map(lambda index: (tf.gather(variable, index), tf.gather(labels, index)))

    def train_dataset(self) -> tf.data.Dataset:
        """Shuffled ``(features, labels)`` training batches (the image pipeline's order and batch sizes)."""
        return self._dataset("train")

    def val_dataset(self) -> tf.data.Dataset:
        """``(features, labels)`` validation batches in catalog order."""
        return self._dataset("val")

    def encode(self, encoder, progress_bar: bool = True) -> None:
        """Read every train and val row once (the data module's loading and transforms) and store its features."""
        import time

        from zoobot.tensorflow.datasets.galaxy_datamodule import catalog_dataset

        dm = self.datamodule
        start = time.perf_counter()
        forward = None
        for split in self.SPLITS:
            dataset = catalog_dataset(
                getattr(dm, f"{split}_catalog"), dm.train_transform if split == "train" else dm.test_transform,
                batch_size=dm.batch_size, shuffle=False, drop_remainder=False, seed=dm.seed,
                num_parallel_calls=dm.num_workers or None, prefetch=dm.prefetch_factor,
                fits_scaling=getattr(dm, "fits_scaling", "percentile"))
            if forward is None:  # traced once: a fixed signature also fits the last partial batch
                spec = dataset.element_spec
                forward = tf.function(lambda x: tf.cast(encoder(x, training=False), tf.float32),
                                      input_signature=[tf.TensorSpec([None, *spec.shape[1:]], spec.dtype)])
            features = encode_rows(forward, dataset, self.rows[split], self.feature_dim,
                                   desc=f"feature replay: encoding {split} rows", progress_bar=progress_bar)
            self._features[split].assign(features)
        self.encoded = True
        self.seconds = time.perf_counter() - start
        logger.info("feature replay: %d train + %d val rows encoded once (%.1f s); later epochs read no images",
                    self.rows["train"], self.rows["val"], self.seconds)

    def free(self) -> None:
        """Release the stored features (after ``fit``); :meth:`features` is then unavailable."""
        self._features = {}
        self.encoded = False
