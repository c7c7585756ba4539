"""TensorFlow only: the upstream 1.x data API - raw dict batches from image files or TFRecord shards,
and shard writing.

``data_utils`` or ``datasets``? :mod:`zoobot.tensorflow.datasets` (``GalaxyDataModule``) is the mirror of
the PyTorch data module and what ``train``/``finetune``/``predict`` use: catalog in, model-ready batches
out. ``data_utils`` is the lower layer of upstream's 1.x API, with no PyTorch twin: it yields raw
``{'matrix': uint8, 'id_str', <labels>}`` batches that :mod:`zoobot.tensorflow.preprocess` turns into
model input, and it writes and reads TFRecord shards (docs/components/loading_data.md).

- :mod:`.image_datasets`: ``get_image_dataset`` - raw uint8 batches straight from image files;
- :mod:`.tfrecord_datasets`: ``get_dataset`` - raw uint8 batches from TFRecord shards;
- :mod:`.create_shards`: ``ShardConfig`` - write a catalog into shards (+ ``load_shard_config``);
- :mod:`.create_tfrecord`: ``serialize_image_example`` - the record layout.

Upstream Zoobot's old import path ``zoobot.data_utils`` gives these very modules.
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
