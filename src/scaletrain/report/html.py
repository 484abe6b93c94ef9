"""``report.html``: one self-contained page per run, built from the run directory alone."""

from __future__ import annotations

import collections
from pathlib import Path
from typing import Any

from scaletrain.fileio import atomic_write_text
from scaletrain.report.model import model_section
from scaletrain.report.page import (
    Markup,
    escape,
    facts,
    figure,
    format_number,
    format_seconds,
    note,
    page,
    section,
    table,
)
from scaletrain.report.plots import Marker, Series, line_plot
from scaletrain.report.rundata import RunData, read_run, scalar_names
from scaletrain.report.sections import classification_section, regression_section
from scaletrain.rundir import RunDir

STEP_AXIS = "step (optimizer updates)"
EPOCH_MEAN = "train (epoch mean)"  # the label of train_epoch records' series
# Config values worth seeing without opening the full config (dotted paths).
KEY_SETTINGS = (
    "data.source",
    "data.name",
    "data.task",
    "model.name",
    "model.hidden",
    "model.channels",
    "optim.name",
    "optim.lr",
    "optim.weight_decay",
    "optim.schedule.name",
    "loss.name",
    "train.batch_size",
    "train.max_epochs",
    "train.max_steps",
    "parallel.strategy",
    "run.seed",
)
PLAN_KEYS = (
    "global_batch_size",
    "micro_batch_size",
    "grad_accum_steps",
    "steps_per_epoch",
    "total_steps",
    "warmup_steps",
)
# Train-record curves after the loss: (key, title, y-axis label).
TRAIN_CURVES = (
    ("lr", "Learning rate", "learning rate"),
    ("grad_norm", "Gradient norm", "gradient L2 norm (before clipping)"),
    ("samples_per_s", "Throughput", "samples / s (all ranks)"),
    ("mfu", "Model FLOPs utilization", "MFU (fraction of peak)"),
    ("rss_mb", "Memory", "resident memory (MB, rank 0)"),
)


def write_report(run_dir: Path, *, out: Path | None = None) -> Path:
    """Write the run's self-contained ``report.html`` (default: inside the run directory).

    Args:
        run_dir: a run directory (holds ``config.yaml``); finished, unfinished or copied.
        out: where to write the page instead of ``<run_dir>/report.html``.
    """
    run = read_run(run_dir)
    target = Path(out) if out is not None else RunDir(run.root).report
    sections = [
        final_metrics_section(run),
        curves_section(run),
        classification_section(run) if run.task == "classification" else "",
        regression_section(run) if run.task == "regression" else "",
        model_section(run),
        events_section(run),
    ]
    body = [header(run, sections=[part for part in sections if part]), *sections]
    atomic_write_text(target, page(f"{run.name} · scaletrain report", body))
    return target


def header(run: RunData, *, sections: list[str]) -> Markup:
    """Name, status, where and how it ran, key settings and the full resolved config."""
    status_class = "status-" + run.status.replace(" ", "-").replace("/", "-")
    title = (
        f'<header><h1>{escape(run.name)}<span class="status {escape(status_class)}">'
        f"{escape(run.status)}</span></h1>{_nav(sections)}"
    )
    settings = [(key, _dotted(run.config, key)) for key in KEY_SETTINGS]
    settings += [(f"plan.{key}", run.plan[key]) for key in PLAN_KEYS if key in run.plan]
    details = (
        "<details><summary>Resolved config (config.yaml)</summary>"
        f"<pre>{escape(run.config_text)}</pre></details>"
    )
    return Markup(
        f"{title}{facts(_run_facts(run))}<h3>Key settings</h3>"
        f"{facts([item for item in settings if item[1] is not None])}{details}</header>"
    )


def final_metrics_section(run: RunData) -> Markup:
    metrics = run.final_metrics()
    source = "summary.json" if run.summary else "the last evaluation in metrics.jsonl"
    if not metrics:
        return section("final-metrics", "Final metrics", [note("No evaluation recorded yet.")])
    splits = list(metrics)
    names = sorted(scalar_names(metrics), key=lambda name: (name != "loss", name == "num_samples"))
    rows = [[name, *(metrics[split].get(name) for split in splits)] for name in names]
    body = [
        table(["metric", *splits], rows, table_id="final-metrics-table"),
        note(f"From {source}."),
    ]
    return section("final-metrics", "Final metrics", body)


def curves_section(run: RunData) -> Markup:
    """Loss, each metric (training vs validation), then lr, gradients, speed and memory."""
    if not run.train and not run.train_epochs and not run.evals:
        return section("curves", "Training curves", [note("No records in metrics.jsonl yet.")])
    markers = [
        Marker(float(event["step"]), str(event["event"]))
        for event in run.events
        if isinstance(event.get("step"), (int, float))
    ]
    plots = [_loss_plot(run, markers)]
    plots += _metric_plots(run, markers)
    for key, title, ylabel in TRAIN_CURVES:
        points = [(r["step"], r[key]) for r in run.train if r.get(key) is not None]
        if points:
            series = Series("train", *zip(*points, strict=True))
            plots.append(
                line_plot(
                    [series],
                    title=title,
                    xlabel=STEP_AXIS,
                    ylabel=ylabel,
                    markers=markers,
                    key=f"curve-{key}",
                )
            )
    legend = "Vertical lines mark events from metrics.jsonl (checkpoints, early stop, …)."
    body = [Markup('<div class="grid">'), *map(figure, plots), Markup("</div>")]
    return section("curves", "Training curves", [*body, note(legend) if markers else ""])


