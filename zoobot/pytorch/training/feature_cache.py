"""Fast finetuning with a frozen encoder: compute each image's features once, reuse them every epoch.

When no encoder weight trains (``n_blocks=0``), the encoder is a fixed function: the same image
always gives the same features. Running it every epoch is most of the cost of finetuning a head on
a laptop. The finetuning models (``cache_features=None``, the default, or ``True``) avoid it in one of
two ways, chosen at the start of each ``trainer.fit``.

1. Feature replay: no image is read after the first pass
---------------------------------------------------------
Taken when the encoder is frozen, the fit's data comes from zoobot's
:class:`~zoobot.pytorch.datasets.GalaxyDataModule` (``trainer.fit(model, datamodule)``) and its
training transform is known to be deterministic (:func:`is_deterministic_transform`: zoobot's
``EvalTransform``, or no transform). The default ``TrainTransform`` is random, so ask for it::

    datamodule = GalaxyDataModule(label_cols, catalog=catalog, batch_size=64,
                                  train_transform=EvalTransform(channels=3, resize_after_crop=224))

At ``on_fit_start`` the model runs the encoder once (eval mode, no gradients, progress bar) over
every row of the data module's training and validation datasets - the same loading, transform,
failure handling, batch size and workers as training - and switches those datasets to serve
``(features[row], label)`` (:meth:`~zoobot.pytorch.datasets.galaxy_dataset.GalaxyDataset.use_features`).
Every epoch then reads no file: its batches are (B, feature_dim) rows that go straight to the head.
Shuffling, ``drop_last``, batch size, loss, metrics, logging, checkpoints and early stopping are
unchanged, and with the same seed the head trains to the same weights as from the images (float
tolerance). At the end of fit (also when it fails) the datasets serve images again, so
``trainer.test``/``predict`` read files as usual. Memory: ``n_rows x feature_dim x 4`` bytes for train
+ val (2.6 MB for 1,000 galaxies and ConvNeXt-nano's 640 features); over :class:`FeatureCache`'s
``max_bytes`` the replay is skipped (INFO log). ``on_fit_start`` is used, not the first epoch's start,
because Lightning starts the training loader (and its workers) before ``on_train_epoch_start``: anyone
timing epochs sees the encoding pass *before* epoch 1, and epoch 1 as fast as the later ones. A
random validation transform (``test_time_augmentation=True``) leaves validation on path 2;
``visualize_images=True`` (which needs the training images) and a Trainer that already holds loaders
from an earlier fit leave the whole fit on path 2. The INFO log says which path was taken and why.

2. Content-keyed cache: every other case
----------------------------------------
User DataLoaders, custom or partly random transforms: :class:`FeatureCache` stores the features of
every image the encoder has seen during a ``fit`` and hands them back when the **same image** comes
again. The images are still read, decoded and transformed by the DataLoader every epoch; only the
encoder's forward pass is skipped.

Batches carry no sample index (``(images, labels)`` as from any DataLoader), so this cache is keyed
by the image itself: two 64-bit fingerprints of the exact bits of each input tensor
(``sum_i w_i * bits_i`` modulo 2**64 with fixed random odd weights ``w``; integer arithmetic, so
the result does not depend on the device, the batch or the summation order). A hit therefore means
the encoder would see bitwise the same input, and the cached features are what it would compute
(up to the last-bit differences between batch compositions). Consequences:

- it needs no cooperation from the data pipeline: any DataLoader, any shuffling, tuple or dict
  batches, workers or not;
- it can never train on stale features: with random augmentations the images differ every epoch,
  lookups miss, and the cache switches itself off after the second epoch (hit rate below
  :data:`MIN_HIT_RATE`); the finetuning classes skip caching training images from the start when
  the data module uses zoobot's random ``TrainTransform`` (the ``GalaxyDataModule`` default);
  partly random transforms (a flip only) still hit once both versions of an image are cached;
- validation images (always deterministic) are cached too.

Memory as for replay, capped by ``max_bytes``.

Measured
--------
Content-keyed cache (200 synthetic galaxies, 140 train + 20 val per epoch, 64 px, 1 CPU thread,
frozen encoder, batch 32, busy shared machine): ConvNeXt-nano 3.9-4.9 s per epoch without the cache;
with it 4.9 s for the first epoch and 0.73-0.79 s for later ones (about 6x). EfficientNet-B0: 2.4-3.8 s
vs 0.74-0.86 s. Of the cached epoch, about 0.5 s is image decoding, which feature replay removes.
Larger images cost the encoder quadratically more and the decoding less, so the gain grows with image
size.
"""
from __future__ import annotations

import logging
import sys

import torch

__all__ = ["FeatureCache", "image_fingerprints", "is_deterministic_transform", "encode_rows", "MIN_HIT_RATE",
           "DEFAULT_MAX_BYTES"]

logger = logging.getLogger(__name__)

#: A stage whose hit rate over an epoch (after the first) is below this stops caching.
MIN_HIT_RATE = 0.1
#: Default memory cap of the cached features (per cache), in bytes.
DEFAULT_MAX_BYTES = 4 * 1024 ** 3

