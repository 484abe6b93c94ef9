"""File sources: csv, npy and npz; every bad cell is reported as ``file:row: column``.

Formats:
  csv  a header row, then one sample per row. ``data.label`` names the label column;
       features are ``data.features`` or every other column. Labels may be numbers or
       class names (``setosa``); features must be numbers.
  npy  one 2-D numeric array (N, F + 1). ``data.label`` is the label's column index
       (``-1``, ``0`` …) or ``last``; the default ``label`` also means the last column.
  npz  arrays ``x`` (inputs: (N, F), (N, H, W) or (N, C, H, W)) and ``data.label`` (labels:
       (N,) or (N, k)). Without an ``x`` key, the one other array is the input.
"""

from __future__ import annotations

import csv
import functools
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from scaletrain.config import DataConfig
from scaletrain.data.raw import RawData, image_layout
from scaletrain.data.sources.columns import Column, build_table
from scaletrain.data.sources.registry import register_source
from scaletrain.errors import ConfigError, DataError


@dataclass
class CsvTable:
    """A CSV file's cells as text, with the file line number of every row for messages."""

    path: Path
    header: list[str]
    rows: list[list[str]]
    line_numbers: list[int]  # 1-based line in the file (the header is line 1)
    # name -> position: a lookup per column in the header list was quadratic in the width
    # (100k columns took minutes)
    indices: dict[str, int] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.indices = {name: index for index, name in enumerate(self.header)}

    def column_index(self, name: str, *, role: str) -> int:
        index = self.indices.get(name)
        if index is None:
            columns = ", ".join(self.header)
            raise DataError(f"{self.path}: no {role} column {name!r}; columns are: {columns}")
        return index

    @functools.cached_property
    def cells(self) -> np.ndarray:
        """Every cell as text, (rows, columns) object array: a column is then a view."""
        cells = np.empty((len(self.rows), len(self.header)), dtype=object)
        cells[:] = self.rows
        return cells

    def column(self, name: str) -> Column:
        """One column's cells as text, with their file lines for messages."""
        index = self.column_index(name, role="feature")
        return Column(name, self.cells[:, index], self._locate)

    def _locate(self, row: int) -> str:
        return f"{self.path}:{self.line_numbers[row]}"

    def parse_numbers(self, columns: list[int]) -> np.ndarray:
        """Columns as float64 (N, len(columns)); the first bad or non-finite cell raises."""
        cells = [[row[index] for index in columns] for row in self.rows]
        try:
            values = np.array(cells, dtype=np.float64).reshape(len(self.rows), len(columns))
        except ValueError:
            self._raise_first_unparsable(columns)
        bad = first_non_finite(values)
        if bad is not None:
            row, column = bad
            raise DataError(
                f"{self.path}:{self.line_numbers[row]}: column {self.header[columns[column]]!r}: "
                f"value {values[row, column]} is not finite"
            )
        return values

    def _raise_first_unparsable(self, columns: list[int]) -> None:
        # Only reached on failure: the per-cell scan costs Python time per cell.
        for row, line in zip(self.rows, self.line_numbers, strict=True):
            for index in columns:
                try:
                    float(row[index])
                except ValueError:
                    raise DataError(
                        f"{self.path}:{line}: column {self.header[index]!r}: "
                        f"cannot parse {row[index]!r} as a number"
                    ) from None
        raise AssertionError("numpy failed to parse a cell that float() accepts")


def check_file(path: str | Path | None, *, key: str = "data.path") -> Path:
    """The path as a Path, or a DataError saying it is unset, missing or empty."""
    if path is None:
        raise ConfigError(f"{key}: not set; give the data file to read")
    path = Path(path).expanduser()
    if not path.is_file():
        raise DataError(f"{key}: file not found: {path}")
    if path.stat().st_size == 0:
        raise DataError(f"{path}: file is empty")
    return path


