"""Raw inputs for predict: numeric arrays directly; tables, texts and images via the encoder.

``read_inputs_file`` checks the file and, for numeric data, reads it into a tensor. For data
that needs the run's fitted encoder (table columns, text, image files) it returns an
``InputsFile``: ``Preprocessor.transform`` reads it with that encoder, so predict applies
exactly the categories, tokenizer and image size learned at training time.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from scaletrain.data.raw import InputsFile
from scaletrain.data.sources.files import (
    check_file,
    check_numeric,
    load_numpy,
    npz_array,
    npz_input_key,
    read_csv_table,
)
from scaletrain.errors import DataError

if TYPE_CHECKING:
    from scaletrain.data.bundle import DataSpec


def read_inputs_file(
    path: Path, *, spec: DataSpec, feature_columns: list[str] | None, label_column: str = "label"
) -> torch.Tensor | InputsFile:
    """Raw inputs for prediction: (N, *spec.input_shape) for arrays, else an InputsFile."""
    if spec.input_kind == "image" and Path(path).is_dir():
        return InputsFile(Path(path))  # a folder of images
    path = check_file(path, key="inputs file")
    if spec.input_kind != "array":
        return InputsFile(path)
    if path.suffix.lower() == ".csv":
        table = read_csv_table(path)
        names = feature_columns or [name for name in table.header if name != label_column]
        columns = [table.column_index(name, role="feature") for name in names]
        array = table.parse_numbers(columns)
    elif path.suffix.lower() in (".npy", ".npz"):
        array = load_numpy(path)
        if isinstance(array, np.lib.npyio.NpzFile):
            with array:
                key = npz_input_key(list(array.keys()), label=label_column, path=path)
                array = npz_array(array, key, path=path)
        array = check_numeric(array, path=path)
    else:
        raise DataError(f"{path}: unknown inputs format {path.suffix!r}; use .csv, .npy or .npz")
    per_sample = int(np.prod(spec.input_shape))
    if array.ndim == 0 or int(np.prod(array.shape[1:])) != per_sample:
        raise DataError(
            f"{path}: inputs of shape {tuple(array.shape)}; expected (N, "
            f"{', '.join(map(str, spec.input_shape))}) or (N, {per_sample})"
        )
    return torch.from_numpy(array.reshape(len(array), *spec.input_shape)).to(spec.input_dtype)
