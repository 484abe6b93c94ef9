"""``compare.html``: several runs overlaid, their final metrics and what their configs change."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from scaletrain.errors import UserError
from scaletrain.fileio import atomic_write_text
from scaletrain.report.page import Markup, figure, format_seconds, note, page, section, table
from scaletrain.report.plots import PALETTE, Series, line_plot
from scaletrain.report.rundata import RunData, read_run, scalar_names

AXIS_LABELS = {"step": "step (optimizer updates)", "time": "wall time since start (s)"}
MAX_STEM_CHARS = 120  # of a default output name; file names stop at 255 bytes
_ABSENT = object()  # a key one config lacks: shown as "(absent)", unequal to any value


def write_compare(
    run_dirs: list[Path], *, out: Path | None = None, align: Literal["step", "time"] = "step"
) -> Path:
    """Write one self-contained page comparing runs: curves, final metrics, config changes.

    Args:
        run_dirs: run directories (each holds ``config.yaml``), in the order to show them.
        out: the HTML file to write; default ``default_compare_path(run_dirs)``, beside the
            first run (not the current folder, which may be anywhere).
        align: put curves on a common ``step`` axis, or on seconds since each run started.
    """
    if not run_dirs:
        raise UserError("compare: expected at least one run directory, got none")
    if align not in AXIS_LABELS:
        raise UserError(f"compare --align: expected one of step, time, got {align!r}")
    runs = [read_run(path) for path in run_dirs]
    labels = run_labels(runs)
    body = [
        Markup(f"<header><h1>Comparison of {len(runs)} runs</h1></header>"),
        _runs_table(runs, labels),
        _curves(runs, labels, align=align),
        section("final-metrics", "Final metrics", [final_metrics_table(runs, labels)]),
        section("config-diff", "Config differences", [config_diff_table(runs, labels)]),
    ]
    out = Path(out) if out is not None else default_compare_path(run_dirs)
    atomic_write_text(out, page("scaletrain comparison: " + ", ".join(labels), body))
    return out


def default_compare_path(run_dirs: list[Path]) -> Path:
    """`compare-<a>-vs-<b>.html` in the first run's parent folder (where the runs live)."""
    names = [re.sub(r"[^A-Za-z0-9._-]+", "_", Path(path).resolve().name) for path in run_dirs]
    stem = "-vs-".join(names)
    if len(stem) > MAX_STEM_CHARS:  # many runs, or long names: a name a file system takes
        stem = f"{names[0][:MAX_STEM_CHARS]}-and-{len(names) - 1}-more"
    return Path(run_dirs[0]).resolve().parent / f"compare-{stem}.html"


def run_labels(runs: list[RunData]) -> list[str]:
    """Run names, or directory paths where two runs share a name."""
    names = [run.name for run in runs]
    labels = [run.name if names.count(run.name) == 1 else str(run.root) for run in runs]
    return [
        label if labels.count(label) == 1 else f"{label} #{number}"
        for number, label in enumerate(labels, start=1)
    ]


def final_metrics_table(runs: list[RunData], labels: list[str]) -> Markup:
    """One row per `<split>.<metric>` (plus status, steps, wall time), one column per run."""
    finals = [run.final_metrics() for run in runs]
    splits = list(dict.fromkeys(split for final in finals for split in final))
    rows: list[list[object]] = [
        ["status", *(run.status for run in runs)],
        ["steps", *(run.steps for run in runs)],
        ["wall time", *(format_seconds(_wall_s(run)) for run in runs)],
    ]
    for split in splits:
        names = scalar_names({str(i): final.get(split, {}) for i, final in enumerate(finals)})
        for name in names:
            rows.append([f"{split}.{name}", *(final.get(split, {}).get(name) for final in finals)])
    return table(["", *labels], rows, table_id="final-metrics-table")


