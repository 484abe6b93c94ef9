"""``TableEncoder``: fill values and categories learned on the train split; RawTable -> features.

It turns any ``RawTable`` (a split, or a predict file) into float32 features: numbers first,
then one-hot blocks or index columns, in the order the columns were declared.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from scaletrain.config import TableConfig
from scaletrain.data.raw import RawTable
from scaletrain.data.sources.columns import Column, build_table
from scaletrain.data.sources.files import check_file, read_csv_table
from scaletrain.data.sources.parquet import parquet_column, read_parquet_table
from scaletrain.errors import DataError


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


def read_columns(path: Path, names: list[str]) -> list[Column]:
    """The named columns of a predict file (.csv or .parquet), for a fitted TableEncoder."""
    if path.suffix.lower() == ".csv":
        table = read_csv_table(path)
        return [table.column(name) for name in names]
    if path.suffix.lower() in (".parquet", ".pq"):
        table = read_parquet_table(path)
        return [parquet_column(table, name, path=path) for name in names]
    raise DataError(f"{path}: unknown table format {path.suffix!r}; use .csv or .parquet")
