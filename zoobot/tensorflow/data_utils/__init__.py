"""TensorFlow data utilities (TF only; api.md 3.1): datasets from image files or TFRecord shards, and
shard writing.

- :mod:`.image_datasets`: ``get_image_dataset`` - raw uint8 batches straight from image files;
- :mod:`.tfrecord_datasets`: ``get_dataset`` - raw uint8 batches from TFRecord shards;
- :mod:`.create_shards`: ``ShardConfig`` - write a catalog into shards (+ ``load_shard_config``);
- :mod:`.create_tfrecord`: ``serialize_image_example`` - the record layout.

The seeds' old import path ``zoobot.data_utils`` gives these very modules.
"""
from zoobot.tensorflow.data_utils import create_shards, create_tfrecord, image_datasets, tfrecord_datasets
from zoobot.tensorflow.data_utils.create_shards import ShardConfig, load_shard_config

__all__ = [
    "image_datasets",
    "tfrecord_datasets",
    "create_shards",
    "create_tfrecord",
    "ShardConfig",
    "load_shard_config",
]
