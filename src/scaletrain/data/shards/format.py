"""The shard format on disk: version, sizes, checksums; reading and checking a manifest.

A prepared folder holds ``manifest.json`` and, per split, ``<split>/*.npy`` shards (plain
NumPy arrays, memory-mapped for reading). The manifest is written last and atomically, so a
folder with a manifest is complete; every shard file is listed with its byte size and SHA-256.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterator
from pathlib import Path

from scaletrain.errors import DataError

FORMAT = "scaletrain-shards"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
SPLITS = ("train", "val", "test")
_UNITS = {"": 1, "b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "kib": 2**10, "mib": 2**20}
_UNITS["gib"] = 2**30
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*$")


def parse_size(text: str) -> int:
    """Bytes from ``256MB`` (10^6), ``1GiB`` (2^30), ``4096`` …; at least 1."""
    match = _SIZE.match(str(text))
    unit = match.group(2).lower() if match else None
    if match is None or unit not in _UNITS:
        raise DataError(f"--shard-size: {text!r} is not a size; use e.g. 256MB, 64MiB or 1GB")
    return max(1, int(float(match.group(1)) * _UNITS[unit]))


def sha256_file(path: Path, *, block_bytes: int = 1 << 20) -> str:
    """Hex SHA-256 of a file, read in blocks (bounded memory)."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while block := handle.read(block_bytes):
            digest.update(block)
    return digest.hexdigest()


def read_manifest(root: Path) -> dict:
    """The manifest of a prepared folder, checked for format and version."""
    path = Path(root) / MANIFEST
    if not Path(root).is_dir():
        raise DataError(f"data.path: shard folder not found: {root}")
    if not path.is_file():
        raise DataError(f"{root}: no {MANIFEST}; make the folder with `scaletrain prepare`")
    try:
        manifest = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise DataError(f"{path}: not a scaletrain shard manifest (no format {FORMAT!r})")
    version = manifest.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise DataError(
            f"{path}: format version {version!r} is newer than this scaletrain reads "
            f"(up to {FORMAT_VERSION}); upgrade scaletrain or re-run `scaletrain prepare`"
        )
    return manifest


def shard_files(manifest: dict) -> Iterator[dict]:
    """Every file entry ({path, bytes, sha256}) of every split."""
    for split in manifest["splits"].values():
        for shard in split["shards"]:
            yield from shard["files"].values()


def verify_shards(root: Path, manifest: dict, *, mode: str) -> None:
    """Each listed shard exists with its size; with ``full``, its SHA-256 matches too."""
    for entry in shard_files(manifest):
        path = Path(root) / entry["path"]
        if not path.is_file():
            raise DataError(f"{path}: shard listed in {MANIFEST} is missing")
        size = path.stat().st_size
        if size != entry["bytes"]:
            raise DataError(
                f"{path}: shard has {size} bytes, the manifest says {entry['bytes']}; "
                "it is truncated or was changed (re-run `scaletrain prepare`)"
            )
        if mode == "full" and sha256_file(path) != entry["sha256"]:
            raise DataError(
                f"{path}: SHA-256 does not match {MANIFEST}; the shard is corrupt or was "
                "changed (re-run `scaletrain prepare`)"
            )
