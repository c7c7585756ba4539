"""Multi-node prediction with local processes, both backends (issue 18; docs/guides/scaling_out.md).

Three processes predict one catalog (``shard='auto'`` from RANK/WORLD_SIZE, as torchrun or a SLURM job
sets them), one is SIGKILLed mid-way and rerun, then the parts are merged: every id exactly once, values
equal to a single-process run. Slow: five fresh interpreters per backend.
"""
import signal
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from zoobot.shared import sharding
from zoobot.shared.load_predictions import load
from zoobot.shared.prediction_runner import partial_dir

from .helpers import PREDICT_CHUNK_SIZE, SCRIPTS, kill_when_ready, make_catalog, subprocess_env

WORLD = 3


def run_script(*args, **env):
    result = subprocess.run([sys.executable, str(SCRIPTS / "predict_shard.py"), *map(str, args)],
                            capture_output=True, text=True, env=subprocess_env(**env), timeout=600)
    assert result.returncode == 0, result.stderr[-4000:]


def start_script(*args, **env):
    return subprocess.Popen([sys.executable, str(SCRIPTS / "predict_shard.py"), *map(str, args)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=subprocess_env(**env))


@pytest.mark.slow
@pytest.mark.parametrize("backend", [pytest.param("pytorch", marks=pytest.mark.torch),
                                     pytest.param("tensorflow", marks=pytest.mark.tf)])
def test_shard_three_processes_one_sigkilled_and_rerun_merge_equals_one_process(backend, tmp_path):
    catalog = make_catalog(tmp_path / "images", n_galaxies=30, seed=11)
    catalog_path = tmp_path / "catalog.parquet"
    catalog.to_parquet(catalog_path)
    save_loc = tmp_path / "preds.parquet"
    sizes = np.bincount(sharding.assign_parts(catalog["id_str"].tolist(), WORLD), minlength=WORLD)
    killed = int(np.argmax(sizes))  # the largest part has more than one chunk
    assert sizes[killed] > PREDICT_CHUNK_SIZE

    # the other two ranks run alongside the one that is killed after its first chunk
    others = [start_script(backend, catalog_path, save_loc, RANK=r, WORLD_SIZE=WORLD)
              for r in range(WORLD) if r != killed]
    kill_when_ready("predict_shard.py", backend, catalog_path, save_loc, tmp_path / "ready", 1,
                    marker=tmp_path / "ready", RANK=killed, WORLD_SIZE=WORLD)
    for process in others:
        _, stderr = process.communicate(timeout=600)
        assert process.returncode == 0, stderr[-4000:]
    parts = sharding.find_parts(save_loc, WORLD)
    assert not parts[killed].exists()
    assert [p.name for p in partial_dir(parts[killed]).glob("chunk_*.npz")] == ["chunk_000000.npz"]
    with pytest.raises(ValueError, match="unfinished"):
        sharding.merge_parts(save_loc)

    run_script(backend, catalog_path, save_loc, RANK=killed, WORLD_SIZE=WORLD)  # the rerun resumes
    sharding.merge_parts(save_loc, catalog=catalog)

    reference_loc = tmp_path / "single" / "preds.parquet"
    run_script(backend, catalog_path, reference_loc)  # no rank in the environment: the whole catalog
    ids, merged, label_cols, _ = load(save_loc)
    ref_ids, reference, ref_cols, _ = load(reference_loc)
    assert ids["id_str"].is_unique and sorted(ids["id_str"]) == sorted(catalog["id_str"])
    order = pd.Index(ids["id_str"]).get_indexer(ref_ids["id_str"])
    assert label_cols == ref_cols
    np.testing.assert_allclose(merged[order], reference, rtol=1e-5)
    assert not np.isnan(merged).any()
    for rank, part in enumerate(parts):
        part_ids = load(part)[0]["id_str"]
        assert (sharding.assign_parts(part_ids.tolist(), WORLD) == rank).all()
