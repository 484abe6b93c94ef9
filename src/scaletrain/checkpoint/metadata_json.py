"""`metadata.json`: DCP's Metadata as JSON, written by the coordinator, parsed strictly.

```
{"format": "scaletrain-dcp-metadata", "version": 1,
 "tensors": {"model.0.weight": {"dtype": "float32", "size": [64, 32], "chunks": [
     {"offsets": [0, 0], "sizes": [32, 32], "file": "__0_0.safetensors", "key": "..."}, ...]}},
 "values": {"optim.param_groups.0.lr": 0.001, "optim.param_groups.0.betas": {"tuple": [...]}},
 "paths": {"model.0.weight": ["model", "0.weight"], ...}}
```

Parsing checks every field's type, that each chunk lies inside its tensor and comes from a
file the manifest lists (by name: never a path), and that the chunks of each file fit in
its size, so a tensor to be allocated is never larger than the bytes on disk.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch.distributed.checkpoint.metadata import (
    BytesStorageMetadata,
    ChunkStorageMetadata,
    Metadata,
    MetadataIndex,
    TensorProperties,
    TensorStorageMetadata,
)

from scaletrain.checkpoint.values import decode_value, shown
from scaletrain.errors import CheckpointError

METADATA = "metadata.json"
DATA_SUFFIX = ".safetensors"
FORMAT = "scaletrain-dcp-metadata"
VERSION = 1
SAFETENSORS_DTYPES = {
    torch.float64: "F64",
    torch.float32: "F32",
    torch.float16: "F16",
    torch.bfloat16: "BF16",
    torch.int64: "I64",
    torch.int32: "I32",
    torch.int16: "I16",
    torch.int8: "I8",
    torch.uint8: "U8",
    torch.bool: "BOOL",
    torch.float8_e4m3fn: "F8_E4M3",
    torch.float8_e5m2: "F8_E5M2",
}
DTYPES = {str(dtype).removeprefix("torch."): dtype for dtype in SAFETENSORS_DTYPES}
_MAX_DIMS = 64


@dataclass(frozen=True)
class DataChunk:
    """Where one saved chunk lives; dtype and sizes are filled when read back, to check the
    file's own header against the metadata."""

    file: str
    key: str
    dtype: torch.dtype | None = None
    sizes: tuple[int, ...] = ()


@dataclass(frozen=True)
class DataValue:
    data: Any  # the JSON form (values.encode_value)


class Invalid(Exception):
    """A structural problem; the caller names the file."""


def require(condition: bool, message: str) -> None:
    if not condition:
        raise Invalid(message)


def metadata_document(metadata: Metadata, results: list) -> dict:
    """The JSON document for DCP's `metadata` and every rank's write results."""
    storage = {result.index: result.storage_data for batch in results for result in batch}
    tensors, values = {}, {}
    for fqn, meta in metadata.state_dict_metadata.items():
        if isinstance(meta, BytesStorageMetadata):
            values[fqn] = storage[MetadataIndex(fqn)].data
            continue
        chunks = []
        for chunk in meta.chunks:
            info = storage[MetadataIndex(fqn, chunk.offsets)]
            sizes, offsets = list(chunk.sizes), list(chunk.offsets)
            chunks.append({"offsets": offsets, "sizes": sizes, "file": info.file, "key": info.key})
        dtype = str(meta.properties.dtype).removeprefix("torch.")
        tensors[fqn] = {"dtype": dtype, "size": list(meta.size), "chunks": chunks}
    paths = {fqn: list(path) for fqn, path in (metadata.planner_data or {}).items()}
    return {
        "format": FORMAT,
        "version": VERSION,
        "tensors": tensors,
        "values": values,
        "paths": paths,
    }


def parse_metadata(data: bytes, *, files: Mapping[str, int], source: Path) -> Metadata:
    """Metadata for DCP's load from `metadata.json`; CheckpointError naming `source`."""
    try:
        document = json.loads(data)
        return _parse(document, files)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
        raise CheckpointError(f"{source}: not valid JSON") from None
    except Invalid as exc:
        raise CheckpointError(f"{source}: {exc}") from None
    except CheckpointError as exc:
        raise CheckpointError(f"{source}: {exc}") from None


