"""Files on disk: the package's one atomic writer and its one JSONL reader.

Imports nothing of scaletrain but `errors`, so every layer (data shards, checkpoints, the
run directory, the report, the MFU cache) writes and reads through these functions.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from scaletrain.errors import UserError

NEW_FILE_MODE = 0o666  # what open() asks for; the umask takes away (022: 0644)


@contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """A temporary path beside `path` to write; on a clean exit it becomes `path`.

    The temporary file is fsynced, renamed over `path` and the folder fsynced, so a reader
    (or a crash, or a power cut) sees the old file or the whole new one. On an error it is
    removed. Concurrent writers each get their own temporary file; the last rename wins.
    """
    path = Path(path)
    if path.is_dir() and not path.is_symlink():  # os.replace cannot put a file over it
        raise UserError(f"{path}: a folder is where this file goes; remove it and rerun")
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    temporary = Path(name)
    try:
        os.close(descriptor)
        yield temporary
        # run files are for sharing as open() would make them (mkstemp alone gives 0600);
        # after the write: a writer may create the file anew
        temporary.chmod(NEW_FILE_MODE & ~current_umask())
        fsync_file(temporary)
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)  # the rename itself survives a power cut only after this


def atomic_write_bytes(path: Path, data: bytes) -> None:
    with atomic_path(path) as temporary:
        temporary.write_bytes(data)


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: Path, data: Any, *, indent: int | None = 2) -> None:
    """`data` as JSON; serialized before the temporary file exists, so a value JSON cannot
    encode leaves nothing behind."""
    atomic_write_text(path, json.dumps(data, indent=indent) + "\n")


def current_umask() -> int:
    """The process umask, read without changing it where Linux tells (`os.umask` sets it,
    and a thread creating a file meanwhile would get the wrong mode)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def fsync_file(path: Path) -> None:
    """Write a file's dirty pages to the disk, those dirtied through a mapping of it too."""
    with open(path, "rb") as handle:
        os.fsync(handle.fileno())


def fsync_dir(directory: Path) -> None:
    """Make a rename or a new file in `directory` durable (also after a directory commit)."""
    descriptor = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def read_file_bytes(path: Path, *, error: type[UserError] = UserError) -> bytes:
    """A file's bytes; a folder, a link to one, a link loop or an unreadable file in its place
    is one `error` line naming it. FileNotFoundError passes: each reader says what a missing
    file means (optional, or a refusal of its own)."""
    try:
        return Path(path).read_bytes()
    except FileNotFoundError:
        raise
    except OSError as exc:
        raise error(f"{path}: cannot read it ({exc.strerror}); expected a file") from None


def read_text_file(path: Path, *, error: type[UserError] = UserError) -> str:
    """A UTF-8 text file (`read_file_bytes`); bytes that are not UTF-8 are one `error` line."""
    data = read_file_bytes(path, error=error)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise error(f"{path}: not UTF-8 text (byte {exc.start}); was it edited?") from None


def read_jsonl(path: Path) -> list[dict]:
    """The records of a JSON-lines file, one object per line; [] where the file is missing.

    Blank lines are skipped. A last line that is not a record is dropped: a crash cut it short
    mid-write. Anything else that is not a JSON object is a UserError naming `file:line`.
    """
    try:
        lines = read_file_bytes(path).split(b"\n")
    except FileNotFoundError:
        return []
    last = max((index for index, line in enumerate(lines) if line.strip()), default=-1)
    records = []
    for index, line in enumerate(lines):
        if not line.strip():
            continue
        record, problem = _parse_record(line)
        if record is not None:
            records.append(record)
        elif index != last:
            raise UserError(
                f"{path}:{index + 1}: not a JSON record ({problem}); only the last line may "
                "be cut short by a crash, so fix or delete this one"
            )
    return records


def _parse_record(line: bytes) -> tuple[dict | None, str]:
    try:
        record = json.loads(line)
    except ValueError as error:  # JSONDecodeError, or bytes that are not UTF-8
        return None, getattr(error, "msg", None) or str(error)
    except RecursionError:
        return None, "nested too deeply"
    if not isinstance(record, dict):
        return None, f"a JSON {type(record).__name__}, expected an object"
    return record, ""