_INT_VIEW = {1: torch.uint8, 2: torch.int16, 4: torch.int32, 8: torch.int64}
_WEIGHTS: dict = {}
_CHUNK_ELEMENTS = 2 ** 22  # ~32 MB of int64 temporaries per chunk


def _weights(n: int, device: torch.device) -> torch.Tensor:
    """Two rows of fixed random odd int64 weights of length ``n`` (cached per length and device)."""
    key = (n, str(device))
    if key not in _WEIGHTS:
        generator = torch.Generator().manual_seed(20240229 + n)
        w = torch.randint(-(2 ** 62), 2 ** 62, (2, n), generator=generator, dtype=torch.int64) * 2 + 1
        _WEIGHTS[key] = w.to(device)
    return _WEIGHTS[key]


def image_fingerprints(images: torch.Tensor) -> list[tuple]:
    """Exact content keys of each image in a batch.

    Parameters
    ----------
    images : Tensor (B, ...)
        Any dtype and device.

    Returns
    -------
    list of tuple
        One hashable key per image: ``(shape, dtype, key_a, key_b)``. Equal images give equal keys;
        different images collide with probability about 2**-64 or less.

    Examples
    --------
    >>> import torch
    >>> x = torch.rand(3, 1, 8, 8)
    >>> keys = image_fingerprints(torch.cat([x, x[:1]]))
    >>> keys[0] == keys[3], keys[0] == keys[1]
    (True, False)
    """
    if images.ndim < 1 or images.shape[0] == 0:
        return []
    x = images.detach().contiguous()
    batch = x.shape[0]
    bits = x.view(_INT_VIEW[x.element_size()]).reshape(batch, -1)
    n = bits.shape[1]
    w = _weights(n, bits.device)
    keys = torch.zeros(batch, 2, dtype=torch.int64, device=bits.device)
    step = max(1, _CHUNK_ELEMENTS // max(n, 1))
    for start in range(0, batch, step):
        chunk = bits[start:start + step].to(torch.int64)
        keys[start:start + step, 0] = (chunk * w[0]).sum(dim=1)
        keys[start:start + step, 1] = (chunk * w[1]).sum(dim=1)
    head = (tuple(x.shape[1:]), str(x.dtype))
    return [(head, int(a), int(b)) for a, b in keys.cpu().tolist()]


class FeatureCache:
    """Features of a frozen encoder, keyed by image content, for one ``fit``.

    Parameters
    ----------
    max_bytes : int
        Stop adding features beyond this many bytes (lookups still work).

    Examples
    --------
    >>> import torch
    >>> encoder = torch.nn.Flatten()
    >>> cache = FeatureCache()
    >>> x = torch.rand(4, 1, 2, 2)
    >>> first = cache.encode(encoder, x, stage='train')     # computes, stores
    >>> second = cache.encode(encoder, x, stage='train')    # served from the cache
    >>> bool(torch.equal(first, second)), cache.stats('train')
    (True, {'hits': 4, 'misses': 4, 'stored': 4})
    """

    def __init__(self, max_bytes: int = DEFAULT_MAX_BYTES):
        self.max_bytes = int(max_bytes)
        self._features: dict[str, dict] = {}
        self._hits: dict[str, int] = {}
        self._misses: dict[str, int] = {}
        self._disabled: set[str] = set()
        self._bytes = 0
        self._full_logged = False

    # -- bookkeeping ---------------------------------------------------------------------------

    def enabled(self, stage: str) -> bool:
        """Whether ``stage`` ('train', 'val', ...) still uses the cache."""
        return stage not in self._disabled

    def disable(self, stage: str) -> None:
        """Stop caching ``stage`` and free its features."""
        self._disabled.add(stage)
        store = self._features.pop(stage, {})
        self._bytes -= sum(v.numel() * v.element_size() for v in store.values())

    def stats(self, stage: str) -> dict:
        """Hits and misses since the last :meth:`reset_stats`, and the number of stored images."""
        return {"hits": self._hits.get(stage, 0), "misses": self._misses.get(stage, 0),
                "stored": len(self._features.get(stage, {}))}

    def hit_rate(self, stage: str) -> float | None:
        """Fraction of lookups served since the last :meth:`reset_stats` (None if none were made)."""
        total = self._hits.get(stage, 0) + self._misses.get(stage, 0)
        return None if total == 0 else self._hits.get(stage, 0) / total

    def reset_stats(self, stage: str) -> None:
        self._hits[stage] = 0
        self._misses[stage] = 0

    def clear(self) -> None:
        """Forget everything (features, statistics, disabled stages)."""
        self.__init__(self.max_bytes)

    @property
    def nbytes(self) -> int:
        """Bytes of cached features."""
        return self._bytes

    # -- the work ------------------------------------------------------------------------------

    @torch.no_grad()
    def encode(self, encoder, images: torch.Tensor, stage: str) -> torch.Tensor:
        """``encoder(images)``, computing only the images not seen before in this ``stage``.

        The encoder must be frozen and in eval mode (a fixed function of its input); the caller
        checks that. Returns a new tensor (B, D) on the images' device.
        """
        if not self.enabled(stage):
            return encoder(images)
        store = self._features.setdefault(stage, {})
        keys = image_fingerprints(images)
        missing = [i for i, k in enumerate(keys) if k not in store]
        self._hits[stage] = self._hits.get(stage, 0) + len(keys) - len(missing)
        self._misses[stage] = self._misses.get(stage, 0) + len(missing)
        if len(missing) == len(keys):
            features = encoder(images)
            self._store(store, keys, features)
            return features
        if missing:
            index = torch.tensor(missing, device=images.device)
            computed = encoder(images.index_select(0, index))
            self._store(store, [keys[i] for i in missing], computed)
        return torch.stack([store[k] for k in keys]).to(images.device)

    def _store(self, store: dict, keys: list, features: torch.Tensor) -> None:
        features = features.detach()
        per_item = features[0].numel() * features.element_size() if len(features) else 0
        for key, row in zip(keys, features):
            if self._bytes + per_item > self.max_bytes:
                if not self._full_logged:
                    logger.info("Feature cache full (%d bytes); later images are not cached", self._bytes)
                    self._full_logged = True
                return
            if key not in store:
                store[key] = row.clone()
                self._bytes += per_item


# =============================================================================================
# feature replay: one encoder pass over every row of a GalaxyDataModule's datasets
# =============================================================================================

def is_deterministic_transform(transform) -> bool:
    """Whether a data-pipeline transform is *known* to map the same image to the same tensor.

    True for no transform (plain conversion to a tensor), zoobot's
    :class:`~zoobot.pytorch.datasets.transforms.EvalTransform` (centre crop + resize) and
    :func:`~zoobot.pytorch.datasets.transforms.image_to_tensor`, also when wrapped in a
    :class:`~zoobot.pytorch.datasets.transforms.CustomTransform` (as ``GalaxyDataModule(train_transform=...)``
    does). False for everything else: zoobot's random ``TrainTransform``, subclasses, and any user callable
    (which may be random).

    Examples
    --------
    >>> from zoobot.pytorch.datasets.transforms import EvalTransform, TrainTransform
    >>> is_deterministic_transform(EvalTransform(channels=1, resize_after_crop=32))
    True
    >>> is_deterministic_transform(TrainTransform(channels=1, resize_after_crop=32))
    False
    """
    from zoobot.pytorch.datasets.transforms import CustomTransform, EvalTransform, image_to_tensor

    if transform is None or transform is image_to_tensor:
        return True
    if type(transform) is CustomTransform:
        return is_deterministic_transform(transform.transform)
    return type(transform) is EvalTransform


@torch.no_grad()
def encode_rows(encode, loader, n_rows: int, feature_dim: int, desc: str = "encoding") -> torch.Tensor:
    """Features of every row of an unshuffled loader, in row order: a float32 CPU tensor (n_rows, feature_dim).

    Parameters
    ----------
    encode : callable
        Images (B, C, H, W) -> features (B, feature_dim); called under ``torch.no_grad``.
    loader : iterable
        Batches ``(images, ...)``, ``images`` or dicts with ``'image'``, covering rows 0..n_rows-1 in order.
    n_rows, feature_dim : int
        Expected size of the result.
    desc : str
        Progress-bar label.

    Raises
    ------
    RuntimeError
        The loader yielded a different number of rows, or the features have another width.

    Examples
    --------
    >>> import torch
    >>> batches = [torch.ones(2, 1, 2, 2), torch.zeros(1, 1, 2, 2)]
    >>> encode_rows(torch.nn.Flatten(), batches, n_rows=3, feature_dim=4).sum(dim=1).tolist()
    [4.0, 4.0, 0.0]
    """
    from tqdm.auto import tqdm

    from zoobot.shared.console import is_terminal

    features = torch.empty((int(n_rows), int(feature_dim)), dtype=torch.float32)
    done = 0
    try:
        total = len(loader)
    except TypeError:
        total = None
    # a bar on a terminal only: a log file would keep every redraw of a bar that vanishes anyway (leave=False)
    for batch in tqdm(loader, total=total, desc=desc, leave=False, disable=not is_terminal(sys.stderr)):
        if isinstance(batch, dict):
            images = batch["image"]
        elif isinstance(batch, (tuple, list)):
            images = batch[0]
        else:
            images = batch
        out = encode(images)
        if out.ndim != 2 or out.shape[1] != feature_dim or done + out.shape[0] > n_rows:
            raise RuntimeError(f"{desc}: expected {n_rows} feature rows of width {feature_dim}; got a batch of shape "
                               f"{tuple(out.shape)} after {done} rows")
        features[done:done + out.shape[0]] = out.detach().to("cpu", torch.float32)
        done += out.shape[0]
    if done != n_rows:
        raise RuntimeError(f"{desc}: the loader yielded {done} rows, expected {n_rows}")
    return features
