"""The seeds' import path for the TensorFlow data utilities (api.md 6, 7.1).

``zoobot.data_utils`` is an alias of :mod:`zoobot.tensorflow.data_utils`: the submodules and
``ShardConfig`` imported from here are the very same objects, so::

    from zoobot.data_utils import image_datasets, tfrecord_datasets, create_shards, ShardConfig

works as in the 2021 documentation. Importing it imports TensorFlow.
"""
import sys as _sys

import zoobot.tensorflow  # noqa: F401  (sets KERAS_BACKEND before TensorFlow/Keras load)
from zoobot.tensorflow.data_utils import (
    ShardConfig,
    create_shards,
    create_tfrecord,
    image_datasets,
    load_shard_config,
    tfrecord_datasets,
)

# `import zoobot.data_utils.tfrecord_datasets` must also resolve to the canonical module, not a copy
for _module in (image_datasets, tfrecord_datasets, create_shards, create_tfrecord):
    _sys.modules[f"{__name__}.{_module.__name__.rsplit('.', 1)[-1]}"] = _module

__all__ = [
    "image_datasets",
    "tfrecord_datasets",
    "create_shards",
    "create_tfrecord",
    "ShardConfig",
    "load_shard_config",
]
