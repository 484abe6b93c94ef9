"""Atomic, verified, pickle-free checkpoints (DCP tensors + JSON side state + manifest)."""

from scaletrain.checkpoint.manifest import verify_manifest, write_manifest
from scaletrain.checkpoint.store import CheckpointStore, CheckpointWarning

__all__ = ["CheckpointStore", "CheckpointWarning", "verify_manifest", "write_manifest"]
