"""Class distribution per split: counts and shares of each class in train, val and test.

Train counts are ``data_spec.json``'s ``class_counts`` (taken on the train split); val and
test counts are the per-class support of their evaluation (``summary.json``, else the last
evaluation record), else the targets of ``predictions/<split>.npz``. Imbalance, or a class
missing from one split, shows here before anyone reads a per-class score.
"""

from __future__ import annotations

import numpy as np
from matplotlib import rc_context
from matplotlib.figure import Figure
from matplotlib.ticker import PercentFormatter

from scaletrain.report.page import Markup, figure, note, section, table
from scaletrain.report.plots import PALETTE, STYLE, to_svg
from scaletrain.report.rundata import RunData

MAX_PLOTTED_CLASSES = 40  # beyond that the bars are too thin to read: the table stays


def class_counts(run: RunData) -> dict[str, list[int]]:
    """Split -> samples per class, for the splits whose counts the run directory holds."""
    counts: dict[str, list[int]] = {}
    train = run.data_spec.get("class_counts")
    if isinstance(train, list) and train:
        counts["train"] = [int(count) for count in train]
    metrics = run.final_metrics()
    for split in ("val", "test"):
        support = (metrics.get(split, {}).get("per_class") or {}).get("support")
        if isinstance(support, list) and support:
            counts[split] = [int(count) for count in support]
            continue
        arrays = run.predictions(split)
        if arrays is not None and "target" in arrays and arrays["target"].ndim == 1:
            counts[split] = np.bincount(arrays["target"].astype(np.int64)).tolist()
    num_classes = max((len(values) for values in counts.values()), default=0)
    return {split: values + [0] * (num_classes - len(values)) for split, values in counts.items()}


def class_distribution_section(run: RunData) -> Markup:
    counts = class_counts(run)
    if not counts:
        return Markup("")
    num_classes = len(next(iter(counts.values())))
    names = run.class_names or []
    names = names if len(names) == num_classes else [str(index) for index in range(num_classes)]
    totals = {split: sum(values) for split, values in counts.items()}
    rows = [[name, *(counts[split][index] for split in counts)] for index, name in enumerate(names)]
    rows.append(["total", *totals.values()])
    counts_table = table(
        ["class", *counts],
        rows,
        table_id="class-distribution-table",
        row_classes=[""] * num_classes + ["summary-row first-summary-row"],
    )
    if num_classes > MAX_PLOTTED_CLASSES:
        shown = note(f"{num_classes} classes: too many bars to read; the table has them all.")
    else:
        svg = distribution_plot(counts, class_names=names, key="class-distribution")
        shown = figure(svg, caption="Share of each split's samples per class.", natural=True)
    body = [Markup('<div class="columns"><div>'), shown, Markup("</div><div>")]
    body += [counts_table, Markup("</div></div>")]
    return section("class-distribution", "Class distribution", body)


def distribution_plot(counts: dict[str, list[int]], *, class_names: list[str], key: str) -> str:
    """Grouped bars: per class, the share of each split's samples (splits differ in size)."""
    splits = list(counts)
    positions = np.arange(len(class_names))
    width = 0.8 / len(splits)
    with rc_context(STYLE):
        chart = Figure(figsize=(max(4.5, 0.35 * len(class_names) + 1.5), 2.8), layout="constrained")
        axes = chart.add_subplot()
        for index, split in enumerate(splits):
            values = np.asarray(counts[split], dtype=np.float64)
            shares = values / max(values.sum(), 1.0)
            offset = (index - (len(splits) - 1) / 2) * width
            axes.bar(positions + offset, shares, width, label=split, color=PALETTE[index])
        axes.set_xticks(positions, class_names, rotation=45 if len(class_names) > 12 else 0)
        axes.yaxis.set_major_formatter(PercentFormatter(1.0, decimals=0))
        axes.set(title="Class distribution per split", xlabel="class", ylabel="share of split")
        axes.set_ylim(0, 1.3 * axes.get_ylim()[1])  # room for the legend above the bars
        axes.legend(loc="upper center", ncol=len(splits))
        return to_svg(chart, key=key, title="Class distribution per split")
