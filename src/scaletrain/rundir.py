"""The run directory: the product of a run, and the input of every later command."""

from __future__ import annotations

import json
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from scaletrain.errors import UserError
from scaletrain.fileio import atomic_write_text, read_jsonl

_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


@dataclass(frozen=True)
class RunDir:
    root: Path

    config = property(lambda self: self.root / "config.yaml")
    plan = property(lambda self: self.root / "plan.json")
    metrics = property(lambda self: self.root / "metrics.jsonl")
    summary = property(lambda self: self.root / "summary.json")
    model_summary = property(lambda self: self.root / "model_summary.json")
    preprocess = property(lambda self: self.root / "preprocess.json")
    checkpoints = property(lambda self: self.root / "checkpoints")
    predictions = property(lambda self: self.root / "predictions")
    tensorboard = property(lambda self: self.root / "tb")
    report = property(lambda self: self.root / "report.html")


def validate_name(name: str, *, what: str = "run.name") -> str:
    """Reject names that could escape their parent folder (`..`, separators, absolute)."""
    if not _SAFE_NAME.match(name) or name in {".", ".."}:
        raise UserError(
            f"{what}: {name!r} is not a safe name; use letters, digits, '.', '_' or '-' "
            "(no path separators, no leading dot)"
        )
    return name


def prepare_run_dir(out_dir: str | Path, name: str, *, overwrite: bool = False) -> RunDir:
    """Create a fresh run directory; refuse to reuse an existing one unless told to."""
    root = Path(out_dir) / validate_name(name)
    if root.exists():
        if not overwrite:
            raise UserError(
                f"run directory {root} already exists; pass --resume to continue it "
                "(or run `scaletrain resume` on it) or --overwrite to replace it"
            )
        if not (root / "config.yaml").is_file():
            raise UserError(f"refusing to overwrite {root}: it is not a run directory")
        shutil.rmtree(root)
    try:
        root.mkdir(parents=True)
    except OSError as exc:  # out_dir is a file, under /dev/null or /proc, read-only ...
        raise UserError(
            f"run.out_dir: cannot create the run directory {root} ({exc.strerror}); "
            "choose a folder you can write to (--out DIR)"
        ) from None
    return RunDir(root)


def open_run_dir(path: str | Path) -> RunDir:
    """An existing run directory, checked to hold a resolved config."""
    root = Path(path)
    if not root.is_dir():
        raise UserError(f"run directory not found: {root}")
    if not (root / "config.yaml").is_file():
        raise UserError(f"not a run directory: {root} (no config.yaml)")
    return RunDir(root)


def read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise UserError(f"missing file: {path}") from None
    except json.JSONDecodeError as exc:
        raise UserError(f"{path}:{exc.lineno}: not valid JSON ({exc.msg})") from None


def append_record(path: Path, record: dict) -> None:
    with open(path, "a") as handle:
        handle.write(json.dumps(record) + "\n")


def truncate_metrics(path: Path, *, after_step: int) -> None:
    """Drop metric lines a crashed run wrote after the checkpoint it resumes from."""
    if not path.is_file():
        return
    kept = [record for record in read_jsonl(path) if record.get("step", 0) <= after_step]
    atomic_write_text(path, "".join(json.dumps(record) + "\n" for record in kept))
