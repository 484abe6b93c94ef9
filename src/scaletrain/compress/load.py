"""A compressed run's model as `scaletrain compress` left it: quantized where it was."""

from __future__ import annotations

import json
from pathlib import Path

from safetensors.torch import load_file
from torch import nn

from scaletrain.compress.newrun import COMPRESS_FILE, WEIGHTS_FILE
from scaletrain.compress.quantize import load_quantized
from scaletrain.errors import UserError
from scaletrain.rundir import open_run_dir
from scaletrain.trained import load_run_dir


def load_compressed(run_dir: str | Path) -> nn.Module:
    """The compressed model of `run_dir` (the built-in model at its compressed widths, its
    linear layers quantized as recorded), in eval mode on the CPU; no pickle is read."""
    run = open_run_dir(run_dir)
    record_file = run.root / COMPRESS_FILE
    if not record_file.is_file():
        raise UserError(f"{run.root}: not a compressed run (no {COMPRESS_FILE})")
    record = json.loads(record_file.read_text())
    model = load_run_dir(run.root, model=None, checkpoint="last").model.cpu()
    tensors = load_file(str(run.root / WEIGHTS_FILE))
    mode = record["options"]["quantize"]
    if mode is None:
        model.load_state_dict(tensors)
        return model.eval()
    return load_quantized(model, mode, tensors, record["quantized"]).eval()
