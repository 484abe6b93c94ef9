"""The import direction and the security rules of the codebase, checked on the source.

Every import counts, function-local ones too (`ast.walk` sees the whole file), as do
`importlib.import_module("scaletrain...")` calls. The layer table and the reason for each
exception are in docs/architecture.md.
"""

import ast
import re
from pathlib import Path

SRC = Path(__file__).parents[3] / "src" / "scaletrain"

# Lowest first. A module imports only modules of lower layers and of its own package (or
# module); a package or module missing from this table fails the test until it is placed.
LAYERS = [
    {"errors"},
    {"typed_yaml"},  # YAML read against a pydantic schema; knows nothing of Config
    {"choices"},  # which options each named choice takes; knows nothing of Config
    {"config"},
    {"fileio", "_alloc"},  # file helpers: nothing of scaletrain but errors
    {"rundir", "runfiles"},  # runfiles: the types of a run directory's JSON files
    {"data", "models", "optim", "metrics", "parallel", "report"},
    {"checkpoint"},
    {"train", "finish"},
    {"trained"},  # a trained run as an object: predict/evaluate/reload, below the api
    {"api"},
    {"launch", "catalog", "config_docs", "tune", "compress", "ensemble"},
    {"cli_parser"},  # the parser, below the commands it names
    {"cli"},
    {"__main__", "__init__"},
]
LAYER = {unit: index for index, units in enumerate(LAYERS) for unit in units}
# Tighter than their layer allows:
ONLY_IMPORT = {
    "typed_yaml": {"errors"},
    "choices": set(),
    "config": {"errors", "typed_yaml", "choices"},
    "fileio": {"errors"},
    "_alloc": set(),
    "rundir": {"errors", "fileio"},
    "runfiles": {"errors"},
    "report": {
        "errors",
        "fileio",
        "rundir",
        "runfiles",
    },  # a leaf api may call: reads run files only
}
NO_TORCH = (
    "errors",
    "typed_yaml",
    "choices",
    "config",
    "fileio",
    "_alloc",
    "rundir",
    "runfiles",
    "report",
)  # start in ~1 s
TORCH_DISTRIBUTED = ("parallel", "checkpoint")  # the packages that may import it
# The launcher runs torchrun's elastic agent in the CLI process: process spawning and
# rendezvous, never a process group or a collective.
LAUNCHER = ("launch/torchrun.py", ("torch.distributed.run", "torch.distributed.elastic"))
ENV_NAMES = {"environ", "environb", "getenv", "getenvb", "putenv", "unsetenv"}
# Files that touch os.environ, and the variables each may name (None: any).
ENV_READERS = {
    "parallel/env.py": None,  # torchrun's RANK/LOCAL_RANK/WORLD_SIZE/...: the one reader
    # sets its workers' variables; reads three before torch is imported (the CLI's fast path)
    "launch/torchrun.py": {
        "OMP_NUM_THREADS",
        "TORCH_DISABLE_SHARE_RDZV_TCP_STORE",
        "TORCHELASTIC_RUN_ID",
        "TORCHELASTIC_ERROR_FILE",
        "RANK",
    },
    "_alloc.py": {"MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_"},  # glibc's own knobs
    # member jobs of an ensemble (member_nproc > 1) share the cores: their thread count
    "ensemble/jobs.py": {"OMP_NUM_THREADS"},
    # async_ps's own launcher gives each process the variables torchrun would
    "launch/ps_supervisor.py": {
        "RANK",
        "LOCAL_RANK",
        "WORLD_SIZE",
        "LOCAL_WORLD_SIZE",
        "MASTER_ADDR",
        "MASTER_PORT",
        "TORCHELASTIC_RUN_ID",
        "OMP_NUM_THREADS",
    },
}


def _sources() -> list[Path]:
    return sorted(SRC.rglob("*.py"))


def _relative(path: Path) -> str:
    return path.relative_to(SRC).as_posix()


def _unit(relative: str) -> str:
    """`data/shards/format.py` -> data; `rundir.py` -> rundir; `__init__.py` -> __init__."""
    return relative.split("/")[0].removesuffix(".py")