def events_section(run: RunData) -> Markup:
    if not run.events:
        return Markup("")
    rows = [
        [e.get("event"), e.get("step"), format_seconds(e.get("time_s")), str(e.get("detail", ""))]
        for e in run.events
    ]
    counts = collections.Counter(str(event.get("event")) for event in run.events)
    summary = ", ".join(f"{count} × {kind}" for kind, count in counts.items())
    details = f"<details><summary>{escape(summary)}</summary>"
    events_table = table(["event", "step", "time", "detail"], rows, table_id="events-table")
    return section("events", "Events", [Markup(details), events_table, Markup("</details>")])


def _loss_plot(run: RunData, markers: list[Marker]) -> str:
    series = []
    train = [(r["step"], r["loss"]) for r in run.train if r.get("loss") is not None]
    if train:
        series.append(Series("train", *zip(*train, strict=True)))
    for split, records in run.evals.items():
        points = [(r["step"], r["loss"]) for r in records if r.get("loss") is not None]
        if points:
            series.append(Series(split, *zip(*points, strict=True), marker="o"))
    epochs = [(r["step"], r["loss"]) for r in run.train_epochs if r.get("loss") is not None]
    if epochs:
        series.append(Series(EPOCH_MEAN, *zip(*epochs, strict=True), marker="s"))
    return line_plot(
        series,
        title="Loss",
        xlabel=STEP_AXIS,
        ylabel="loss (mean per sample)",
        markers=markers,
        key="curve-loss",
    )


def _metric_plots(run: RunData, markers: list[Marker]) -> list[str]:
    """One plot per metric: the epoch-mean training value against validation where both exist.

    Macro and weighted validation precision/recall/F1 share one plot each.
    """
    val, train = run.evals.get("val", []), run.train_epochs
    plots = []
    for group, names in _metric_groups([val, train]).items():
        single = len(names) == 1
        train_series = [_series(train, n, EPOCH_MEAN if single else f"{n} (train)") for n in names]
        val_series = [_series(val, n, "val" if single else n, marker="o") for n in names]
        series = [item for item in (*train_series, *val_series) if item is not None]
        has_train, has_val = any(train_series), any(val_series)
        if has_train and has_val:
            title, ylabel = f"Training vs validation {group}", group
        elif has_train:
            title, ylabel = f"Training {group} (epoch mean)", f"{group} (train, epoch mean)"
        else:
            title, ylabel = (
                f"Validation {group}" + ("" if single else " averages"),
                f"{group} (val)",
            )
        plot = line_plot(
            series,
            title=title,
            xlabel=STEP_AXIS,
            ylabel=ylabel,
            markers=markers,
            key=f"curve-{group}",
        )
        plots.append(plot)
    return plots


def _metric_groups(record_lists: list[list[dict]]) -> dict[str, list[str]]:
    """Metric names of the last record of each list; ``*_macro``/``*_weighted`` grouped."""
    last = {
        str(i): records[-1].get("metrics") or {}
        for i, records in enumerate(record_lists)
        if records
    }
    groups: dict[str, list[str]] = {}
    for name in scalar_names(last):
        if name != "num_samples":
            suffix = name.rpartition("_")[2]
            groups.setdefault(suffix if suffix in ("macro", "weighted") else name, []).append(name)
    return groups


def _series(records: list[dict], name: str, label: str, *, marker: str = "s") -> Series | None:
    points = [(r["step"], (r.get("metrics") or {}).get(name)) for r in records]
    points = [point for point in points if isinstance(point[1], (int, float))]
    return Series(label, *zip(*points, strict=True), marker=marker) if points else None


def _run_facts(run: RunData) -> list[tuple[str, Any]]:
    summary = run.summary or {}
    versions = summary.get("versions") or {}
    counters = summary.get("counters") or {}
    best = summary.get("best_metric") or {}
    wall = summary.get("wall_s")
    wall_label = "wall time" if wall is not None else "wall time (so far)"
    total = run.plan.get("total_steps")
    items = [
        (wall_label, format_seconds(wall if wall is not None else run.last_time_s())),
        ("steps", f"{run.steps} of {total}" if total and run.steps is not None else run.steps),
        ("epochs", summary.get("epochs")),
        ("world size", summary.get("world_size", run.plan.get("world_size"))),
        ("device", summary.get("device", run.plan.get("device"))),
        ("precision", summary.get("precision", run.plan.get("precision"))),
        ("best " + str(best.get("name", "")), _best(best, summary.get("best_step"))),
        ("train samples/s", summary.get("train_samples_per_s")),
        ("peak memory (MB)", summary.get("peak_rss_mb")),
        ("MFU", summary.get("mfu")),
        ("overhead fraction", summary.get("overhead_fraction")),
        *((name.replace("_", " "), value) for name, value in counters.items()),
        *((f"{name} version", versions.get(name)) for name in ("scaletrain", "torch", "python")),
    ]
    return [(label, value) for label, value in items if value is not None]


def _best(best: dict, step: Any) -> str | None:
    if best.get("value") is None:
        return None
    return f"{format_number(best['value'])} at step {step}"


def _nav(sections: list[str]) -> str:
    titles = {
        "final-metrics": "Final metrics",
        "curves": "Curves",
        "classification": "Classification",
        "regression": "Regression",
        "model": "Model",
        "events": "Events",
    }
    links = [
        f'<a href="#{key}">{title}</a>'
        for key, title in titles.items()
        if any(f'<section id="{key}">' in part for part in sections)
    ]
    return f"<nav>{''.join(links)}</nav>"


def _dotted(tree: dict, path: str) -> Any:
    node: Any = tree
    for part in path.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node
