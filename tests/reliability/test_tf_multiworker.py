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


@pytest.mark.slow
def test_two_workers_keep_identical_weights_and_match_one_worker(tmp_path):
    ports = _free_ports(2)
    cluster = {"worker": [f"localhost:{p}" for p in ports]}
    procs = [
        subprocess.Popen([sys.executable, SCRIPT, str(tmp_path / f"w{i}.json"), "2"],
                         env=_env({"cluster": cluster, "task": {"type": "worker", "index": i}}),
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for i in range(2)
    ]
    outputs = [p.communicate(timeout=300)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs[0][-3000:] + outputs[1][-3000:]
    single = subprocess.run([sys.executable, SCRIPT, str(tmp_path / "single.json")], env=_env(),
                            capture_output=True, text=True, timeout=300)
    assert single.returncode == 0, single.stderr[-3000:]

    w0, w1, one = (json.loads((tmp_path / f"{n}.json").read_text()) for n in ("w0", "w1", "single"))
    assert (w0["chief"], w1["chief"], one["chief"]) == (True, False, True)
    for epoch in range(3):
        for a, b, c in zip(w0["weights"][epoch], w1["weights"][epoch], one["weights"][epoch]):
            np.testing.assert_array_equal(np.asarray(a), np.asarray(b))  # lock-step after every epoch
            np.testing.assert_allclose(np.asarray(a), np.asarray(c), atol=1e-5)  # same global batch as one worker
    assert w0["history"]["loss"] == w1["history"]["loss"]
    np.testing.assert_allclose(w0["history"]["val_loss"], one["history"]["val_loss"], rtol=1e-5)


@pytest.mark.slow
def test_two_workers_train_in_lock_step_and_only_the_chief_writes(tmp_path):
    """train(nodes=2) on two local workers: identical weights after every epoch, one set of run files."""
    from zoobot.shared.synthetic import make_synthetic_catalog

    catalog, _ = make_synthetic_catalog(tmp_path / "images", n_galaxies=40, image_size=32, progress=False)
    catalog.to_csv(tmp_path / "catalog.csv", index=False)
    ports = _free_ports(2)
    cluster = {"worker": [f"localhost:{p}" for p in ports]}
    scratch = [tmp_path / f"tmp{i}" for i in range(2)]
    procs = []
    for i in range(2):
        scratch[i].mkdir()
        env = _env({"cluster": cluster, "task": {"type": "worker", "index": i}})
        env["TMPDIR"] = str(scratch[i])
        procs.append(subprocess.Popen(
            [sys.executable, TRAIN_SCRIPT, str(tmp_path / "catalog.csv"), str(tmp_path / "run"),
             str(tmp_path / f"w{i}.json")], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    outputs = [p.communicate(timeout=600)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs[0][-3000:] + outputs[1][-3000:]

    w0, w1 = (json.loads((tmp_path / f"w{i}.json").read_text()) for i in range(2))
    assert len(w0["digests"]) == 2 and w0["digests"] == w1["digests"]  # lock-step after each epoch
    assert w0["loss"] == w1["loss"] and np.isfinite(w0["test_loss"])
    run = tmp_path / "run"
    assert (run / "config.json").is_file() and (run / "logs" / "metrics.csv").is_file()
    assert (run / "checkpoints" / "last.keras").is_file()
    assert not any(p.name.startswith("zoobot-worker") for p in scratch[1].iterdir())  # worker 1's folder removed


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
