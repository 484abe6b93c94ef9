"""The checkpoint format: DCP's tensors in safetensors files, its metadata and values in JSON.

DCP plans the save (which rank writes which chunk, for any sharding) and the load (which
slices of which saved chunks fill each local tensor), so checkpoints reshard across world
sizes and strategies. Only the storage layer is ours: each rank writes one
`__R_0.safetensors` file (a JSON header, then raw little-endian bytes), and the coordinator
writes `metadata.json`: each tensor's dtype, size and chunks (with the file and key of each),
each non-tensor value inline (`values.py`), and DCP's key paths. Nothing is a pickle.
torch's own `HuggingFaceStorageWriter` cannot be used: it writes non-tensor values (the
optimizer's param groups) as `torch.save` pickles in front of the safetensors header, which
breaks the file, and its reader has no place for them (see docs/fault-tolerance.md).
"""

from __future__ import annotations

import io
import json
import os
import struct
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from torch.distributed.checkpoint import (
    DefaultLoadPlanner,
    DefaultSavePlanner,
    FileSystemReader,
    FileSystemWriter,
)
from torch.distributed.checkpoint._traverse import set_element
from torch.distributed.checkpoint.metadata import Metadata, StorageMeta
from torch.distributed.checkpoint.planner import LoadItemType, ReadItem, WriteItemType
from torch.distributed.checkpoint.storage import WriteResult
from torch.futures import Future

from scaletrain.checkpoint.metadata_json import (
    DATA_SUFFIX,
    METADATA,
    SAFETENSORS_DTYPES,
    DataChunk,
    DataValue,
    metadata_document,
)
from scaletrain.checkpoint.values import decode_value, dumps_value
from scaletrain.errors import CheckpointError
from scaletrain.fileio import atomic_write_bytes


class JsonSavePlanner(DefaultSavePlanner):
    """DCP's default planner, with non-tensor values as JSON bytes instead of torch.save."""

    def transform_object(self, write_item, object: Any):
        if write_item.type == WriteItemType.BYTE_IO:
            return io.BytesIO(dumps_value(object, name=write_item.index.fqn))
        return object


class JsonLoadPlanner(DefaultLoadPlanner):
    """DCP's default planner, reading non-tensor values as JSON (it would unpickle them)."""

    def load_bytes(self, read_item: ReadItem, value: io.BytesIO) -> None:
        fqn = read_item.dest_index.fqn
        loaded = decode_value(json.loads(value.getvalue()), name=fqn)
        if self.flatten_state_dict:
            set_element(self.original_state_dict, self.mappings[fqn], loaded)
        else:
            self.state_dict[fqn] = loaded


class SafetensorsWriter(FileSystemWriter):
    """FileSystemWriter (staging for async saves, per-rank file prefixes) with our files."""

    def write_data(self, plan, planner) -> Future[list[WriteResult]]:
        name = f"{plan.storage_data.prefix}0{DATA_SUFFIX}"
        results, tensors = [], []
        for item in plan.items:
            if item.type == WriteItemType.BYTE_IO:
                data = json.loads(planner.resolve_data(item).getvalue())
                results.append(WriteResult(item.index, 0, DataValue(data)))
            else:
                tensors.append(item)
        if tensors:
            path = Path(self.path) / name
            results += _write_safetensors(path, tensors, planner, sync=self.sync_files)
        future: Future[list[WriteResult]] = Future()
        future.set_result(results)
        return future

    def finish(self, metadata: Metadata, results: list[list[WriteResult]]) -> None:
        document = metadata_document(metadata, results)
        text = json.dumps(document, separators=(",", ":"), allow_nan=False)
        atomic_write_bytes(Path(self.path) / METADATA, text.encode())


class CheckedMetadataReader(FileSystemReader):
    """A DCP reader handed metadata that was parsed and checked already, so DCP never reads
    the folder's metadata file itself (every file it names is one the manifest lists)."""

    def __init__(self, path: Path, metadata: Metadata):
        super().__init__(path)
        self.metadata = metadata

    def read_metadata(self, *args: Any, **kwargs: Any) -> Metadata:
        self.metadata.storage_meta = StorageMeta(load_id=self.load_id)
        return self.metadata


