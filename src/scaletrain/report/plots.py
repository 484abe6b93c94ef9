"""The report's figures: matplotlib in one style, rendered to inline SVG strings.

SVG keeps line plots crisp at any zoom and small (text stays text: ``svg.fonttype`` none);
heatmaps and digit images go in as the few-pixel PNG that ``imshow`` embeds, drawn
pixelated. Figures are built with ``matplotlib.figure.Figure`` (no pyplot), so the
caller's backend and global state are never touched; saving renders with Agg/SVG.
"""

from __future__ import annotations

import io
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from cycler import cycler
from matplotlib import rc_context
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, MaxNLocator, NullFormatter

PALETTE = (  # matplotlib's tab10, reordered so the first two (train, val) contrast most
    "#1f77b4",
    "#d62728",
    "#2ca02c",
    "#ff7f0e",
    "#9467bd",
    "#8c564b",
    "#e377c2",
    "#7f7f7f",
    "#bcbd22",
    "#17becf",
)
STYLE = {
    "font.size": 9.5,
    "axes.titlesize": 10.5,
    "axes.titleweight": "bold",
    "axes.labelsize": 9.5,
    "axes.grid": True,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.prop_cycle": cycler(color=PALETTE),
    "grid.alpha": 0.3,
    "grid.linewidth": 0.6,
    "legend.fontsize": 8.5,
    "legend.frameon": False,
    "lines.linewidth": 1.5,
    "svg.fonttype": "none",  # text as <text>: a tenth of the size of glyph paths
    "text.parse_math": False,  # a `$` in a class or run name is text, not mathtext
}
# Event kind -> (color, line style) of its vertical lines on the step axis; checkpoints
# (one per epoch by default: dozens) are ticks on the x-axis instead, so they hide no curve.
CHECKPOINT_COLOR = "#8a8a8a"
EVENT_STYLES = {
    "early_stop": ("#d62728", "-"),
    "skip": ("#ff7f0e", "--"),
    "rollback": ("#9467bd", "--"),
    "resume": ("#2ca02c", "-."),
    "spike": ("#8c564b", ":"),
    "worker_lost": ("#e377c2", ":"),  # async_ps: a worker's process died ...
    "worker_rejoined": ("#17becf", "--"),  # ... and a spare worker took it over
}
CURVE_SIZE = (6.0, 3.2)  # inches; CSS scales the SVG to its grid cell
MAX_SCATTER_POINTS = 1000  # more points only grow the file, not what one can see


@dataclass(frozen=True)
class Series:
    """One line of a plot; ``marker`` for sparse points such as evaluations."""

    label: str
    x: Sequence[float]
    y: Sequence[float]
    marker: str | None = None
    color: str | None = None  # fixed per run in comparisons; else the style's cycle


@dataclass(frozen=True)
class Marker:
    """An event at ``x`` on the step axis (a tick for checkpoints, else a vertical line)."""

    x: float
    kind: str


@dataclass(frozen=True)
class StepAxis:
    """What every curve against steps shares: the events, and the epochs on a top axis."""

    markers: Sequence[Marker] = ()
    steps_per_epoch: int | None = None


def line_plot(
    series: Sequence[Series],
    *,
    title: str,
    xlabel: str,
    ylabel: str,
    axis: StepAxis | None = None,
    key: str,
) -> str:
    """`line_figure` as inline SVG."""
    figure = line_figure(series, title=title, xlabel=xlabel, ylabel=ylabel, axis=axis)
    return to_svg(figure, key=key, title=title)


def line_figure(
    series: Sequence[Series],
    *,
    title: str,
    xlabel: str,
    ylabel: str,
    axis: StepAxis | None = None,
) -> Figure:
    """Curves against steps (or seconds), events and epochs from ``axis``; log y for wide
    ranges."""
    axis = axis or StepAxis()
    with rc_context(STYLE):
        figure = Figure(figsize=CURVE_SIZE, layout="constrained")
        axes = figure.add_subplot()
        for item in series:
            y = [math.nan if value is None else value for value in item.y]  # null MFU …
            axes.plot(
                item.x, y, label=item.label, marker=item.marker, markersize=3.5, color=item.color
            )
        _draw_markers(axes, axis.markers)
        if axis.steps_per_epoch:
            _epoch_axis(axes, axis.steps_per_epoch)
        values = [value for item in series for value in item.y if value is not None]
        if _wants_log(values):
            axes.set_yscale("log")
            # plain "0.01" labels: with text kept as SVG text, mathtext would show raw TeX
            axes.yaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
            axes.yaxis.set_minor_formatter(NullFormatter())
        axes.set(title=title, xlabel=xlabel, ylabel=ylabel)
        if len(series) > 1 or axis.markers:
            axes.legend(loc="best")
        return figure


