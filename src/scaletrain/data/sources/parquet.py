"""Parquet source: typed columns read with pyarrow; the same table pipeline as csv."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from scaletrain.config import DataConfig
from scaletrain.data.raw import RawData
from scaletrain.data.sources.columns import Column, build_table
from scaletrain.data.sources.files import check_file, feature_names
from scaletrain.data.sources.registry import register_source
from scaletrain.errors import DataError


def read_parquet_table(path: Path):
    """The file as a pyarrow Table; unreadable or empty files raise a DataError."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except (pa.ArrowException, OSError) as exc:
        raise DataError(f"{path}: not a readable Parquet file ({exc})") from None
    if table.num_rows == 0:
        raise DataError(f"{path}: no rows")
    return table


def parquet_column(table, name: str, *, path: Path) -> Column:
    """One column: numbers as float64 (nulls -> NaN), anything else as text (nulls -> None)."""
    import pyarrow as pa

    if name not in table.column_names:
        raise DataError(f"{path}: no column {name!r}; columns are: {', '.join(table.column_names)}")
    chunked = table.column(name)
    kind = chunked.type
    if pa.types.is_integer(kind) or pa.types.is_floating(kind) or pa.types.is_boolean(kind):
        cells = chunked.cast(pa.float64()).to_numpy()  # nulls become NaN
    else:
        cells = np.array(
            [None if value is None else str(value) for value in chunked.to_pylist()], dtype=object
        )
    return Column(name, cells, lambda row: f"{path}: row {row} (0-based)")


@register_source("parquet")
def read_parquet(cfg: DataConfig) -> RawData:
    """Feature and label columns of a Parquet file (numbers, or categories if declared)."""
    path = check_file(cfg.path)
    table = read_parquet_table(path)
    label = parquet_column(table, cfg.label, path=path)
    names = feature_names(table.column_names, cfg, path=path)
    columns = [parquet_column(table, name, path=path) for name in names]
    return RawData(
        inputs=build_table(columns, cfg.table, origin=str(path), feature_names=names),
        labels=_labels(label),
        origin=str(path),
        input_kind="table",
        raw_columns=names,
    )


def _labels(column: Column) -> np.ndarray:
    cells = column.cells
    if cells.dtype == object:
        missing = [row for row, cell in enumerate(cells) if cell is None]
        if missing:
            raise DataError(f"{column.locate(missing[0])}: column {column.name!r}: missing label")
        return cells.astype(str)
    bad = np.flatnonzero(~np.isfinite(cells))
    if len(bad):
        raise DataError(
            f"{column.locate(int(bad[0]))}: column {column.name!r}: label "
            f"{cells[bad[0]]} is missing or not finite"
        )
    return cells
