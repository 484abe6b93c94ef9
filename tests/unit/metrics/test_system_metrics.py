"""Memory readings against a known allocation; the console table's rows and columns."""

from __future__ import annotations

import io
import mmap

import numpy as np
from rich.console import Console

from scaletrain.metrics import current_rss_mb, format_table, peak_rss_mb


def test_rss_readings_follow_a_100_mb_allocation():
    # fresh pages from the kernel: malloc could reuse resident memory freed by earlier tests
    block = mmap.mmap(-1, 100 * 1024 * 1024)
    before = current_rss_mb()
    np.frombuffer(block, dtype=np.uint8)[::4096] = 1  # touch every page: now resident
    during = current_rss_mb()
    assert 80 < during - before < 130
    assert peak_rss_mb() >= during - 1  # the peak includes the block
    block.close()


def _render(table) -> str:
    console = Console(file=io.StringIO(), width=120, color_system=None)
    console.print(table)
    return console.file.getvalue()


def test_table_has_a_row_per_scalar_metric_and_a_column_per_split():
    results = {
        "train": {"loss": 0.125},
        "val": {"step": 90, "epoch": 3, "time_s": 4.5, "loss": 0.25,
                "metrics": {"accuracy": 0.9375, "num_samples": 180,
                            "per_class": {"f1": [0.5, 1.0]}, "confusion_matrix": [[1]]}},
        "test": {"loss": 0.5, "metrics": {"accuracy": 0.875, "num_samples": 360}},
    }  # fmt: skip
    text = _render(format_table(results))
    lines = text.splitlines()
    header = next(line for line in lines if "metric" in line)
    assert header.index("train") < header.index("val") < header.index("test")
    cells = [[cell.strip() for cell in line.strip("│").split("│")] for line in lines]
    rows = {row[0]: row[1:] for row in cells if len(row) == 4 and row[0] != "metric"}
    assert rows["loss"] == ["0.1250", "0.2500", "0.5000"]
    assert rows["accuracy"] == ["-", "0.9375", "0.8750"]
    assert rows["num_samples"] == ["-", "180", "360"]
    assert list(rows) == ["loss", "accuracy", "num_samples"]
