"""Extract the code blocks of the docs and README, and enforce the docs-test convention.

The convention (documented for writers in ``docs/writing_docs.md``):

- every fenced block has a language; ``python`` blocks are executed, in order, one Python process per
  page (working directory: a fresh temporary folder; offline; synthetic data; tiny settings);
- ``<!-- docs-test: skip REASON -->`` on the line(s) right before a ``python`` block: not executed,
  because it needs something the tests do not have (REASON is required, e.g. "needs the real
  GZ DECaLS images" or "needs a GPU");
- ``<!-- docs-test: new-process -->`` right before a ``python`` block: this block and the ones after
  it run in a new process, in the same folder (so a page can show PyTorch and TensorFlow, never both in
  one process, and the second part can read files the first wrote);
- ``<!-- docs-test: slow -->`` anywhere in a page: its blocks run only in the slow suite
  (``pytest -m slow``);
- ``<!-- docs-test: commands -->`` right before a ``bash`` block: each line is a ``zoobot`` command
  (``# comments`` allowed) that ``tests/docs/test_readme_commands.py`` runs, in order, in one folder;
- other languages (``bash``, ``text``, ``json``, ...) are shown only. ``py``, ``python3``, ``pycon``
  or a block without a language are errors, so no Python escapes the rule.
"""
from __future__ import annotations

import dataclasses
import pathlib
import re

REPO = pathlib.Path(__file__).resolve().parents[2]
DOCS = REPO / "docs"

SHOWN_LANGUAGES = {"bash", "console", "text", "json", "yaml", "toml", "csv", "ini", "markdown"}
FORBIDDEN_LANGUAGES = {"", "py", "python3", "pycon", "ipython", "python-skip"}
_FENCE = re.compile(r"^(?P<indent> {0,3})(?P<fence>`{3,}|~{3,})(?P<info>[^`]*)$")
_MARKER = re.compile(r"^\s*<!--\s*docs-test:\s*(?P<body>.*?)\s*-->\s*$")


@dataclasses.dataclass
class Block:
    """One fenced code block."""

    page: pathlib.Path
    line: int  # 1-based line of the first code line
    language: str
    code: str
    skip_reason: str | None = None
    new_process: bool = False
    commands: bool = False

    def command_lines(self) -> list:
        """The command lines of a ``commands`` block, without comments (a trailing backslash continues)."""
        lines, current = [], ""
        for raw in self.code.splitlines():
            text = raw.split(" #", 1)[0].rstrip() if not raw.lstrip().startswith("#") else ""
            if text.endswith("\\"):
                current += text[:-1] + " "
                continue
            current += text
            if current.strip():
                lines.append(current.strip())
            current = ""
        return lines


@dataclasses.dataclass
class Page:
    path: pathlib.Path
    blocks: list
    slow: bool

    @property
    def name(self) -> str:
        return _display(self.path)

    def python_blocks(self) -> list:
        return [b for b in self.blocks if b.language == "python"]

    def runs(self) -> list:
        """The executed python blocks, grouped into processes."""
        groups, current = [], []
        for block in self.python_blocks():
            if block.skip_reason is not None:
                continue
            if block.new_process and current:
                groups.append(current)
                current = []
            current.append(block)
        if current:
            groups.append(current)
        return groups


def _display(path: pathlib.Path) -> str:
    try:
        return path.resolve().relative_to(REPO).as_posix()
    except ValueError:
        return str(path)


class ConventionError(ValueError):
    """A docs page breaks the docs-test convention."""


def parse_page(path: pathlib.Path) -> Page:
    """Read one markdown file into its blocks, applying (and checking) the markers."""
    lines = path.read_text(encoding="utf-8").splitlines()
    blocks, pending, slow = [], [], False
    i = 0
    where = _display(path)
    while i < len(lines):
        marker = _MARKER.match(lines[i])
        if marker:
            body = marker.group("body")
            if body == "slow":
                slow = True
            elif body == "new-process":
                pending.append(("new-process", None))
            elif body == "commands":
                pending.append(("commands", None))
            elif body.startswith("skip"):
                reason = body[len("skip"):].strip(" :-")
                if not reason:
                    raise ConventionError(f"{where}:{i + 1}: 'docs-test: skip' needs a reason, e.g. "
                                          "'<!-- docs-test: skip needs the real GZ DECaLS images -->'")
                pending.append(("skip", reason))
            else:
                raise ConventionError(f"{where}:{i + 1}: unknown docs-test marker {body!r} "
                                      "(known: skip REASON, new-process, slow, commands)")
            i += 1
            continue
        fence = _FENCE.match(lines[i])
        if fence:
            info = fence.group("info").strip()
            language = info.split()[0].lower() if info else ""
            closing = fence.group("fence")
            start = i + 1
            j = start
            while j < len(lines) and not lines[j].strip().startswith(closing):
                j += 1
            if j >= len(lines):
                raise ConventionError(f"{where}:{i + 1}: code block is never closed")
            code = "\n".join(lines[start:j])
            if language in FORBIDDEN_LANGUAGES:
                raise ConventionError(
                    f"{where}:{i + 1}: code block with language {info or '(none)'!r}: write ```python (executed by "
                    f"tests/docs) or one of {sorted(SHOWN_LANGUAGES)} (shown only)")
            if language not in SHOWN_LANGUAGES and language != "python":
                raise ConventionError(f"{where}:{i + 1}: unknown code block language {language!r}; "
                                      f"use python or one of {sorted(SHOWN_LANGUAGES)}")
            if info != language:
                raise ConventionError(f"{where}:{i + 1}: write the info string as just {language!r} (markers go "
                                      "in an HTML comment before the block)")
            block = Block(path, start + 1, language, code)
            for kind, reason in pending:
                if kind == "commands":
                    if language != "bash":
                        raise ConventionError(f"{where}:{i + 1}: 'docs-test: commands' applies to bash blocks")
                    block.commands = True
                    continue
                if language != "python":
                    raise ConventionError(f"{where}:{i + 1}: docs-test markers apply to python blocks only")
                if kind == "skip":
                    block.skip_reason = reason
                else:
                    block.new_process = True
            pending = []
            blocks.append(block)
            i = j + 1
            continue
        if pending and lines[i].strip():
            raise ConventionError(f"{where}:{i + 1}: a docs-test marker must come right before a python block "
                                  "(commands: a bash block)")
        i += 1
    if pending:
        raise ConventionError(f"{where}: docs-test marker at the end of the page, before no block")
    return Page(path, blocks, slow)


def documentation_pages() -> list:
    """README.md and every markdown page of docs/, in a stable order."""
    pages = [REPO / "README.md"] + sorted(DOCS.rglob("*.md"))
    return [parse_page(p) for p in pages]


def script_for(blocks: list) -> str:
    """One Python script of the blocks; each block is compiled with its page and line, so a traceback
    points at the markdown line."""
    parts = ["_namespace = {'__name__': '__main__'}"]
    for block in blocks:
        padded = "\n" * (block.line - 1) + block.code
        name = _display(block.page)
        parts.append(
            f"print({f'--- {name}:{block.line}'!r}, flush=True)\n"
            f"exec(compile({padded!r}, {name!r}, 'exec'), _namespace)"
        )
    return "\n".join(parts) + "\n"
