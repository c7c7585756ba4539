"""Fixtures for the TensorFlow backend tests: tiny synthetic catalogs (32-48 px), built once per session.

Thread counts come from the environment variables set in ``tests/conftest.py`` before TensorFlow starts.
"""
import pytest

import zoobot.tensorflow  # noqa: F401  (sets KERAS_BACKEND before anything imports keras)


@pytest.fixture(scope="session")
def png_rings_catalog(tmp_path_factory):
    """24 synthetic galaxies, 40 px RGB pngs (lossless, so pixels can be compared exactly), binary ``ring``
    label (int): (catalog, label_cols)."""
    from zoobot.shared.synthetic import make_synthetic_catalog

    root = tmp_path_factory.mktemp("tf_png_rings")
    return make_synthetic_catalog(root, n_galaxies=24, image_size=40, channels=3, label="ring", seed=3,
                                  file_format="png", progress=False)


@pytest.fixture(scope="session")
def jpg_rings_catalog(tmp_path_factory):
    """30 synthetic galaxies, 48 px RGB jpgs, binary ``ring`` label: (catalog, label_cols)."""
    from zoobot.shared.synthetic import make_synthetic_catalog

    root = tmp_path_factory.mktemp("tf_jpg_rings")
    return make_synthetic_catalog(root, n_galaxies=30, image_size=48, channels=3, label="ring", seed=4,
                                  file_format="jpg", progress=False)
