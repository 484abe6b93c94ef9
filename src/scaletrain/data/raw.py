"""Samples as a source reads them, before anything is fit: ``RawData`` and its kinds of inputs.

Plain types that import nothing of ``scaletrain.data``: sources produce them, the transforms
(encoders, labels, split) and the pipeline consume them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

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


@dataclass(frozen=True)
class InputsFile:
    """A checked predict file whose samples the fitted encoder reads and encodes."""

    path: Path

    def __len__(self) -> int:
        raise TypeError("the encoder reads the file; its length is known after reading")


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
