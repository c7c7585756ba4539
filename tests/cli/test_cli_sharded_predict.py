"""``zoobot predict --shard R/N`` and ``zoobot merge-predictions`` (docs/guides/scaling_out.md).

Values of merged parts against a single-process run, with processes killed and rerun, are checked in
tests/reliability/test_shard_prediction.py (slow); here the command line's wiring.
"""
import pandas as pd

from zoobot.shared.load_predictions import load

from .conftest import describe, run_zoobot


def test_sharded_predict_then_merge_writes_every_id_once(votes_catalog_csv, trained_tree, tmp_path, monkeypatch):
    save_dir, _ = trained_tree
    save_loc = tmp_path / "preds.parquet"
    predict = ("predict", "--catalog", votes_catalog_csv, "--checkpoint", save_dir / "checkpoints" / "last.ckpt",
               "--save-loc", save_loc, "--batch-size", 16, "--num-workers", 0, "--no-test-time-dropout")
    first = run_zoobot(*predict, "--shard", "0/2")
    assert first.returncode == 0, describe(first)
    assert f"to {tmp_path / 'preds.part-0-of-2.parquet'}" in first.stdout

    early = run_zoobot("merge-predictions", "--save-loc", save_loc)  # part 1 not predicted yet
    assert early.returncode == 1, describe(early)
    assert "1 of 2 parts missing" in early.stderr and "--shard R/2 for R in 1" in early.stderr
    assert not save_loc.exists()

    monkeypatch.setenv("RANK", "1")  # as torchrun sets it
    monkeypatch.setenv("WORLD_SIZE", "2")
    second = run_zoobot(*predict, "--shard", "auto")
    assert second.returncode == 0, describe(second)
    monkeypatch.delenv("RANK")
    merged = run_zoobot("merge-predictions", "--save-loc", save_loc, "--catalog", votes_catalog_csv)
    assert merged.returncode == 0, describe(merged)
    assert f"Merged 2 parts into {save_loc}" in merged.stdout

    ids, predictions, _, metadata = load(save_loc)
    catalog = pd.read_csv(votes_catalog_csv, dtype={"id_str": str})
    assert ids["id_str"].is_unique and sorted(ids["id_str"]) == sorted(catalog["id_str"])
    parts = [load(tmp_path / f"preds.part-{r}-of-2.parquet") for r in range(2)]
    assert [len(p[0]) for p in parts] != [0, 40] and sum(len(p[0]) for p in parts) == 40
    assert metadata["model_class"] == parts[0][3]["model_class"] and "shard" not in metadata


def test_bad_shard_is_a_usage_error(votes_catalog_csv, tmp_path):
    result = run_zoobot("predict", "--catalog", votes_catalog_csv, "--name", "x", "--save-loc",
                        tmp_path / "p.parquet", "--shard", "2/2")
    assert result.returncode == 2, describe(result)
    assert "rank must be in 0..world_size-1" in result.stderr