def read_csv_table(path: Path) -> CsvTable:
    """Read a CSV with a header; blank lines are skipped, ragged rows are refused."""
    rows: list[list[str]] = []
    line_numbers: list[int] = []
    header: list[str] | None = None
    try:
        with path.open(newline="", encoding="utf-8-sig") as handle:
            reader = csv.reader(handle)
            for row in reader:
                if not any(cell.strip() for cell in row):
                    continue
                if header is None:
                    header = [cell.strip() for cell in row]
                    continue
                if len(row) != len(header):
                    raise DataError(
                        f"{path}:{reader.line_num}: {len(row)} values, but the header has "
                        f"{len(header)} columns"
                    )
                rows.append(row)
                line_numbers.append(reader.line_num)
    except UnicodeDecodeError:
        raise DataError(f"{path}: not a UTF-8 text file") from None
    except csv.Error as exc:
        raise DataError(f"{path}: not valid CSV ({exc})") from None
    if header is None:
        raise DataError(f"{path}: file is empty; expected a header row, then one row per sample")
    if len(set(header)) != len(header):
        duplicates = sorted({name for name in header if header.count(name) > 1})
        raise DataError(f"{path}: duplicate column names in the header: {', '.join(duplicates)}")
    if not rows:
        raise DataError(f"{path}: no data rows after the header")
    return CsvTable(path, header, rows, line_numbers)


def first_non_finite(values: np.ndarray) -> tuple[int, int] | None:
    """(sample, flat feature) of the first NaN/Inf, or None; one vectorized pass."""
    flat = values.reshape(len(values), -1)
    if not np.issubdtype(flat.dtype, np.floating):
        return None
    bad = ~np.isfinite(flat)
    if not bad.any():
        return None
    row = int(bad.any(axis=1).argmax())
    return row, int(bad[row].argmax())


@register_source("csv")
def read_csv(cfg: DataConfig) -> RawData:
    """Feature and label columns of a CSV file (numbers, or categories if declared)."""
    table = read_csv_table(check_file(cfg.path))
    label_index = table.column_index(cfg.label, role="label")
    names = feature_names(table.header, cfg, path=table.path)
    columns = [table.column(name) for name in names]
    return RawData(
        inputs=build_table(columns, cfg.table, origin=str(table.path), feature_names=names),
        labels=csv_labels(table, label_index, cfg=cfg),
        origin=str(table.path),
        row_lines=np.asarray(table.line_numbers),
        input_kind="table",
        raw_columns=names,
    )


def feature_names(header: list[str], cfg: DataConfig, *, path: Path) -> list[str]:
    """``data.features``, or every column except the label; each checked to exist."""
    names = cfg.features or [name for name in header if name != cfg.label]
    if cfg.label in names:
        raise ConfigError(f"data.features: lists the label column {cfg.label!r}")
    columns = set(header)  # a set: one lookup per feature, whatever the width
    for name in names:
        if name not in columns:
            raise DataError(f"{path}: no feature column {name!r}; columns are: {', '.join(header)}")
    if not names:
        raise DataError(f"{path}: no feature columns besides the label {cfg.label!r}")
    return names


def csv_labels(table: CsvTable, index: int, *, cfg: DataConfig) -> np.ndarray:
    texts = [row[index].strip() for row in table.rows]
    try:
        np.array(texts, dtype=np.float64)
    except ValueError:
        # Class names such as "setosa" are labels too, unless the task needs numbers.
        if cfg.task != "regression" and all(texts):
            return np.array(texts)
    return table.parse_numbers([index])[:, 0]  # raises at the first bad or non-finite cell


@register_source("npy")
def read_npy(cfg: DataConfig) -> RawData:
    """A 2-D numeric array whose column ``data.label`` holds the label."""
    path = check_file(cfg.path)  # data.features: refused by the config for npy
    array = load_numpy(path)
    if not isinstance(array, np.ndarray) or array.ndim != 2:
        shape = getattr(array, "shape", None)
        raise DataError(f"{path}: expected a 2-D array (samples, features + label), got {shape}")
    column = _label_column(cfg.label, num_columns=array.shape[1], path=path)
    array = check_numeric(array, path=path)
    inputs = np.delete(array, column, axis=1).astype(np.float32)
    return RawData(inputs=inputs, labels=array[:, column], origin=str(path))


