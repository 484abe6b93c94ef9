"""report.html against scikit-learn on real predictions; self-contained; unfinished and copied runs."""

from __future__ import annotations

import json
import math
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from run_builders import (
    EVAL_STEPS,
    Page,
    Predictions,
    RunSpec,
    classification_metrics,
    diabetes_predictions,
    diabetes_spec,
    digits_predictions,
    digits_spec,
    eval_metrics_at,
    read_page,
    write_run,
)
from sklearn.metrics import (
    classification_report,
    confusion_matrix,
    mean_absolute_error,
    mean_squared_error,
    r2_score,
)

from scaletrain.errors import UserError
from scaletrain.report import write_report

SHOWN = 0.5e-4 + 1e-12  # cells show 4 decimals
STORED = 1e-12  # data-value keeps the float64 (torchmetrics vs scikit-learn summation order)
MAX_REPORT_BYTES = 400_000


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory) -> Path:
    return write_run(tmp_path_factory.mktemp("runs") / "digits", digits_spec())


@pytest.fixture(scope="module")
def digits_report(digits_run) -> tuple[str, Page]:
    text = write_report(digits_run).read_text(encoding="utf-8")
    return text, read_page(text)


def _number(text: str) -> float:
    return float(text.rstrip("%"))


def _assert_report_matches(page: Page, target, pred, names: list[str]) -> None:
    """Every cell of the classification-report table against scikit-learn's report."""
    expected = classification_report(
        target, pred, target_names=names, output_dict=True, zero_division=0
    )
    header, *rows = page.tables["classification-report"]
    assert [cell.text for cell in header] == ["class", "precision", "recall", "f1-score", "support"]
    assert [row[0].text for row in rows] == [*names, "accuracy", "macro avg", "weighted avg"]
    for row in rows:
        label = row[0].text
        if label == "accuracy":
            assert row[1].text == row[2].text == ""
            assert _number(row[3].text) == pytest.approx(expected["accuracy"], abs=SHOWN)
            assert row[3].value == pytest.approx(expected["accuracy"], abs=STORED)
            assert int(row[4].text) == len(target)
            continue
        for cell, key in zip(row[1:4], ("precision", "recall", "f1-score"), strict=True):
            assert _number(cell.text) == pytest.approx(expected[label][key], abs=SHOWN), (
                label,
                key,
            )
            assert cell.value == pytest.approx(expected[label][key], abs=STORED), (label, key)
        assert int(row[4].text) == expected[label]["support"]


def test_classification_report_equals_sklearn_on_digits(digits_report):
    predictions = digits_predictions()["test"]
    _, page = digits_report
    assert (predictions.pred != predictions.target).sum() > 10  # a report worth checking
    _assert_report_matches(page, predictions.target, predictions.pred, [str(i) for i in range(10)])


def test_confusion_matrix_counts_equal_sklearn(digits_report):
    predictions = digits_predictions()["test"]
    text, page = digits_report
    header, *rows = page.tables["confusion-matrix-counts"]
    shown = np.array([[int(cell.text) for cell in row[1:]] for row in rows])
    np.testing.assert_array_equal(shown, confusion_matrix(predictions.target, predictions.pred))
    assert text.index('id="confusion-matrix"') < text.index('id="confusion-matrix-counts"')
    assert 'aria-label="Confusion matrix"' in text


def test_top_confused_pairs_are_the_largest_off_diagonal_counts(digits_report):
    predictions = digits_predictions()["test"]
    matrix = confusion_matrix(predictions.target, predictions.pred)
    np.fill_diagonal(matrix, 0)
    _, page = digits_report
    _, *rows = page.tables["confused-pairs"]
    shown = [(int(row[0].text), int(row[1].text), int(row[2].text)) for row in rows]
    assert shown[0][2] == matrix.max()
    assert all(matrix[true, predicted] == count for true, predicted, count in shown)
    assert [count for *_, count in shown] == sorted(matrix.ravel(), reverse=True)[: len(shown)]


def test_report_is_self_contained_and_small(digits_run, digits_report):
    text, page = digits_report
    assert page.references, "expected inline images and in-page links"
    for tag, attribute, value in page.references:
        assert value.startswith(("#", "data:")), f"<{tag} {attribute}={value[:60]!r}>"
    assert "http://" not in text and "https://" not in text
    assert all(value.startswith("#") for value in re.findall(r"url\(([^)]*)\)", text))
    assert not {"script", "link", "iframe", "object", "embed"} & set(page.tags)
    assert "Content-Security-Policy" in text
    size = (digits_run / "report.html").stat().st_size
    assert size < MAX_REPORT_BYTES, f"report.html is {size / 1000:.0f} KB"


def test_report_has_every_section_and_curve(digits_report):
    text, page = digits_report
    expected_ids = {
        "curves",
        "confusion-matrix",
        "classification-report",
        "final-metrics",
        "misclassified",
        "events",
    }
    assert expected_ids <= page.ids
    assert "regression" not in page.ids
    titles = set(re.findall(r'<svg class="plot" role="img" aria-label="([^"]*)"', text))
    assert {
        "Loss",
        "Learning rate",
        "Gradient norm",
        "Throughput",
        "Memory",
        "Validation accuracy",
        "Validation macro averages",
        "Validation weighted averages",
    } <= titles
    assert "Model FLOPs utilization" not in titles  # every logged mfu is null on CPU
    loss_svg = re.search(r'aria-label="Loss".*?</svg>', text, re.DOTALL).group(0)
    assert ">skip<" in loss_svg and ">checkpoint<" in loss_svg  # events marked on the axis


