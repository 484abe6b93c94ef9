"""Process memory readings for train records, and the end-of-run console table."""

from __future__ import annotations

import math
import os
import resource
import sys
from pathlib import Path

from rich.table import Table

from scaletrain.metrics.logger import scalar_items

_BYTES_PER_MB = 1024 * 1024
_NOT_METRICS = ("step", "epoch", "time_s")  # bookkeeping in eval records, not results


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far (ru_maxrss: KiB on Linux, bytes on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / _BYTES_PER_MB if sys.platform == "darwin" else peak / 1024


def current_rss_mb() -> float:
    """Resident memory now, from /proc/self/statm (one small read, cheap enough per log)."""
    try:
        resident_pages = int(Path("/proc/self/statm").read_text().split()[1])
    except FileNotFoundError:  # no procfs (macOS): the peak is the nearest cheap reading
        return peak_rss_mb()
    return resident_pages * os.sysconf("SC_PAGE_SIZE") / _BYTES_PER_MB


def format_table(metrics_by_split: dict, *, title: str = "Results") -> Table:
    """Rows = scalar metrics, columns = splits; nested ``metrics`` dicts and lists are flattened/skipped."""
    columns = {
        split: {
            key: value for key, value in scalar_items(values).items() if key not in _NOT_METRICS
        }
        for split, values in metrics_by_split.items()
    }
    names = list(dict.fromkeys(name for values in columns.values() for name in values))
    table = Table(title=title)
    table.add_column("metric")
    for split in columns:
        table.add_column(split, justify="right")
    for name in names:
        table.add_row(name, *(_format_number(values.get(name)) for values in columns.values()))
    return table


def _format_number(value: int | float | None) -> str:
    if value is None:
        return "-"
    if isinstance(value, int):
        return str(value)
    if value == 0 or not math.isfinite(value) or 1e-3 <= abs(value) < 1e6:
        return f"{value:.4f}"
    return f"{value:.3e}"