class SafetensorsReader(CheckedMetadataReader):
    """Reads what SafetensorsWriter wrote, given its metadata parsed by `parse_metadata`."""

    def read_data(self, plan, planner) -> Future[None]:
        per_file: dict[str, list[ReadItem]] = {}
        for item in plan.items:
            info = self.storage_data[item.storage_index]
            if item.type == LoadItemType.BYTE_IO:
                planner.load_bytes(item, io.BytesIO(json.dumps(info.data).encode()))
            else:
                per_file.setdefault(info.file, []).append(item)
        for name, items in per_file.items():
            path = Path(self.path) / name
            try:
                with safe_open(str(path), framework="pt") as handle:
                    for item in items:
                        self._read_chunk(handle, item, planner, path)
            except SafetensorError as exc:
                raise CheckpointError(f"{path}: not a readable safetensors file ({exc})") from None
        future: Future[None] = Future()
        future.set_result(None)
        return future

    def _read_chunk(self, handle, item: ReadItem, planner, path: Path) -> None:
        info: DataChunk = self.storage_data[item.storage_index]
        stored = handle.get_slice(info.key)
        expected = (SAFETENSORS_DTYPES.get(info.dtype), list(info.sizes))
        if (stored.get_dtype(), stored.get_shape()) != expected:
            raise CheckpointError(
                f"{path}: `{info.key}` is {stored.get_dtype()} {stored.get_shape()}, "
                f"{METADATA} says {expected[0]} {expected[1]}"
            )
        window = tuple(
            slice(start, start + length)
            for start, length in zip(item.storage_offsets, item.lengths, strict=True)
        )
        target = planner.resolve_tensor(item).detach()
        target.copy_(stored[window])
        planner.commit_tensor(item, target)


def _write_safetensors(path: Path, items: list, planner, *, sync: bool) -> list[WriteResult]:
    """One safetensors file: the header (sizes are known from the plan), then each chunk's
    bytes straight from its tensor (no second copy of the shard in memory)."""
    header, results, offset = {}, [], 0
    for item in items:
        chunk, dtype = item.tensor_data.chunk, item.tensor_data.properties.dtype
        key = f"{item.index.fqn}@{','.join(map(str, chunk.offsets))}"
        num_bytes = chunk.sizes.numel() * dtype.itemsize
        header[key] = {
            "dtype": _safetensors_dtype(dtype, item.index.fqn),
            "shape": list(chunk.sizes),
            "data_offsets": [offset, offset + num_bytes],
        }
        offset += num_bytes
        results.append(WriteResult(item.index, num_bytes, DataChunk(path.name, key)))
    header["__metadata__"] = {"format": "pt"}
    blob = json.dumps(header, separators=(",", ":")).encode()
    blob += b" " * (-len(blob) % 8)  # the data starts 8-byte aligned
    with open(path, "wb") as stream:
        stream.write(struct.pack("<Q", len(blob)) + blob)
        for item in items:
            stream.write(_raw_bytes(planner.resolve_data(item), item))
        if sync:
            stream.flush()
            os.fsync(stream.fileno())
    return results


def _raw_bytes(tensor: torch.Tensor, item) -> memoryview:
    tensor = tensor.detach().cpu().contiguous()
    assert tensor.dtype == item.tensor_data.properties.dtype, item.index.fqn
    assert tensor.shape == item.tensor_data.chunk.sizes, item.index.fqn
    return memoryview(tensor.reshape(-1).view(torch.uint8).numpy())


def _safetensors_dtype(dtype: torch.dtype, fqn: str) -> str:
    if dtype not in SAFETENSORS_DTYPES:
        raise TypeError(f"checkpoint tensor `{fqn}` has dtype {dtype}, which cannot be saved")
    return SAFETENSORS_DTYPES[dtype]
