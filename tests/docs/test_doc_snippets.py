"""Every python block of README.md and docs/ runs (or is marked as needing real data / a GPU).

Each page's blocks run in order in a subprocess (a new one where a page says ``new-process``), in a
temporary folder, offline, on synthetic data. The convention is in ``tests/docs/snippets.py`` and
``docs/writing_docs.md``.
"""
import os
import subprocess
import sys
import textwrap

import pytest

from .snippets import REPO, ConventionError, documentation_pages, parse_page, script_for

try:
    PAGES = documentation_pages()
    PARSE_ERROR = None
except ConventionError as error:  # reported by test_pages_follow_the_convention
    PAGES, PARSE_ERROR = [], error

FAST = [p for p in PAGES if p.runs() and not p.slow]
SLOW = [p for p in PAGES if p.runs() and p.slow]


def _run_blocks(blocks, cwd, timeout=600):
    env = dict(os.environ)
    env.update(HF_HUB_OFFLINE="1", MPLBACKEND="Agg", PYTHONWARNINGS="ignore::DeprecationWarning")
    script = cwd / "snippets.py"
    script.write_text(script_for(blocks))
    return subprocess.run([sys.executable, str(script)], cwd=cwd, capture_output=True, text=True, env=env,
                          timeout=timeout)


def _check_page(page, tmp_path):
    # one folder per page: a new process starts with fresh Python state but sees the files written before
    for blocks in page.runs():
        result = _run_blocks(blocks, tmp_path)
        assert result.returncode == 0, (
            f"{page.name}: a code block failed (blocks from line {blocks[0].line}):\n"
            f"--- stdout ---\n{result.stdout[-3000:]}\n--- stderr ---\n{result.stderr[-5000:]}"
        )


def test_pages_follow_the_convention():
    if PARSE_ERROR is not None:
        raise PARSE_ERROR
    names = [p.name for p in PAGES]
    assert "README.md" in names and "docs/index.md" in names
    readme = next(p for p in PAGES if p.name == "README.md")
    assert len([b for b in readme.python_blocks() if b.skip_reason is None]) >= 2  # a quick start per backend
    for page in PAGES:
        for block in page.python_blocks():
            assert block.skip_reason is None or len(block.skip_reason) > 8, (page.name, block.line)


@pytest.mark.parametrize("page", FAST, ids=[p.name for p in FAST])
def test_snippets_run(page, tmp_path):
    _check_page(page, tmp_path)


@pytest.mark.slow
@pytest.mark.parametrize("page", SLOW, ids=[p.name for p in SLOW])
def test_slow_snippets_run(page, tmp_path):
    _check_page(page, tmp_path)


# ---------------------------------------------------------------------------------------------
# the extractor itself
# ---------------------------------------------------------------------------------------------

def _page(tmp_path, text):
    path = tmp_path / "page.md"
    path.write_text(textwrap.dedent(text))
    return path


def test_markers_skip_group_and_mark_slow(tmp_path):
    page = parse_page(_page(tmp_path, """\
        # Title
        <!-- docs-test: slow -->

        ```python
        x = 1
        ```

        <!-- docs-test: skip needs the real GZ DECaLS images -->
        ```python
        open('/data/gz_decals/catalog.parquet')
        ```

        ```bash
        zoobot demo
        ```

        <!-- docs-test: new-process -->
        ```python
        y = 2
        ```
        """))
    assert page.slow
    assert [b.language for b in page.blocks] == ["python", "python", "bash"]  + ["python"]
    assert page.blocks[1].skip_reason == "needs the real GZ DECaLS images"
    assert [[b.code for b in group] for group in page.runs()] == [["x = 1"], ["y = 2"]]
    assert page.blocks[0].line == 5


@pytest.mark.parametrize("text, message", [
    ("```py\nx = 1\n```\n", "write ```python"),
    ("```\nx = 1\n```\n", r"language '\(none\)'"),
    ("```python title=x\nx = 1\n```\n", "info string"),
    ("<!-- docs-test: skip -->\n```python\nx = 1\n```\n", "needs a reason"),
    ("<!-- docs-test: sometimes -->\n```python\nx = 1\n```\n", "unknown docs-test marker"),
    ("<!-- docs-test: skip needs a GPU to run -->\nSome text.\n```python\nx = 1\n```\n", "right before"),
    ("```python\nx = 1\n", "never closed"),
])
def test_convention_violations_are_errors(tmp_path, text, message):
    with pytest.raises(ConventionError, match=message):
        parse_page(_page(tmp_path, text))


def test_a_failing_block_fails_with_its_markdown_line(tmp_path):
    page = parse_page(_page(tmp_path, "Intro\n\n```python\nvalue = 41\n```\n\n```python\nassert value == 42\n```\n"))
    workdir = tmp_path / "run"
    workdir.mkdir()
    result = _run_blocks(page.runs()[0], workdir)
    assert result.returncode != 0
    assert f'File "{tmp_path / "page.md"}", line 8' in result.stderr


def test_blocks_share_state_and_run_in_the_temporary_folder(tmp_path):
    page = parse_page(_page(tmp_path, "```python\nimport os\nopen('made.txt', 'w').write('x')\n```\n"
                                      "```python\nassert os.path.exists('made.txt')\n```\n"))
    workdir = tmp_path / "run"
    workdir.mkdir()
    result = _run_blocks(page.runs()[0], workdir)
    assert result.returncode == 0, result.stderr
    assert (workdir / "made.txt").is_file() and not (REPO / "made.txt").exists()