def confusion_plot(matrix: np.ndarray, *, class_names: Sequence[str], key: str) -> str:
    """Counts and row-normalized shares side by side (rows: true class, columns: predicted)."""
    counts = np.asarray(matrix, dtype=np.int64)
    support = counts.sum(axis=1, keepdims=True)
    shares = np.divide(counts, support, out=np.zeros(counts.shape), where=support > 0)
    size = min(max(3.2, 0.3 * len(counts) + 1.2), 8.0)  # inches per panel
    with rc_context({**STYLE, "axes.grid": False}):
        figure = Figure(figsize=(2 * size + 0.8, size), layout="constrained")
        left, right = figure.subplots(1, 2)
        _heatmap(left, counts, counts / max(counts.max(), 1), class_names, fmt="{:d}")
        left.set_title("Counts (samples)")
        image = _heatmap(right, shares, shares, class_names, fmt="{:.0%}", skip_zero=True)
        right.set_title("Row-normalized (share of true class)")
        figure.colorbar(image, ax=right, shrink=0.8, label="share of true class")
        return to_svg(figure, key=key, title="Confusion matrix")


def regression_plot(target: np.ndarray, pred: np.ndarray, *, key: str) -> str:
    """Predicted against actual (with the y = x line) and the histogram of residuals."""
    target = np.asarray(target, dtype=np.float64).reshape(len(target), -1)  # (N, k)
    pred = np.asarray(pred, dtype=np.float64).reshape(target.shape)
    shown = np.unique(np.linspace(0, len(target) - 1, MAX_SCATTER_POINTS).astype(np.int64))
    with rc_context(STYLE):
        figure = Figure(figsize=(9.0, 3.8), layout="constrained")
        scatter, histogram = figure.subplots(1, 2)
        for column in range(min(target.shape[1], len(PALETTE))):
            label = f"output {column}" if target.shape[1] > 1 else None
            scatter.scatter(
                target[shown, column], pred[shown, column], s=12, alpha=0.6, label=label
            )
        low, high = float(np.nanmin([target, pred])), float(np.nanmax([target, pred]))
        scatter.plot([low, high], [low, high], color="#555555", lw=1, ls="--", label="y = x")
        sampled = f"{len(shown)} of {len(target)}" if len(shown) < len(target) else len(target)
        scatter.set(title=f"Predicted vs actual ({sampled} samples)")
        scatter.set(xlabel="actual (target units)", ylabel="predicted (target units)")
        scatter.legend(loc="best")
        residuals = (pred - target).ravel()
        residuals = residuals[np.isfinite(residuals)]  # a diverged model's NaN outputs
        num_bins = min(40, max(10, round(math.sqrt(len(residuals)))))
        histogram.hist(residuals, bins=num_bins, color=PALETTE[0], alpha=0.85)
        histogram.axvline(0, color="#555555", lw=1, ls="--")
        histogram.set(title="Residuals", xlabel="predicted − actual (target units)")
        histogram.set(ylabel="count (samples)")
        return to_svg(figure, key=key, title="Regression predictions")


def to_svg(figure: Figure, *, key: str, title: str) -> str:
    """The figure as an ``<svg>`` element to inline in HTML, with ids unique to ``key``."""
    buffer = io.StringIO()
    # The salt seeds matplotlib's clip-path and marker ids: distinct per figure on one page.
    with rc_context({**STYLE, "svg.hashsalt": key}):
        metadata = dict.fromkeys(("Date", "Creator", "Format", "Type"))  # no RDF block
        figure.savefig(buffer, format="svg", metadata=metadata)
    svg = _compact(buffer.getvalue())
    label = title.replace("&", "&amp;").replace('"', "&quot;").replace("<", "&lt;")
    return svg.replace("<svg", f'<svg class="plot" role="img" aria-label="{label}"', 1)