def config_diff_table(runs: list[RunData], labels: list[str]) -> Markup:
    """Only the dotted config keys whose values differ between the runs."""
    flats = [flatten(run.config) for run in runs]
    keys = list(dict.fromkeys(key for flat in flats for key in flat))
    differing = [
        key for key in keys if len({_identity(flat.get(key, _ABSENT)) for flat in flats}) > 1
    ]
    if not differing:
        return note("The resolved configs are identical.")
    rows = [[key, *(_text(flat.get(key, _ABSENT)) for flat in flats)] for key in differing]
    return table(["config key", *labels], rows, table_id="config-diff-table")


def flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested sections as dotted keys: {"optim": {"lr": 1}} -> {"optim.lr": 1}."""
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, dict) and value:
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


@dataclass(frozen=True)
class _Panel:
    """One overlaid plot: which records of a run it draws, and which value of each."""

    title: str
    ylabel: str
    records_of: Callable[[RunData], list[dict]]
    value_of: Callable[[dict], Any]


def _panels(runs: list[RunData]) -> list[_Panel]:
    """Train and validation loss, each validation metric any run logged, the learning rate."""
    last_val = {
        str(number): (run.evals.get("val") or [{}])[-1].get("metrics") or {}
        for number, run in enumerate(runs)
    }
    panels = [
        _Panel("Train loss", "loss (mean per sample)", _train, _getter("loss")),
        _Panel("Validation loss", "loss (mean per sample)", _val, _getter("loss")),
    ]
    for name in scalar_names(last_val):
        if name != "num_samples":
            panels.append(_Panel(f"Validation {name}", f"{name} (val)", _val, _metric_getter(name)))
    panels.append(_Panel("Learning rate", "learning rate", _train, _getter("lr")))
    return panels


def _curves(runs: list[RunData], labels: list[str], *, align: str) -> Markup:
    axis = "time_s" if align == "time" else "step"
    plots = []
    for index, panel in enumerate(_panels(runs)):
        series = []
        for number, (run, label) in enumerate(zip(runs, labels, strict=True)):
            points = [
                (record[axis], panel.value_of(record))
                for record in panel.records_of(run)
                if _usable(record, axis, panel.value_of)
            ]
            if points:
                color = PALETTE[number % len(PALETTE)]  # one color per run on every plot
                series.append(Series(label, *zip(*points, strict=True), color=color))
        if series:
            xlabel = AXIS_LABELS[align]
            key = f"compare-{index}"
            plots.append(
                line_plot(series, title=panel.title, xlabel=xlabel, ylabel=panel.ylabel, key=key)
            )
    if not plots:
        return section("curves", "Curves", [note("No records in any metrics.jsonl yet.")])
    body = [Markup('<div class="grid">'), *map(figure, plots), Markup("</div>")]
    return section("curves", f"Curves (aligned by {align})", body)


def _runs_table(runs: list[RunData], labels: list[str]) -> Markup:
    rows = [[label, run.status, str(run.root)] for label, run in zip(labels, runs, strict=True)]
    return Markup(f'<div id="runs">{table(["run", "status", "run directory"], rows)}</div>')


def _train(run: RunData) -> list[dict]:
    return run.train


def _val(run: RunData) -> list[dict]:
    return run.evals.get("val", [])


def _getter(key: str) -> Callable[[dict], Any]:
    return lambda record: record.get(key)


def _metric_getter(name: str) -> Callable[[dict], Any]:
    return lambda record: (record.get("metrics") or {}).get(name)


def _usable(record: dict, axis: str, value_of: Callable[[dict], Any]) -> bool:
    value = value_of(record)
    number = (int, float)
    return (
        isinstance(record.get(axis), number)
        and isinstance(value, number)
        and not isinstance(value, bool)
    )


def _wall_s(run: RunData) -> float | None:
    wall = (run.summary or {}).get("wall_s")
    return wall if wall is not None else run.last_time_s()


def _identity(value: Any) -> str:
    """Equal exactly when the values are (a string "1" differs from the number 1)."""
    return "absent" if value is _ABSENT else json.dumps(value, sort_keys=True, default=str)


def _text(value: Any) -> str:
    if value is _ABSENT:
        return "(absent)"
    return value if isinstance(value, str) else json.dumps(value)
