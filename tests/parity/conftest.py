"""Fixtures of the cross-backend parity suite (issue 5).

The PyTorch facts are computed in the test process, the TensorFlow facts once per session in a subprocess
(``tf_side.py``): torchvision crashes when imported after TensorFlow in one process, so no test file here
imports TensorFlow. torchvision is imported first, for the same reason.
"""
import json
import os
import subprocess
import sys

import pytest

try:  # must come before any TensorFlow import in this process
    import torch  # noqa: F401
    import torchvision  # noqa: F401
except ImportError:  # pragma: no cover
    pass

from . import facts

ROOT = facts.pathlib.Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def parity_catalog(tmp_path_factory):
    """24 synthetic 32 px galaxies with decals_dr5_ortho vote counts, and its parquet path."""
    from zoobot.shared import schemas
    from zoobot.shared.synthetic import make_synthetic_catalog

    root = tmp_path_factory.mktemp("parity_catalog")
    catalog, _ = make_synthetic_catalog(root, n_galaxies=24, schema=schemas.get_schema(facts.SCHEMA_NAME),
                                        image_size=32, channels=3, seed=21, file_format="png", progress=False)
    catalog = catalog[["id_str", "file_loc", *schemas.get_schema(facts.SCHEMA_NAME).label_cols]]
    path = root / "parity_catalog.parquet"
    catalog.to_parquet(path)
    return catalog, path


_TF_RUN = {}


@pytest.fixture(scope="session")
def tf_facts(parity_catalog, tmp_path_factory):
    """Every TensorFlow fact of ``facts.all_facts``, computed once in a subprocess (a failure is reported
    by every test that needs the facts, without running the subprocess again)."""
    pytest.importorskip("tensorflow")
    if not _TF_RUN:
        _, path = parity_catalog
        out = tmp_path_factory.mktemp("tf_facts")
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
               "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONWARNINGS": "ignore"}
        result = subprocess.run([sys.executable, str(ROOT / "tests" / "parity" / "tf_side.py"), str(path), str(out)],
                                capture_output=True, text=True, timeout=600, env=env)
        _TF_RUN["error"] = None if result.returncode == 0 else result.stderr[-4000:]
        _TF_RUN["facts"] = json.loads((out / "facts.json").read_text()) if result.returncode == 0 else None
    assert _TF_RUN["error"] is None, _TF_RUN["error"]
    return _TF_RUN["facts"]
