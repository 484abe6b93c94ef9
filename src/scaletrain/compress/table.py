"""The before/after table of `scaletrain compress`, for the console and for Markdown docs."""

from __future__ import annotations

from rich.table import Table

from scaletrain.compress.measure import LATENCY_BATCHES, Measurement


def result_rows(result) -> list[tuple[str, str, str]]:
    """(what, before, after) rows."""
    before, after = result.before, result.after
    rows = [
        ("parameters (nonzero/total)", _params(before), _params(after)),
        ("size on disk", _size(before.disk_bytes), _size(after.disk_bytes)),
    ]
    for batch in LATENCY_BATCHES:
        rows.append(
            (
                f"CPU latency, batch {batch} (median ms)",
                f"{before.latency_ms[batch]:.3f}",
                f"{after.latency_ms[batch]:.3f}",
            )
        )
    rows.append((result.metric, f"{before.metric:.4f}", f"{after.metric:.4f}"))
    if result.sparsity is not None:
        rows.append(("sparsity achieved", "0", f"{result.sparsity:.4f}"))
    return rows


def result_table(result) -> Table:
    """A rich table of `result_rows`."""
    table = Table(title=f"compressed: {result.run_dir}")
    for column in ("", "before", "after"):
        table.add_column(column, justify="left" if not column else "right")
    for row in result_rows(result):
        table.add_row(*row)
    return table


def markdown_table(result) -> str:
    """`result_rows` as a Markdown table."""
    lines = ["| | before | after |", "|---|---:|---:|"]
    lines += [f"| {what} | {before} | {after} |" for what, before, after in result_rows(result)]
    return "\n".join(lines)


def _params(measurement: Measurement) -> str:
    return f"{measurement.nonzero:,} / {measurement.total:,}"


def _size(num_bytes: int) -> str:
    return f"{num_bytes / 1024:.1f} KiB"
