"""MkDocs hook: show Sphinx cross-reference roles of the docstrings as plain code.

The numpydoc docstrings write ``:func:`vote_fractions``` and ``:mod:`~zoobot.shared.stats```, which
Sphinx turns into links. mkdocstrings renders the backticks as code but leaves the ``:func:`` prefix,
so this hook removes the prefix (and, as Sphinx does, keeps only the last name after a ``~``).
Listed under ``hooks`` in ``mkdocs.yml``; excluded from the site by ``exclude_docs``.
"""
import re

_ROLE = re.compile(r":(?:py:)?(?:func|class|meth|mod|attr|data|exc|obj|const|ref|doc|term):<code>(~?)([^<]*)</code>")


def _plain(match: re.Match) -> str:
    shortened, target = match.group(1), match.group(2)
    name = target.rsplit(".", 1)[-1] if shortened else target
    return f"<code>{name}</code>"


def on_page_content(html: str, **kwargs) -> str:
    return _ROLE.sub(_plain, html)
