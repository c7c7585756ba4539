"""Prediction over several processes: the part of each galaxy, part files, and their merge (framework-free).

The multi-process runs with both backends (processes killed and rerun) are in
tests/reliability/test_shard_prediction.py (slow).
"""
import hashlib
import shutil

import numpy as np
import pandas as pd
import pytest

from tests.shared.test_prediction_runner import SCHEMA, FakeModel, catalog, expected
from zoobot.shared import load_predictions, sharding
from zoobot.shared.prediction_runner import partial_dir, run_chunked_prediction
from zoobot.shared.sharding import Shard


# ---------------------------------------------------------------------------------------------- assignment

def test_assignment_is_the_documented_stable_hash_and_splits_the_ids_disjointly():
    ids = [f"J{i:06d}" for i in range(2000)]
    parts = sharding.assign_parts(ids, 5)
    # the formula of the module docstring, computed here independently of the module
    reference = [int(hashlib.blake2b(i.encode(), digest_size=8).hexdigest(), 16) % 5 for i in ids]
    assert parts.tolist() == reference
    assert sharding.assign_parts(["a", "b", "c", "d"], 3).tolist() == [2, 2, 0, 2]  # pinned across versions
    # each id in exactly one part, every part used, and about a fifth each
    frame = pd.DataFrame({"id_str": ids})
    selected = [sharding.select_part(frame, Shard(r, 5))["id_str"].tolist() for r in range(5)]
    assert sorted(sum(selected, [])) == sorted(ids)
    assert all(350 < len(s) < 450 for s in selected)
    assert sharding.assign_parts(ids, 1).tolist() == [0] * len(ids)


@pytest.mark.parametrize("value, environ, expected_shard", [
    ((1, 4), {}, Shard(1, 4)),
    (" 2/3 ", {}, Shard(2, 3)),
    ("auto", {"RANK": "3", "WORLD_SIZE": "8", "SLURM_PROCID": "0", "SLURM_NTASKS": "2"}, Shard(3, 8)),
    ("auto", {"LOCAL_RANK": "1", "WORLD_SIZE": "2"}, Shard(1, 2)),
    ("auto", {"SLURM_ARRAY_TASK_ID": "7", "SLURM_ARRAY_TASK_MIN": "5", "SLURM_ARRAY_TASK_COUNT": "4"}, Shard(2, 4)),
    ("auto", {"SLURM_PROCID": "5", "SLURM_NTASKS": "6"}, Shard(5, 6)),
    ("auto", {"TF_CONFIG": '{"cluster": {"chief": ["a:1"], "worker": ["b:1", "c:1"]}, '
                           '"task": {"type": "worker", "index": 1}}'}, Shard(2, 3)),
])
def test_shard_from_arguments_and_launcher_environments(value, environ, expected_shard):
    assert sharding.parse_shard(value, environ=environ) == expected_shard


@pytest.mark.parametrize("value, match", [
    ((3, 3), "rank must be in 0..world_size-1"),
    ("1-of-3", "must look like 'R/N'"),
    ("auto", "found no rank and world size"),
    ("auto-ish", "must look like"),
])
def test_bad_shards_are_refused(value, match):
    with pytest.raises(ValueError, match=match):
        sharding.parse_shard(value, environ={"LOCAL_RANK": "0", "WORLD_SIZE": "2", "NODE_RANK": "1"})


# ---------------------------------------------------------------------------------------------- parts and merge

def predict_parts(save_loc, world_size, n=23, fail_ids=()):
    outputs = []
    for rank in range(world_size):
        outputs.append(run_chunked_prediction(catalog(n), FakeModel(fail_ids=fail_ids), save_loc, schema=SCHEMA,
                                              chunk_size=4, progress=False, shard=Shard(rank, world_size)))
    return outputs


