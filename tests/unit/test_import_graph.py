"""No import circles in gateway/ and policies/ (issue #15 item 5), read with the stdlib `ast`.

Every import counts, wherever it stands: at module level, inside a function (a lazy import
only hides a circle until the day someone moves it to the top) and under `TYPE_CHECKING`.
`from pkg import name` is an edge to the submodule `pkg.name` when that is a module, else to
`pkg` itself. The implicit import of a parent package (importing `gateway.store.base` runs
`gateway/store/__init__.py` first) is not an edge: every package would then circle with its
own `__init__`.

Two levels are checked: modules, and folders (each subpackage of gateway/ as one node, so
`core.transaction -> mime.fastparse -> core.message` shows as core <-> mime even though no
single module imports itself back).
"""

from __future__ import annotations

import ast
from collections.abc import Iterable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("gateway", "policies")


def _module_name(root: Path, path: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def module_files(root: Path) -> dict[str, Path]:
    return {
        _module_name(root, path): path
        for package in PACKAGES
        for path in sorted((root / package).rglob("*.py"))
    }


def _targets(
    module: str, is_package: bool, node: ast.Import | ast.ImportFrom, modules: dict[str, Path]
) -> Iterable[str]:
    if isinstance(node, ast.Import):
        yield from (alias.name for alias in node.names)
        return
    base = node.module or ""
    if node.level:  # relative: from . / from .. import
        package = module.split(".") if is_package else module.split(".")[:-1]
        package = package[: len(package) - (node.level - 1)]
        base = ".".join([*package, *([base] if base else [])])
    for alias in node.names:
        submodule = f"{base}.{alias.name}"
        yield submodule if submodule in modules else base


def import_graph(root: Path) -> dict[str, set[str]]:
    """module -> the gateway/policies modules it imports, anywhere in its text."""
    modules = module_files(root)
    graph: dict[str, set[str]] = {}
    for module, path in modules.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
        is_package = path.name == "__init__.py"
        found: set[str] = set()
        for node in ast.walk(tree):
            if not isinstance(node, ast.Import | ast.ImportFrom):
                continue
            for target in _targets(module, is_package, node, modules):
                while target not in modules and "." in target:  # a name inside a module
                    target = target.rsplit(".", 1)[0]
                if target in modules and target != module:
                    found.add(target)
        graph[module] = found
    return graph


def folder_graph(graph: dict[str, set[str]], root: Path) -> dict[str, set[str]]:
    """The same graph with each subpackage (gateway/store, gateway/core...) as one node."""

    def folder(module: str) -> str:
        parts = module.split(".")
        if len(parts) >= 2 and (root.joinpath(*parts[:2]) / "__init__.py").exists():
            return ".".join(parts[:2])
        return module

    folders: dict[str, set[str]] = {}
    for module, targets in graph.items():
        edges = folders.setdefault(folder(module), set())
        edges.update(folder(t) for t in targets if folder(t) != folder(module))
    return folders


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One closed path per strongly connected component of more than one node (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[set[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph.get(node, ())):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = set()
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.add(member)
                if member == node:
                    break
            if len(component) > 1:
                components.append(component)

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return [_closed_path(graph, component) for component in components]


def _closed_path(graph: dict[str, set[str]], component: set[str]) -> list[str]:
    """A shortest path from the component's first node back to itself, for the message."""
    start = min(component)
    paths = {start: [start]}
    queue = [start]
    while queue:
        node = queue.pop(0)
        for target in sorted(graph[node] & component):
            if target == start:
                return [*paths[node], start]
            if target not in paths:
                paths[target] = [*paths[node], target]
                queue.append(target)
    raise AssertionError("a strongly connected component without a cycle")


def _report(found: list[list[str]], graph: dict[str, set[str]]) -> str:
    """Each circle as one closed path, then every edge among its members (what to cut)."""
    lines = ["import circles:"]
    for path in found:
        lines.append("  " + " -> ".join(path))
        members = _component_of(graph, path[0])
        lines += [f"      {a} -> {b}" for a in sorted(members) for b in sorted(graph[a] & members)]
    return "\n".join(lines)


def _component_of(graph: dict[str, set[str]], node: str) -> set[str]:
    def reach(start: str, edges: dict[str, set[str]]) -> set[str]:
        seen, todo = {start}, [start]
        while todo:
            for target in edges.get(todo.pop(), ()):
                if target not in seen:
                    seen.add(target)
                    todo.append(target)
        return seen

    reverse: dict[str, set[str]] = {}
    for a, targets in graph.items():
        for b in targets:
            reverse.setdefault(b, set()).add(a)
    return reach(node, graph) & reach(node, reverse)


def test_no_module_imports_itself_back() -> None:
    graph = import_graph(ROOT)
    found = cycles(graph)
    assert not found, _report(found, graph)


def test_no_folder_imports_itself_back() -> None:
    graph = folder_graph(import_graph(ROOT), ROOT)
    found = cycles(graph)
    assert not found, _report(found, graph)


def test_the_graph_sees_lazy_relative_and_submodule_imports(tmp_path: Path) -> None:
    """The checker itself: a circle closed only by an import inside a function, a relative
    import and `from package import submodule` are all found (else the tests above prove
    nothing)."""
    package = tmp_path / "gateway"
    (package / "store").mkdir(parents=True)
    (tmp_path / "policies").mkdir()
    (package / "__init__.py").write_text("")
    (package / "store" / "__init__.py").write_text("")
    (package / "store" / "base.py").write_text("from .mixin import Mixin\n")
    (package / "store" / "mixin.py").write_text("def f():\n    from gateway.store.base import Error\n")
    (package / "a.py").write_text("from gateway.store import base\n")
    (tmp_path / "policies" / "p.py").write_text("import gateway.a\n")
    graph = import_graph(tmp_path)
    assert graph["gateway.a"] == {"gateway.store.base"}
    assert graph["policies.p"] == {"gateway.a"}
    assert cycles(graph) == [["gateway.store.base", "gateway.store.mixin", "gateway.store.base"]]
    assert "gateway.store.base -> gateway.store.mixin" in _report(cycles(graph), graph)
