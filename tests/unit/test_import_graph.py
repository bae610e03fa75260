"""The package structure holds: no import cycle between Caravan's modules, and the spec
sits below everything (it imports no other Caravan package).

Imports are read from the source (``ast``), module level and inside functions alike;
only ``if TYPE_CHECKING:`` blocks are left out (they never run).
"""

from __future__ import annotations

import ast
import functools
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[2] / "src"
BELOW_EVERYTHING = ("caravan.spec", "caravan.errors")


def _module_name(path: Path) -> str:
    parts = path.relative_to(SRC).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _imports(tree: ast.AST, modules: set[str]) -> set[str]:
    found: set[str] = set()
    stack = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, ast.If) and _is_type_checking(node):
            stack.extend(node.orelse)
            continue
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{a.name}" for a in node.names)
        stack.extend(ast.iter_child_nodes(node))
    return {m for m in found if m in modules}


@functools.cache
def import_graph() -> dict[str, set[str]]:
    """Caravan module -> the Caravan modules it imports."""
    paths = {_module_name(p): p for p in (SRC / "caravan").rglob("*.py")}
    modules = set(paths)
    return {name: _imports(ast.parse(path.read_text()), modules) - {name} for name, path in paths.items()}


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1 = on the path, 2 = done

    def visit(node: str, path: list[str]) -> list[str] | None:
        state[node] = 1
        for dep in sorted(graph[node]):
            if state.get(dep) == 1:
                return [*path[path.index(dep):], dep] if dep in path else [node, dep]
            if dep not in state and (found := visit(dep, [*path, dep])):
                return found
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state and (found := visit(start, [start])):
            return found
    return None


def _package_of(module: str) -> str:
    return module if module.count(".") < 1 else ".".join(module.split(".")[:2])


def test_no_import_cycle() -> None:
    graph = {m: {d for d in deps if not m.startswith(d + ".")} for m, deps in import_graph().items()}
    cycle = _cycle(graph)
    assert cycle is None, " -> ".join(cycle or [])


def _spec_modules() -> list[str]:
    return sorted(m for m in import_graph() if m == "caravan.spec" or m.startswith("caravan.spec."))


@pytest.mark.parametrize("module", [*_spec_modules(), "caravan.errors"])
def test_the_spec_imports_no_other_package(module: str) -> None:
    upward = {d for d in import_graph()[module]
              if _package_of(d) not in BELOW_EVERYTHING and d != "caravan"}
    assert not upward, f"{module} imports {sorted(upward)}"


def test_the_checker_sees_a_cycle() -> None:
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None
