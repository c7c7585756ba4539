"""The documentation site builds with ``mkdocs build --strict`` (no warnings), lists every page, and its
API reference (``docs/api/``, generated from the docstrings by mkdocstrings) covers the framework-free
modules.

The build reads the source statically (griffe), importing neither PyTorch nor TensorFlow: about 3 s of
CPU for the whole site, API reference included.
"""
import re
import subprocess
import sys

import pytest
import yaml

from .snippets import DOCS, REPO

API = DOCS / "api"
_DIRECTIVE = re.compile(r"^::: (?P<module>[\w.]+)\s*$", re.MULTILINE)


def _nav_files(nav) -> list:
    files = []
    for entry in nav:
        if isinstance(entry, str):
            files.append(entry)
        elif isinstance(entry, dict):
            for value in entry.values():
                files.extend(_nav_files(value) if isinstance(value, list) else [value])
    return files


def _documented_modules() -> set:
    return {m.group("module") for page in API.rglob("*.md") for m in _DIRECTIVE.finditer(page.read_text())}


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """Build the site once; returns (site folder, build output)."""
    tmp_path = tmp_path_factory.mktemp("mkdocs")
    site = tmp_path / "site"
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--config-file", str(REPO / "mkdocs.yml"),
         "--site-dir", str(site)],
        capture_output=True, text=True, timeout=300, cwd=tmp_path,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    return site, output


def test_mkdocs_build_strict_has_no_warnings(site):
    folder, output = site
    assert "WARNING" not in output, output
    assert (folder / "index.html").is_file()
    assert (folder / "cli" / "index.html").is_file()
    assert not (folder / "hooks").exists(), "the build hook must not be published (exclude_docs)"


@pytest.mark.parametrize("page, anchors", [
    ("api/shared/predictions", ["zoobot.shared.stats.vote_fractions", "zoobot.shared.load_predictions.load",
                                "zoobot.shared.prediction_runner.run_chunked_prediction"]),
    ("api/shared/schemas", ["zoobot.shared.schemas.Schema", "zoobot.shared.schemas.get_schema"]),
    ("api/shared/catalogs", ["zoobot.shared.catalogs.validate_catalog", "zoobot.shared.validation.check_int"]),
    ("api/pytorch/training", ["zoobot.pytorch.training.train_with_pytorch_lightning.train"]),
    ("api/tensorflow/training", ["zoobot.tensorflow.training.train_with_keras.train"]),
    ("api/pytorch/predictions", ["zoobot.pytorch.predictions.predict_on_catalog.predict"]),
    ("api/tensorflow/predictions", ["zoobot.tensorflow.predictions.predict_on_catalog.predict"]),
])
def test_api_reference_renders_the_docstrings(site, page, anchors):
    html = (site[0] / page / "index.html").read_text(encoding="utf-8")
    for anchor in anchors:
        assert f'id="{anchor}"' in html, f"{anchor} is missing from {page}"
    assert "Parameters:" in html  # the numpydoc sections were parsed, not shown as plain text
    # docs/hooks/sphinx_roles.py turns :func:`x` into plain code
    assert not re.search(r":(func|class|mod|meth|attr|exc):<code>", html), page


def test_every_shared_module_is_in_the_api_reference():
    documented = _documented_modules()
    shared = {"zoobot.shared." + p.stem for p in (REPO / "zoobot" / "shared").glob("*.py") if p.stem != "__init__"}
    shared |= {"zoobot.shared.synthetic"}
    missing = sorted(shared - documented)
    assert not missing, f"add a '::: MODULE' line for each of {missing} to a page in docs/api/"


def test_every_docs_page_is_in_the_navigation():
    config = yaml.safe_load((REPO / "mkdocs.yml").read_text())
    in_nav = set(_nav_files(config["nav"]))
    on_disk = {p.relative_to(DOCS).as_posix() for p in DOCS.rglob("*.md")}
    assert on_disk - in_nav == set(), "pages missing from mkdocs.yml nav"
    assert in_nav - on_disk == set(), "nav entries without a page"
