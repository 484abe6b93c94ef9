"""``report.html``: one self-contained page per run, built from the run directory alone."""

from __future__ import annotations

import collections
from pathlib import Path
from typing import Any

from scaletrain.fileio import atomic_write_text
from scaletrain.report.curves import curves_section
from scaletrain.report.distribution import class_distribution_section
from scaletrain.report.ensemble import write_ensemble_report
from scaletrain.report.model import model_section
from scaletrain.report.page import (
    Markup,
    escape,
    facts,
    format_number,
    format_seconds,
    note,
    page,
    section,
    table,
)
from scaletrain.report.parameter_server import parameter_server_section
from scaletrain.report.rundata import RunData, read_run, scalar_names
from scaletrain.report.sections import classification_section, regression_section
from scaletrain.rundir import RunDir, is_ensemble_dir

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


def write_report(run_dir: Path, *, out: Path | None = None) -> Path:
    """Write the run's self-contained ``report.html`` (default: inside the run directory).

    Args:
        run_dir: a run directory (holds ``config.yaml``); finished, unfinished or copied.
        out: where to write the page instead of ``<run_dir>/report.html``.
    """
    if is_ensemble_dir(run_dir):  # members vs ensemble, not one run's curves
        return write_ensemble_report(Path(run_dir), out=out)
    run = read_run(run_dir)
    target = Path(out) if out is not None else RunDir(run.root).report
    sections = [
        final_metrics_section(run),
        curves_section(run),
        classification_section(run) if run.task == "classification" else "",
        class_distribution_section(run) if run.task == "classification" else "",
        regression_section(run) if run.task == "regression" else "",
        parameter_server_section(run),
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
        ("train tokens/s", summary.get("train_tokens_per_s")),
        ("peak memory (MB)", summary.get("peak_rss_mb")),
        ("MFU", _percent(summary.get("mfu"))),
        ("overhead fraction", summary.get("overhead_fraction")),
        *((name.replace("_", " "), value) for name, value in counters.items()),
        *((f"{name} version", versions.get(name)) for name in ("scaletrain", "torch", "python")),
    ]
    return [(label, value) for label, value in items if value is not None]


def _percent(fraction: Any) -> str | None:
    """MFU is logged as a fraction of peak; people read it in percent."""
    if not isinstance(fraction, (int, float)):
        return None
    return f"{100 * fraction:.3g} %"


def _best(best: dict, step: Any) -> str | None:
    if best.get("value") is None:
        return None
    return f"{format_number(best['value'])} at step {step}"


def _nav(sections: list[str]) -> str:
    titles = {
        "final-metrics": "Final metrics",
        "curves": "Curves",
        "classification": "Classification",
        "class-distribution": "Classes",
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
