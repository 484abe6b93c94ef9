"""The run directory: the product of a run, and the input of every later command."""

from __future__ import annotations

import fcntl
import json
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from scaletrain.errors import UserError
from scaletrain.fileio import atomic_write_text, read_file_bytes, read_jsonl

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


ENSEMBLE_FILE = "ensemble.json"  # in an ensemble's directory: its members and combination


def is_ensemble_dir(root: str | Path) -> bool:
    """An ensemble's directory (members under `members/`), not a single run's."""
    return (Path(root) / ENSEMBLE_FILE).is_file()


def validate_name(name: str, *, what: str = "run.name") -> str:
    """Reject names that could escape their parent folder (`..`, separators, absolute)."""
    if not _SAFE_NAME.match(name) or name in {".", ".."}:
        raise UserError(
            f"{what}: {name!r} is not a safe name; use letters, digits, '.', '_' or '-' "
            "(no path separators, no leading dot)"
        )
    return name


# How to reuse an existing run directory, in the words of the caller's interface.
CLI_REUSE_HINT = (
    "pass --resume to continue it (or run `scaletrain resume` on it) or --overwrite to replace it"
)
API_REUSE_HINT = "continue it with scaletrain.resume({root!r}) or pass overwrite=True to replace it"


class RunDirExistsError(UserError):
    """The run directory is there already; `hint` says how to continue or replace it."""

    def __init__(self, root: Path, *, hint: str):
        self.root = root
        super().__init__(f"run directory {root} already exists; {hint.format(root=str(root))}")


def prepare_run_dir(
    out_dir: str | Path,
    name: str,
    *,
    overwrite: bool = False,
    lock: RunLock | None = None,
    reuse_hint: str = CLI_REUSE_HINT,
) -> RunDir:
    """Create a fresh run directory; refuse to reuse an existing one unless told to. With
    `lock`, take it first: an --overwrite never empties a directory another process writes.
    `reuse_hint` words the refusal for the caller's interface (CLI flags or API arguments)."""
    root = Path(out_dir) / validate_name(name)
    if root.exists():
        if not overwrite:
            raise RunDirExistsError(root, hint=reuse_hint)
        if not (root / "config.yaml").is_file():
            raise UserError(f"refusing to overwrite {root}: it is not a run directory")
        if lock is not None:
            lock.acquire()
        _empty(root, keep=lock.path if lock else None)
    else:
        try:
            root.mkdir(parents=True)
        except OSError as exc:  # out_dir is a file, under /dev/null or /proc, read-only ...
            raise UserError(
                f"run.out_dir: cannot create the run directory {root} ({exc.strerror}); "
                "choose a folder you can write to (--out DIR)"
            ) from None
        if lock is not None:
            lock.acquire()
    return RunDir(root)


def _empty(root: Path, *, keep: Path | None) -> None:
    """Remove what `root` holds (links as links, never followed), except `keep`."""
    for child in root.iterdir():
        if child == keep:
            continue
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child)
        else:
            child.unlink()


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
        return json.loads(read_file_bytes(path))
    except FileNotFoundError:
        raise UserError(f"missing file: {path}") from None
    except json.JSONDecodeError as exc:
        raise UserError(f"{path}:{exc.lineno}: not valid JSON ({exc.msg})") from None
    except (UnicodeDecodeError, RecursionError):
        raise UserError(f"{path}: not valid JSON (binary, or nested too deeply)") from None


def append_record(path: Path, record: dict) -> None:
    with open(path, "a") as handle:
        handle.write(json.dumps(record) + "\n")


def truncate_metrics(path: Path, *, after_step: int) -> None:
    """Drop metric lines a crashed run wrote after the checkpoint it resumes from."""
    if not path.is_file():
        return
    records = read_jsonl(path)
    for number, record in enumerate(records, start=1):
        if type(record.get("step", 0)) is not int:  # edited: a crash writes no such line
            got = repr(record["step"])[:40]
            raise UserError(f"{path}: record {number}: `step` must be an integer, got {got}")
    kept = [record for record in records if record.get("step", 0) <= after_step]
    atomic_write_text(path, "".join(json.dumps(record) + "\n" for record in kept))


class RunLock:
    """One writer per run directory: an exclusive `flock` on its `.lock` file, held by
    rank 0 for the run's life and released by the OS when the process dies (kill -9 leaves
    no stale lock). `--overwrite` empties the directory but keeps this file, so the lock is
    never lost on the way; the file holds the holder's pid."""

    def __init__(self, root: Path):
        self.root = Path(root)
        self.path = self.root / ".lock"
        self._fd: int | None = None

    def acquire(self) -> RunLock:
        flags = os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0)  # never through a link
        try:
            fd = os.open(self.path, flags, 0o644)
        except OSError as error:
            message = f"{self.path}: cannot open the run's lock file ({error.strerror})"
            raise UserError(message) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise UserError(
                f"{self.root}: another scaletrain process (pid {holder}) is writing this run "
                "directory; wait for it to end, or choose another run.name"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd
        return self

    def release(self) -> None:
        """Idempotent; the file stays (deleting it would race a waiting writer)."""
        if self._fd is not None:
            os.close(self._fd)  # closing drops the flock
            self._fd = None
