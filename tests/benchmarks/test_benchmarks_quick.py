"""Every benchmark script's ``--quick`` mode, run as a user runs it (a subprocess).

Checks that each script prints its markdown table(s) and writes valid JSON with the keys the docs
and ``run_all.py`` rely on; no timing is asserted (the machine is shared). ``--peer-python`` with a
path that does not exist must fail clearly (exit status 2, message naming the option) before any
work. Heavier variants (both backends for every script, the peer mode driven by this very python)
are marked ``slow``.

A framework's start-up (about 10 s of CPU here) dominates every quick run, so to keep within the
suite's budget the default tests run five scripts with one backend each: the ceiling and training
in PyTorch, prediction (speed and per-size memory) and shards in TensorFlow, and the generator. The
slow test runs every script (finetune, data and parity included) with both backends through
``run_all.py`` and applies the same checks to each.
"""
import importlib.util
import json
import pathlib
import subprocess
import sys

import pytest

REPO = pathlib.Path(__file__).resolve().parents[2]
BENCHMARKS = REPO / "benchmarks"
SCRIPTS = ("bench_ceiling", "bench_train", "bench_predict", "bench_finetune", "bench_shards", "bench_data",
           "parity_torch_vs_tf", "bench_synthetic")
PAYLOAD_KEYS = {"benchmark", "command", "settings", "machine", "results", "tables", "notes"}


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    """One cache of synthetic jpgs shared by every script run of this module."""
    return tmp_path_factory.mktemp("bench_data")


def run_script(name, out, data_dir, *args, timeout=600):
    command = [sys.executable, str(BENCHMARKS / f"{name}.py"), "--quick", "--out", str(out), "--data-dir",
               str(data_dir), *[str(a) for a in args]]
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout, cwd=str(REPO))


def describe(result) -> str:
    return f"exit {result.returncode}\n--- stdout ---\n{result.stdout[-3000:]}\n--- stderr ---\n{result.stderr[-5000:]}"


def check_payload(result, out, name) -> dict:
    """The printed tables and the JSON file every script must produce."""
    assert result.returncode == 0, describe(result)
    payload = json.loads(out.read_text())
    assert PAYLOAD_KEYS <= set(payload), sorted(payload)
    assert payload["benchmark"] == name
    assert payload["command"].startswith(f".venv/bin/python benchmarks/{name}.py") and "--quick" in payload["command"]
    assert payload["settings"]["quick"] is True and payload["settings"]["threads"] == (
        1 if name == "bench_synthetic" else 2)
    assert payload["machine"]["nproc"] >= 1 and payload["machine"]["versions"]["zoobot"]
    assert payload["tables"], "no table"
    for title, table in payload["tables"].items():
        header, rule, *rows = table.splitlines()
        assert header.startswith("| ") and rule.startswith("|---"), table
        assert rows, f"table {title!r} has no rows"
        assert all(row.count("|") == header.count("|") for row in rows), table
        assert f"## {title}" in result.stdout and header in result.stdout
    return payload


def positive(summary) -> bool:
    """A timing summary with a positive finite median and min <= median <= max."""
    return summary["median"] > 0 and summary["min"] <= summary["median"] <= summary["max"] and summary["n"] >= 1


# ------------------------------------------------------------------------------------------------
# what each script's JSON must hold, per backend it ran
# ------------------------------------------------------------------------------------------------

def check_ceiling(payload):
    results = payload["results"]
    if "torch" in results:
        for variant in ("contiguous", "channels_last"):
            assert positive(results["torch"][variant]["train"]) and positive(results["torch"][variant]["eval"])
            assert results["torch"][variant]["eval"]["n"] == payload["settings"]["repeats"] == 3
    if "tf" in results:
        assert positive(results["tf"]["keras"]["train"]) and positive(results["tf"]["keras"]["eval"])


def check_train(payload):
    for backend in payload["settings"]["backends"]:
        r = payload["results"][backend]
        # warm-up epoch + 3 timed epochs, each of steps_per_epoch (2) full batches of 8
        assert len(r["epochs"]) == 4 and all(e["images"] == 2 * 8 for e in r["epochs"])
        assert positive(r["train"]) and positive(r["ceiling"]["train"]) and r["train"]["n"] == 3
        assert 0 <= r["data_wait_fraction"]["median"] <= 1 and positive(r["per_cpu_second"])
        assert ".train(save_dir, decals_dr5_ortho_schema" in r["call"]


