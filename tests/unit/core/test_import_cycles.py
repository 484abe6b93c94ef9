"""No import cycles in scaletrain.data, counting every import statement (also inside functions).

The graph has one node per module (a package is its ``__init__``). ``import a.b.c`` and
``from a.b.c import x`` are edges to ``a.b.c`` (and to ``a.b.c.x`` when that is a module);
the parent packages Python initializes on the way are not edges, so a package's ``__init__``
re-exporting its submodules is not a cycle. In return, a module must not import a package
above it (``from scaletrain.data import X`` inside ``scaletrain/data/``): it imports the
module that defines ``X``.
"""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).parents[3] / "src"
CHECKED = "scaletrain.data"


def module_paths() -> dict[str, Path]:
    """Dotted module name -> file, for every module under src/scaletrain."""
    paths = {}
    for path in (SRC / "scaletrain").rglob("*.py"):
        parts = path.relative_to(SRC).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        paths[".".join(parts)] = path
    return paths


def imports_of(name: str, path: Path, modules: set[str]) -> set[str]:
    """The scaletrain modules that ``name`` imports anywhere in its file."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    targets = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            targets.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: strip level - 1 trailing parts of the package
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            targets.add(base)
            targets.update(f"{base}.{alias.name}" for alias in node.names)
    return (targets & modules) - {name}  # a package's `from . import sub` is not a cycle


def import_graph() -> dict[str, set[str]]:
    paths = module_paths()
    return {name: imports_of(name, path, set(paths)) for name, path in paths.items()}


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle (a -> ... -> a) per strongly connected component that has one (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    components: list[set[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for target in sorted(graph.get(node, ())):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = set()
            while node not in component:
                component.add(stack.pop())
            components.append(component)

    for node in sorted(graph):
        if node not in index:
            visit(node)
    cycles = []
    for component in components:
        start = min(component)
        if len(component) > 1 or start in graph.get(start, ()):
            cycles.append(_cycle_through(start, graph, component))
    return sorted(cycles)


def _cycle_through(start: str, graph: dict[str, set[str]], component: set[str]) -> list[str]:
    """A shortest path start -> ... -> start inside the component (breadth first)."""
    previous: dict[str, str] = {}
    frontier = [start]
    while frontier:
        following = []
        for node in frontier:
            for target in sorted(graph[node] & component):
                if target == start:
                    path = [node]
                    while path[-1] != start:
                        path.append(previous[path[-1]])
                    return [*reversed(path), start]
                if target not in previous:
                    previous[target] = node
                    following.append(target)
        frontier = following
    raise AssertionError(f"no cycle through {start}")


def _in_checked(name: str) -> bool:
    return name == CHECKED or name.startswith(CHECKED + ".")


def test_data_modules_never_import_a_package_above_them():
    offenders = [
        f"{name} imports {target}"
        for name, targets in import_graph().items()
        if _in_checked(name)
        for target in targets
        if name.startswith(target + ".")
    ]
    assert not offenders, (
        "import the module that defines the name, not the package's __init__: "
        + "; ".join(sorted(offenders))
    )


def test_no_import_cycles_in_data():
    graph = import_graph()
    data = {name: {t for t in targets if _in_checked(t)} for name, targets in graph.items()}
    data = {name: targets for name, targets in data.items() if _in_checked(name)}
    cycles = find_cycles(data)
    assert not cycles, "import cycles: " + "; ".join(" -> ".join(cycle) for cycle in cycles)


def test_find_cycles_names_the_cycle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"d"}, "e": {"a"}}
    assert find_cycles(graph) == [["a", "b", "c", "a"], ["d", "d"]]


def test_from_import_edges_go_to_modules_and_packages(tmp_path):
    source = tmp_path / "sub.py"
    source.write_text(
        "from scaletrain.data import shards\n"
        "from .shards.format import parse_size\n"
        "def later():\n"
        "    import scaletrain.data.raw\n"
    )
    modules = {"scaletrain.data", "scaletrain.data.shards", "scaletrain.data.shards.format"}
    modules.add("scaletrain.data.raw")
    assert imports_of("scaletrain.data.sub", source, modules) == modules
