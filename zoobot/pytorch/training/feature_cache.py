"""Fast finetuning with a frozen encoder: compute each image's features once, reuse them every epoch.

When no encoder weight trains (``n_blocks=0``) the encoder is a fixed function of the image. Two paths,
chosen at the start of each ``trainer.fit`` by :class:`~zoobot.pytorch.training.callbacks.FeatureReplayCallback`:

1. *feature replay*: with zoobot's ``GalaxyDataModule`` and a deterministic training transform
   (:func:`is_deterministic_transform`, e.g. ``EvalTransform``), every train/val row is encoded once
   (:func:`encode_rows`) and the datasets serve features, so no epoch reads an image;
2. *content-keyed cache* (:class:`FeatureCache`): any other data; features are looked up by the exact
   bits of each image (:func:`image_fingerprints`), so stale features are impossible, and the cache
   switches itself off when augmentations make every epoch's images new (:data:`MIN_HIT_RATE`).

How it works and what it gains (measured): docs/guides/finetuning.md.
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
