"""The import graph of the ``jaxdiff`` package: no cycles, and the layers import one way.

The graph is read from the source with :mod:`ast` (nothing is imported), with an edge for every
``import``/``from ... import`` of a ``jaxdiff`` module anywhere in a file: at the top level and
inside functions alike, since a deferred import is still a dependency (it only hides a cycle
until the function runs). ``from package import name`` is an edge to ``package.name`` when that
is a module, else to ``package``. Importing ``a.b.c`` also runs ``a/__init__.py`` and
``a/b/__init__.py``, but those implicit edges are left out: a package's ``__init__`` that
re-exports its own submodules is the usual layout, not a cycle.
"""

from __future__ import annotations

import ast
import shutil
from collections.abc import Iterable, Mapping
from pathlib import Path

import pytest

PACKAGE_ROOT = Path(__file__).resolve().parents[1] / "jaxdiff"


def module_names(root: Path) -> dict[str, Path]:
    """``{"jaxdiff.x.y": path}`` for every ``.py`` file under the package folder ``root``."""
    base = root.parent
    names = {}
    for path in sorted(root.rglob("*.py")):
        parts = list(path.relative_to(base).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        names[".".join(parts)] = path
    return names


def _imported(node: ast.AST, module: str, is_package: bool, known: set[str]) -> Iterable[str]:
    """The ``jaxdiff`` modules one ``import`` statement names."""
    if isinstance(node, ast.Import):
        for alias in node.names:
            if alias.name in known:
                yield alias.name
        return
    assert isinstance(node, ast.ImportFrom)
    if node.level:  # relative: resolve against this module's package
        package = module.split(".")
        package = package if is_package else package[:-1]
        package = package[: len(package) - (node.level - 1)]
        base = ".".join(package + ([node.module] if node.module else []))
    else:
        base = node.module or ""
    for alias in node.names:
        sub = f"{base}.{alias.name}"
        if sub in known:
            yield sub
        elif base in known:
            yield base


def import_graph(root: Path = PACKAGE_ROOT) -> dict[str, set[str]]:
    """``{module: modules it imports}`` over every module of the package folder ``root``."""
    names = module_names(root)
    known = set(names)
    graph: dict[str, set[str]] = {}
    for module, path in names.items():
        tree = ast.parse(path.read_text(), filename=str(path))
        is_package = path.name == "__init__.py"
        edges = set()
        for node in ast.walk(tree):  # every level: module, class and function bodies
            if isinstance(node, ast.Import | ast.ImportFrom):
                edges.update(_imported(node, module, is_package, known))
        edges.discard(module)
        graph[module] = edges
    return graph


def find_cycle(graph: Mapping[str, Iterable[str]]) -> list[str] | None:
    """One cycle ``[a, b, ..., a]`` of the directed ``graph``, or ``None`` if it has none."""
    white, grey, black = 0, 1, 2
    color = dict.fromkeys(graph, white)
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        color[node] = grey
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if color.get(nxt, white) == grey:
                return [*stack[stack.index(nxt) :], nxt]
            if color.get(nxt, white) == white:
                found = visit(nxt)
                if found:
                    return found
        stack.pop()
        color[node] = black
        return None

    for node in sorted(graph):
        if color[node] == white:
            found = visit(node)
            if found:
                return found
    return None


def reachable(graph: Mapping[str, Iterable[str]], start: Iterable[str]) -> set[str]:
    """Every module imported, directly or not, by the modules ``start``."""
    seen: set[str] = set()
    todo = list(start)
    while todo:
        for nxt in graph.get(todo.pop(), ()):
            if nxt not in seen:
                seen.add(nxt)
                todo.append(nxt)
    return seen


def _in(package: str, modules: Iterable[str]) -> set[str]:
    return {m for m in modules if m == package or m.startswith(package + ".")}


def check_no_cycles(graph: Mapping[str, Iterable[str]]) -> None:
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def check_metrics_independent(graph: Mapping[str, Iterable[str]]) -> None:
    """No ``jaxdiff.metrics`` module imports ``jaxdiff.evaluation``, directly or through others."""
    metrics = _in("jaxdiff.metrics", graph)
    assert metrics, "no jaxdiff.metrics modules found"
    leaked = _in("jaxdiff.evaluation", reachable(graph, metrics))
    assert not leaked, f"jaxdiff.metrics imports (directly or not) {sorted(leaked)}"


def test_graph_sees_the_package():
    graph = import_graph()
    assert {"jaxdiff", "jaxdiff.metrics", "jaxdiff.evaluation", "jaxdiff.data"} <= set(graph)
    assert "jaxdiff.metrics.frechet" in graph["jaxdiff.metrics"]  # a package's re-exports
    assert "jaxdiff.metrics" in graph["jaxdiff.evaluation.evaluate"]


def test_no_import_cycles():
    check_no_cycles(import_graph())


def test_metrics_never_import_evaluation():
    check_metrics_independent(import_graph())


def test_find_cycle_on_synthetic_graphs():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None
    assert find_cycle({"a": {"b", "c"}, "b": {"c"}, "c": set()}) is None  # a diamond
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"x": {"y"}, "y": {"z"}, "z": {"y"}}) == ["y", "z", "y"]
    with pytest.raises(AssertionError, match="import cycle: a -> b -> a"):
        check_no_cycles({"a": {"b"}, "b": {"a"}})


def test_checks_catch_an_injected_cycle(tmp_path):
    """A deferred (function-level) import from metrics into evaluation, in a copy of the package."""
    root = tmp_path / "jaxdiff"
    shutil.copytree(PACKAGE_ROOT, root, ignore=shutil.ignore_patterns("__pycache__"))
    check_no_cycles(import_graph(root))
    check_metrics_independent(import_graph(root))
    points = root / "metrics" / "points.py"
    points.write_text(
        points.read_text() + "\n\ndef _late():\n    from jaxdiff.evaluation import evaluate\n"
    )
    graph = import_graph(root)
    with pytest.raises(AssertionError, match=r"import cycle: .*jaxdiff\.metrics\.points"):
        check_no_cycles(graph)
    with pytest.raises(AssertionError, match=r"jaxdiff\.evaluation\.evaluate"):
        check_metrics_independent(graph)