def check_predict(payload):
    rows = payload["settings"]["memory_rows"]
    for backend in payload["settings"]["backends"]:
        speed, memory = payload["results"]["speed"][backend], payload["results"]["memory"][backend]
        assert positive(speed["n_samples_1"]) and positive(speed["n_samples_5"]) and positive(speed["ceiling"]["eval"])
        assert [run["rows"] for run in memory] == rows
        for run in memory:
            assert run["peak_rss_mb"] >= run["rss_before_predict_mb"] > 0
            # float32 (rows, 34 answers of the DECaLS DR5 tree, 1 sample)
            assert run["output_mb"] == pytest.approx(run["rows"] * 34 * 4 / 2 ** 20)


def check_finetune(payload):
    for backend in payload["settings"]["backends"]:
        r = payload["results"][backend]
        for config in payload["settings"]["configs"]:
            assert len(r[config]["epoch_seconds"]) == 4 and r[config]["first_epoch_s"] > 0
            assert positive(r[config]["later_epochs_s"]) and r[config]["speedup_later_vs_first"] > 0


def check_shards(payload):
    r = payload["results"]["tf"]
    for key in ("write", "read_in_order", "read_shuffled", "read_with_model"):
        assert positive(r[key]), key
    assert r["n_shards"] >= 3  # train, val and test shards (8 galaxies per file)


def check_data(payload):
    for backend in payload["settings"]["backends"]:
        r = payload["results"][backend]
        for key in ("decode_full", "decode_pipeline_scale", "decode_half_scale", "train_transform", "eval_transform",
                    "loader"):
            assert positive(r[key]), (backend, key)
        assert r["min_source_size"]["train"] > r["min_source_size"]["eval"] >= 32


def check_parity(payload):
    results = payload["results"]
    torch_cnn, tf_cnn = results["torch"]["encoders"]["tiny_cnn"], results["tf"]["encoders"]["tiny_cnn"]
    assert torch_cnn == tf_cnn == {"trainable_params": torch_cnn["trainable_params"], "output_dim": 128}
    comparison = results["comparison"]
    # the loss is checked against the float64 oracle in both backends; zero-vote galaxies give exactly 0
    assert comparison["loss_torch_vs_oracle_max_rel"] < 1e-3 and comparison["loss_tf_vs_oracle_max_rel"] < 1e-3
    assert comparison["loss_torch_zero_vote_rows_max_abs"] == 0 == comparison["loss_tf_zero_vote_rows_max_abs"]
    assert comparison["eval_transform_shapes"][0] == comparison["eval_transform_shapes"][1] == [8, 32, 32, 1]
    assert positive(results["torch"]["speed"]["train"]) and positive(results["tf"]["speed"]["eval"])


def check_synthetic(payload):
    results = payload["results"]
    assert payload["settings"]["threads"] == 1 and payload["settings"]["sizes"] == [32, 64]
    assert positive(results["32"]) and positive(results["64"]) and results["64"]["n"] == 3
    assert results["generator_version"]


CHECKS = {"bench_ceiling": check_ceiling, "bench_train": check_train, "bench_predict": check_predict,
          "bench_finetune": check_finetune, "bench_shards": check_shards, "bench_data": check_data,
          "parity_torch_vs_tf": check_parity, "bench_synthetic": check_synthetic}


# ------------------------------------------------------------------------------------------------
# default suite: one backend per script, alternating (framework start-up dominates the cost)
# ------------------------------------------------------------------------------------------------

@pytest.mark.torch
def test_ceiling_quick_torch(tmp_path, data_dir):
    out = tmp_path / "ceiling.json"
    payload = check_payload(run_script("bench_ceiling", out, data_dir, "--backends", "torch"), out, "bench_ceiling")
    check_ceiling(payload)
    assert set(payload["results"]) == {"torch"}


