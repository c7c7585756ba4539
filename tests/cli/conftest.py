"""Fixtures of the command-line tests: tiny synthetic catalogs on disk and a helper that runs ``zoobot``.

Every command runs in a subprocess (``python -m zoobot ...``), as a user runs it, so exit codes,
stdout and stderr are the real ones. One tiny tree model is trained once per session and shared by
the predict / representations / finetune tests.
"""
import os
import subprocess
import sys

import pytest

from zoobot.shared.synthetic import make_synthetic_catalog

IMAGE_SIZE = 32


def run_zoobot(*args, cwd=None, timeout=600):
    """Run ``python -m zoobot ARGS`` and return the CompletedProcess (text stdout/stderr)."""
    env = dict(os.environ)
    env.update(HF_HUB_OFFLINE="1", MPLBACKEND="Agg", PYTHONWARNINGS="ignore::DeprecationWarning")
    env.pop("ZOOBOT_DEBUG", None)
    env.pop("ZOOBOT_BACKEND", None)
    command = [sys.executable, "-m", "zoobot", *[str(a) for a in args]]
    return subprocess.run(command, capture_output=True, text=True, cwd=cwd, timeout=timeout, env=env)


def describe(result) -> str:
    """Everything a failing assertion needs to show."""
    return f"exit code {result.returncode}\n--- stdout ---\n{result.stdout[-4000:]}\n--- stderr ---\n{result.stderr[-4000:]}"


@pytest.fixture(scope="session")
def votes_catalog_csv(tmp_path_factory):
    """40 synthetic galaxies with GZ DECaLS DR5 vote counts, 32 px jpgs, as a csv file."""
    root = tmp_path_factory.mktemp("votes")
    catalog, _ = make_synthetic_catalog(root, n_galaxies=40, image_size=IMAGE_SIZE, seed=3, progress=False)
    path = root / "votes.csv"
    catalog.to_csv(path, index=False)
    return path


@pytest.fixture(scope="session")
def rings_catalog_csv(tmp_path_factory):
    """40 synthetic ring / no-ring galaxies (``ring`` 0/1, about half rings), as a csv file."""
    root = tmp_path_factory.mktemp("rings")
    catalog, _ = make_synthetic_catalog(root, n_galaxies=40, image_size=IMAGE_SIZE, label="ring", seed=4,
                                        ring_fraction=0.5, progress=False)
    path = root / "rings.csv"
    catalog.to_csv(path, index=False)
    return path


@pytest.fixture(scope="session")
def trained_tree(tmp_path_factory, votes_catalog_csv):
    """``zoobot train`` run once (tiny_cnn, 1 epoch): returns (save_dir, result)."""
    save_dir = tmp_path_factory.mktemp("train") / "run"
    result = run_zoobot(
        "train", "--catalog", votes_catalog_csv, "--schema", "decals_dr5_ortho", "--save-dir", save_dir,
        "--architecture", "tiny_cnn", "--resize-size", IMAGE_SIZE, "--epochs", 1, "--batch-size", 8,
        "--num-workers", 0, "--gpus", 0,
    )
    return save_dir, result
