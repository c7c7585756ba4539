"""Data for the TensorFlow backend: :class:`GalaxyDataModule` (tf.data pipelines from catalogs), the image
transforms, ``DecalsDR8DataModule`` and ``demo_rings`` (re-exported from :mod:`zoobot.shared.datasets`).

The twin of :mod:`zoobot.pytorch.datasets` and what ``train``/``finetune``/``predict`` use: catalog in,
model input out (NHWC float32 in [0, 1]). :mod:`zoobot.tensorflow.data_utils` is the lower, TensorFlow-only
layer of upstream's 1.x API (raw uint8 dict batches for :mod:`zoobot.tensorflow.preprocess`, TFRecord
shards); see docs/components/loading_data.md.

Examples
--------
>>> from zoobot.tensorflow.datasets import GalaxyDataModule, demo_rings  # doctest: +SKIP
>>> train_catalog, label_cols = demo_rings(root='data', download=True, train=True)  # doctest: +SKIP
>>> datamodule = GalaxyDataModule(label_cols=['ring'], catalog=train_catalog, batch_size=32)  # doctest: +SKIP
"""
from zoobot.tensorflow.datasets.galaxy_datamodule import GalaxyDataModule
from zoobot.tensorflow.datasets.transforms import EvalTransform, TrainTransform

__all__ = ["GalaxyDataModule", "TrainTransform", "EvalTransform", "DecalsDR8DataModule", "demo_rings"]


def __getattr__(name):
    # imported on first use: demo_rings lives in zoobot.shared.datasets (the same object is returned)
    if name == "demo_rings":
        from zoobot.shared.datasets import demo_rings

        return demo_rings
    if name == "DecalsDR8DataModule":
        from zoobot.tensorflow.datasets.decals_dr8 import DecalsDR8DataModule

        return DecalsDR8DataModule
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
