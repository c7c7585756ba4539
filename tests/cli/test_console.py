"""What a user sees when zoobot's output goes to a file: no noise on stderr, one line per epoch on stdout.

A tiny ``zoobot finetune`` per backend with stdout and stderr redirected (not terminals), warnings not
hidden by the environment (unlike :func:`tests.cli.conftest.run_zoobot`).
"""
import json
import os
import subprocess
import sys

import pytest

PROGRESS = ("Predicting: ",)


def _finetune(backend, catalog, save_dir):
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONWARNINGS", "ZOOBOT_DEBUG", "ZOOBOT_BACKEND",
                                                             "TF_CPP_MIN_LOG_LEVEL", "ZOOBOT_SHOW_NATIVE_LOGS")}
    env.update(HF_HUB_OFFLINE="1", MPLBACKEND="Agg")
    command = [sys.executable, "-m", "zoobot", "--backend", backend, "finetune", "--catalog", str(catalog),
               "--label-cols", "ring", "--name", "tiny_cnn", "--n-blocks", "-1", "--save-dir", str(save_dir),
               "--max-epochs", "2", "--batch-size", "8", "--resize-size", "32"]  # default --num-workers
    return subprocess.run(command, capture_output=True, text=True, env=env, timeout=600)


@pytest.mark.parametrize("backend", [pytest.param("pytorch", marks=pytest.mark.torch),
                                     pytest.param("tensorflow", marks=pytest.mark.tf)])
def test_a_redirected_finetune_prints_no_noise_and_one_line_per_epoch(backend, rings_catalog_csv, tmp_path):
    result = _finetune(backend, rings_catalog_csv, tmp_path / "run")
    assert result.returncode == 0, result.stderr[-3000:]
    noise = [line for line in result.stderr.splitlines() if line.strip() and not line.startswith(PROGRESS)]
    assert noise == []  # no GPU/TPU lines, tips, deprecations, worker warnings or TensorFlow C++ lines
    for stream in (result.stdout, result.stderr):
        assert "\r" not in stream and "\x1b[" not in stream  # no bars redrawn in place, no colour codes
    epochs = [line for line in result.stdout.splitlines() if line.startswith("Epoch ")]
    assert [line.split(":")[0] for line in epochs] == ["Epoch 1/2", "Epoch 2/2"]
    assert all("finetuning/val_loss" in line for line in epochs)
    assert "FLOPs" not in result.stdout
    # the test split's metrics, printed and saved
    saved = json.loads((tmp_path / "run" / "test_metrics.json").read_text())
    assert set(saved) == {"finetuning/test_loss", "finetuning/test_acc"} and 0 <= saved["finetuning/test_acc"] <= 1
    assert f"finetuning/test_acc {saved['finetuning/test_acc']:.4f}" in result.stdout
    assert (tmp_path / "run" / "best.ckpt").is_file() or (tmp_path / "run" / "best.keras").is_file()
    assert len(result.stdout) + len(result.stderr) < 2000  # a whole run, summary included, in a couple of KB


def test_cli_warnings_are_one_line_without_the_source_line():
    script = ("from zoobot.cli._common import configure_logging\nconfigure_logging('INFO')\nimport warnings\n"
              "warnings.warn('num_workers=4 but only 2 CPU cores\\n are available', UserWarning)\n")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONWARNINGS"}
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stderr == "WARNING zoobot.warnings: UserWarning: num_workers=4 but only 2 CPU cores are available\n"


def test_default_num_workers_is_capped_at_the_cpu_cores_and_a_typed_value_is_kept():
    import click
    from click.testing import CliRunner

    from zoobot.cli._common import num_workers_option

    @click.command()
    @num_workers_option()
    def show(num_workers):
        click.echo(num_workers)

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    assert CliRunner().invoke(show, []).output.strip() == str(min(4, cores))
    assert CliRunner().invoke(show, ["--num-workers", "7"]).output.strip() == "7"
