"""The code's shape (issue 14): no import cycles, one wording of argument checks, no giant functions, and no
function body copied between the backends. These read the source with ``ast``; nothing is imported."""
import ast
import collections
import functools
import hashlib
import pathlib
import re

import pytest

ZOOBOT = pathlib.Path(__file__).resolve().parents[2] / "zoobot"
FILES = sorted(ZOOBOT.rglob("*.py"))
MAX_CODE_LINES = 80
#: Functions whose bodies read the same in both backends but call each backend's own objects.
DELIBERATE_MIRRORS = {
    "get_dirichlet_loss_func": "binds each backend's own per_question_dirichlet_loss",
    "_dataset": "calls each backend's own GalaxyDataModule.setup, which builds its framework's dataset",
}


@functools.lru_cache(maxsize=None)
def _tree(path: pathlib.Path) -> ast.Module:
    return ast.parse(path.read_text())


def _module(path: pathlib.Path) -> str:
    parts = list(path.relative_to(ZOOBOT.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _functions():
    for path in FILES:
        for node in ast.walk(_tree(path)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                yield path, node


def _code(node):
    """The statements of a function without its docstring."""
    body = node.body
    if body and isinstance(body[0], ast.Expr) and isinstance(getattr(body[0], "value", None), ast.Constant) \
            and isinstance(body[0].value.value, str):
        body = body[1:]
    return body


def import_graph():
    modules = {_module(p): p for p in FILES}
    graph = collections.defaultdict(set)
    for name, path in modules.items():
        for node in ast.walk(_tree(path)):
            targets = []
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                targets = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
            elif isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            # a package importing its own submodules (re-exports) is not a dependency on them
            graph[name].update(t for t in targets if t in modules and t != name and not t.startswith(name + "."))
    return graph


def cycles(graph):
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in list(graph):
        if v not in index:
            visit(v)
    return found


def test_the_cycle_finder_finds_a_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_import_cycles_even_through_function_level_imports():
    assert cycles(import_graph()) == []


def test_argument_checks_go_through_shared_validation():
    inline = re.compile(r"isinstance\([^()]*,\s*bool\)\s+or\s+not\s+isinstance")
    hits = [f"{p.relative_to(ZOOBOT.parent)}:{i}" for p in FILES if p.name != "validation.py"
            for i, line in enumerate(p.read_text().splitlines(), 1) if inline.search(line)]
    assert hits == [], "use zoobot.shared.validation (check_int, is_int, ...) instead of inline checks"


def test_long_functions_say_why():
    long = []
    for path, node in _functions():  # whole functions, docstring included
        n = node.end_lineno - node.lineno + 1
        if n > MAX_CODE_LINES and "80 lines" not in (ast.get_docstring(node) or ""):
            long.append(f"{path.relative_to(ZOOBOT.parent)}:{node.name} ({n} lines)")
    assert long == [], f"split these, or say in their docstring why they are over {MAX_CODE_LINES} lines"


def test_no_function_body_is_copied_between_the_backends():
    bodies = collections.defaultdict(list)
    for path, node in _functions():
        code = _code(node)
        if len(code) >= 3:
            key = hashlib.sha1(ast.dump(ast.Module(body=code, type_ignores=[])).encode()).hexdigest()
            bodies[key].append(f"{path.relative_to(ZOOBOT.parent)}:{node.name}")
    copied = [sites for sites in bodies.values()
              if any("/pytorch/" in s for s in sites) and any("/tensorflow/" in s for s in sites)
              and not all(s.rsplit(":", 1)[1] in DELIBERATE_MIRRORS for s in sites)]
    assert copied == [], "move framework-free code to zoobot/shared"


@pytest.mark.parametrize("name", ["available_cpus", "_available_cpus", "_check_int", "_positive_int"])
def test_helpers_are_defined_once(name):
    sites = [p.relative_to(ZOOBOT.parent) for p, node in _functions() if node.name == name]
    assert len(sites) <= (1 if name == "available_cpus" else 0), sites
