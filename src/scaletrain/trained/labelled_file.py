"""A new labelled file (`scaletrain eval RUN --data FILE`) read as the run read its training data."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from scaletrain.config import DataConfig
from scaletrain.data import SOURCES, DataSpec, Preprocessor
from scaletrain.data.raw import RawTable
from scaletrain.errors import DataError
from scaletrain.trained.inference import encode_labels

# file suffix -> the source that reads it, where the run's own source does not
_BY_SUFFIX = {".csv": "csv", ".parquet": "parquet", ".npy": "npy", ".npz": "npz"}
_NAMED_COLUMNS = {"csv", "parquet"}
_SAME_FAMILY = {".csv": ("csv", "text_csv"), ".jsonl": ("text_jsonl",)}


def read_labelled_file(
    path: str | Path, cfg: DataConfig, *, spec: DataSpec, preprocessor: Preprocessor
) -> tuple[torch.Tensor, torch.Tensor]:
    """(network inputs, encoded targets) of a file with inputs and a label column/array."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"--data: no such file: {path}")
    source = _source_for(path, cfg)
    read_cfg = cfg.model_copy(update={"source": source, "path": str(path)})
    if source != cfg.source and not {source, cfg.source} <= _NAMED_COLUMNS:
        # columns by name (label, features, categories) mean nothing in an array file
        default = DataConfig.model_fields
        read_cfg = read_cfg.model_copy(
            update={key: default[key].default for key in ("label", "features", "table")}
        )
    encoder = preprocessor.encoder
    if encoder is not None and encoder.kind == "table" and source in _NAMED_COLUMNS:
        # the columns the run was fit on, by name: a file lacking one is refused by the
        # source (file and column), never broadcast over the run's statistics
        read_cfg = read_cfg.model_copy(update={"features": encoder.columns})
    raw = SOURCES[source](read_cfg)
    inputs = raw.inputs
    if isinstance(inputs, RawTable) and preprocessor.encoder is None:
        if inputs.categorical:  # a run trained on arrays has no categories to encode with
            name = next(iter(inputs.categorical))
            raise DataError(
                f"{path}: column {name!r} is not numeric; the run was trained on numbers"
            )
        inputs = inputs.numeric.astype(np.float32)
    per_sample = int(np.prod(spec.input_shape))
    if isinstance(inputs, np.ndarray):  # numbers as they are: a narrower file would
        # broadcast over the scaling's statistics, so it is refused before
        _check_width(path, int(np.prod(inputs.shape[1:])), spec=spec, per_sample=per_sample)
    encoded = preprocessor.transform(inputs)
    _check_width(path, int(np.prod(encoded.shape[1:])), spec=spec, per_sample=per_sample)
    network_inputs = encoded.reshape(len(encoded), *spec.input_shape).to(spec.input_dtype)
    targets = encode_labels(raw.labels, spec=spec, origin=str(path), locate=raw.locate)
    return network_inputs, targets


def _check_width(path: Path, width: int, *, spec: DataSpec, per_sample: int) -> None:
    if width != per_sample:
        raise DataError(
            f"{path}: samples of {width} values; the run was trained "
            f"on inputs of shape {tuple(spec.input_shape)} ({per_sample} values)"
        )


def _source_for(path: Path, cfg: DataConfig) -> str:
    suffix = path.suffix.lower()
    if cfg.source in _SAME_FAMILY.get(suffix, (_BY_SUFFIX.get(suffix),)):
        return cfg.source
    if suffix not in _BY_SUFFIX:
        raise DataError(
            f"--data: {path} is not a file eval reads; use .csv, .parquet, .npy or .npz"
        )
    return _BY_SUFFIX[suffix]
