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
import graphlib
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


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle (a -> ... -> a) of the graph, or None (graphlib finds it)."""
    try:
        graphlib.TopologicalSorter(graph).prepare()
    except graphlib.CycleError as error:
        return list(reversed(error.args[1]))  # graphlib lists it against the edges
    return None


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
    cycle = find_cycle(data)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_no_import_cycles_in_the_whole_package():
    """`import scaletrain` (for __version__) is not an edge: the package's __init__ runs
    before any of its modules anyway."""
    graph = {name: targets - {"scaletrain"} for name, targets in import_graph().items()}
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_find_cycle_names_the_cycle():
    cycle = find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "e": {"a"}})
    assert cycle is not None and cycle[0] == cycle[-1] and set(cycle) == {"a", "b", "c"}
    assert find_cycle({"a": {"b"}, "b": set()}) is None


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
