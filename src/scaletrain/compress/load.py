"""A compressed run's model as `scaletrain compress` left it: quantized where it was."""

from __future__ import annotations

from pathlib import Path

from torch import nn

from scaletrain.rundir import open_run_dir
from scaletrain.trained import load_run_dir
from scaletrain.trained.quantized import load_compressed_weights


def load_compressed(run_dir: str | Path, *, model: nn.Module | None = None) -> nn.Module:
    """The compressed model of `run_dir` (the built-in model at its compressed widths, or
    `model`, a fresh instance of a user module, its linear layers quantized as recorded), in
    eval mode on the CPU; no pickle is read. A file that does not match its record is one
    `UserError` naming it."""
    run = open_run_dir(run_dir)
    model = load_run_dir(run.root, model=model, checkpoint="last").model.cpu()
    return load_compressed_weights(run.root, model)
