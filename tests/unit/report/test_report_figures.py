"""The report's figures as objects and SVG: events drawn once per kind, the epoch axis,
MFU in percent, the class distribution per split, examples without a blank band."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from matplotlib.collections import LineCollection
from run_builders import (
    PLAN,
    diabetes_spec,
    digits_predictions,
    digits_spec,
    read_page,
    write_run,
)

from scaletrain.report import write_report
from scaletrain.report.plots import Marker, Series, StepAxis, line_figure
from scaletrain.report.sections import CAPTION_INCHES, examples_plot

NUM_CHECKPOINTS = 35


def _figure(axis: StepAxis):
    series = [Series("train", list(range(0, 700, 10)), [1.0 / (1 + x) for x in range(70)])]
    figure = line_figure(series, title="Loss", xlabel="step", ylabel="loss", axis=axis)
    return figure, figure.axes[0]


def test_checkpoints_are_one_tick_artist_and_other_events_one_collection_per_kind():
    markers = [Marker(float(20 * i), "checkpoint") for i in range(1, NUM_CHECKPOINTS + 1)]
    markers += [Marker(300.0, "early_stop"), Marker(120.0, "skip"), Marker(140.0, "skip")]
    _, axes = _figure(StepAxis(markers=markers))
    ticks = [line for line in axes.lines if line.get_label() == "checkpoint"]
    assert len(ticks) == 1 and len(ticks[0].get_xdata()) == NUM_CHECKPOINTS
    assert ticks[0].get_linestyle() == "None"  # marks on the axis, no line over the plot
    assert len(axes.lines) == 2  # the curve and the checkpoint ticks: no line per event
    collections = {c.get_label(): c for c in axes.collections if isinstance(c, LineCollection)}
    assert set(collections) == {"early stop", "skip"}
    assert len(collections["skip"].get_segments()) == 2
    legend = [text.get_text() for text in axes.get_legend().get_texts()]
    assert legend.count("checkpoint") == 1


def test_epochs_are_a_secondary_x_axis_on_top():
    figure, axes = _figure(StepAxis(steps_per_epoch=PLAN["steps_per_epoch"]))
    (top,) = axes.child_axes
    assert top.get_xlabel() == "epoch"
    figure.draw_without_rendering()  # a secondary axis takes its limits when drawn
    low, high = axes.get_xlim()
    assert top.get_xlim() == pytest.approx((low / 20, high / 20))  # step 20k = epoch k
    _, plain = _figure(StepAxis())
    assert plain.child_axes == []  # no plan, no epoch axis


def _with_mfu(root: Path) -> Path:
    """The builders' run with MFU logged (a fraction of peak, as the trainer logs it)."""
    lines = (root / "metrics.jsonl").read_text().splitlines()
    records = [json.loads(line) for line in lines]
    for record in records:
        if record.get("split") == "train":
            record["mfu"] = 0.01 + record["step"] / 2000  # 1.5 % .. 4 %
    (root / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    summary = json.loads((root / "summary.json").read_text())
    (root / "summary.json").write_text(json.dumps({**summary, "mfu": 0.0123}))
    return root


def test_mfu_is_shown_in_percent(tmp_path):
    run = _with_mfu(write_run(tmp_path / "run", digits_spec()))
    text = write_report(run).read_text(encoding="utf-8")
    assert "<dt>MFU</dt><dd>1.23 %</dd>" in text
    svg = re.search(r'aria-label="Model FLOPs utilization".*?</svg>', text, re.DOTALL).group(0)
    assert "MFU (% of peak)" in svg and "fraction" not in svg
    ticks = [float(value) for value in re.findall(r">(\d+(?:\.\d+)?)</text>", svg)]
    assert max(ticks) >= 3  # percent; fractions would stay below 0.05


def test_every_curve_has_the_epoch_axis(tmp_path):
    text = write_report(write_run(tmp_path / "run", digits_spec())).read_text(encoding="utf-8")
    section = re.search(r'<section id="curves">.*?</section>', text, re.DOTALL).group(0)
    svgs = re.findall(r"<svg .*?</svg>", section, re.DOTALL)
    assert len(svgs) >= 5 and all(">epoch<" in svg for svg in svgs)
    # 3 evaluations with a checkpoint each: ticks with one legend entry per plot
    assert all(svg.count(">checkpoint<") == 1 for svg in svgs)


def test_class_distribution_per_split(tmp_path):
    run = write_run(tmp_path / "run", digits_spec())
    train_counts = [170 + index for index in range(10)]
    spec = {"task": "classification", "num_outputs": 10, "class_counts": train_counts}
    (run / "data_spec.json").write_text(json.dumps(spec))
    page = read_page(write_report(run).read_text(encoding="utf-8"))
    assert "class-distribution" in page.ids
    header, *rows = page.tables["class-distribution-table"]
    predictions = digits_predictions()
    splits = list(predictions)
    assert [cell.text for cell in header] == ["class", "train", *splits]
    expected = {"train": train_counts}
    expected |= {s: np.bincount(p.target, minlength=10).tolist() for s, p in predictions.items()}
    columns = ["train", *splits]
    for index, row in enumerate(rows[:10]):
        assert row[0].text == str(index)
        assert [int(cell.text) for cell in row[1:]] == [expected[s][index] for s in columns]
    assert rows[10][0].text == "total"
    assert [int(cell.text) for cell in rows[10][1:]] == [sum(expected[s]) for s in columns]


def test_class_distribution_without_a_data_spec_shows_the_evaluated_splits(tmp_path):
    page = read_page(write_report(write_run(tmp_path / "run", digits_spec())).read_text())
    header, *_ = page.tables["class-distribution-table"]
    assert [cell.text for cell in header[1:]] == list(digits_predictions())


def test_regression_runs_have_no_class_distribution(tmp_path):
    page = read_page(write_report(write_run(tmp_path / "run", diabetes_spec())).read_text())
    assert "class-distribution" not in page.ids


def _size_pt(svg: str) -> tuple[float, float]:
    width = float(re.search(r'width="([\d.]+)pt"', svg).group(1))
    height = float(re.search(r'height="([\d.]+)pt"', svg).group(1))
    return width, height


def test_examples_have_no_blank_band_above_the_captions(tmp_path):
    images = np.random.default_rng(0).random((3, 1, 8, 8))
    svg = examples_plot(images, titles=["true 9\npred 5"] * 3, key="examples")
    width, height = _size_pt(svg)
    image_pt = width / 3 * 8 / 10  # 8 of a cell's 10 pixels (8 + a 2-pixel gap)
    caption_pt = height - image_pt
    # the band holds two lines of 8 pt text: it was 3/4 of an image (6 px of 14: 47 pt)
    assert caption_pt <= CAPTION_INCHES * 72 + image_pt / 8 + 0.5
    assert caption_pt >= 2 * 8  # and still room for the two lines
    text = write_report(write_run(tmp_path / "run", digits_spec())).read_text(encoding="utf-8")
    block = re.search(r'<div id="misclassified">.*?</div>', text, re.DOTALL).group(0)
    assert '<figure class="natural">' in block  # shown at its own size, not stretched
