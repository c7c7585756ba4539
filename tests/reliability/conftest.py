"""Fixtures of the reliability suite (issue 8); helpers live in :mod:`tests.reliability.helpers`.

Import order matters: torchvision crashes when it is imported *after* TensorFlow in one process, so
this conftest imports torchvision first (when installed). The PyTorch test files of this folder use
PyTorch in-process; the TensorFlow files import TensorFlow lazily (inside fixtures and tests), and
what must run in a fresh process (SIGKILL, DDP, MirroredStrategy) runs in a subprocess.
"""
import numpy as np
import pandas as pd
import pytest

try:  # must come before any TensorFlow import in this process
    import torch  # noqa: F401
    import torchvision  # noqa: F401
except ImportError:  # pragma: no cover - the torch extra is not installed
    pass

from .helpers import make_catalog, write_broken_images


@pytest.fixture(scope="session")
def rings_catalog(tmp_path_factory):
    """20 synthetic 32 px RGB pngs with gz_rings vote counts (``id_str``, ``file_loc``, ring_yes, ring_no)."""
    return make_catalog(tmp_path_factory.mktemp("reliability_rings"))


@pytest.fixture(scope="session")
def broken_catalog(tmp_path_factory, rings_catalog):
    """A prediction catalog: 6 good galaxies, every broken file, the readable oddities and their twins.

    Returns ``(catalog, paths)``; ``id_str`` of a broken/odd row is its kind (e.g. ``'nan_fits'``).
    """
    from PIL import Image

    good = rings_catalog.iloc[:6][["id_str", "file_loc"]]
    image = np.asarray(Image.open(good["file_loc"].iloc[0]).convert("RGB"))
    paths = write_broken_images(tmp_path_factory.mktemp("broken_images"), image)
    odd = pd.DataFrame({"id_str": list(paths), "file_loc": list(paths.values())})
    # interleave, so that broken rows sit between good ones
    parts = []
    for i in range(len(good)):
        parts += [good.iloc[[i]], odd.iloc[i::len(good)]]
    return pd.concat(parts, ignore_index=True), paths




@pytest.fixture(scope="session")
def torch_reference_run(rings_catalog, tmp_path_factory):
    """PyTorch: the uninterrupted 3-epoch :data:`~tests.reliability.helpers.TRAIN_RUN` -> (save_dir, model)."""
    import torch

    from zoobot.pytorch.training import train_with_pytorch_lightning as twpl

    from .helpers import RINGS, TRAIN_RUN

    torch.set_num_threads(1)
    save_dir = tmp_path_factory.mktemp("torch_uninterrupted")
    model, _ = twpl.train(save_dir, RINGS, catalog=rings_catalog, **TRAIN_RUN)
    return save_dir, model


@pytest.fixture(scope="session")
def tf_reference_run(rings_catalog, tmp_path_factory):
    """TensorFlow: the uninterrupted 3-epoch :data:`~tests.reliability.helpers.TRAIN_RUN` -> (save_dir, model)."""
    import zoobot.tensorflow  # noqa: F401
    from zoobot.tensorflow.training.train_with_keras import train

    from .helpers import RINGS, TRAIN_RUN

    save_dir = tmp_path_factory.mktemp("tf_uninterrupted")
    model, _ = train(save_dir, RINGS, catalog=rings_catalog, **TRAIN_RUN)
    return save_dir, model


@pytest.fixture(scope="session")
def rings_catalog_csv(rings_catalog, tmp_path_factory):
    """:func:`rings_catalog` as a csv file, for the command-line tests."""
    path = tmp_path_factory.mktemp("reliability_csv") / "rings.csv"
    rings_catalog.to_csv(path, index=False)
    return path


@pytest.fixture(scope="session")
def release_models(tmp_path_factory):
    """The release fixtures' tiny 32 px greyscale trees, unpacked: ``{'pytorch': .ckpt, 'tensorflow': .keras}``."""
    from tests.fixtures.make_fixtures import gunzip

    folder = tmp_path_factory.mktemp("release_models")
    return {"pytorch": gunzip("pytorch_zoobot_tree_tiny_cnn_32px.ckpt.gz", folder),
            "tensorflow": gunzip("tensorflow_zoobot_tree_tiny_cnn_32px.keras.gz", folder)}
