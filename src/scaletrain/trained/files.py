"""Reading what a run directory holds for inference: the data spec and the preprocessing."""

from __future__ import annotations

from pathlib import Path

import torch

from scaletrain.config import load_run_config
from scaletrain.data import DataSpec, Preprocessor
from scaletrain.errors import UserError
from scaletrain.fileio import read_text_file
from scaletrain.rundir import RunDir, read_json
from scaletrain.runfiles import check_data_spec


def read_run_file(path: Path, parse):
    """`parse(JSON of path)`; what it cannot parse (a file tampered with, or not written by
    scaletrain) is one UserError line naming the file, not a traceback."""
    data = read_json(path)
    try:
        return parse(data)
    except (
        AttributeError,
        KeyError,
        TypeError,
        ValueError,
        IndexError,
        RuntimeError,
        OverflowError,  # a number too large for a float (JSON allows any)
    ) as exc:
        reason = f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc) else ''}"
        raise UserError(
            f"{path}: not a file this scaletrain wrote ({reason[:140]}); was it edited?"
        ) from None


def spec_from_dict(data: dict) -> DataSpec:
    """`data_spec.json` -> DataSpec; the dtype must name a torch dtype, nothing else of torch."""
    data = check_data_spec(data)
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


def run_config_text(run: RunDir) -> str:
    """config.yaml as it is, for an export to carry, once it loads (an edited one is
    refused naming the file, not carried into an export that cannot be loaded)."""
    load_run_config(run.config)
    return read_text_file(run.config)
