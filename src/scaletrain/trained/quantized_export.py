"""A quantized run as one safetensors export: the integer weights and scales of
`compressed.safetensors` (as `scaletrain compress` wrote them), with the config,
preprocessing and a digest, so `load_exported` rebuilds the quantized model bit for bit."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn

from scaletrain.checkpoint.export import DIGEST_KEY, FORMAT, export_digest
from scaletrain.errors import CheckpointError
from scaletrain.fileio import atomic_path
from scaletrain.rundir import RunDir
from scaletrain.trained.files import run_config_text
from scaletrain.trained.quantized import (
    WEIGHTS_FILE,
    compress_record,
    load_quantized,
    weights_name,
)

QUANTIZE_KEY = "quantize"  # the mode; its presence marks a quantized export
QUANTIZED_KEY = "quantized"  # JSON list of the quantized weights' names


def export_quantized(run: RunDir, out: Path, *, extra: dict[str, str]) -> Path:
    """Write `run`'s compressed tensors to `out` with `extra` metadata and a digest."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file, save_file

    mode, quantized = compress_record(run.root)
    source = run.root / WEIGHTS_FILE
    try:
        tensors = load_file(str(source))
    except (SafetensorError, OSError) as exc:
        raise CheckpointError(f"{source}: not readable ({_first_line(exc)})") from None
    metadata = {
        "format": FORMAT,
        "config": run_config_text(run),
        "step": "0",
        "checkpoint": weights_name(mode),
        QUANTIZE_KEY: mode,
        QUANTIZED_KEY: json.dumps(quantized),
        **extra,
    }
    metadata[DIGEST_KEY] = export_digest(tensors, metadata)
    with atomic_path(out) as temporary:
        save_file(tensors, str(temporary), metadata=metadata)
    return out


def load_quantized_export(
    path: Path, network: nn.Module, tensors: dict[str, torch.Tensor], metadata: dict[str, str]
) -> nn.Module:
    """`network` (the run's float model) quantized as the export says, its integer weights
    and scales set from `tensors`; a file that does not fit is one line naming it."""
    try:
        quantized = json.loads(metadata[QUANTIZED_KEY])
        plain = set(network.state_dict()) - set(quantized)
        missing = sorted(plain - set(tensors))[:3]
        if missing:
            raise KeyError(f"missing {missing}")
        return load_quantized(network, metadata[QUANTIZE_KEY], tensors, quantized)
    except (KeyError, ValueError, TypeError, RuntimeError, AttributeError) as exc:
        raise CheckpointError(
            f"{path}: its quantized tensors do not fit a {type(network).__name__} "
            f"({_first_line(exc)}); re-export the run with `scaletrain export RUN_DIR`"
        ) from None


def _first_line(exc: Exception) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:120] if text else type(exc).__name__
