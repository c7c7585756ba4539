"""Data for the PyTorch backend: :class:`GalaxyDataset`, :class:`GalaxyDataModule`, the image transforms and
``demo_rings`` (re-exported from :mod:`zoobot.shared.datasets`).

Examples
--------
>>> from zoobot.pytorch.datasets import GalaxyDataModule, demo_rings  # doctest: +SKIP
>>> train_catalog, label_cols = demo_rings(root='data', download=True, train=True)  # doctest: +SKIP
>>> datamodule = GalaxyDataModule(label_cols=['ring'], catalog=train_catalog, batch_size=32)  # doctest: +SKIP
"""
from zoobot.pytorch.datasets.galaxy_datamodule import GalaxyDataModule
from zoobot.pytorch.datasets.galaxy_dataset import GalaxyDataset
from zoobot.pytorch.datasets.transforms import EvalTransform, TrainTransform

__all__ = ["GalaxyDataset", "GalaxyDataModule", "TrainTransform", "EvalTransform", "demo_rings"]


def __getattr__(name):
    # demo_rings lives in zoobot.shared.datasets; the same object is returned (imported on first use)
    if name == "demo_rings":
        from zoobot.shared.datasets import demo_rings

        return demo_rings
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
