"""The docstrings explain the code from inside the repository.

- The examples in the docstrings of the framework-free modules (``zoobot``, ``zoobot.shared``,
  ``zoobot.demo``) run as doctests.
- Docstrings and comments cite pages of ``docs/`` that exist, not files outside the repository (the old
  API contract ``api.md``, ``shared/reference/...``, ``[U1]``-style tags, "the seeds' spelling").
- Module docstrings stay short (a summary, not a design essay: those go to ``docs/``).

The two allow-lists name the files that still break a rule (other parts of issue 14 clean them): a new
file must not join them, and an entry can be deleted once its file is clean.
"""
import ast
import doctest
import importlib
import pathlib
import pkgutil
import re

import pytest

from .snippets import REPO

ZOOBOT = REPO / "zoobot"

# framework-free modules whose examples run here (the backends' run in their own test folders)
_FRAMEWORK_FREE = ["zoobot", "zoobot.demo", "zoobot.shared"] + sorted(
    m.name for m in pkgutil.walk_packages([str(ZOOBOT / "shared")], "zoobot.shared."))

_OUTSIDE_REFERENCE = re.compile(r"api\.md|\[U\d+\]|seeds'|shared/reference/|reference/synthetic")

STILL_CITING_OUTSIDE: set = set()  # every file is clean (issue 14); keep it so

MAX_MODULE_DOCSTRING_LINES = 20  # the prose, before an "Examples" section; aim for about 15

STILL_LONG: set = set()  # every file is clean (issue 14); keep it so


def _sources():
    return sorted(ZOOBOT.rglob("*.py"))


def _name(path: pathlib.Path) -> str:
    return path.relative_to(ZOOBOT).as_posix()


@pytest.mark.parametrize("module", _FRAMEWORK_FREE)
def test_docstring_examples_run(module, monkeypatch, tmp_path):
    monkeypatch.setenv("MPLBACKEND", "Agg")
    monkeypatch.chdir(tmp_path)  # examples that write files write them here
    result = doctest.testmod(importlib.import_module(module), optionflags=doctest.ELLIPSIS, report=False)
    assert result.failed == 0, f"{module}: {result.failed} of {result.attempted} docstring examples failed " \
                               f"(run python -m doctest -v on it)"


def test_docstrings_cite_docs_pages_not_files_outside_the_repo():
    offenders = {}
    for path in _sources():
        hits = [f"line {i}: {line.strip()[:100]}" for i, line in enumerate(path.read_text().splitlines(), 1)
                if _OUTSIDE_REFERENCE.search(line)]
        if hits and _name(path) not in STILL_CITING_OUTSIDE:
            offenders[_name(path)] = hits
    assert not offenders, ("cite a page of docs/ (e.g. docs/api/shared/errors.md for the E-codes) instead of "
                           f"files outside the repository: {offenders}")


_DOCS_PAGE = re.compile(r"docs/[\w/.-]+?\.md")


def test_cited_docs_pages_exist():
    missing = {}
    for path in _sources():
        for page in _DOCS_PAGE.findall(path.read_text()):
            if not (REPO / page).is_file():
                missing.setdefault(_name(path), []).append(page)
    assert not missing, f"docstrings cite pages that do not exist: {missing}"


def test_the_rule_catches_what_it_should():
    for text in ("see api.md 2.6", "upstream [U1] helper", "the seeds' spelling", "shared/reference/synthetic.md"):
        assert _OUTSIDE_REFERENCE.search(text), text
    assert not _OUTSIDE_REFERENCE.search("see docs/api/shared/errors.md and the random seed")


def _prose_lines(path: pathlib.Path) -> int:
    docstring = ast.get_docstring(ast.parse(path.read_text())) or ""
    return len(docstring.split("Examples\n--------")[0].strip().splitlines())


def test_module_docstrings_are_summaries_not_essays():
    long = {_name(p): _prose_lines(p) for p in _sources()
            if _name(p) not in STILL_LONG and _prose_lines(p) > MAX_MODULE_DOCSTRING_LINES}
    assert not long, (f"module docstrings over {MAX_MODULE_DOCSTRING_LINES} lines (before 'Examples'): {long}; "
                      "move the design notes to a docs/ page (e.g. docs/how_the_code_fits_together.md)")
