"""The import direction and the security rules of the codebase, checked on the source."""

import ast
import re
from pathlib import Path

SRC = Path(__file__).parents[3] / "src" / "scaletrain"
LEAF_PACKAGES = ("data", "models", "optim", "metrics")


def _imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


def test_leaf_packages_never_import_distributed_or_upper_layers():
    for package in LEAF_PACKAGES:
        for path in (SRC / package).rglob("*.py"):
            for name in _imports(path):
                assert not name.startswith("torch.distributed"), f"{path} imports {name}"
                if name.startswith("scaletrain."):
                    top = name.split(".")[1]
                    assert top in ("config", "errors", package), f"{path} imports {name}"


def test_config_and_errors_import_nothing_from_scaletrain():
    for name in ("config.py", "errors.py"):
        imported = {n for n in _imports(SRC / name) if n.startswith("scaletrain")}
        assert imported <= {"scaletrain.errors"}, f"{name} imports {imported}"


def test_no_unsafe_torch_load():
    pattern = re.compile(r"torch\.load\(([^)]*)\)")
    for path in SRC.rglob("*.py"):
        for match in pattern.finditer(path.read_text()):
            assert "weights_only=True" in match.group(1), f"{path}: {match.group(0)}"


def test_env_vars_read_only_in_parallel_env():
    # torchrun variables in parallel/env.py; glibc's own MALLOC_* start-up variables in _alloc.py
    allowed = {SRC / "parallel" / "env.py", SRC / "_alloc.py"}
    for path in SRC.rglob("*.py"):
        if path in allowed or "launch" in path.parts:
            continue
        text = path.read_text()
        assert "os.environ[" not in text and "os.environ.get(" not in text, path