@pytest.mark.torch
def test_train_quick_torch(tmp_path, data_dir):
    out = tmp_path / "train.json"
    check_train(check_payload(run_script("bench_train", out, data_dir, "--backends", "torch"), out, "bench_train"))


@pytest.mark.torch
def test_science_quick_torch(tmp_path, data_dir):
    """bench_science --quick: scores in range for raw and calibrated concentrations, and the scale train() stored
    equals the one the script refits to the same validation votes from predict()'s raw output."""
    import numpy as np

    out = tmp_path / "science.json"
    payload = check_payload(run_script("bench_science", out, data_dir, "--backends", "torch"), out, "bench_science")
    run = payload["results"]["PyTorch train()"]
    assert run["train_wall_s"] > 0 and run["epochs_run"] == 1
    for split in ("test", "shifted"):
        for kind in ("raw", "calibrated"):
            pooled = run["scores"][split][kind]["pooled"]
            assert 0 <= pooled["mae"] <= 1 and 0 <= pooled["coverage90"] <= 1 and pooled["dm_nll"] > 0, pooled
    np.testing.assert_allclose(run["stored_scale"], run["scores"]["fitted_scale"], rtol=2e-3)
    assert (tmp_path / "science_torch_concentrations.npz").is_file()


@pytest.mark.torch
def test_science_quick_tta_and_ema_torch(tmp_path, data_dir):
    """--tta 2 adds a row scored from the mean of 2 augmented passes (saved apart, and --rescore reads it back);
    --ema trains through Lightning's EMAWeightAveraging."""
    import numpy as np

    out = tmp_path / "science.json"
    payload = check_payload(run_script("bench_science", out, data_dir, "--backends", "torch", "--tta", "2",
                                       "--ema", "0.9", "--label", "x"), out, "bench_science")
    assert set(payload["results"]) == {"PyTorch train() [x]", "PyTorch train() [x, TTA x2]"}
    assert payload["results"]["PyTorch train() [x]"]["ema"] == 0.9
    plain, tta = (np.load(tmp_path / f"science_{key}_concentrations.npz")["test"] for key in ("torch", "torch_tta2"))
    assert plain.shape == tta.shape and not np.allclose(plain, tta)  # random augmentations change the output
    rescored = check_payload(run_script("bench_science", tmp_path / "again.json", data_dir, "--rescore", str(out)),
                             tmp_path / "again.json", "bench_science")
    assert rescored["results"]["PyTorch train() [x, TTA x2]"]["scores"] == \
        payload["results"]["PyTorch train() [x, TTA x2]"]["scores"]


def test_science_ceiling_quick(tmp_path, data_dir):
    """bench_science --ceiling (no training): regenerated latents reproduce the truth (else it stops), a regression
    from them beats the train mean by far, and each galaxy's own votes miss the truth by the multinomial noise."""
    out = tmp_path / "ceiling.json"
    payload = check_payload(run_script("bench_science", out, data_dir, "--ceiling"), out, "bench_science")
    rows = {name.split(" (")[0]: scores for name, scores in payload["results"].items()}
    assert set(rows) == {"latents -> true probabilities", "latents -> training votes", "pixel statistics -> training votes",
                         "each galaxy's own votes", "train mean"}
    for split in ("test", "shifted"):
        pooled = {name: scores[split]["pooled"] for name, scores in rows.items()}
        assert pooled["latents -> true probabilities"] < 0.5 * pooled["train mean"], pooled
        assert 0.01 < pooled["each galaxy's own votes"] < 0.15, pooled  # 5 or 40 votes per galaxy


@pytest.mark.tf
def test_predict_quick_tf(tmp_path, data_dir):
    out = tmp_path / "predict.json"
    payload = check_payload(run_script("bench_predict", out, data_dir, "--backends", "tf", "--memory-rows", "40"),
                            out, "bench_predict")
    check_predict(payload)
    assert payload["settings"]["memory_rows"] == [40]


@pytest.mark.tf
def test_shards_quick(tmp_path, data_dir):
    out = tmp_path / "shards.json"
    check_shards(check_payload(run_script("bench_shards", out, data_dir), out, "bench_shards"))


