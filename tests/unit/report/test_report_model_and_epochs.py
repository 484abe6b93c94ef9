"""The report's Model section (model_summary.json) and the per-epoch training metrics."""

from __future__ import annotations

import json
import re

import pytest
from run_builders import EVAL_STEPS, diabetes_spec, digits_spec, read_page, write_run

from scaletrain.config import CNNConfig
from scaletrain.models import build_model, summarize_model
from scaletrain.report import write_compare, write_report
from scaletrain.report.rundata import read_run

PLOT = r'<svg class="plot" role="img" aria-label="{}".*?</svg>'


def _plot(text: str, title: str) -> str:
    match = re.search(PLOT.format(re.escape(title)), text, re.DOTALL)
    assert match, f"no plot titled {title!r}"
    return match.group(0)


def _titles(text: str) -> set[str]:
    return set(re.findall(r'<svg class="plot" role="img" aria-label="([^"]*)"', text))


@pytest.fixture(scope="module")
def cnn_summary() -> dict:
    model = build_model(
        CNNConfig(channels=[4, 8], head=[16]), input_shape=(1, 8, 8), num_outputs=10
    )
    return summarize_model(model, (1, 8, 8)).to_dict()


def test_train_vs_validation_accuracy_plot(tmp_path):
    root = write_run(tmp_path / "run", digits_spec(train_epochs=True))
    text = write_report(root).read_text()
    accuracy = _plot(text, "Training vs validation accuracy")
    assert ">train (epoch mean)<" in accuracy and ">val<" in accuracy  # the legend
    assert "Validation accuracy" not in _titles(text)  # one plot for both, not two
    assert "Validation macro averages" in _titles(text)  # val-only metrics keep their plots
    loss = _plot(text, "Loss")
    assert ">train (epoch mean)<" in loss and ">train<" in loss and ">val<" in loss


def test_regression_train_vs_validation_mae(tmp_path):
    root = write_run(tmp_path / "run", diabetes_spec(train_epochs=True))
    text = write_report(root).read_text()
    assert ">train (epoch mean)<" in _plot(text, "Training vs validation mae")


def test_train_epoch_records_are_not_an_evaluation_split(tmp_path):
    """Unfinished run: final metrics fall back to the last evaluations, train_epoch left out."""
    root = write_run(
        tmp_path / "run", digits_spec(name="going-on", finished=False, train_epochs=True)
    )
    run = read_run(root)
    assert len(run.train_epochs) == 3 and set(run.evals) == {"val"}
    assert set(run.final_metrics()) == {"val"}
    assert run.steps == EVAL_STEPS[-1]
    page = read_page(write_report(root).read_text())
    header = page.tables["final-metrics-table"][0]
    assert [cell.text for cell in header] == ["metric", "val"]
    other = write_run(tmp_path / "other", digits_spec(name="other", finished=False))
    compared = write_compare([root, other], out=tmp_path / "compare.html").read_text()
    rows = read_page(compared).tables["final-metrics-table"]
    assert not any(row[0].text.startswith("train_epoch") for row in rows)
    assert "Validation accuracy" in _titles(compared)


def test_training_metric_without_validation(tmp_path):
    spec = digits_spec(train_epochs=True)
    spec.metrics = {"test": spec.metrics["test"]}  # no val split: no val records
    text = write_report(write_run(tmp_path / "run", spec)).read_text()
    assert "Training accuracy (epoch mean)" in _titles(text)


def test_model_section_from_model_summary_json(tmp_path, cnn_summary):
    root = write_run(tmp_path / "run", digits_spec(model_summary=cnn_summary))
    text = write_report(root).read_text()
    page = read_page(text)
    assert "model" in page.ids and '<a href="#model">Model</a>' in text
    assert "Model: CNN" in text
    header, *rows = page.tables["model-summary-table"]
    assert [cell.text for cell in header] == ["layer", "type", "output shape", "parameters"]
    layers = cnn_summary["layers"]
    assert [row[1].text for row in rows] == [layer["type"] for layer in layers]
    assert [row[3].value for row in rows] == [layer["num_params"] for layer in layers]
    by_name = {layer["name"]: row for layer, row in zip(layers, rows, strict=True)}
    assert by_name["features.0.conv"][0].text == "conv"  # indented leaf name
    assert by_name["features.0.conv"][2].text == "(1, 4, 8, 8)"
    assert by_name["output"][2].text == "(1, 10)"
    assert f"<dd>{cnn_summary['num_params']:,}</dd>" in text
    assert f"<dd>{cnn_summary['flops_per_sample']:,}</dd>" in text


def test_frozen_and_failed_summaries_render(tmp_path, cnn_summary):
    failed = {
        **cnn_summary,
        "shapes_from": "unknown",
        "flops_per_sample": None,
        "note": "meta forward failed (RuntimeError: x); sample forward failed (ValueError: y)",
        "layers": [
            {**layer, "output_shapes": None, "num_trainable": 0} for layer in cnn_summary["layers"]
        ],
    }
    text = write_report(write_run(tmp_path / "run", digits_spec(model_summary=failed))).read_text()
    header, *rows = read_page(text).tables["model-summary-table"]
    assert header[-1].text == "trainable" and {row[2].text for row in rows} == {"?"}
    assert "sample forward failed (ValueError: y)" in text and "<dd>n/a</dd>" in text


def test_old_run_directory_without_model_summary(tmp_path):
    root = write_run(tmp_path / "run", digits_spec())
    assert not (root / "model_summary.json").exists()
    text = write_report(root).read_text()
    assert 'id="model"' not in text and "#model" not in text


def test_model_summary_json_is_read_as_plain_json(tmp_path, cnn_summary):
    root = write_run(tmp_path / "run", digits_spec(model_summary=cnn_summary))
    assert read_run(root).model_summary == json.loads((root / "model_summary.json").read_text())
