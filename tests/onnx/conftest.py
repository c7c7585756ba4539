"""Fixtures of the ONNX tests: small synthetic catalogs (framework-free), written once per session."""
import pytest


@pytest.fixture(scope="session")
def jpg_catalog(tmp_path_factory):
    """16 synthetic galaxies, 48 px RGB jpgs."""
    from zoobot.shared.synthetic import make_synthetic_catalog

    root = tmp_path_factory.mktemp("onnx_jpgs")
    catalog, _ = make_synthetic_catalog(root, n_galaxies=16, image_size=48, channels=3, label="votes", seed=4,
                                        progress=False)
    return catalog[["id_str", "file_loc"]]


@pytest.fixture(scope="session")
def png_catalog(tmp_path_factory):
    """8 synthetic galaxies, 40 px RGB pngs (lossless: both backends decode the same pixels)."""
    from zoobot.shared.synthetic import make_synthetic_catalog

    root = tmp_path_factory.mktemp("onnx_pngs")
    catalog, _ = make_synthetic_catalog(root, n_galaxies=8, image_size=40, channels=3, label="ring", seed=5,
                                        file_format="png", progress=False)
    return catalog[["id_str", "file_loc"]]
