"""Writers of fixed-size shards: sample arrays (inputs, targets) or one flat token stream.

Appended chunks are cut into shards of ``rows_per_shard`` samples (or tokens), so memory
stays at one shard's worth whatever the dataset size. Each shard is a ``.npy`` file hashed
while it is written and fsynced; ``write_manifest`` is the last step.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np

from scaletrain.data.shards.format import FORMAT, FORMAT_VERSION, MANIFEST
from scaletrain.fileio import atomic_write_json


class _HashingFile:
    """A write-only file that also feeds every byte to SHA-256."""

    def __init__(self, path: Path):
        self.handle = path.open("wb")
        self.digest = hashlib.sha256()
        self.num_bytes = 0

    def write(self, data) -> int:
        self.digest.update(data)
        self.num_bytes += len(data)
        return self.handle.write(data)

    def close(self) -> None:
        self.handle.flush()
        os.fsync(self.handle.fileno())
        self.handle.close()


def write_npy(root: Path, relative: str, array: np.ndarray) -> dict:
    """One shard file; its manifest entry (path, bytes, sha256)."""
    path = root / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    handle = _HashingFile(path)
    try:
        np.lib.format.write_array(handle, np.ascontiguousarray(array), allow_pickle=False)
    finally:
        handle.close()
    return {"path": relative, "bytes": handle.num_bytes, "sha256": handle.digest.hexdigest()}


class SampleShardWriter:
    """Samples of one split: each shard holds ``rows_per_shard`` rows of every field."""

    def __init__(self, root: Path, split: str, *, fields: dict[str, dict], shard_bytes: int):
        self.root, self.split, self.fields = Path(root), split, fields
        row_bytes = sum(
            np.dtype(field["dtype"]).itemsize * int(np.prod(field["shape"], dtype=np.int64))
            for field in fields.values()
        )
        self.rows_per_shard = max(1, shard_bytes // max(1, row_bytes))
        self.pending: dict[str, list[np.ndarray]] = {name: [] for name in fields}
        self.num_pending = 0
        self.shards: list[dict] = []
        self.num_samples = 0

    def append(self, **arrays: np.ndarray) -> None:
        """Add a chunk of samples (every field, same length); full shards are written."""
        lengths = {len(array) for array in arrays.values()}
        assert set(arrays) == set(self.fields) and len(lengths) == 1, (arrays.keys(), lengths)
        for name, array in arrays.items():
            dtype = self.fields[name]["dtype"]
            self.pending[name].append(np.asarray(array).astype(dtype, copy=False))
        self.num_pending += lengths.pop()
        while self.num_pending >= self.rows_per_shard:
            self._flush(self.rows_per_shard)

    def _flush(self, num_rows: int) -> None:
        parts = {name: np.concatenate(chunks) for name, chunks in self.pending.items()}
        files = {}
        for name, array in parts.items():
            relative = f"{self.split}/{len(self.shards):05d}.{name}.npy"
            files[name] = write_npy(self.root, relative, array[:num_rows])
            self.pending[name] = [array[num_rows:].copy()]  # frees the written rows
        self.shards.append({"num_samples": num_rows, "files": files})
        self.num_samples += num_rows
        self.num_pending -= num_rows

    def close(self) -> dict:
        """Write the last, shorter shard; the split's manifest entry."""
        if self.num_pending:
            self._flush(self.num_pending)
        return {"num_samples": self.num_samples, "shards": self.shards}


class TokenShardWriter:
    """One split's token stream, cut into shards of ``tokens_per_shard`` ids."""

    def __init__(self, root: Path, split: str, *, dtype: np.dtype, shard_bytes: int):
        self.root, self.split, self.dtype = Path(root), split, np.dtype(dtype)
        self.tokens_per_shard = max(2, shard_bytes // self.dtype.itemsize)
        self.pending: list[np.ndarray] = []
        self.num_pending = 0
        self.shards: list[dict] = []
        self.num_tokens = 0

    def append(self, token_ids: np.ndarray) -> None:
        """Add ids to the end of the stream."""
        self.pending.append(np.asarray(token_ids).astype(self.dtype, copy=False))
        self.num_pending += len(token_ids)
        while self.num_pending >= self.tokens_per_shard:
            self._flush(self.tokens_per_shard)

    def _flush(self, count: int) -> None:
        stream = np.concatenate(self.pending)
        relative = f"{self.split}/{len(self.shards):05d}.tokens.npy"
        entry = write_npy(self.root, relative, stream[:count])
        self.pending = [stream[count:].copy()]
        self.shards.append({"num_tokens": count, "files": {"tokens": entry}})
        self.num_tokens += count
        self.num_pending -= count

    def close(self, *, context_length: int) -> dict:
        """Write the last shard; the split's manifest entry."""
        if self.num_pending:
            self._flush(self.num_pending)
        return {
            "num_tokens": self.num_tokens,
            "num_samples": max(0, (self.num_tokens - 1) // context_length),
            "shards": self.shards,
        }


def write_manifest(root: Path, body: dict) -> dict:
    """Add the format header and write ``manifest.json`` atomically: the folder's last step."""
    manifest = {"format": FORMAT, "format_version": FORMAT_VERSION, **body}
    atomic_write_json(Path(root) / MANIFEST, manifest, indent=1)
    return manifest
