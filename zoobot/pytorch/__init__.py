"""The PyTorch backend of zoobot (timm encoders, Lightning training).

Needs ``pip install "zoobot[pytorch]"``. Sub-packages mirror ``zoobot.tensorflow``:

- :mod:`zoobot.pytorch.datasets`: ``GalaxyDataset``, ``GalaxyDataModule``, transforms, ``demo_rings``;
- :mod:`zoobot.pytorch.estimators`: ``encoders``, ``losses``, ``define_model`` (``ZoobotTree``), ...;
- :mod:`zoobot.pytorch.training`: ``losses``, ``train_with_pytorch_lightning``, ``finetune``, ``representations``;
- :mod:`zoobot.pytorch.predictions`: ``predict_on_catalog``.

Renamed functions keep their old names in ``zoobot.pytorch._compat`` (docs/compatibility.md).

The exception classes of :mod:`zoobot.shared.errors` are re-exported here (and in
:mod:`zoobot.pytorch.errors`), so ``from zoobot.pytorch import ChannelMismatchError`` works.
"""
from zoobot.shared.errors import (  # noqa: F401
    CatalogError,
    ChannelMismatchError,
    CheckpointVersionError,
    ImageLoadError,
    MissingDependencyError,
    PixelScaleError,
)

__all__ = [
    "CatalogError",
    "ImageLoadError",
    "ChannelMismatchError",
    "PixelScaleError",
    "CheckpointVersionError",
    "MissingDependencyError",
]
