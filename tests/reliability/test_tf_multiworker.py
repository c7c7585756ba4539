"""Issue 18: two local TensorFlow workers (TF_CONFIG on localhost) train in lock-step under MultiWorkerMirroredStrategy."""
import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest

pytestmark = pytest.mark.tf
SCRIPT = os.path.join(os.path.dirname(__file__), "scripts", "tf_multiworker.py")
TRAIN_SCRIPT = os.path.join(os.path.dirname(__file__), "scripts", "tf_multiworker_train.py")
FINETUNE_SCRIPT = os.path.join(os.path.dirname(__file__), "scripts", "tf_multiworker_finetune.py")


def _free_ports(n):
    sockets = [socket.socket() for _ in range(n)]
    for s in sockets:
        s.bind(("localhost", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def _env(tf_config=None):
    env = {k: v for k, v in os.environ.items() if k not in ("TF_CONFIG", "SLURM_JOB_ID")}
    if tf_config is not None:
        env["TF_CONFIG"] = json.dumps(tf_config)
    return env


def run_workers(script, args, tmp_path, n=2, timeout=300, tag="w"):
    """Run ``script ARGS`` as ``n`` local workers of one TF_CONFIG cluster (localhost ports), each with its own
    TMPDIR (``tmp_path/<tag>-tmp<i>``, returned) so the test can see that temporary folders are removed."""
    ports = _free_ports(n)
    cluster = {"worker": [f"localhost:{p}" for p in ports]}
    scratch = [tmp_path / f"{tag}-tmp{i}" for i in range(n)]
    procs = []
    for i in range(n):
        scratch[i].mkdir()
        env = _env({"cluster": cluster, "task": {"type": "worker", "index": i}})
        env["TMPDIR"] = str(scratch[i])
        procs.append(subprocess.Popen([sys.executable, script, *map(str, args(i))], env=env,
                                      stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    try:
        outputs = [p.communicate(timeout=timeout)[0] for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    assert [p.returncode for p in procs] == [0] * n, "\n".join(o[-3000:] for o in outputs)
    return scratch


def _read(path):
    return json.loads(path.read_text())


def _npz(path):
    with np.load(path) as data:
        return [data[f"arr_{i}"] for i in range(len(data.files))]


@pytest.mark.slow
def test_two_workers_keep_identical_weights_and_match_one_worker(tmp_path):
    run_workers(SCRIPT, lambda i: [tmp_path / f"w{i}.json", 2], tmp_path)
    single = subprocess.run([sys.executable, SCRIPT, str(tmp_path / "single.json")], env=_env(),
                            capture_output=True, text=True, timeout=300)
    assert single.returncode == 0, single.stderr[-3000:]

    w0, w1, one = (_read(tmp_path / f"{n}.json") for n in ("w0", "w1", "single"))
    assert (w0["chief"], w1["chief"], one["chief"]) == (True, False, True)
    for epoch in range(3):
        for a, b, c in zip(w0["weights"][epoch], w1["weights"][epoch], one["weights"][epoch]):
            np.testing.assert_array_equal(np.asarray(a), np.asarray(b))  # lock-step after every epoch
            np.testing.assert_allclose(np.asarray(a), np.asarray(c), atol=1e-5)  # same global batch as one worker
    assert w0["history"]["loss"] == w1["history"]["loss"]
    np.testing.assert_allclose(w0["history"]["val_loss"], one["history"]["val_loss"], rtol=1e-5)


@pytest.fixture(scope="module")
def train_catalog(tmp_path_factory):
    from zoobot.shared.synthetic import make_synthetic_catalog

    folder = tmp_path_factory.mktemp("tf_multiworker_train")
    catalog, _ = make_synthetic_catalog(folder / "images", n_galaxies=40, image_size=32, progress=False)
    catalog.to_csv(folder / "catalog.csv", index=False)
    return folder / "catalog.csv"


@pytest.fixture(scope="module")
def uninterrupted_run(train_catalog, tmp_path_factory):
    """train(nodes=2, epochs=2) on two local workers: ``(run folder, scratch folders, [worker 0, worker 1] json)``."""
    tmp = tmp_path_factory.mktemp("tf_multiworker_uninterrupted")
    scratch = run_workers(TRAIN_SCRIPT, lambda i: [train_catalog, tmp / "run", tmp / f"w{i}.json", 2], tmp,
                          timeout=600)
    return tmp / "run", scratch, [tmp / f"w{i}.json" for i in range(2)]


@pytest.mark.slow
def test_two_workers_train_in_lock_step_and_only_the_chief_writes(uninterrupted_run):
    """train(nodes=2) on two local workers: identical weights after every epoch, one set of run files."""
    run, scratch, outs = uninterrupted_run
    w0, w1 = (_read(out) for out in outs)
    assert len(w0["digests"]) == 2 and w0["digests"] == w1["digests"]  # lock-step after each epoch
    assert w0["loss"] == w1["loss"] and np.isfinite(w0["test_loss"])
    assert (run / "config.json").is_file() and (run / "logs" / "metrics.csv").is_file()
    assert (run / "checkpoints" / "last.keras").is_file()
    assert not any(p.name.startswith("zoobot-worker") for p in scratch[1].iterdir())  # worker 1's folder removed


@pytest.mark.slow
def test_two_workers_resume_a_run_as_one_worker_does(uninterrupted_run, train_catalog, tmp_path):
    """train(nodes=2): 1 epoch, then the same call with epochs=2 resumes on both workers from the chief's backup
    (the other worker reads it from save_dir into its temporary folder) and ends where an uninterrupted 2-epoch
    two-worker run ends: same weights on both workers, each epoch once in metrics.csv."""
    import pandas as pd

    run = tmp_path / "run"
    run_workers(TRAIN_SCRIPT, lambda i: [train_catalog, run, tmp_path / f"first{i}.json", 1], tmp_path,
                timeout=600, tag="first")
    assert (run / "backup" / "training_metadata.json").is_file()
    scratch = run_workers(TRAIN_SCRIPT, lambda i: [train_catalog, run, tmp_path / f"resumed{i}.json", 2], tmp_path,
                          timeout=600, tag="resumed")

    resumed = [_read(tmp_path / f"resumed{i}.json") for i in range(2)]
    assert [r["epochs"] for r in resumed] == [[1], [1]]  # both workers restored epoch 0 and trained only epoch 1
    weights = [_npz(tmp_path / f"resumed{i}.npz") for i in range(2)]
    for a, b in zip(*weights):
        np.testing.assert_array_equal(a, b)  # lock-step after the resumption
    # the same weights as the uninterrupted run: same batches, augmentations and dropout masks per epoch
    # (deterministic CPU kernels; the tolerance only covers float reassociation in the all-reduce)
    uninterrupted = _npz(uninterrupted_run[2][0].with_suffix(".npz"))
    assert len(uninterrupted) == len(weights[0])
    for a, b in zip(weights[0], uninterrupted):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    metrics = pd.read_csv(run / "logs" / "metrics.csv").dropna(subset=["train/supervised_loss"])
    assert sorted(metrics["epoch"].astype(int)) == [0, 1]  # each epoch once
    reference = pd.read_csv(uninterrupted_run[0] / "logs" / "metrics.csv").dropna(subset=["train/supervised_loss"])
    np.testing.assert_allclose(metrics["train/supervised_loss"], reference["train/supervised_loss"], rtol=1e-5)
    assert not any(p.name.startswith("zoobot-worker") for p in scratch[1].iterdir())  # worker 1's folder removed


@pytest.mark.slow
@pytest.mark.parametrize("task", ["classifier", "tree"])
def test_two_workers_finetune_in_lock_step_and_match_one_worker(task, tmp_path):
    """get_trainer(..., num_nodes=2): the finetuning fit runs on two local workers (a tiny encoder, all of it
    trained): identical weights on both, equal to one worker with the same global batch; only the chief's files."""
    scratch = run_workers(FINETUNE_SCRIPT, lambda i: [tmp_path / "run", tmp_path / f"w{i}.json", 2, task], tmp_path)
    single = subprocess.run([sys.executable, FINETUNE_SCRIPT, str(tmp_path / "single"), str(tmp_path / "one.json"),
                             "1", task], env=_env(), capture_output=True, text=True, timeout=300)
    assert single.returncode == 0, single.stdout[-3000:] + single.stderr[-3000:]

    w0, w1, one = (_read(tmp_path / f"{n}.json") for n in ("w0", "w1", "one"))
    assert (w0["chief"], w1["chief"]) == (True, False)
    assert "built outside the trainer's strategy" in w0["outside_scope_error"]
    assert "trainer.strategy.scope()" in w1["outside_scope_error"]
    weights = [_npz(tmp_path / f"{n}.npz") for n in ("w0", "w1", "one")]
    assert len(weights[0]) == 4  # conv kernel and bias, head kernel and bias
    for a, b, c in zip(*weights):
        np.testing.assert_array_equal(a, b)  # lock-step
        np.testing.assert_allclose(a, c, rtol=1e-4, atol=1e-6)  # the same global batch as one worker
    np.testing.assert_allclose(w0["history"]["finetuning/val_loss"], one["history"]["finetuning/val_loss"], rtol=1e-5)
    run = tmp_path / "run"
    assert w0["best"].startswith(str(run / "checkpoints")) and os.path.isfile(w0["best"])
    assert (run / "checkpoints" / "last.keras").is_file() and (run / "logs" / "metrics.csv").is_file()
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == sorted(
        p.name for p in (tmp_path / "single" / "checkpoints").iterdir())
    assert not any(p.name.startswith("zoobot-worker") for p in scratch[1].iterdir())  # worker 1's folder removed
    if task == "tree":  # the validation calibration, fitted on every worker from the whole validation set
        assert w0["calibration"] == w1["calibration"] and w0["calibration"]


@pytest.mark.slow
def test_two_workers_resume_finetuning_from_the_chiefs_last_checkpoint(tmp_path):
    """get_trainer(..., num_nodes=2): one epoch, then fit(..., ckpt_path='last') to two epochs on both workers (the
    other worker reads the chief's last.keras and copies its best checkpoints): the weights of one uninterrupted
    worker with the same global batch, each epoch once in metrics.csv."""
    import pandas as pd

    run = tmp_path / "run"
    run_workers(FINETUNE_SCRIPT, lambda i: [run, tmp_path / f"first{i}.json", 2, "classifier", 1], tmp_path,
                tag="first")
    scratch = run_workers(FINETUNE_SCRIPT, lambda i: [run, tmp_path / f"w{i}.json", 2, "classifier", 2, "last"],
                          tmp_path, tag="resumed")
    single = subprocess.run([sys.executable, FINETUNE_SCRIPT, str(tmp_path / "single"), str(tmp_path / "one.json"),
                             "1", "classifier", "2"], env=_env(), capture_output=True, text=True, timeout=300)
    assert single.returncode == 0, single.stdout[-3000:] + single.stderr[-3000:]

    w0, w1 = (_read(tmp_path / f"w{i}.json") for i in range(2))
    assert len(w0["history"]["finetuning/val_loss"]) == 1  # only epoch 1 was trained by the resumed fit
    weights = [_npz(tmp_path / f"{n}.npz") for n in ("w0", "w1", "one")]
    for a, b, c in zip(*weights):
        np.testing.assert_array_equal(a, b)
        np.testing.assert_allclose(a, c, rtol=1e-4, atol=1e-6)
    assert os.path.dirname(w0["best"]) == str(run / "checkpoints")
    assert os.path.basename(w1["best"]) == os.path.basename(w0["best"])  # the same ranking on the other worker
    metrics = pd.read_csv(run / "logs" / "metrics.csv").dropna(subset=["finetuning/train_loss"])
    assert sorted(metrics["epoch"].astype(int)) == [0, 1]
    assert not any(p.name.startswith("zoobot-worker") for p in scratch[1].iterdir())


def test_finetuning_num_nodes_needs_a_cluster_of_that_size(monkeypatch, tmp_path):
    monkeypatch.setenv("TF_CONFIG", json.dumps({"cluster": {"worker": ["localhost:1", "localhost:2"]},
                                                "task": {"type": "worker", "index": 0}}))
    from zoobot.tensorflow.training.finetune import get_trainer

    with pytest.raises(RuntimeError, match="nodes=3 but the TF_CONFIG cluster has 2 worker"):
        get_trainer(tmp_path / "run", num_nodes=3)
    with pytest.raises(ValueError, match="strategy"):
        get_trainer(tmp_path / "run", num_nodes=2, strategy="fsdp")


def test_finetuning_num_nodes_after_tensorflow_work_says_to_call_get_trainer_first(monkeypatch, tmp_path):
    monkeypatch.setenv("TF_CONFIG", json.dumps({"cluster": {"worker": ["localhost:1", "localhost:2"]},
                                                "task": {"type": "worker", "index": 1}}))
    import tensorflow as tf

    from zoobot.tensorflow.training.finetune import get_trainer

    tf.constant(1.0) + 1  # TensorFlow has started in this process
    with pytest.raises(RuntimeError, match=r"before TensorFlow does anything else.*get_trainer\(\.\.\., num_nodes"):
        get_trainer(tmp_path / "run", num_nodes=2)


def test_nodes_without_a_cluster_is_a_clear_error(monkeypatch):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    monkeypatch.delenv("SLURM_JOB_ID", raising=False)
    from zoobot.tensorflow.distributed import cluster_resolver

    with pytest.raises(RuntimeError, match="nodes=2 needs a cluster description: set TF_CONFIG"):
        cluster_resolver(2)


def test_cluster_size_must_match_nodes(monkeypatch):
    monkeypatch.setenv("TF_CONFIG", json.dumps({"cluster": {"worker": ["localhost:1", "localhost:2"]},
                                                "task": {"type": "worker", "index": 0}}))
    from zoobot.tensorflow.distributed import cluster_resolver

    with pytest.raises(RuntimeError, match="nodes=3 but the TF_CONFIG cluster has 2 worker"):
        cluster_resolver(3)
