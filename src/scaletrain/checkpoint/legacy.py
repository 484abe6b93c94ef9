"""Checkpoints from before `metadata.json` (manifest version 1): DCP's pickled `.metadata`,
read without ever handing it to `pickle`.

`legacy_pickle.py` builds the Metadata with a restricted interpreter (an exact allow-list
of globals, no attribute walking, no code); it is then checked like `metadata.json`: every
field's type, chunk geometry, and reads only from files the manifest lists, within their
sizes. Tensors and values of such checkpoints are `torch.save` data in the `.distcp` files,
loaded with `weights_only=True` (torch's own restricted unpickler).
"""

from __future__ import annotations

import io
import math
import pickle
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch.distributed.checkpoint import DefaultLoadPlanner
from torch.distributed.checkpoint._traverse import set_element
from torch.distributed.checkpoint.filesystem import _StorageInfo
from torch.distributed.checkpoint.metadata import (
    BytesStorageMetadata,
    ChunkStorageMetadata,
    Metadata,
    MetadataIndex,
    TensorProperties,
    TensorStorageMetadata,
)
from torch.distributed.checkpoint.planner import ReadItem

from scaletrain.checkpoint.legacy_pickle import run_pickle
from scaletrain.checkpoint.metadata_json import DTYPES, Invalid, check_chunk, require
from scaletrain.checkpoint.storage import CheckedMetadataReader
from scaletrain.checkpoint.values import shown
from scaletrain.errors import CheckpointError

LEGACY_METADATA = ".metadata"


def load_legacy_metadata(data: bytes, *, files: Mapping[str, int], source: Path) -> Metadata:
    """DCP Metadata from a pickled `.metadata`, built without unpickling; CheckpointError
    naming `source` for anything a DCP metadata pickle would not hold."""
    try:
        metadata = run_pickle(data)
        _check(metadata, files)
    except Invalid as exc:
        raise CheckpointError(f"{source}: {exc}; refusing to load it") from None
    except (ValueError, TypeError, KeyError, IndexError, AttributeError, RecursionError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise CheckpointError(f"{source}: not a DCP metadata pickle ({shown(reason)})") from None
    return metadata


def _check(metadata: Any, files: Mapping[str, int]) -> None:
    """Every field has the type DCP gives it; every read stays inside the listed files."""
    require(type(metadata) is Metadata, "not a DCP Metadata object")
    entries, storage = metadata.state_dict_metadata, metadata.storage_data
    require(type(entries) is dict and type(storage) is dict, "not a DCP Metadata object")
    for index, info in storage.items():
        require(type(index) is MetadataIndex and type(index.fqn) is str, "bad storage key")
        _check_storage_info(info, files)
    for fqn, entry in entries.items():
        require(type(fqn) is str, "a key that is not a string")
        if type(entry) is TensorStorageMetadata:
            _check_tensor(fqn, entry, storage)
        elif type(entry) is not BytesStorageMetadata or MetadataIndex(fqn) not in storage:
            raise Invalid(f"{shown(fqn)}: an unknown entry, or stored nowhere")
    planner_data = metadata.planner_data
    require(planner_data is None or type(planner_data) is dict, "bad planner data")
    for path in (planner_data or {}).values():
        require(type(path) is tuple and all(type(p) in (str, int) for p in path), "bad path")


def _check_storage_info(info: Any, files: Mapping[str, int]) -> None:
    require(type(info) is _StorageInfo, "a storage entry that is not DCP's _StorageInfo")
    name = info.relative_path
    if not (type(name) is str and name.endswith(".distcp") and name in files):
        raise Invalid(f"reads {shown(name)}, which is not a data file the manifest lists")
    offset, length = info.offset, info.length
    require(type(offset) is int and type(length) is int, "a non-integer offset")
    if not (offset >= 0 and length >= 0 and offset + length <= files[name]):
        raise Invalid(f"reads bytes {offset}..{offset + length} of {name}, which is shorter")
    require(not getattr(info, "transform_descriptors", None), "stream transforms")


def _check_tensor(fqn: str, entry: TensorStorageMetadata, storage: dict) -> None:
    properties = entry.properties
    valid = (
        type(properties) is TensorProperties
        and properties.dtype in DTYPES.values()
        and type(entry.size) is torch.Size
        and type(entry.chunks) is list
        and all(_is_chunk(chunk) for chunk in entry.chunks)
    )
    if not valid:
        raise Invalid(f"tensor {shown(fqn)}: not DCP tensor metadata")
    stored = 0
    for chunk in entry.chunks:
        check_chunk(fqn, entry.size, chunk.offsets, chunk.sizes)
        info = storage.get(MetadataIndex(fqn, chunk.offsets))
        num_bytes = math.prod(chunk.sizes) * properties.dtype.itemsize
        if info is None or num_bytes > info.length:
            raise Invalid(f"tensor {shown(fqn)}: a chunk that no stored bytes hold")
        stored += math.prod(chunk.sizes)
    if math.prod(entry.size) > stored:
        raise Invalid(f"tensor {shown(fqn)}: its chunks do not cover it")


def _is_chunk(chunk: Any) -> bool:
    return (
        type(chunk) is ChunkStorageMetadata
        and type(chunk.offsets) is torch.Size
        and type(chunk.sizes) is torch.Size
    )


class LegacyReader(CheckedMetadataReader):
    """DCP's FileSystemReader (tensors via `torch.load(weights_only=True)`), given metadata
    read by `load_legacy_metadata`."""


class LegacyLoadPlanner(DefaultLoadPlanner):
    """DCP's default planner unpickles non-tensor values with weights_only=False; we do not."""

    def load_bytes(self, read_item: ReadItem, value: io.BytesIO) -> None:
        try:
            loaded = torch.load(value, weights_only=True)
        except pickle.UnpicklingError as exc:
            raise CheckpointError(
                f"checkpoint value `{read_item.dest_index.fqn}` is not plain data; refusing to "
                f"unpickle it ({str(exc).splitlines()[0]})"
            ) from None
        if self.flatten_state_dict:
            set_element(self.original_state_dict, self.mappings[read_item.dest_index.fqn], loaded)
        else:
            self.state_dict[read_item.dest_index.fqn] = loaded
