"""Plain-dict registries of datasets and file sources, filled by decorators where each is defined.

A source reader turns the ``data`` config section into ``RawData``: every sample in memory,
labels as found in the file. Everything after (task inference, splitting, preprocessing)
is shared, so a new format (parquet, images, text shards) is one registered function.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from scaletrain.config import DataConfig

Task = Literal["classification", "regression", "language_model"]


@dataclass
class RawTable:
    """Table columns before the encoder fit on train: numbers (NaN = missing) and categories."""

    numeric: np.ndarray  # (N, F) float64; NaN marks a missing or non-finite cell
    numeric_names: list[str]
    categorical: dict[str, np.ndarray]  # name -> (N,) object array of str, None = missing

    def __len__(self) -> int:
        return len(self.numeric)

    def take(self, rows: np.ndarray) -> RawTable:
        """The given samples only (a split)."""
        categories = {name: values[rows] for name, values in self.categorical.items()}
        return RawTable(self.numeric[rows], self.numeric_names, categories)


@dataclass
class RawTexts:
    """Texts before the vectorizer or tokenizer fit on train."""

    texts: np.ndarray  # (N,) object array of str

    def __len__(self) -> int:
        return len(self.texts)

    def take(self, rows: np.ndarray) -> RawTexts:
        """The given samples only (a split)."""
        return RawTexts(self.texts[rows])


@dataclass
class RawImages:
    """Image files to decode (used by predict; training sources decode while reading)."""

    paths: list[str]

    def __len__(self) -> int:
        return len(self.paths)


RawInputs = RawTable | RawTexts | RawImages


@dataclass
class RawData:
    """All samples of one source before task inference, splitting and preprocessing."""

    inputs: Any  # np.ndarray (N, *sample_shape), or RawTable / RawTexts needing a fitted encoder
    labels: np.ndarray  # (N,) or (N, k) as found: numbers or strings
    origin: str  # names the file or dataset in error messages
    is_image: bool = False  # inputs are (N, C, H, W)
    task: Task | None = None  # set when the source knows (builtins); else inferred
    class_names: list[str] | None = None  # names of label values 0..K-1 when known
    vocab_size: int | None = None  # set by token-id sources; such inputs are not normalized
    groups: np.ndarray | None = None  # (N,) ids (source files): splits keep a group together
    row_lines: np.ndarray | None = field(default=None, repr=False)  # (N,) line in the file
    input_kind: Literal["array", "table", "text", "image"] = "array"
    raw_columns: list[str] | None = None  # columns predict reads from a table or text file

    def locate(self, row: int) -> str:
        """Where sample ``row`` came from, for error messages."""
        if self.row_lines is not None:
            return f"{self.origin}:{int(self.row_lines[row])}"
        return f"{self.origin}: sample {row} (0-based)"


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
