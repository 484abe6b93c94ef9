"""Which reader a verified checkpoint needs: its manifest's version names the format."""

from __future__ import annotations

from pathlib import Path

from torch.distributed.checkpoint import LoadPlanner, StorageReader
from torch.distributed.checkpoint.metadata import Metadata

from scaletrain.checkpoint.legacy import (
    LEGACY_METADATA,
    LegacyLoadPlanner,
    LegacyReader,
    load_legacy_metadata,
)
from scaletrain.checkpoint.manifest import Manifest
from scaletrain.checkpoint.metadata_json import METADATA, parse_metadata
from scaletrain.checkpoint.storage import JsonLoadPlanner, SafetensorsReader

# version -> the metadata file a checkpoint of that version must list
METADATA_FILES = {1: LEGACY_METADATA, 2: METADATA}


def storage_for(path: Path, manifest: Manifest) -> tuple[StorageReader, LoadPlanner]:
    """The DCP reader and planner for a checkpoint folder whose manifest was verified. The
    metadata is read and checked here, before DCP sees it (DCP would wrap our refusal in
    errors of its own, and fall back to reading other files)."""
    metadata = read_metadata(path, manifest)
    if manifest.version == 1:
        return LegacyReader(path, metadata), LegacyLoadPlanner()
    return SafetensorsReader(path, metadata), JsonLoadPlanner()


def read_metadata(path: Path, manifest: Manifest) -> Metadata:
    """The checked DCP Metadata of a verified checkpoint (which tensors, sizes, dtypes)."""
    source = path / METADATA_FILES[manifest.version]
    if manifest.version == 1:
        return load_legacy_metadata(source.read_bytes(), files=manifest.files, source=source)
    return parse_metadata(source.read_bytes(), files=manifest.files, source=source)
