"""Read DCP checkpoints without trusting pickle: `.metadata` goes through an allow-list."""

from __future__ import annotations

import io
import pickle
from typing import Any

import torch
from torch.distributed.checkpoint import DefaultLoadPlanner, FileSystemReader
from torch.distributed.checkpoint._traverse import set_element
from torch.distributed.checkpoint.metadata import Metadata, StorageMeta
from torch.distributed.checkpoint.planner import ReadItem

from scaletrain.errors import CheckpointError

# DCP's metadata is a pickle of these plain data classes; nothing else may be built.
_ALLOWED_MODULE_PREFIXES = (
    "torch.distributed.checkpoint.metadata",
    "torch.distributed.checkpoint.filesystem",
    "torch.distributed.checkpoint.planner",
)
_ALLOWED_GLOBALS = {
    ("torch", "Size"),
    ("collections", "OrderedDict"),
    ("builtins", "set"),
    ("builtins", "frozenset"),
    ("builtins", "slice"),
    ("torch.serialization", "_get_layout"),
    ("pathlib", "PosixPath"),
    ("pathlib", "PurePosixPath"),
}
_TORCH_DTYPES = {name for name in dir(torch) if isinstance(getattr(torch, name), torch.dtype)}


class _RestrictedUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        allowed = (
            module.startswith(_ALLOWED_MODULE_PREFIXES)
            or (module, name) in _ALLOWED_GLOBALS
            or (module == "torch" and name in _TORCH_DTYPES)
        )
        if not allowed:
            raise CheckpointError(
                f"checkpoint metadata refers to {module}.{name}, which is not DCP metadata; "
                "refusing to load it (possible malicious pickle)"
            )
        return super().find_class(module, name)


def load_metadata_safely(data: bytes) -> Metadata:
    try:
        metadata = _RestrictedUnpickler(io.BytesIO(data)).load()
    except CheckpointError:
        raise
    except Exception as exc:
        raise CheckpointError(f"checkpoint metadata is unreadable: {exc}") from None
    if not isinstance(metadata, Metadata):
        raise CheckpointError("checkpoint metadata is not a DCP Metadata object")
    return metadata


class SafeFileSystemReader(FileSystemReader):
    """FileSystemReader whose metadata load admits only DCP's own metadata classes."""

    def read_metadata(self, *args: Any, **kwargs: Any) -> Metadata:
        rank = kwargs.get("rank")
        path = self._get_metadata_path(rank)
        with self.fs.create_stream(path, "rb") as stream:
            metadata = load_metadata_safely(stream.read())
        if getattr(metadata, "storage_meta", None) is None:
            metadata.storage_meta = StorageMeta()
        metadata.storage_meta.load_id = self.load_id
        return metadata


class SafeLoadPlanner(DefaultLoadPlanner):
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