def test_shards_refuse_the_torch_backend(tmp_path, data_dir):
    result = run_script("bench_shards", tmp_path / "x.json", data_dir, "--backends", "torch")
    assert result.returncode == 2 and "only the TensorFlow backend" in result.stderr, describe(result)


def test_synthetic_quick(tmp_path, data_dir):
    out = tmp_path / "synthetic.json"
    check_synthetic(check_payload(run_script("bench_synthetic", out, data_dir), out, "bench_synthetic"))


@pytest.mark.parametrize("name", SCRIPTS)
def test_missing_peer_python_fails_clearly_before_any_work(tmp_path, name):
    out = tmp_path / "never.json"
    missing = tmp_path / "no-such-env" / "bin" / "python"
    result = subprocess.run([sys.executable, str(BENCHMARKS / f"{name}.py"), "--quick", "--out", str(out),
                             "--data-dir", str(tmp_path / "data"), "--peer-python", str(missing)],
                            capture_output=True, text=True, timeout=120, cwd=str(REPO))
    assert result.returncode == 2, describe(result)
    assert f"--peer-python {missing}: no such file" in result.stderr
    assert "upstream Zoobot" in result.stderr
    assert not out.exists() and not (tmp_path / "data").exists()  # nothing was generated or measured


def test_run_all_renders_every_table_with_its_command(tmp_path):
    spec = importlib.util.spec_from_file_location("bench_run_all", BENCHMARKS / "run_all.py")
    run_all = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(run_all)
    payload = {"benchmark": "bench_x", "command": ".venv/bin/python benchmarks/bench_x.py --quick",
               "settings": {"threads": 2}, "notes": ["a note"], "tables": {"Title A": "| a |\n|---|\n| 1 |"},
               "machine": {"nproc": 2, "cpu": "cpu", "load_average_1_5_15": [1, 1, 1], "date": "today"}}
    text = run_all.render_markdown([payload])
    assert "### bench_x" in text and "`.venv/bin/python benchmarks/bench_x.py --quick`" in text
    assert "**Title A**\n\n| a |\n|---|\n| 1 |" in text and "- a note" in text
    assert set(run_all.SCRIPTS) == set(SCRIPTS)
    result = subprocess.run([sys.executable, str(BENCHMARKS / "run_all.py"), "--only", "bench_nope"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and "bench_nope" in result.stderr


@pytest.mark.slow
@pytest.mark.torch
@pytest.mark.tf
def test_every_script_quick_with_both_backends(tmp_path, data_dir):
    """run_all --quick: every script, every backend."""
    result = subprocess.run([sys.executable, str(BENCHMARKS / "run_all.py"), "--quick", "--data-dir", str(data_dir),
                             "--out-dir", str(tmp_path), "--markdown", str(tmp_path / "all.md")],
                            capture_output=True, text=True, timeout=1800, cwd=str(REPO))
    assert result.returncode == 0, describe(result)
    for name in SCRIPTS:
        payload = check_payload(result, tmp_path / f"{name}.json", name)
        backends = payload["settings"]["backends"]
        assert backends == {"bench_shards": ["tf"], "bench_synthetic": []}.get(name, ["torch", "tf"])
        CHECKS[name](payload)
    text = (tmp_path / "all.md").read_text()
    assert all(f"### {name}" in text for name in SCRIPTS)


@pytest.mark.slow
@pytest.mark.torch
def test_peer_mode_runs_a_peer_python(tmp_path, data_dir):
    """The peer mechanics, driven by this environment's python (which has no upstream Zoobot): the peer's
    versions and exact calls are recorded, and a failing upstream call is reported instead of crashing."""
    out = tmp_path / "ceiling.json"
    result = run_script("bench_ceiling", out, data_dir, "--backends", "torch", "--peer-python", sys.executable)
    payload = check_payload(result, out, "bench_ceiling")
    peer = payload["results"]["peer"]
    assert peer["versions"]["executable"] and peer["versions"]["torch"]
    assert peer["calls"][0].startswith("timm.create_model('tiny_cnn'")
    assert "Unknown model" in peer["error"]  # tiny_cnn is ours, not timm's: recorded, not raised
    assert any("peer run failed" in note for note in payload["notes"])