def _parse(document: Any, files: Mapping[str, int]) -> Metadata:
    require(isinstance(document, dict), "not a JSON object")
    require(document.get("format") == FORMAT, "not scaletrain checkpoint metadata")
    version = document.get("version")
    require(version == VERSION and type(version) is int, f"unknown version {shown(version)}")
    tensors, values, paths = (document.get(key) for key in ("tensors", "values", "paths"))
    for key, part in (("tensors", tensors), ("values", values), ("paths", paths)):
        require(isinstance(part, dict), f"`{key}` must be an object")
    require(not set(tensors) & set(values), "a name is both a tensor and a value")
    entries, storage, used = {}, {}, {}
    for fqn, entry in tensors.items():
        entries[fqn] = _tensor(fqn, entry, files, storage, used)
    for file, num_bytes in used.items():
        if num_bytes > files[file]:
            raise Invalid(f"its chunks need {num_bytes} bytes of {file}, which has {files[file]}")
    for fqn, data in values.items():
        decode_value(data, name=fqn)  # refuse now what the load would refuse later
        entries[fqn] = BytesStorageMetadata()
        storage[MetadataIndex(fqn)] = DataValue(data)
    return Metadata(entries, planner_data=_paths(paths), storage_data=storage)


def _tensor(fqn: str, entry: Any, files, storage: dict, used: dict) -> TensorStorageMetadata:
    if not (isinstance(entry, dict) and isinstance(entry.get("dtype"), str)):
        raise Invalid(f"tensor {shown(fqn)}: not an object with a `dtype`")
    dtype = DTYPES.get(entry["dtype"])
    if dtype is None:
        raise Invalid(f"tensor {shown(fqn)}: unknown dtype {shown(entry['dtype'])}")
    size, chunks = dims(entry.get("size"), fqn), entry.get("chunks")
    if not (isinstance(chunks, list) and chunks and all(isinstance(c, dict) for c in chunks)):
        raise Invalid(f"tensor {shown(fqn)}: `chunks` must be a list of objects")
    metas, stored = [], 0
    for chunk in chunks:
        offsets, sizes = dims(chunk.get("offsets"), fqn), dims(chunk.get("sizes"), fqn)
        check_chunk(fqn, size, offsets, sizes)
        file, key = chunk.get("file"), chunk.get("key")
        if not (isinstance(file, str) and file.endswith(DATA_SUFFIX) and file in files):
            raise Invalid(
                f"tensor {shown(fqn)}: reads {shown(file)}, "
                "which is not a data file the manifest lists"
            )
        if not isinstance(key, str):
            raise Invalid(f"tensor {shown(fqn)}: a chunk's `key` is not a string")
        used[file] = used.get(file, 0) + math.prod(sizes) * dtype.itemsize
        stored += math.prod(sizes)
        metas.append(ChunkStorageMetadata(offsets=offsets, sizes=sizes))
        storage[MetadataIndex(fqn, offsets)] = DataChunk(file, key, dtype, tuple(sizes))
    if math.prod(size) > stored:
        raise Invalid(f"tensor {shown(fqn)}: its chunks do not cover it")
    return TensorStorageMetadata(TensorProperties(dtype=dtype), size, metas)


def dims(value: Any, fqn: str) -> torch.Size:
    """A list of non-negative integers (booleans are not integers) for tensor `fqn`."""
    valid = (
        isinstance(value, (list, tuple))
        and len(value) <= _MAX_DIMS
        and all(type(item) is int and item >= 0 for item in value)
    )
    if not valid:
        raise Invalid(f"tensor {shown(fqn)}: expected non-negative integers, got {shown(value)}")
    return torch.Size(value)


def check_chunk(fqn: str, size, offsets, sizes) -> None:
    """A chunk lies inside its tensor (DCP would index out of range otherwise)."""
    inside = len(offsets) == len(sizes) == len(size) and all(
        o + s <= n for o, s, n in zip(offsets, sizes, size, strict=True)
    )
    if not inside:
        raise Invalid(f"tensor {shown(fqn)}: a chunk at {list(offsets)} lies outside it")


def _paths(paths: dict) -> dict:
    for fqn, path in paths.items():
        require(
            isinstance(path, list)
            and len(path) > 0
            and all(type(part) in (str, int) for part in path),
            f"`paths` of {shown(fqn)}: expected a list of keys, got {shown(path)}",
        )
    return {fqn: tuple(path) for fqn, path in paths.items()}
