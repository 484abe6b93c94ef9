"""Reading what a run directory holds for inference: the data spec and the preprocessing."""

from __future__ import annotations

from pathlib import Path

import torch

from scaletrain.data import DataSpec, Preprocessor
from scaletrain.errors import UserError
from scaletrain.rundir import RunDir, read_json


def read_run_file(path: Path, parse):
    """`parse(JSON of path)`; what it cannot parse (a file tampered with, or not written by
    scaletrain) is one UserError line naming the file, not a traceback."""
    data = read_json(path)
    try:
        return parse(data)
    except (AttributeError, KeyError, TypeError, ValueError, IndexError, RuntimeError) as exc:
        reason = f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc) else ''}"
        raise UserError(
            f"{path}: not a file this scaletrain wrote ({reason[:100]}); was it edited?"
        ) from None


def spec_from_dict(data: dict) -> DataSpec:
    """`data_spec.json` -> DataSpec; the dtype must name a torch dtype, nothing else of torch."""
    data = dict(data)
    dtype = getattr(torch, data["input_dtype"], None)
    if not isinstance(dtype, torch.dtype):
        raise ValueError(f"input_dtype {str(data['input_dtype'])[:40]!r} is not a torch dtype")
    data["input_dtype"] = dtype
    data["input_shape"] = tuple(data["input_shape"])
    return DataSpec(**data)


def read_spec(run: RunDir) -> DataSpec:
    return read_run_file(run.root / "data_spec.json", spec_from_dict)


def read_preprocessor(run: RunDir) -> Preprocessor:
    return read_run_file(run.preprocess, Preprocessor.from_state_dict)
