"""The evaluation sections of the report: classification and regression.

Table numbers are the metric dicts of ``summary.json`` (or the last evaluation record),
never recomputed here; prediction arrays only draw the scatter plot and the examples.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from matplotlib import rc_context
from matplotlib.figure import Figure

from scaletrain.report.page import Markup, figure, note, section, table
from scaletrain.report.plots import STYLE, confusion_plot, regression_plot, to_svg
from scaletrain.report.rundata import RunData

NUM_CONFUSED_PAIRS = 10
NUM_EXAMPLES = 16
EXAMPLE_INCHES = 1.1  # width of one example with its gap
CAPTION_INCHES = 2 * 8 * 1.2 / 72 + 0.04  # two lines of 8 pt text, line spacing 1.2
REGRESSION_KEYS = ("loss", "mse", "mae", "rmse", "r2", "num_samples")


def classification_section(run: RunData) -> Markup:
    """Confusion matrices, the per-class report with averages, top confusions, examples."""
    split, metrics = _pick_split(run, required="confusion_matrix")
    if metrics is None:
        return section("classification", "Classification", [note("No evaluation recorded yet.")])
    confusion = np.asarray(metrics["confusion_matrix"], dtype=np.int64)  # rows: true class
    names = _class_names(run, len(confusion))
    title = f"Classification — {split} split ({int(confusion.sum())} samples)"
    matrix_table = table(
        ["true \\ predicted", *names],
        [[name, *row] for name, row in zip(names, confusion.tolist(), strict=True)],
        table_id="confusion-matrix-counts",
    )  # C² cells: 100 classes add about 0.3 MB
    matrix = (
        f'<div id="confusion-matrix"><h3>Confusion matrix</h3>'
        f"{figure(confusion_plot(confusion, class_names=names, key='confusion'), wide=True)}"
        f"<details><summary>Counts as a table</summary>{matrix_table}</details></div>"
    )
    body = [
        Markup(matrix),
        Markup('<div class="columns"><div><h3>Classification report</h3>'),
        classification_report_table(metrics, names),
        Markup("</div><div><h3>Top confused pairs</h3>"),
        confused_pairs_table(confusion, names),
        Markup("</div></div>"),
        _examples(run, split, names),
    ]
    return section("classification", title, body)


def classification_report_table(metrics: dict[str, Any], names: list[str]) -> Markup:
    """Per-class precision/recall/F1/support plus accuracy, macro and weighted averages."""
    per_class = metrics["per_class"]
    rows: list[list[object]] = [
        [name, precision, recall, f1, int(support)]
        for name, precision, recall, f1, support in zip(
            names,
            per_class["precision"],
            per_class["recall"],
            per_class["f1"],
            per_class["support"],
            strict=True,
        )
    ]
    total = int(sum(per_class["support"]))
    blank = Markup("")
    rows.append(["accuracy", blank, blank, metrics["accuracy"], total])
    for average in ("macro", "weighted"):
        scores = [metrics[f"{name}_{average}"] for name in ("precision", "recall", "f1")]
        rows.append([f"{average} avg", *scores, total])
    row_classes = [""] * len(names) + ["summary-row first-summary-row"] + ["summary-row"] * 2
    return table(
        ["class", "precision", "recall", "f1-score", "support"],
        rows,
        table_id="classification-report",
        row_classes=row_classes,
    )


def confused_pairs_table(confusion: np.ndarray, names: list[str]) -> Markup:
    """The largest off-diagonal counts: which true class is taken for which."""
    off_diagonal = confusion.copy()
    np.fill_diagonal(off_diagonal, 0)
    order = np.argsort(-off_diagonal, axis=None, kind="stable")[:NUM_CONFUSED_PAIRS]
    support = confusion.sum(axis=1)
    rows = []
    for true, predicted in zip(*np.unravel_index(order, confusion.shape), strict=True):
        count = int(off_diagonal[true, predicted])
        if count == 0:
            break
        share = f"{count / support[true]:.1%}"
        rows.append([names[true], names[predicted], count, Markup(share)])
    if not rows:
        return note("No confusions: every sample was classified correctly.")
    return table(
        ["true class", "predicted as", "count", "share of true class"],
        rows,
        table_id="confused-pairs",
    )


def regression_section(run: RunData) -> Markup:
    """MSE/MAE/RMSE/R² per split, predicted vs actual and the residual histogram."""
    metrics = {split: values for split, values in run.final_metrics().items() if "mse" in values}
    if not metrics:
        return section("regression", "Regression", [note("No evaluation recorded yet.")])
    rows = [[key, *(values.get(key) for values in metrics.values())] for key in REGRESSION_KEYS]
    body: list[str] = [table(["metric", *metrics], rows, table_id="regression-metrics")]
    split, _ = _pick_split(run, required="mse")
    arrays = run.predictions(split)
    if arrays is not None and {"target", "pred"} <= arrays.keys() and len(arrays["target"]):
        svg = regression_plot(arrays["target"], arrays["pred"], key="regression")
        body.append(figure(svg, caption=f"{split} split (predictions/{split}.npz)", wide=True))
    else:
        body.append(note(f"No predictions/{split}.npz: the scatter plot needs it."))
    return section("regression", "Regression", body)


def _examples(run: RunData, split: str, names: list[str]) -> Markup:
    arrays = run.predictions(split)
    if arrays is None or "input" not in arrays or arrays["input"].ndim != 4:
        return Markup("")
    wrong = np.flatnonzero(arrays["pred"] != arrays["target"])[:NUM_EXAMPLES]
    if len(wrong) == 0:
        return Markup("")
    images = _displayable(arrays["input"][wrong], arrays.get("input_mean"), arrays.get("input_std"))
    titles = [f"true {names[arrays['target'][i]]}\npred {names[arrays['pred'][i]]}" for i in wrong]
    svg = examples_plot(images, titles=titles, key="examples")
    caption = f"The first {len(wrong)} misclassified {split} samples (predictions/{split}.npz)."
    return Markup(
        f'<div id="misclassified"><h3>Misclassified examples</h3>'
        f"{figure(svg, caption=caption, natural=True)}</div>"
    )


def examples_plot(images: np.ndarray, *, titles: Sequence[str], key: str) -> str:
    """Input images (N, C, H, W) scaled to [0, 1] in one mosaic, a caption above each.

    The caption band is as tall as its two lines of text, not a fixed share of the image
    (it was 3/4 of an image's height: a blank band above 8x8 digits), and the page shows
    the mosaic at its own size (``figure(natural=True)``), never stretched to the width.
    """
    num_images, channels, height, width = images.shape
    num_columns = min(8, num_images)
    num_rows = math.ceil(num_images / num_columns)
    # One imshow for all images: sixteen small axes take ten times as long to lay out.
    gap = max(1, width // 4)  # in image pixels
    cell_width = width + gap
    inches_per_pixel = EXAMPLE_INCHES / cell_width
    caption = math.ceil(CAPTION_INCHES / inches_per_pixel)  # two lines of 8 pt, in pixels
    cell_height = caption + height
    rgb = channels == 3
    shape = (num_rows * cell_height, num_columns * cell_width)
    mosaic = np.ones((*shape, 3)) if rgb else np.zeros(shape)  # white either way
    for index, image in enumerate(images):
        top = index // num_columns * cell_height + caption
        left = index % num_columns * cell_width
        tile = np.transpose(image, (1, 2, 0)) if rgb else image[0]
        mosaic[top : top + height, left : left + width] = tile
    with rc_context({**STYLE, "axes.grid": False}):
        figure = Figure(figsize=(shape[1] * inches_per_pixel, shape[0] * inches_per_pixel))
        axes = figure.add_axes((0, 0, 1, 1))
        # ink is high in digits: gray_r draws it dark on white
        axes.imshow(mosaic, cmap="gray_r", vmin=0, vmax=1, interpolation="none")
        axes.set_axis_off()
        for index, text in enumerate(titles):
            x = index % num_columns * cell_width + width / 2 - 0.5
            y = index // num_columns * cell_height + caption - 0.6
            axes.text(x, y, text, ha="center", va="bottom", fontsize=8, color="#b22222")
        return to_svg(figure, key=key, title="Misclassified examples")


def _displayable(images: np.ndarray, mean: Any, std: Any) -> np.ndarray:
    """Undo the preprocessing when its statistics were saved, then scale each image to [0, 1]."""
    images = images.astype(np.float64)  # (N, C, H, W)
    if mean is not None and std is not None:
        shape = _statistics_shape(np.size(mean), images.shape[1:])
        if shape is not None:
            images = images * np.reshape(std, shape) + np.reshape(mean, shape)
    low = images.min(axis=(1, 2, 3), keepdims=True)
    span = images.max(axis=(1, 2, 3), keepdims=True) - low
    return (images - low) / np.where(span > 0, span, 1.0)


def _statistics_shape(size: int, sample_shape: tuple[int, ...]) -> tuple[int, ...] | None:
    """Per-channel or per-pixel statistics broadcast over (N, C, H, W); else unknown."""
    if size in (1, sample_shape[0]):
        return (1, size, 1, 1)
    if size == int(np.prod(sample_shape)):
        return (1, *sample_shape)
    return None


def _pick_split(run: RunData, *, required: str) -> tuple[str, dict[str, Any] | None]:
    """The test split when it was evaluated, else validation."""
    metrics = run.final_metrics()
    for split in ("test", "val", *metrics):
        if required in metrics.get(split, {}):
            return split, metrics[split]
    return "test", None


def _class_names(run: RunData, num_classes: int) -> list[str]:
    names = run.class_names
    if names is None or len(names) != num_classes:
        return [str(index) for index in range(num_classes)]
    return names
