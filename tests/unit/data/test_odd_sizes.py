"""Data at odd sizes: a CSV many columns wide loads in linear time; a label alone in its
class is named by file and row."""

from __future__ import annotations

import time

import numpy as np
import pytest

from scaletrain.config import DataConfig
from scaletrain.data import build_data
from scaletrain.data.sources.registry import SOURCES
from scaletrain.errors import DataError


def write_wide_csv(path, num_columns: int, num_rows: int = 40, *, seed: int = 0) -> np.ndarray:
    """Single-digit cells (the shape of the 100k x 40, 8.7 MB file of the report); the last
    column is a 0/1 label."""
    values = np.random.default_rng(seed).integers(0, 10, size=(num_rows, num_columns))
    header = [f"f{index}" for index in range(num_columns)] + ["label"]
    lines = [",".join(header)]
    lines += [",".join(map(str, row)) + f",{index % 2}" for index, row in enumerate(values)]
    path.write_text("\n".join(lines) + "\n")
    return values


def read_seconds(path) -> float:
    """Best of three reads of the csv source (the file is in the page cache after the first)."""
    cfg = DataConfig(source="csv", path=str(path))
    best = float("inf")
    for _ in range(3):
        start = time.perf_counter()
        SOURCES["csv"](cfg)
        best = min(best, time.perf_counter() - start)
    return best


def test_a_wide_csv_loads_in_linear_time(tmp_path):
    """8x the columns must cost about 8x the time, not 64x: a lookup per column in the header
    list made it quadratic (100k columns x 40 rows took 215 s; now about 2 s). Measured
    before the fix: 2.5k columns 0.17 s, 20k columns 5.7 s (33x)."""
    write_wide_csv(tmp_path / "narrow.csv", 2_500)
    write_wide_csv(tmp_path / "wide.csv", 20_000)
    read_seconds(tmp_path / "narrow.csv")  # warm up imports and caches
    narrow, wide = read_seconds(tmp_path / "narrow.csv"), read_seconds(tmp_path / "wide.csv")
    assert wide < 20 * narrow, f"2.5k columns: {narrow:.3f} s, 20k columns: {wide:.3f} s"
    assert wide < 10, f"20k columns x 40 rows took {wide:.1f} s"


def test_a_wide_csv_reads_every_cell(tmp_path):
    values = write_wide_csv(tmp_path / "wide.csv", 3_000, num_rows=12)
    raw = SOURCES["csv"](DataConfig(source="csv", path=str(tmp_path / "wide.csv")))
    np.testing.assert_array_equal(raw.inputs.numeric, values.astype(np.float64))
    assert raw.inputs.numeric_names[-1] == "f2999" and list(raw.labels[:3]) == [0, 1, 0]


@pytest.mark.parametrize(
    ("cell", "message"),
    [
        ("x", r"wide\.csv:9: column 'f2500': cannot parse 'x' as a number"),
        ("", r"wide\.csv:9: column 'f2500': missing value ''"),
        ("inf", r"wide\.csv:9: column 'f2500': value inf is not finite"),
    ],
)
def test_a_bad_cell_in_a_wide_csv_is_named(tmp_path, cell, message):
    path = tmp_path / "wide.csv"
    write_wide_csv(path, 3_000, num_rows=12)
    lines = path.read_text().splitlines()
    cells = lines[8].split(",")  # file line 9: the 8th data row
    cells[2500] = cell
    lines[8] = ",".join(cells)
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match=message):
        SOURCES["csv"](DataConfig(source="csv", path=str(path)))


@pytest.mark.parametrize(("label", "shown"), [("-5", "-5"), ("1e308", "1e+308")])
def test_a_label_alone_in_its_class_names_file_and_row(tmp_path, label, shown):
    """A negative or huge label among 0/1 labels is a class of one sample, which a stratified
    split cannot place: the error names the row and the label, and says why."""
    rows = ["a,b,label"] + [f"{i},{i % 7},{label if i == 17 else i % 2}" for i in range(60)]
    path = tmp_path / "labels.csv"
    path.write_text("\n".join(rows) + "\n")
    with pytest.raises(DataError) as info:
        build_data(DataConfig(source="csv", path=str(path)), seed=0)
    message = str(info.value)
    assert message.startswith(f"{path}:19: label {shown} is the only sample of its class")
    assert "stratified split needs at least 2 per class" in message
    assert "data.stratify=false" in message and "data.classes" in message


def test_a_lone_class_in_user_arrays_names_the_sample():
    features = np.random.default_rng(0).normal(size=(40, 3)).astype(np.float32)
    labels = np.arange(40) % 2
    labels[23] = 7
    message = r"^data \(Python API\): sample 23 \(0-based\): label 7 is the only sample"
    with pytest.raises(DataError, match=message):
        build_data(DataConfig(), seed=0, user_data={"train": (features, labels)})
