"""Fixtures for the PyTorch backend tests: one thread, tiny synthetic catalogs built once per session."""
import pytest
import torch

# one thread: test tensors are tiny, and OpenMP threads spin badly when other processes share the cores
torch.set_num_threads(1)


@pytest.fixture(scope="session")
def votes_catalog(tmp_path_factory):
    """40 synthetic galaxies, 48 px RGB jpgs, DECaLS DR5 ortho vote counts: (catalog, label_cols)."""
    from zoobot.shared.synthetic import make_synthetic_catalog

    root = tmp_path_factory.mktemp("synthetic_votes")
    return make_synthetic_catalog(root, n_galaxies=40, image_size=48, channels=3, label="votes", seed=0,
                                  progress=False)


@pytest.fixture(scope="session")
def rings_catalog(tmp_path_factory):
    """24 synthetic galaxies, 32 px greyscale pngs, binary ``ring`` label: (catalog, label_cols)."""
    from zoobot.shared.synthetic import make_synthetic_catalog

    root = tmp_path_factory.mktemp("synthetic_rings")
    return make_synthetic_catalog(root, n_galaxies=24, image_size=32, channels=1, label="ring", seed=1,
                                  file_format="png", progress=False)
