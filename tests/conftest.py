"""Test-suite wide settings.

- Thread counts are fixed before any framework starts (CI has 2 cores; never run both
  frameworks' compute at once, so each may use both cores).
- Tests under ``tests/pytorch`` get the ``torch`` marker, under ``tests/tensorflow`` the ``tf``
  marker, so ``pytest -m "not tf"`` runs without TensorFlow.
- Every test folder is a package (``tests/__init__.py`` ...), so ``tests/tensorflow`` can never
  shadow the real ``tensorflow`` and test files may share names across backends.
- Nothing may reach the network: the Hugging Face hub is forced offline.
"""
import os
import pathlib

os.environ.setdefault("TF_NUM_INTRAOP_THREADS", "2")
os.environ.setdefault("TF_NUM_INTEROP_THREADS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("OMP_NUM_THREADS", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("WANDB_MODE", "disabled")
os.environ.setdefault("MPLBACKEND", "Agg")
# TensorFlow-only subprocesses need not pay for importing torchvision (see zoobot/tensorflow/__init__.py);
# this process imports it first, below.
os.environ.setdefault("ZOOBOT_SKIP_TORCHVISION_PREIMPORT", "1")

import pytest  # noqa: E402

# Importing torchvision after TensorFlow has run an op crashes the process (seen with TF 2.21 and
# torchvision 0.29), so the suite, which runs both backends in one process, imports torch first.
try:
    import torch  # noqa: E402,F401
    import torchvision  # noqa: E402,F401
except ImportError:  # a TensorFlow-only install
    pass

TESTS = pathlib.Path(__file__).parent
_DIR_MARKERS = {"pytorch": "torch", "tensorflow": "tf"}


def pytest_collection_modifyitems(config, items):
    for item in items:
        try:
            rel = pathlib.Path(str(item.fspath)).resolve().relative_to(TESTS.resolve()).parts
        except ValueError:  # doctests collected from zoobot/ itself
            continue
        if rel and rel[0] in _DIR_MARKERS:
            item.add_marker(getattr(pytest.mark, _DIR_MARKERS[rel[0]]))

