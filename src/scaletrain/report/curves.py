"""The report's training curves: loss, each metric (training vs validation), then lr,
gradients, speed, MFU and memory, all against steps with the epochs on a top axis."""

from __future__ import annotations

from scaletrain.report.page import Markup, figure, note, section
from scaletrain.report.plots import Marker, Series, StepAxis, line_plot
from scaletrain.report.rundata import RunData, scalar_names

STEP_AXIS = "step (optimizer updates)"
EPOCH_MEAN = "train (epoch mean)"  # the label of train_epoch records' series
# Train-record curves after the loss: (key, title, y-axis label, scale of the logged value).
TRAIN_CURVES = (
    ("lr", "Learning rate", "learning rate", 1.0),
    ("grad_norm", "Gradient norm", "gradient L2 norm (before clipping)", 1.0),
    ("samples_per_s", "Throughput", "samples / s (all ranks)", 1.0),
    ("tokens_per_s", "Token throughput", "tokens / s (all ranks; language models)", 1.0),
    ("mfu", "Model FLOPs utilization", "MFU (% of peak)", 100.0),  # logged as a fraction
    ("rss_mb", "Memory", "resident memory (MB, rank 0)", 1.0),
)
LEGEND = (
    "Ticks on the step axis mark checkpoints; vertical lines mark other events from "
    "metrics.jsonl (early stop, skips, rollbacks, resumes, async_ps workers lost and taken "
    "over). The top axis counts epochs."
)


def curves_section(run: RunData) -> Markup:
    """Every curve of the run, sharing one step axis (events, epochs)."""
    if not run.train and not run.train_epochs and not run.evals:
        return section("curves", "Training curves", [note("No records in metrics.jsonl yet.")])
    axis = step_axis(run)
    plots = [_loss_plot(run, axis), *_metric_plots(run, axis)]
    for key, title, ylabel, scale in TRAIN_CURVES:
        points = [(r["step"], r[key] * scale) for r in run.train if r.get(key) is not None]
        if points:
            series = Series("train", *zip(*points, strict=True))
            plots.append(
                line_plot(
                    [series],
                    title=title,
                    xlabel=STEP_AXIS,
                    ylabel=ylabel,
                    axis=axis,
                    key=f"curve-{key}",
                )
            )
    body = [Markup('<div class="grid">'), *map(figure, plots), Markup("</div>")]
    return section("curves", "Training curves", [*body, note(LEGEND)])


def step_axis(run: RunData) -> StepAxis:
    """The run's events as markers and its steps per epoch (from plan.json)."""
    markers = [
        Marker(float(event["step"]), str(event["event"]))
        for event in run.events
        if isinstance(event.get("step"), (int, float))
    ]
    steps_per_epoch = run.plan.get("steps_per_epoch")
    valid = isinstance(steps_per_epoch, int) and steps_per_epoch > 0
    return StepAxis(markers=markers, steps_per_epoch=steps_per_epoch if valid else None)


def _loss_plot(run: RunData, axis: StepAxis) -> str:
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
        axis=axis,
        key="curve-loss",
    )


def _metric_plots(run: RunData, axis: StepAxis) -> list[str]:
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
            axis=axis,
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
