"""Tables (csv, parquet): cells -> ``RawTable`` -> features, with an encoder fit on train only.

Numeric columns become float64 with NaN for missing cells; each bad cell is reported as
``file:row: column``. Categorical columns (``data.table.categorical``) keep their text. The
``TableEncoder`` learns fill values and category lists from the train split and turns any
``RawTable`` (a split, or a predict file) into float32 features: numbers first, then one-hot
blocks or index columns, in the order the columns were declared.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from scaletrain.config import TableConfig
from scaletrain.data.registry import RawTable
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
    numeric_names = [name for name in feature_names if name not in cfg.categorical]
    numeric = np.zeros((len(columns[0].cells), len(numeric_names)), dtype=np.float64)
    for index, name in enumerate(numeric_names):
        numeric[:, index] = numeric_values(by_name[name], allow_missing=allow_missing)
    categorical = {
        name: category_values(by_name[name], allow_missing=allow_missing)
        for name in feature_names
        if name in cfg.categorical
    }
    return RawTable(numeric, numeric_names, categorical)


class TableEncoder:
    """Fill values and category lists learned from the train split; RawTable -> float32."""

    kind = "table"

    def __init__(
        self,
        *,
        numeric_names: list[str],
        fill: list[float] | None,
        categories: dict[str, list[str]],
        encoding: str,
    ):
        self.numeric_names = numeric_names
        self.fill = fill  # per numeric column; None: missing cells were refused when read
        self.categories = categories
        self.encoding = encoding
        self._lookup = {
            name: {value: index + 1 for index, value in enumerate(values)}
            for name, values in categories.items()
        }

    @classmethod
    def fit(cls, cfg: TableConfig, train: RawTable) -> TableEncoder:
        """Learn imputation values and categories from the train rows only."""
        fill = None
        if cfg.impute != "none":
            fill = [_fill_value(train, index, cfg) for index in range(len(train.numeric_names))]
        categories = {
            name: sorted({value for value in values if value is not None})
            for name, values in train.categorical.items()
        }
        return cls(
            numeric_names=train.numeric_names,
            fill=fill,
            categories=categories,
            encoding=cfg.categorical_encoding,
        )

    @property
    def columns(self) -> list[str]:
        """The raw columns this encoder reads, in order."""
        return [*self.numeric_names, *self.categories]

    def num_numeric(self) -> int:
        """Leading output columns that are numbers (scaled); the rest encode categories."""
        return len(self.numeric_names)

    def encode(self, table: RawTable) -> np.ndarray:
        """Features (N, F) float32: filled numbers, then one-hot blocks or index columns."""
        numeric = table.numeric
        if self.fill is not None:
            numeric = np.where(np.isnan(numeric), np.asarray(self.fill), numeric)
        parts = [numeric]
        for name, lookup in self._lookup.items():
            # 0 is the unknown bucket: missing cells and categories never seen in train.
            ids = np.array([lookup.get(value, 0) for value in table.categorical[name]])
            if self.encoding == "index":
                parts.append(ids[:, None].astype(np.float64))
            else:
                one_hot = np.zeros((len(ids), len(lookup) + 1))
                one_hot[np.arange(len(ids)), ids] = 1.0
                parts.append(one_hot[:, 1:])  # unknown = all zeros
        return np.concatenate(parts, axis=1).astype(np.float32)

    def read(self, path) -> RawTable:
        """The columns this encoder was fit on, from a predict file (.csv or .parquet)."""
        from scaletrain.data.files import check_file, read_columns  # files imports this module

        columns = read_columns(check_file(path, key="inputs file"), self.columns)
        config = TableConfig(
            categorical=list(self.categories), impute="none" if self.fill is None else "mean"
        )
        return build_table(columns, config, origin=str(path), feature_names=self.columns)

    def state_dict(self) -> dict:
        """JSON-safe."""
        return {
            "kind": self.kind,
            "numeric_names": self.numeric_names,
            "fill": self.fill,
            "categories": self.categories,
            "encoding": self.encoding,
        }

    @classmethod
    def from_state_dict(cls, state: dict) -> TableEncoder:
        """Inverse of ``state_dict``."""
        return cls(**{key: value for key, value in state.items() if key != "kind"})


def _fill_value(train: RawTable, index: int, cfg: TableConfig) -> float:
    if cfg.impute == "constant":
        return float(cfg.impute_value)
    values = train.numeric[:, index]
    values = values[~np.isnan(values)]
    if not len(values):
        raise DataError(
            f"column {train.numeric_names[index]!r}: no values in the train split to compute "
            f"the {cfg.impute} from; use data.table.impute=constant"
        )
    return float(values.mean() if cfg.impute == "mean" else np.median(values))