def test_header_shows_run_facts_and_collapsible_config(digits_run, digits_report):
    text, _ = digits_report
    assert "<h1>digits-run" in text and ">finished</span>" in text
    for fact in ("wall time", "world size", "cpu", "torch version", "2.13.0", "optim.lr"):
        assert fact in text
    config = (digits_run / "config.yaml").read_text()
    assert "<details><summary>Resolved config (config.yaml)</summary><pre>" in text
    assert config.replace("'", "&#x27;").replace('"', "&quot;") in text


def test_final_metrics_table_is_summary_json(digits_run, digits_report):
    summary = json.loads((digits_run / "summary.json").read_text())
    _, page = digits_report
    header, *rows = page.tables["final-metrics-table"]
    assert [cell.text for cell in header] == ["metric", "val", "test"]
    for row in rows:
        for cell, split in zip(row[1:], ("val", "test"), strict=True):
            assert cell.value == summary["metrics"][split][row[0].text]


def test_imbalanced_never_predicted_class_and_escaped_names(tmp_path):
    """zero_division=0 as scikit-learn; names from files are escaped, `$` is not math."""
    rng = np.random.default_rng(0)
    target = np.repeat([0, 1, 2, 3], [50, 30, 15, 5])
    pred = target.copy()
    pred[target == 3] = 2  # the rare class is never predicted
    flip = rng.choice(95, size=12, replace=False)
    pred[flip] = (target[flip] + 1) % 3
    names = ["cat <b>", "dog & co", "$bird$", "<script>alert(1)</script>"]
    spec = RunSpec(
        name="<img src=x onerror=alert(1)>",
        metrics={"test": {"loss": 0.5, **classification_metrics(target, pred, 4)}},
        predictions={"test": Predictions(target=target, pred=pred)},
        class_names=names,
    )
    text = write_report(write_run(tmp_path / "imbalanced", spec)).read_text()
    page = read_page(text)
    _assert_report_matches(page, target, pred, names)
    assert "<script" not in text and "<img" not in text and "<b>" not in text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in text
    assert "$bird$" in text  # drawn as text in the confusion-matrix ticks


def test_unfinished_run_with_truncated_last_line(tmp_path):
    spec = digits_spec(name="crashed", finished=False)
    root = write_run(tmp_path / "crashed", spec)
    shutil.rmtree(root / "predictions")
    lines = (root / "metrics.jsonl").read_text().splitlines()
    kept = [line for line in lines if json.loads(line)["step"] <= EVAL_STEPS[1]]
    next_line = lines[len(kept)]
    (root / "metrics.jsonl").write_text("\n".join(kept) + "\n" + next_line[:25])
    text = write_report(root).read_text()
    page = read_page(text)
    assert ">interrupted/unfinished</span>" in text and "wall time (so far)" in text
    assert "<dd>40 of 60</dd>" in text  # steps: the last one logged, of the plan's total
    last_val = eval_metrics_at(spec, "val", EVAL_STEPS[1])
    rows = {row[0].text: row for row in page.tables["classification-report"][1:]}
    assert rows["accuracy"][3].value == pytest.approx(last_val["accuracy"], abs=STORED)
    assert rows["macro avg"][3].value == pytest.approx(last_val["f1_macro"], abs=STORED)
    assert "Classification — val split" in text
    assert {"curves", "confusion-matrix", "classification-report"} <= page.ids


def test_copied_run_dir_gives_the_same_tables(digits_run, digits_report, tmp_path):
    copy = shutil.copytree(digits_run, tmp_path / "moved" / "elsewhere")
    (copy / "report.html").unlink()
    written = write_report(copy, out=tmp_path / "custom.html")
    assert written == tmp_path / "custom.html" and not (copy / "report.html").exists()
    _, original = digits_report
    page = read_page(written.read_text())
    for table_id in ("classification-report", "confusion-matrix-counts", "final-metrics-table"):
        assert page.tables[table_id] == original.tables[table_id]


def test_regression_metrics_equal_sklearn(tmp_path):
    predictions = diabetes_predictions()["test"]
    text = write_report(write_run(tmp_path / "diabetes", diabetes_spec())).read_text()
    page = read_page(text)
    assert "regression" in page.ids and "classification" not in page.ids
    header, *rows = page.tables["regression-metrics"]
    column = [cell.text for cell in header].index("test")
    shown = {row[0].text: row[column] for row in rows}
    mse = mean_squared_error(predictions.target, predictions.pred)
    expected = {
        "mse": mse,
        "rmse": math.sqrt(mse),
        "r2": r2_score(predictions.target, predictions.pred),
        "mae": mean_absolute_error(predictions.target, predictions.pred),
    }
    for name, value in expected.items():
        assert shown[name].value == pytest.approx(value, rel=1e-9), name
        assert _number(shown[name].text) == pytest.approx(value, abs=SHOWN), name
    assert int(shown["num_samples"].text) == len(predictions.target)
    assert 'aria-label="Regression predictions"' in text


def test_missing_or_non_run_directory_raises_user_error(tmp_path):
    missing = tmp_path / "nope"
    with pytest.raises(UserError, match=re.escape(str(missing))):
        write_report(missing)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(
        UserError, match=re.escape(f"not a run directory: {empty} (no config.yaml)")
    ):
        write_report(empty)


def test_corrupt_middle_line_names_file_and_line(digits_run, tmp_path):
    copy = shutil.copytree(digits_run, tmp_path / "corrupt")
    lines = (copy / "metrics.jsonl").read_text().splitlines()
    lines[2] = lines[2][:10]
    (copy / "metrics.jsonl").write_text("\n".join(lines) + "\n")
    with pytest.raises(
        UserError, match=re.escape(f"{copy / 'metrics.jsonl'}:3: not a JSON record")
    ):
        write_report(copy)
