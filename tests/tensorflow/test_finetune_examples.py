"""The TensorFlow finetuning examples (api.md 5.1): ``--help`` and ``--smoke`` run, end to end, on real files."""
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest

import zoobot.tensorflow  # noqa: F401  (sets KERAS_BACKEND before keras is imported)

from zoobot.shared import load_predictions, schemas  # noqa: E402
from zoobot.shared.datasets import demo_rings  # noqa: E402
from zoobot.tensorflow.examples import finetune_minimal  # noqa: E402
from zoobot.tensorflow.examples.finetuning import finetune_counts_full_tree  # noqa: E402

REPO = pathlib.Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def rings_dir(tmp_path_factory):
    """demo_rings' synthetic train and test sets, written once (the examples reuse them via --data-dir)."""
    root = tmp_path_factory.mktemp("demo_rings")
    demo_rings(root, download=True, train=True, synthetic=True)
    demo_rings(root, download=True, train=False, synthetic=True)
    return root


@pytest.mark.parametrize("example", [finetune_minimal, finetune_counts_full_tree])
def test_help_and_usage_errors(example, capsys):
    with pytest.raises(SystemExit) as exit_info:
        example.main(["--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert "--smoke" in out and "--checkpoint" in out and "--encoder" in out
    with pytest.raises(SystemExit) as exit_info:  # no encoder and no --smoke: a usage error, before any work
        example.main([])
    assert exit_info.value.code == 2
    assert "give --checkpoint" in capsys.readouterr().err


def test_finetune_minimal_smoke_in_a_subprocess(rings_dir, tmp_path):
    """Run as users run it: python zoobot/tensorflow/examples/finetune_minimal.py --smoke."""
    result = subprocess.run(
        [sys.executable, str(REPO / "zoobot" / "tensorflow" / "examples" / "finetune_minimal.py"), "--smoke",
         "--data-dir", str(rings_dir),
         "--save-dir", str(tmp_path / "out")],
        capture_output=True, text=True, timeout=600, cwd=tmp_path, env={**os.environ, "PYTHONWARNINGS": "ignore"},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Test accuracy:" in result.stdout
    checkpoints = sorted(p.name for p in (tmp_path / "out" / "checkpoints").glob("*.keras"))
    assert checkpoints == ["epoch=0.keras", "last.keras"]
    assert (tmp_path / "out" / "logs" / "metrics.csv").is_file()


def test_full_tree_smoke_writes_predictions_and_summaries(tmp_path):
    paths = finetune_counts_full_tree.main(["--smoke", "--data-dir", str(tmp_path / "data"),
                                            "--save-dir", str(tmp_path / "out")])
    ids, predictions, label_cols, metadata = load_predictions.load(paths["predictions"])
    schema = schemas.decals_dr5_ortho_schema
    assert label_cols == schema.label_cols
    assert predictions.shape == (len(ids), schema.n_answers, 1) and len(ids) > 0
    # calibrated Dirichlet concentrations: the head's 1..101 times each question's fitted scale (> 0)
    assert np.all(np.isfinite(predictions) & (predictions > 0))
    assert all(pathlib.Path(p).is_file() for p in paths["summaries"])
    assert pathlib.Path(paths["best_checkpoint"]).is_file()


@pytest.mark.slow
def test_full_tree_smoke_in_a_subprocess(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "zoobot.tensorflow.examples.finetuning.finetune_counts_full_tree", "--smoke",
         "--data-dir", str(tmp_path / "data")],
        capture_output=True, text=True, timeout=600, cwd=tmp_path, env={**os.environ, "PYTHONWARNINGS": "ignore"},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Summary tables:" in result.stdout
