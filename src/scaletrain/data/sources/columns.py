"""Table cells (csv, parquet) -> ``RawTable``: numbers and categories, checked cell by cell.

Numeric columns become float64 with NaN for missing cells; each bad cell is reported as
``file:row: column``. Categorical columns (``data.table.categorical``) keep their text; the
``TableEncoder`` (transforms/table.py) later turns them into features.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from scaletrain.config import TableConfig
from scaletrain.data.raw import RawTable
from scaletrain.errors import DataError

# Cells that mean "no value" (compared stripped and lowercased).
MISSING_TOKENS = frozenset({"", "na", "n/a", "nan", "null", "none"})


@dataclass(frozen=True)
class Column:
    """One column's cells: text (csv) or values already typed by the file format (parquet)."""

    name: str
    cells: np.ndarray  # (N,) object array of str (None = null), or a numeric array
    locate: Callable[[int], str]  # sample index -> "file:line" for messages


def numeric_values(column: Column, *, allow_missing: bool) -> np.ndarray:
    """The column as float64; missing and non-finite cells are NaN, or an error naming them."""
    cells = column.cells
    typed = cells.dtype.kind in "biuf"
    values = cells.astype(np.float64) if typed else _parse_text_numbers(column)
    if not allow_missing:
        bad = np.flatnonzero(~np.isfinite(values))
        if len(bad):
            row = int(bad[0])
            raise DataError(
                f"{column.locate(row)}: column {column.name!r}: {_describe_missing(cells[row])}; "
                "set data.table.impute (mean, median or constant) to fill missing values"
            )
    return np.where(np.isfinite(values), values, np.nan)


def numeric_block(columns: list[Column], *, num_rows: int, allow_missing: bool) -> np.ndarray:
    """Columns as one float64 (N, F) block. Text cells that all parse are converted in one
    numpy call (a call per column costs more than the parsing for a file 100k columns
    wide); otherwise, or where a cell is not finite, column by column, which names the
    first bad cell."""
    block = np.zeros((num_rows, len(columns)), dtype=np.float64)
    if columns and all(column.cells.dtype == object for column in columns):
        try:
            block[:] = np.stack([column.cells for column in columns], axis=1)
        except (ValueError, TypeError):  # "", "NA", text or None: the careful path below
            pass
        else:
            finite = np.isfinite(block)
            if finite.all():
                return block
            if allow_missing:
                return np.where(finite, block, np.nan)
    for index, column in enumerate(columns):
        block[:, index] = numeric_values(column, allow_missing=allow_missing)
    return block


def _parse_text_numbers(column: Column) -> np.ndarray:
    cells = column.cells
    try:
        return np.array([np.nan if cell is None else cell for cell in cells], dtype=np.float64)
    except ValueError:
        pass  # "" or text: parse cell by cell (only on this slower path)
    values = np.empty(len(cells), dtype=np.float64)
    for row, cell in enumerate(cells):
        if cell is None or cell.strip().lower() in MISSING_TOKENS:
            values[row] = np.nan
            continue
        try:
            values[row] = float(cell)
        except ValueError:
            raise DataError(
                f"{column.locate(row)}: column {column.name!r}: cannot parse {cell!r} as a "
                "number (list the column in data.table.categorical if it holds categories)"
            ) from None
    return values


def _describe_missing(cell) -> str:
    if cell is None:
        return "missing value (null)"
    if isinstance(cell, float | np.floating) and np.isnan(cell):
        return "missing value (null or NaN)"  # typed formats turn nulls into NaN
    try:
        return f"value {float(cell)} is not finite"
    except ValueError:
        return f"missing value {cell!r}"


def category_values(column: Column, *, allow_missing: bool) -> np.ndarray:
    """The column as an object array of stripped text; None marks a missing cell."""
    values = np.empty(len(column.cells), dtype=object)
    for row, cell in enumerate(column.cells):
        text = None if cell is None else str(cell).strip()
        if text is None or text.lower() in MISSING_TOKENS or text == "nan":
            if not allow_missing:
                raise DataError(
                    f"{column.locate(row)}: column {column.name!r}: missing category; set "
                    "data.table.impute to map missing categories to the unknown bucket"
                )
            text = None
        values[row] = text
    return values


def build_table(
    columns: list[Column], cfg: TableConfig, *, origin: str, feature_names: list[str]
) -> RawTable:
    """A RawTable of the named feature columns, parsed and checked cell by cell."""
    by_name = {column.name: column for column in columns}
    unknown = [name for name in cfg.categorical if name not in feature_names]
    if unknown:
        raise DataError(
            f"data.table.categorical: {unknown[0]!r} is not a feature column of {origin}; "
            f"features are: {', '.join(feature_names)}"
        )
    allow_missing = cfg.impute != "none"
    categorical_names = set(cfg.categorical)
    numeric_names = [name for name in feature_names if name not in categorical_names]
    numeric = numeric_block(
        [by_name[name] for name in numeric_names],
        num_rows=len(columns[0].cells),
        allow_missing=allow_missing,
    )
    categorical = {
        name: category_values(by_name[name], allow_missing=allow_missing)
        for name in feature_names
        if name in cfg.categorical
    }
    return RawTable(numeric, numeric_names, categorical)
