"""Checkpoint manifests: per-file sizes and SHA-256, written last; no manifest, no checkpoint."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from scaletrain.errors import CheckpointError
from scaletrain.fileio import atomic_write_json, fsync_file

MANIFEST = "manifest.json"
FORMAT = "scaletrain-checkpoint"
VERSION = 1


def sha256_file(path: Path, *, chunk_bytes: int = 1 << 22) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk_bytes):
            digest.update(block)
    return digest.hexdigest()


def write_manifest(directory: Path, *, step: int) -> None:
    """Hash and fsync every file, then write manifest.json atomically: the commit record."""
    files = {}
    for path in sorted(p for p in directory.rglob("*") if p.is_file() and p.name != MANIFEST):
        fsync_file(path)
        files[path.relative_to(directory).as_posix()] = {
            "bytes": path.stat().st_size,
            "sha256": sha256_file(path),
        }
    manifest = {"format": FORMAT, "version": VERSION, "step": step, "files": files}
    atomic_write_json(directory / MANIFEST, manifest, indent=1)


def verify_manifest(directory: Path) -> dict:
    """Check every listed file's size and hash; raise CheckpointError naming the culprit."""
    path = directory / MANIFEST
    try:
        manifest = json.loads(path.read_text())
    except FileNotFoundError:
        raise CheckpointError(f"{path}: missing, so {directory.name} is not a checkpoint") from None
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise CheckpointError(f"{path}: not valid JSON") from None
    if manifest.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a scaletrain checkpoint manifest")
    if manifest.get("version", 0) > VERSION:
        raise CheckpointError(
            f"{path}: format version {manifest['version']} is newer than this scaletrain "
            f"understands ({VERSION}); upgrade scaletrain"
        )
    for name, meta in manifest["files"].items():
        file = directory / name
        if not _is_plain_name(name) or file.is_symlink():
            raise CheckpointError(f"{path}: lists {name!r}, which is not a file of this folder")
        if not file.is_file():
            raise CheckpointError(f"{file}: listed in the manifest but missing")
        if file.stat().st_size != meta["bytes"]:
            raise CheckpointError(
                f"{file}: size {file.stat().st_size} bytes, manifest says {meta['bytes']}"
            )
        if sha256_file(file) != meta["sha256"]:
            raise CheckpointError(f"{file}: checksum does not match the manifest")
    return manifest


def _is_plain_name(name: str) -> bool:
    """A manifest names files of its own folder only: no `..`, no absolute paths."""
    parts = Path(name).parts
    return bool(parts) and not Path(name).is_absolute() and ".." not in parts