def _imports(path: Path) -> list[tuple[str, int]]:
    """(module, line) of every import in the file; `from a import b` also yields `a.b`."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found += [(alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, f"{path}:{node.lineno}: use an absolute import"
            found.append((node.module, node.lineno))
            found += [(f"{node.module}.{alias.name}", node.lineno) for alias in node.names]
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr == "import_module"
            and node.args
            and isinstance(node.args[0], ast.Constant)
        ):
            found.append((node.args[0].value, node.lineno))
    return found


def _scaletrain_unit(module: str) -> str | None:
    """The top-level package or module of `scaletrain.x.y`; None for other modules and for
    the bare `scaletrain` (importing any submodule runs its __init__ anyway)."""
    parts = module.split(".")
    return parts[1] if parts[0] == "scaletrain" and len(parts) > 1 else None


def test_every_package_and_module_has_a_layer():
    units = {_unit(_relative(path)) for path in _sources()}
    assert units <= set(LAYER), f"place these in LAYERS: {sorted(units - set(LAYER))}"


def test_imports_go_down_the_layers_only():
    violations = {}  # one line per (file, line, imported package)
    for path in _sources():
        own = _unit(_relative(path))
        for module, line in _imports(path):
            target = _scaletrain_unit(module)
            if target is None or target == own:
                continue
            allowed = ONLY_IMPORT.get(own)
            if (
                target not in LAYER
                or LAYER[target] >= LAYER[own]
                or (allowed is not None and target not in allowed)
            ):
                violations.setdefault((_relative(path), line, target), f"{own} imports {module}")
    assert not violations, "\n".join(f"{p}:{n}: {m}" for (p, n, _), m in violations.items())


def test_torch_distributed_only_in_parallel_and_checkpoint():
    launcher, launcher_modules = LAUNCHER
    violations = {}  # (file, line) -> what it imports
    for path in _sources():
        relative = _relative(path)
        if _unit(relative) in TORCH_DISTRIBUTED:
            continue
        for module, line in _imports(path):
            if not re.match(r"torch\.distributed\b", module):
                continue
            if relative == launcher and module.startswith(launcher_modules):
                continue
            violations.setdefault((relative, line), f"imports {module}")
        for node in ast.walk(ast.parse(path.read_text())):  # `import torch; torch.distributed.x`
            if (
                isinstance(node, ast.Attribute)
                and node.attr == "distributed"
                and isinstance(node.value, ast.Name)
                and node.value.id == "torch"
            ):
                violations.setdefault((relative, node.lineno), "uses torch.distributed")
    assert not violations, "\n".join(f"{p}:{n}: {m}" for (p, n), m in violations.items())


def test_file_helpers_and_report_import_no_torch():
    for path in _sources():
        if _unit(_relative(path)) in NO_TORCH:
            for module, line in _imports(path):
                assert module.split(".")[0] != "torch", f"{_relative(path)}:{line}: {module}"


def test_config_and_errors_import_nothing_from_scaletrain():
    """config imports only errors, its YAML reader and its choices (which import only errors)."""
    for name in (
        "config/__init__.py",
        "config/base.py",
        "config/models.py",
        "typed_yaml.py",
        "choices.py",
        "errors.py",
    ):
        imported = {_scaletrain_unit(module) for module, _ in _imports(SRC / name)} - {None}
        allowed = (
            {"errors", "typed_yaml", "choices", "config"}
            if name.startswith("config")
            else {"errors"}
        )
        assert imported <= allowed, f"{name} imports {imported}"


def test_no_unsafe_torch_load():
    pattern = re.compile(r"torch\.load\(([^)]*)\)")
    for path in _sources():
        for match in pattern.finditer(path.read_text()):
            assert "weights_only=True" in match.group(1), f"{path}: {match.group(0)}"


def _env_uses(tree: ast.AST) -> list[int]:
    """Lines that touch the environment: `os.environ...`, `os.getenv(...)`, `from os import
    environ` (and putenv/unsetenv)."""
    lines = []
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Attribute)
            and node.attr in ENV_NAMES
            and isinstance(node.value, ast.Name)
            and node.value.id == "os"
        ):
            lines.append(node.lineno)
        elif isinstance(node, ast.ImportFrom) and node.module == "os":
            lines += [node.lineno for alias in node.names if alias.name in ENV_NAMES]
    return lines


def test_env_vars_read_only_in_parallel_env():
    violations = []
    for path in _sources():
        relative = _relative(path)
        tree = ast.parse(path.read_text())
        if relative not in ENV_READERS:
            lines = sorted(set(_env_uses(tree)))
            violations += [f"{relative}:{line}: touches os.environ" for line in lines]
            continue
        names = ENV_READERS[relative]
        if names is not None:  # the variables such a file names are pinned
            constants = {
                node.value
                for node in ast.walk(tree)
                if isinstance(node, ast.Constant)
                and isinstance(node.value, str)
                and re.fullmatch(r"[A-Z][A-Z0-9_]*", node.value)
            }
            violations += [f"{relative}: names {name}" for name in sorted(constants - names)]
    assert not violations, "\n".join(violations)
