"""A compressed run's model as `scaletrain compress` left it: quantized where it was."""

from __future__ import annotations

from pathlib import Path

from safetensors import SafetensorError
from safetensors.torch import load_file
from torch import nn

from scaletrain.compress.newrun import COMPRESS_FILE, WEIGHTS_FILE
from scaletrain.compress.quantize import MODES, load_quantized
from scaletrain.errors import UserError
from scaletrain.rundir import open_run_dir, read_json
from scaletrain.trained import load_run_dir


def load_compressed(run_dir: str | Path) -> nn.Module:
    """The compressed model of `run_dir` (the built-in model at its compressed widths, its
    linear layers quantized as recorded), in eval mode on the CPU; no pickle is read. A
    file that does not match its record is one `UserError` naming it."""
    run = open_run_dir(run_dir)
    record_file, weights_file = run.root / COMPRESS_FILE, run.root / WEIGHTS_FILE
    if not record_file.is_file():
        raise UserError(f"{run.root}: not a compressed run (no {COMPRESS_FILE})")
    record = read_json(record_file)
    mode = (record.get("options") or {}).get("quantize") if isinstance(record, dict) else "?"
    quantized = record.get("quantized") if isinstance(record, dict) else None
    if mode not in (*MODES, None) or not isinstance(quantized, list):
        raise UserError(f"{record_file}: not a compress record (options.quantize, quantized)")
    model = load_run_dir(run.root, model=None, checkpoint="last").model.cpu()
    try:
        tensors = load_file(str(weights_file))
        if mode is None:
            model.load_state_dict(tensors)
            return model.eval()
        return load_quantized(model, mode, tensors, quantized).eval()
    except (SafetensorError, OSError, KeyError, RuntimeError, AttributeError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise UserError(f"{weights_file}: does not match {record_file.name} ({reason})") from None
