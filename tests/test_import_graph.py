"""The package's import graph has no cycle.

Every module under dlchapter/ is parsed with `ast` (nothing is imported), and
every `import` / `from ... import` of a dlchapter module becomes an edge, at
module level, inside functions and classes, and under `if TYPE_CHECKING:`
alike: a function-level import hides a cycle from Python's import machinery,
not from the design. Relative imports are resolved against the importing
module's package; `from dlchapter.pkg import name` is an edge to the submodule
`dlchapter.pkg.name` when that file exists, else to `dlchapter.pkg` (its
`__init__`). Parent packages that Python runs implicitly (`import a.b.c` also
runs `a/__init__` and `a/b/__init__`) are not edges: a package `__init__` that
re-exports its submodules would otherwise be a cycle with each of them. Cycles
are found with Tarjan's strongly connected components.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = "dlchapter"
ROOT = Path(__file__).resolve().parents[1] / PACKAGE


def module_names(root: Path = ROOT, package: str = PACKAGE) -> dict[str, Path]:
    """Dotted module name -> file for every .py under `root` (a package's `__init__.py` is the package)."""
    out = {}
    for path in sorted(root.rglob("*.py")):
        parts = [package, *path.relative_to(root).with_suffix("").parts]
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def _resolve(node: ast.ImportFrom, module: str, is_package: bool) -> str:
    """The absolute module a `from X import ...` names (relative levels resolved)."""
    if not node.level:
        return node.module or ""
    base = module.split(".") if is_package else module.split(".")[:-1]
    if node.level > 1:
        base = base[: len(base) - (node.level - 1)]
    return ".".join([*base, node.module] if node.module else base)


def imports_of(module: str, path: Path, modules: dict[str, Path], package: str = PACKAGE) -> set[str]:
    """The modules of `package` that `module` imports anywhere in its file."""
    tree = ast.parse(path.read_text(), filename=str(path))
    is_package = path.name == "__init__.py"
    found: set[str] = set()

    def add(name: str) -> None:
        while name and name not in modules:  # `import dlchapter.x.Thing`-like names: the longest module prefix
            name = name.rpartition(".")[0]
        if name and name != module:
            found.add(name)

    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name == package or alias.name.startswith(package + "."):
                    add(alias.name)
        elif isinstance(node, ast.ImportFrom):
            base = _resolve(node, module, is_package)
            if base != package and not base.startswith(package + "."):
                continue
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                add(sub if sub in modules else base)  # a submodule, or a name from the module / package __init__
    return found


def import_graph(root: Path = ROOT, package: str = PACKAGE) -> dict[str, set[str]]:
    """module -> the package modules it imports."""
    modules = module_names(root, package)
    return {name: imports_of(name, path, modules, package) for name, path in modules.items()}


def strongly_connected(graph: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's strongly connected components with more than one module (or a module importing itself)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        # iterative, so a deep graph cannot hit the recursion limit
        work = [(v, iter(sorted(graph.get(v, ()))))]
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.get(child, ())))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    w = stack.pop()
                    on_stack.discard(w)
                    component.append(w)
                    if w == node:
                        break
                if len(component) > 1 or node in graph.get(node, ()):
                    out.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def one_cycle(graph: dict[str, set[str]], component: list[str]) -> list[str]:
    """A concrete cycle a -> b -> ... -> a inside a strongly connected component (breadth-first, shortest from a)."""
    members = set(component)
    start = component[0]
    parent: dict[str, str] = {}
    queue = [start]
    while queue:
        node = queue.pop(0)
        for child in sorted(graph[node] & members):
            if child == start:
                path = [node]
                while path[-1] != start:
                    path.append(parent[path[-1]])
                return [*reversed(path), start]
            if child not in parent:
                parent[child] = node
                queue.append(child)
    raise AssertionError(f"{component} is not strongly connected")


def test_graph_finds_every_kind_of_import(tmp_path: Path) -> None:
    """The builder sees module- and function-level, absolute, relative and `from pkg import submodule` imports."""
    pkg = tmp_path / "pkg"
    (pkg / "sub").mkdir(parents=True)
    files = {
        "__init__.py": "",
        "a.py": "from pkg import b\n",
        "b.py": "def f():\n    from .sub import c\n    return c\n",
        "sub/__init__.py": "from pkg.sub.c import THING\n",
        "sub/c.py": "import json\nimport pkg.a\nTHING = 1\n",
        "d.py": "from ..outside import x\nfrom . import a as renamed, sub\nfrom .sub.c import THING\n",
    }
    for name, text in files.items():
        (pkg / name).write_text(text)
    graph = import_graph(pkg, "pkg")
    assert graph == {
        "pkg": set(),
        "pkg.a": {"pkg.b"},
        "pkg.b": {"pkg.sub.c"},
        "pkg.sub": {"pkg.sub.c"},
        "pkg.sub.c": {"pkg.a"},
        "pkg.d": {"pkg.a", "pkg.sub", "pkg.sub.c"},
    }
    components = strongly_connected(graph)
    assert components == [["pkg.a", "pkg.b", "pkg.sub.c"]]
    assert one_cycle(graph, components[0]) == ["pkg.a", "pkg.b", "pkg.sub.c", "pkg.a"]


@pytest.mark.parametrize(
    "graph, expected",
    [
        ({"a": {"b"}, "b": {"c"}, "c": set()}, []),
        ({"a": {"a"}}, [["a"]]),
        ({"a": {"b"}, "b": {"a", "c"}, "c": {"d"}, "d": {"c"}, "e": {"a"}}, [["c", "d"], ["a", "b"]]),
    ],
)
def test_strongly_connected_components(graph: dict[str, set[str]], expected: list[list[str]]) -> None:
    assert strongly_connected(graph) == expected


def test_package_has_no_import_cycle() -> None:
    graph = import_graph()
    assert len(graph) > 20 and graph["dlchapter.engine.train"], "the package was not found or not parsed"
    groups = strongly_connected(graph)
    cycles = [f"{' -> '.join(one_cycle(graph, c))}  (group of {len(c)}: {', '.join(c)})" for c in groups]
    header = "import cycles in dlchapter/ (one cycle per group of modules importing each other):"
    assert not cycles, "\n".join([header, *cycles])
