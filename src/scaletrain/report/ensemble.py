"""`report.html` of an ensemble directory: members vs the ensemble (table and validation
curves) and the member-agreement matrix, from summary.json and the members' metrics.jsonl."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib import rc_context
from matplotlib.figure import Figure

from scaletrain.fileio import atomic_write_text, read_jsonl
from scaletrain.report.page import Markup, facts, figure, format_seconds, note, page, section, table
from scaletrain.report.plots import STYLE, Series, line_plot, to_svg
from scaletrain.rundir import ENSEMBLE_FILE, RunDir, read_json

SHOWN = ("accuracy", "f1_macro", "loss", "mae", "rmse", "r2")


def write_ensemble_report(root: Path, *, out: Path | None = None) -> Path:
    """The ensemble's self-contained page (default: `<root>/report.html`)."""
    root = Path(root)
    summary = read_json(root / "summary.json")
    record = read_json(root / ENSEMBLE_FILE)
    names = [member["name"] for member in record["members"]]
    runs = list(dict.fromkeys(member["dir"] for member in record["members"]))  # snapshot: one
    sections = [
        _header(root, summary, record),
        _members_section(summary, names, record.get("weights")),
        _curves_section(root, summary, runs),
        _agreement_section(summary, names),
    ]
    target = Path(out) if out is not None else RunDir(root).report
    atomic_write_text(target, page(f"{summary['name']} · scaletrain ensemble", sections))
    return target


def _header(root: Path, summary: dict, record: dict) -> Markup:
    items = [
        ("status", summary["status"]),
        ("method", summary["method"]),
        ("combine", summary["combine"]),
        ("members", summary["num_members"]),
        ("processes", summary["nproc"]),
        ("training wall time", format_seconds(summary["train_wall_s"])),
    ]
    combiner = record.get("combiner")
    if isinstance(combiner, dict):  # stacking: what the combiner learned from
        items += [
            ("combiner", combiner.get("kind")),
            ("combiner's held-out rows", combiner.get("num_rows")),
            ("combiner's training loss", combiner.get("train_loss")),
        ]
    return Markup(f"<header><h1>{summary['name']}</h1>{facts(items)}</header>")


def _members_section(summary: dict, names: list[str], weights: list | None) -> Markup:
    """One table per split; with `weights` (boosting's alphas, `combine: weighted`), each
    member's weight in the combined prediction as the first column."""
    if not summary["members"]:
        return section("members", "Members vs ensemble", [note("The ensemble did not finish.")])
    weighted = isinstance(weights, list) and len(weights) == len(names)
    body = []
    for split in summary["ensemble"]:
        shown = [key for key in SHOWN if key in summary["ensemble"][split]]
        rows = [
            [name, *([weight] if weighted else []), *(member[split][key] for key in shown)]
            for name, weight, member in zip(
                names, weights if weighted else names, summary["members"], strict=True
            )
        ]
        blank = [""] if weighted else []
        rows.append(["mean member", *blank, *(summary["mean_member"][split][key] for key in shown)])
        rows.append(["ensemble", *blank, *(summary["ensemble"][split][key] for key in shown)])
        classes = [""] * (len(rows) - 1) + ["best"]
        header = ["model", *(["weight"] if weighted else []), *shown]
        body.append(table(header, rows, caption=split, row_classes=classes))
    return section("members", "Members vs ensemble", body)


def _curves_section(root: Path, summary: dict, runs: list[str]) -> Markup:
    """Each member run's validation metric per epoch; the ensemble's final value as a line."""
    if not summary["members"] or "val" not in summary["ensemble"]:
        return Markup("")
    metric = "accuracy" if "accuracy" in summary["ensemble"]["val"] else "loss"
    series, last_epoch = [], 1
    for where in runs:
        name = where.removeprefix("members/")
        if "/" in name or name.startswith("."):  # ensemble.json names folders under members/
            continue
        records = read_jsonl(root / "members" / name / "metrics.jsonl")
        points = [
            (r["epoch"], r["loss"] if metric == "loss" else r["metrics"][metric])
            for r in records
            if r.get("split") == "val" and (metric == "loss" or metric in r.get("metrics", {}))
        ]
        if points:
            series.append(Series(name, [p[0] for p in points], [p[1] for p in points], "o"))
            last_epoch = max(last_epoch, points[-1][0])
    value = summary["ensemble"]["val"][metric]
    series.append(Series("ensemble (final)", [0, last_epoch], [value, value], color="#000000"))
    svg = line_plot(
        series, title=f"val {metric}", xlabel="epoch", ylabel=metric, key="ensemble-curves"
    )
    return section("curves", "Member curves", [figure(svg)])


def _agreement_section(summary: dict, names: list[str]) -> Markup:
    diversity = summary["diversity"].get("test") or summary["diversity"].get("val")
    if not diversity or "agreement_matrix" not in diversity:
        return Markup("")
    matrix = np.asarray(diversity["agreement_matrix"], dtype=np.float64)
    size = min(max(3.0, 0.5 * len(names) + 1.5), 8.0)
    with rc_context({**STYLE, "axes.grid": False}):
        chart = Figure(figsize=(size + 0.8, size), layout="constrained")
        axes = chart.add_subplot()
        image = axes.imshow(matrix, cmap="Blues", vmin=0, vmax=1, interpolation="none")
        axes.set_xticks(range(len(names)), names)
        axes.set_yticks(range(len(names)), names)
        for row, column in np.ndindex(matrix.shape):
            color = "white" if matrix[row, column] > 0.55 else "#222222"
            text = f"{matrix[row, column]:.0%}"
            axes.text(column, row, text, ha="center", va="center", fontsize=8, color=color)
        chart.colorbar(image, ax=axes, shrink=0.8, label="share of samples labelled alike")
        svg = to_svg(chart, key="ensemble-agreement", title="Member agreement")
    caption = f"members disagree on {diversity['disagreement']:.1%} of samples (mean over pairs)"
    return section("agreement", "Member agreement", [figure(svg, caption=caption, natural=True)])
