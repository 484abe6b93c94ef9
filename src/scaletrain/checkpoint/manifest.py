"""Checkpoint manifests: per-file sizes and SHA-256, written last; no manifest, no checkpoint.

A manifest is also the list of what may be read: a file of the checkpoint folder that it
does not name is never opened, and a name must be a plain file name of that folder.
Version 2 checkpoints hold `metadata.json` and safetensors files (`storage.py`); version 1
ones, written before, DCP's pickled `.metadata` (read by `legacy.py`, never unpickled).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from scaletrain.checkpoint.values import shown
from scaletrain.errors import CheckpointError
from scaletrain.fileio import atomic_write_json, fsync_file, read_file_bytes

MANIFEST = "manifest.json"
FORMAT = "scaletrain-checkpoint"
VERSION = 2
_SHA256 = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True)
class Manifest:
    version: int
    step: int
    files: dict[str, int]  # plain file name -> size in bytes, each checked against its hash


def sha256_file(path: Path, *, chunk_bytes: int = 1 << 22) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk_bytes):
            digest.update(block)
    return digest.hexdigest()


def write_manifest(directory: Path, *, step: int, version: int = VERSION) -> None:
    """Hash and fsync every file, then write manifest.json atomically: the commit record."""
    files = {}
    for path in sorted(p for p in directory.iterdir() if p.is_file() and p.name != MANIFEST):
        fsync_file(path)
        files[path.name] = {"bytes": path.stat().st_size, "sha256": sha256_file(path)}
    manifest = {"format": FORMAT, "version": version, "step": step, "files": files}
    atomic_write_json(directory / MANIFEST, manifest, indent=1)


def verify_manifest(directory: Path) -> Manifest:
    """Check every listed file's size and hash; raise CheckpointError naming the culprit."""
    path = directory / MANIFEST
    document = _read(path, directory)
    problem = _header_problem(document) or _files_problem(document["files"])
    if problem:
        raise CheckpointError(f"{path}: {problem}")
    for name, entry in document["files"].items():
        _verify_file(directory / name, entry)
    sizes = {name: entry["bytes"] for name, entry in document["files"].items()}
    return Manifest(document["version"], document["step"], sizes)


def _read(path: Path, directory: Path) -> Any:
    try:
        return json.loads(read_file_bytes(path, error=CheckpointError))
    except FileNotFoundError:
        raise CheckpointError(f"{path}: missing, so {directory.name} is not a checkpoint") from None
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
        raise CheckpointError(f"{path}: not valid JSON") from None


def _header_problem(document: Any) -> str | None:
    if not isinstance(document, dict):
        return f"expected a JSON object, got {type(document).__name__}"
    if document.get("format") != FORMAT:
        return "not a scaletrain checkpoint manifest"
    version, step = document.get("version"), document.get("step")
    if type(version) is not int or version < 1:
        return f"`version` must be a positive integer, got {shown(version)}"
    if version > VERSION:
        return (
            f"format version {version} is newer than this scaletrain understands "
            f"({VERSION}); upgrade scaletrain"
        )
    if type(step) is not int or step < 0:
        return f"`step` must be a non-negative integer, got {shown(step)}"
    if "files" not in document:
        return "lacks `files`, the list of the checkpoint's files"
    return None


def _files_problem(files: Any) -> str | None:
    if not isinstance(files, dict):
        return f"`files` must be an object of file names, got {type(files).__name__}"
    for name, entry in files.items():
        if not _is_plain_name(name):
            return f"lists {shown(name)}, which is not a file of this folder"
        if not isinstance(entry, dict):
            return f"the entry of {shown(name)} is not an object"
        size, digest = entry.get("bytes"), entry.get("sha256")
        if "bytes" not in entry:
            return f"the entry of {shown(name)} lacks `bytes` (its size)"
        if type(size) is not int or size < 0:
            return f"the entry of {shown(name)}: `bytes` must be a size, got {shown(size)}"
        if not (isinstance(digest, str) and _SHA256.fullmatch(digest)):
            return f"the entry of {shown(name)} lacks `sha256` (64 hex digits)"
    return None


def _verify_file(file: Path, entry: dict) -> None:
    try:
        mode = os.lstat(file).st_mode
    except FileNotFoundError:
        raise CheckpointError(f"{file}: listed in the manifest but missing") from None
    if not stat.S_ISREG(mode):  # a link could point a read anywhere
        raise CheckpointError(f"{file}: not a plain file (a link?); refusing to read it")
    size = file.stat().st_size
    if size != entry["bytes"]:
        raise CheckpointError(f"{file}: size {size} bytes, manifest says {entry['bytes']}")
    if sha256_file(file) != entry["sha256"]:
        raise CheckpointError(f"{file}: checksum does not match the manifest")


def _is_plain_name(name: str) -> bool:
    """A file directly in the checkpoint folder: no separators, no `..`, not the manifest."""
    return (
        bool(name)
        and name not in (".", "..", MANIFEST)
        and "/" not in name
        and "\\" not in name
        and "\0" not in name
    )
