"""Export a checkpoint's weights as one safetensors file: full (unsharded), no pickle to load.

The tensors are read straight from the DCP checkpoint (any world size, any strategy), so no
model code is needed: a run trained with a user module exports the same way.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import torch
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint.api import CheckpointException
from torch.distributed.checkpoint.metadata import TensorStorageMetadata

from scaletrain.checkpoint.commit import first_failure
from scaletrain.checkpoint.formats import read_metadata, storage_for
from scaletrain.checkpoint.store import CheckpointStore
from scaletrain.errors import CheckpointError
from scaletrain.fileio import atomic_path

FORMAT = "scaletrain-weights"


def read_full_tensors(path: Path, *, prefix: str = "model.") -> dict[str, torch.Tensor]:
    """Every tensor saved under `prefix` in the checkpoint folder `path`, unsharded, on CPU.
    Sizes come from checked metadata whose chunks fit in the files' bytes, so what is
    allocated here is never more than the checkpoint holds."""
    manifest = CheckpointStore(path.parent).verify(path)
    metadata = read_metadata(path, manifest)
    names = {
        key.removeprefix(prefix): meta
        for key, meta in metadata.state_dict_metadata.items()
        if key.startswith(prefix) and isinstance(meta, TensorStorageMetadata)
    }
    if not names:
        raise CheckpointError(f"{path}: holds no tensors under {prefix!r}")
    tensors = {
        name: torch.empty(meta.size, dtype=meta.properties.dtype) for name, meta in names.items()
    }
    group = prefix.rstrip(".")
    state = {group: tensors}
    reader, planner = storage_for(path, manifest)
    try:
        dcp.load(state, storage_reader=reader, planner=planner)
    except CheckpointException as exc:
        raise first_failure(exc, path) from None
    return state[group]


def export_safetensors(
    checkpoints: Path,
    out: Path,
    *,
    which: str = "best",
    config_text: str = "",
    extra: dict[str, str] | None = None,
) -> Path:
    """Write the weights of checkpoint `which` (best | last | step_N) to `out`, with `extra`
    metadata (the run's data spec and preprocessing) and a digest of it all."""
    from safetensors.torch import save_file

    store = CheckpointStore(checkpoints)
    path = store.find(which)  # verified against its manifest
    tensors = {name: value.contiguous() for name, value in read_full_tensors(path).items()}
    step = int(path.name.removeprefix("step_"))
    metadata = {"format": FORMAT, "config": config_text, "step": str(step), "checkpoint": which}
    metadata.update(extra or {})
    metadata[DIGEST_KEY] = export_digest(tensors, metadata)
    with atomic_path(out) as temporary:
        save_file(tensors, str(temporary), metadata=metadata)
    return out


DIGEST_KEY = "sha256"


def export_digest(tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> str:
    """SHA-256 of every tensor (name, dtype, shape, bytes) and every other metadata entry:
    safetensors itself checks only the header's shape, so a flipped weight byte would load."""
    digest = hashlib.sha256()
    for key in sorted(key for key in metadata if key != DIGEST_KEY):
        digest.update(f"{key}={metadata[key]}\0".encode())
    for name in sorted(tensors):
        value = tensors[name].contiguous()
        digest.update(f"{name}:{value.dtype}:{list(value.shape)}\0".encode())
        digest.update(value.view(-1).view(torch.uint8).numpy().tobytes() if value.numel() else b"")
    return digest.hexdigest()