@pytest.mark.parametrize("suffix", [".parquet", ".csv", ".hdf5"])
def test_merged_parts_equal_one_single_process_file(tmp_path, suffix):
    pytest.importorskip("h5py") if suffix == ".hdf5" else None
    fail = ["g004", "g017"]
    single = tmp_path / "single" / f"preds{suffix}"
    save_loc = tmp_path / f"preds{suffix}"
    with pytest.warns(UserWarning, match="could not be read"):
        run_chunked_prediction(catalog(), FakeModel(fail_ids=fail), single, schema=SCHEMA, chunk_size=4,
                               progress=False)
        outputs = predict_parts(save_loc, 3, fail_ids=fail)
    parts = sharding.find_parts(save_loc)
    assert [p.name for p in parts] == [f"preds.part-{r}-of-3{suffix}" for r in range(3)]
    assert sum(len(o) for o in outputs) == 23

    assert sharding.merge_parts(save_loc, catalog=catalog()) == save_loc
    ids, merged, label_cols, metadata = load_predictions.load(save_loc)
    ref_ids, reference, ref_cols, _ = load_predictions.load(single)
    assert ids["id_str"].is_unique and sorted(ids["id_str"]) == sorted(catalog()["id_str"])
    order = pd.Index(ids["id_str"]).get_indexer(ref_ids["id_str"])
    np.testing.assert_array_equal(merged[order], reference)
    np.testing.assert_array_equal(merged[order][~np.isnan(reference[:, 0, 0])],
                                  expected()[~np.isnan(reference[:, 0, 0])])
    assert label_cols == ref_cols and "shard" not in metadata
    failures = pd.read_csv(tmp_path / "preds_failures.csv")
    assert sorted(failures["id_str"]) == fail


def test_an_empty_part_writes_an_empty_file_and_merges(tmp_path):
    save_loc = tmp_path / "preds.parquet"
    outputs = predict_parts(save_loc, 8, n=3)  # 3 galaxies, 8 processes: most parts are empty
    assert sorted(len(o) for o in outputs)[:5] == [0] * 5
    assert all(p.exists() for p in sharding.find_parts(save_loc))
    sharding.merge_parts(save_loc)
    ids, merged, _, _ = load_predictions.load(save_loc)
    assert sorted(ids["id_str"]) == ["g000", "g001", "g002"]
    np.testing.assert_array_equal(merged[np.argsort(ids["id_str"].to_numpy())], expected(3))


def test_merge_refuses_missing_unfinished_foreign_and_incomplete_parts(tmp_path):
    save_loc = tmp_path / "preds.parquet"
    predict_parts(save_loc, 3)
    parts = sharding.find_parts(save_loc)

    moved = parts[1].rename(tmp_path / "aside.parquet")
    with pytest.raises(FileNotFoundError, match=r"1 of 3 parts missing.*--shard R/3 for R in 1\."):
        sharding.merge_parts(save_loc)
    moved.rename(parts[1])

    partial_dir(parts[2]).mkdir()
    with pytest.raises(ValueError, match=r"preds.part-2-of-3.parquet.*unfinished"):
        sharding.merge_parts(save_loc)
    partial_dir(parts[2]).rmdir()

    # part 0 put in the place of part 1: the same ids twice, recorded for another rank
    original_1 = parts[1].read_bytes()
    shutil.copy(parts[0], parts[1])
    with pytest.raises(ValueError, match="records part 0 of 3, not 1 of 3"):
        sharding.merge_parts(save_loc)
    parts[1].write_bytes(original_1)

    with pytest.raises(ValueError, match=r"miss 1 id_str of the catalog \('g099'\)"):
        sharding.merge_parts(save_loc, catalog=pd.concat([catalog(), pd.DataFrame({"id_str": ["g099"]})]))
    assert not save_loc.exists()

    # parts predicted from a shorter catalog next to the others: the recorded catalog length disagrees
    run_chunked_prediction(catalog(20), FakeModel(), save_loc, schema=SCHEMA, chunk_size=4, progress=False,
                           shard=Shard(0, 3))
    with pytest.raises(ValueError, match="catalogs of different lengths"):
        sharding.merge_parts(save_loc)


def test_merge_refuses_ids_of_another_part_in_a_csv_part(tmp_path):
    save_loc = tmp_path / "preds.csv"
    predict_parts(save_loc, 2)
    parts = sharding.find_parts(save_loc)
    table = pd.read_csv(parts[0])
    pd.concat([table, pd.read_csv(parts[1]).head(1)]).to_csv(parts[0], index=False)
    with pytest.raises(ValueError, match=r"preds.part-0-of-2.csv holds 1 id_str of other parts"):
        sharding.merge_parts(save_loc)
    with pytest.raises(FileNotFoundError, match="No part files other.part-R-of-N.csv"):
        sharding.merge_parts(tmp_path / "other.csv")