def _compact(svg: str) -> str:
    """Drop what inline SVG does not need; about halves the file."""
    svg = svg[svg.index("<svg") :]  # the XML prolog and the DOCTYPE (an external DTD)
    svg = re.sub(r'\s+xmlns(:\w+)?="[^"]*"', "", svg)  # HTML's parser knows svg and xlink
    svg = re.sub(r"<defs>\s*<style[^>]*>.*?</style>\s*</defs>", "", svg, flags=re.DOTALL)
    svg = re.sub(r"font-family: [^;\"]*;?\s*", "", svg)  # the page's CSS sets one font
    svg = re.sub(r'\s*transform="rotate\(-0 [^"]*\)"', "", svg)
    # Coordinates to 1/100 pt: d, x, y and transform values only (text keeps its digits).
    svg = re.sub(r'( (?:d|x|y|transform)=")([^"]*)"', _round_numbers, svg)
    svg = re.sub(r"\n\s+", "\n", svg)
    referenced = set(re.findall(r"#([\w.-]+)", svg))
    # Ids that nothing points to (figure_1, axes_1 …) would repeat across figures.
    return re.sub(r'\sid="([^"]*)"', lambda m: m.group(0) if m.group(1) in referenced else "", svg)


def _round_numbers(match: re.Match) -> str:
    values = re.sub(r"(\d+\.\d\d)\d+", r"\1", match.group(2))
    return match.group(1) + " ".join(values.split()) + '"'  # path data spans lines


def _draw_markers(axes: Axes, markers: Sequence[Marker]) -> None:
    """One artist per kind of event, however many events: ticks or a line collection."""
    by_kind: dict[str, list[float]] = {}
    for marker in markers:
        by_kind.setdefault(marker.kind, []).append(marker.x)
    on_x_axis = axes.get_xaxis_transform()  # x in data, y in axes fraction (0 = bottom)
    for kind, xs in by_kind.items():
        label = kind.replace("_", " ")
        if kind == "checkpoint":
            axes.plot(
                xs,
                [0.0] * len(xs),
                ls="none",
                marker=2,
                markersize=7,
                mew=1.2,
                color=CHECKPOINT_COLOR,
                transform=on_x_axis,
                clip_on=False,
                label=label,
            )
            continue
        color, style = EVENT_STYLES.get(kind, ("#555555", ":"))
        axes.vlines(
            xs,
            0,
            1,
            transform=on_x_axis,
            colors=color,
            linestyles=style,
            lw=1.1,
            alpha=0.8,
            label=label,
        )


def _epoch_axis(axes: Axes, steps_per_epoch: int) -> None:
    """A top x-axis in epochs over the step axis (epoch e ends at step e x steps_per_epoch)."""
    top = axes.secondary_xaxis(
        "top",
        functions=(lambda step: step / steps_per_epoch, lambda epoch: epoch * steps_per_epoch),
    )
    top.xaxis.set_major_locator(MaxNLocator(integer=True))
    top.set_xlabel("epoch")


def _heatmap(
    axes: Axes,
    values: np.ndarray,
    shade: np.ndarray,
    names: Sequence[str],
    *,
    fmt: str,
    skip_zero: bool = False,
) -> object:
    image = axes.imshow(shade, cmap="Blues", vmin=0, vmax=1, interpolation="none")
    ticks = range(len(values))
    short = [name if len(name) <= 12 else name[:11] + "…" for name in names]
    if len(values) <= 40:  # beyond that, tick labels overlap: matplotlib picks a few
        rotated = len(values) > 6
        axes.set_xticks(
            ticks, short, rotation=45 if rotated else 0, ha="right" if rotated else "center"
        )
        axes.set_yticks(ticks, short)
    axes.set(xlabel="predicted class", ylabel="true class")
    if len(values) <= 20:  # beyond that the numbers no longer fit their cells
        for row, column in np.ndindex(values.shape):
            if skip_zero and values[row, column] == 0:
                continue  # a page of "0%" hides the shares that matter
            color = "white" if shade[row, column] > 0.55 else "#222222"
            text = fmt.format(values[row, column].item())
            axes.text(column, row, text, ha="center", va="center", fontsize=7.5, color=color)
    return image


def _wants_log(values: Sequence[float]) -> bool:
    finite = [value for value in values if math.isfinite(value)]
    if not finite or min(finite) <= 0:
        return False
    return max(finite) / min(finite) > 50
