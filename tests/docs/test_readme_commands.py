"""The README's command lines run as written, in order, on the demo's own data.

``<!-- docs-test: commands -->`` marks the block (see ``tests/docs/snippets.py``). The fast test checks
that every option of every line exists (click parses the line, then ``--help`` stops it); the slow
test runs the lines, ``zoobot demo --quick`` first, in a temporary folder, and checks what they wrote.
"""
import os
import shlex
import subprocess
import sys

import pytest

from .snippets import REPO, parse_page

README = parse_page(REPO / "README.md")
BLOCKS = [b for b in README.blocks if b.commands]


def _commands():
    assert len(BLOCKS) == 1, "README.md has one '<!-- docs-test: commands -->' block"
    lines = BLOCKS[0].command_lines()
    assert all(line.startswith("zoobot ") for line in lines), lines
    return [shlex.split(line)[1:] for line in lines]


def _run(args, cwd, timeout=900):
    env = {k: v for k, v in os.environ.items() if k not in ("ZOOBOT_BACKEND", "ZOOBOT_DEBUG")}
    env.update(HF_HUB_OFFLINE="1", MPLBACKEND="Agg")
    return subprocess.run([sys.executable, "-m", "zoobot", *args], cwd=cwd, capture_output=True, text=True,
                          env=env, timeout=timeout)


def test_every_readme_command_line_parses(tmp_path):
    commands = _commands()
    names = [next(a for a in args if not a.startswith("-") and a not in ("pytorch", "tensorflow")) for args in commands]
    assert names == ["demo", "schemas", "train", "finetune", "predict", "export", "predict", "shard"]
    for args in commands:
        result = _run([*args, "--help"], tmp_path, timeout=120)
        assert result.returncode == 0, f"zoobot {' '.join(args)}\n{result.stderr[-2000:]}"
    shard = next(args for args in commands if "shard" in args)
    rings = shard[shard.index("--catalog") + 1]
    assert "rings" in rings and shard[shard.index("--columns") + 1] == "ring"  # the column is in that catalog
    for args in commands:
        if "predict" in args and "--model" not in args:
            assert args[args.index("--checkpoint") + 1].endswith("/best.ckpt")
    export = next(args for args in commands if "export" in args)
    onnx_predict = next(args for args in commands if "--model" in args)
    assert onnx_predict[onnx_predict.index("--model") + 1] == export[export.index("--out") + 1]  # the exported file


@pytest.mark.slow
@pytest.mark.torch
@pytest.mark.tf
def test_readme_command_lines_run_as_written(tmp_path):
    for args in _commands():
        result = _run(args, tmp_path)
        assert result.returncode == 0, f"zoobot {' '.join(args)}\n{result.stdout[-2000:]}\n{result.stderr[-3000:]}"
    for path in ("zoobot_demo/report.md", "results/run/best.ckpt", "results/rings/best.ckpt", "predictions.parquet",
                 "rings.onnx", "predictions_onnx.parquet", "shards/shard_config.json"):
        assert (tmp_path / path).is_file(), path
