"""Plain-dict registries of datasets and file sources, filled by decorators where each is defined.

A source reader turns the ``data`` config section into ``RawData``: every sample in memory,
labels as found in the file. Everything after (task inference, splitting, preprocessing)
is shared, so a new format (parquet, images, text shards) is one registered function.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import numpy as np

from scaletrain.config import DataConfig

Task = Literal["classification", "regression"]


@dataclass
class RawData:
    """All samples of one source before task inference, splitting and preprocessing."""

    inputs: np.ndarray  # (N, *sample_shape); float for features, int64 for token ids
    labels: np.ndarray  # (N,) or (N, k) as found: numbers or strings
    origin: str  # names the file or dataset in error messages
    is_image: bool = False  # inputs are (N, C, H, W)
    task: Task | None = None  # set when the source knows (builtins); else inferred
    class_names: list[str] | None = None  # names of label values 0..K-1 when known
    vocab_size: int | None = None  # set by token-id sources; such inputs are not normalized


def image_layout(inputs: np.ndarray) -> tuple[np.ndarray, bool]:
    """Arrays of (N, H, W) are one-channel images, (N, C, H, W) images; 1-D is one feature."""
    if inputs.ndim == 1:
        return inputs[:, None], False
    if inputs.ndim == 3:
        return inputs[:, None], True
    return inputs, inputs.ndim == 4


DatasetReader = Callable[[], RawData]
SourceReader = Callable[[DataConfig], RawData]

DATASETS: dict[str, DatasetReader] = {}
SOURCES: dict[str, SourceReader] = {}


def register_dataset(name: str) -> Callable[[DatasetReader], DatasetReader]:
    """Add a built-in dataset under ``name`` (its docstring is its one-line description)."""

    def decorator(reader: DatasetReader) -> DatasetReader:
        assert name not in DATASETS, f"dataset {name!r} registered twice"
        DATASETS[name] = reader
        return reader

    return decorator


def register_source(name: str) -> Callable[[SourceReader], SourceReader]:
    """Add a reader for ``data.source: name``."""

    def decorator(reader: SourceReader) -> SourceReader:
        assert name not in SOURCES, f"source {name!r} registered twice"
        SOURCES[name] = reader
        return reader

    return decorator