def _label_column(label: str, *, num_columns: int, path: Path) -> int:
    if label in ("label", "last"):
        return num_columns - 1
    try:
        column = int(label)
    except ValueError:
        raise ConfigError(
            f"data.label: {label!r} for an npy file; expected a column index (0, -1 …) or `last`"
        ) from None
    if not -num_columns <= column < num_columns:
        raise DataError(f"{path}: no column {column}; the array has {num_columns} columns")
    return column % num_columns


@register_source("npz")
def read_npz(cfg: DataConfig) -> RawData:
    """Arrays ``x`` (inputs) and ``data.label`` (labels) of an ``.npz`` archive."""
    path = check_file(cfg.path)
    archive = load_numpy(path)
    if not isinstance(archive, np.lib.npyio.NpzFile):
        raise DataError(f"{path}: expected an .npz archive (np.savez), got a single array")
    with archive:
        keys = list(archive.keys())
        if cfg.label not in keys:
            raise DataError(
                f"{path}: no array {cfg.label!r} for the labels (set data.label); "
                f"arrays: {', '.join(keys)}"
            )
        input_key = npz_input_key(keys, label=cfg.label, path=path)
        inputs = check_numeric(npz_array(archive, input_key, path=path), path=path, name=input_key)
        labels = npz_array(archive, cfg.label, path=path)
    if len(inputs) != len(labels):
        raise DataError(
            f"{path}: {input_key!r} has {len(inputs)} samples but {cfg.label!r} has {len(labels)}"
        )
    inputs, is_image = image_layout(inputs)
    return RawData(
        inputs=inputs.astype(np.float32), labels=labels, origin=str(path), is_image=is_image
    )


def npz_input_key(keys: list[str], *, label: str, path: Path) -> str:
    if "x" in keys:
        return "x"
    others = [key for key in keys if key != label]
    if len(others) != 1:
        raise DataError(f"{path}: no input array 'x'; arrays: {', '.join(keys)}")
    return others[0]


# what a damaged .npy/.npz raises (a cut zip archive: BadZipFile; a cut member: zlib.error)
_DAMAGED = (OSError, EOFError, zipfile.BadZipFile, zlib.error)


def load_numpy(path: Path):
    try:
        return np.load(path, allow_pickle=False)
    except ValueError as exc:
        raise DataError(f"{path}: not a numeric numpy file ({exc})") from None
    except _DAMAGED as exc:
        raise DataError(f"{path}: cannot read as .npy/.npz ({exc})") from None


def npz_array(archive: np.lib.npyio.NpzFile, key: str, *, path: Path) -> np.ndarray:
    """One array of an .npz archive. Members are read lazily, so a damaged one, or one of
    objects (pickle, never loaded: allow_pickle stays False), is refused here, by name."""
    try:
        return archive[key]
    except ValueError as exc:
        raise DataError(f"{path}: array {key!r} is not a numeric array ({exc})") from None
    except _DAMAGED as exc:
        raise DataError(f"{path}: array {key!r} cannot be read ({exc})") from None


def check_numeric(array: np.ndarray, *, path: Path, name: str | None = None) -> np.ndarray:
    where = f"{path}: array {name!r}" if name else str(path)
    if not (np.issubdtype(array.dtype, np.number) or array.dtype == np.bool_):
        raise DataError(f"{where}: expected numbers, got dtype {array.dtype}")
    bad = first_non_finite(array)
    if bad is not None:
        raise DataError(
            f"{where}: row {bad[0]} (0-based), column {bad[1]}: value is not finite "
            f"({array.reshape(len(array), -1)[bad]})"
        )
    return array
