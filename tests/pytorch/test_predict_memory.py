"""What predict's memory grows with (issue 16.4, docs/benchmarks.md section 3c): per catalog row, the peak
of the Python/numpy memory of a whole ``predict`` call (checks, loader, chunk loop, final file) may grow by
what predict must hold per row, and no more.

What it must hold per row: the returned array (outputs x samples float32) and the loader's compact copy of
the row's ``id_str`` and ``file_loc`` (their UTF-8 bytes, the paths padded to the longest). Anything else
that scales with the catalog (a Python string per row kept for the run, the whole columns converted after
every batch, the final file assembled from all rows at once) adds 80-500 bytes per row and fails here.

tracemalloc sees Python objects and numpy arrays, not torch's own buffers (the model's activations), so the
measurement is deterministic: the loader runs in this process (``num_workers=0``) and nothing depends on
timing.
"""
import pathlib
import tracemalloc

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from zoobot.pytorch.estimators.define_model import ZoobotTree
from zoobot.pytorch.predictions.predict_on_catalog import predict
from zoobot.shared import schemas

SCHEMA = schemas.decals_dr5_ortho_schema
SMALL, LARGE = 1000, 3000
SLACK_PER_ROW = 16  # bytes: index arrays of 8 bytes per row and rounding


@pytest.fixture(scope="module")
def jpgs(tmp_path_factory):
    folder = tmp_path_factory.mktemp("memory_jpgs")
    rng = np.random.default_rng(0)
    paths = []
    for i in range(8):
        path = folder / f"galaxy_{i:03d}.jpg"
        Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(path)
        paths.append(str(path))
    return paths


def catalog_of(n_rows: int, paths: list) -> pd.DataFrame:
    """``n_rows`` rows cycling through ``paths``, each with its own long ``id_str``."""
    return pd.DataFrame({"id_str": [f"galaxy_with_a_long_identifier_{i:08d}" for i in range(n_rows)],
                         "file_loc": [paths[i % len(paths)] for i in range(n_rows)]})


def peak_bytes(catalog, model, save_loc: pathlib.Path) -> tuple:
    """(peak traced bytes above the start of the call, returned array) of one predict call."""
    started = tracemalloc.is_tracing()
    if not started:
        tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        before = tracemalloc.get_traced_memory()[0]
        out = predict(catalog, model, save_loc=save_loc, chunk_size=256,
                      datamodule_kwargs={"num_workers": 0, "batch_size": 64})
        return tracemalloc.get_traced_memory()[1] - before, out
    finally:
        if not started:
            tracemalloc.stop()


def test_peak_memory_grows_per_row_only_by_the_returned_array_and_the_loader_ids(tmp_path, jpgs):
    torch.manual_seed(0)
    model = ZoobotTree(SCHEMA.n_answers, schema=SCHEMA, architecture_name="tiny_cnn", channels=1).eval()
    model.input_size = 32
    peak_bytes(catalog_of(64, jpgs), model, tmp_path / "warmup.parquet")  # one-time caches and imports
    small, _ = peak_bytes(catalog_of(SMALL, jpgs), model, tmp_path / "small.parquet")
    large_catalog = catalog_of(LARGE, jpgs)
    large, out = peak_bytes(large_catalog, model, tmp_path / "large.parquet")
    assert out.shape == (LARGE, SCHEMA.n_answers, 1) and np.isfinite(out).all()

    per_row = (large - small) / (LARGE - SMALL)
    returned = out.nbytes / LARGE  # 34 outputs x 1 sample x 4 bytes
    id_bytes = large_catalog["id_str"].str.len().mean()  # ASCII: one byte per character
    path_bytes = max(len(p.encode()) for p in jpgs)
    allowed = returned + id_bytes + path_bytes + SLACK_PER_ROW
    assert per_row <= allowed, (
        f"predict's peak Python/numpy memory grows by {per_row:.0f} bytes per catalog row, more than the "
        f"{allowed:.0f} it needs (returned array {returned:.0f}, loader id_str {id_bytes:.0f} and file_loc "
        f"{path_bytes} bytes, slack {SLACK_PER_ROW}): something now holds or converts whole catalog columns")
