"""compare.html: overlaid curves, final metrics per run, and only the config keys that differ."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml
from run_builders import digits_spec, read_page, write_run

from scaletrain.errors import UserError
from scaletrain.report import write_compare
from scaletrain.report.compare import flatten


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory) -> list[Path]:
    root = tmp_path_factory.mktemp("runs")
    baseline = write_run(root / "baseline", digits_spec(name="baseline"))
    changed = digits_spec(name="bigger-lr", overrides=["optim.lr=0.01", "model.channels=[16]"])
    changed.finished = False  # unfinished: its numbers come from metrics.jsonl
    changed.seconds_per_step = 0.2
    return [baseline, write_run(root / "bigger-lr", changed)]


@pytest.fixture(scope="module")
def compared(two_runs, tmp_path_factory) -> str:
    out = tmp_path_factory.mktemp("out") / "compare.html"
    assert write_compare(two_runs, out=out) == out
    return out.read_text(encoding="utf-8")


def test_config_diff_lists_exactly_the_differing_keys(two_runs, compared):
    page = read_page(compared)
    header, *rows = page.tables["config-diff-table"]
    assert [cell.text for cell in header] == ["config key", "baseline", "bigger-lr"]
    shown = {row[0].text: [cell.text for cell in row[1:]] for row in rows}
    assert shown == {
        "run.name": ["baseline", "bigger-lr"],
        "model.channels": ["[32, 64]", "[16]"],
        "optim.lr": ["0.001", "0.01"],
    }
    # the same answer from the two config.yaml files, key by key
    flats = [flatten(yaml.safe_load((run / "config.yaml").read_text())) for run in two_runs]
    assert set(shown) == {key for key in flats[0] if flats[0][key] != flats[1][key]}


def test_identical_configs_say_so(two_runs, tmp_path):
    out = write_compare([two_runs[0], two_runs[0]], out=tmp_path / "same.html")
    text = out.read_text()
    assert "The resolved configs are identical." in text
    # two runs with one name are told apart by their directory
    assert f"{two_runs[0]} #1" in text and f"{two_runs[0]} #2" in text


def test_final_metrics_per_run(two_runs, compared):
    page = read_page(compared)
    header, *rows = page.tables["final-metrics-table"]
    assert [cell.text for cell in header] == ["", "baseline", "bigger-lr"]
    by_name = {row[0].text: row[1:] for row in rows}
    summary = json.loads((two_runs[0] / "summary.json").read_text())
    for name in ("loss", "accuracy", "f1_macro", "recall_weighted"):
        assert by_name[f"val.{name}"][0].value == summary["metrics"]["val"][name]
        assert by_name[f"test.{name}"][0].value == summary["metrics"]["test"][name]
    last_val = [json.loads(line) for line in (two_runs[1] / "metrics.jsonl").open()]
    last_val = [record for record in last_val if record.get("split") == "val"][-1]
    assert by_name["val.accuracy"][1].value == last_val["metrics"]["accuracy"]
    assert by_name["test.accuracy"][1].text == "—"  # the unfinished run never reached test
    assert [cell.text for cell in by_name["status"]] == ["finished", "interrupted/unfinished"]
    assert [cell.value for cell in by_name["steps"]] == [60, 60]  # summary, last logged step


def test_curves_overlay_every_run(compared):
    page = read_page(compared)
    assert {"curves", "final-metrics", "config-diff", "runs"} <= page.ids
    titles = re.findall(r'<svg class="plot" role="img" aria-label="([^"]*)"', compared)
    assert {"Train loss", "Validation loss", "Validation accuracy", "Learning rate"} <= set(titles)
    loss_svg = re.search(r'aria-label="Train loss".*?</svg>', compared, re.DOTALL).group(0)
    assert ">baseline<" in loss_svg and ">bigger-lr<" in loss_svg  # legend entries
    assert "step (optimizer updates)" in loss_svg


def test_align_by_time_uses_seconds(two_runs, tmp_path):
    text = write_compare(two_runs, out=tmp_path / "time.html", align="time").read_text()
    assert "Curves (aligned by time)" in text and "wall time since start (s)" in text
    with pytest.raises(UserError, match="--align: expected one of step, time, got 'epoch'"):
        write_compare(two_runs, out=tmp_path / "bad.html", align="epoch")


def test_compare_page_is_self_contained(compared):
    page = read_page(compared)
    for tag, attribute, value in page.references:
        assert value.startswith(("#", "data:")), f"<{tag} {attribute}={value[:60]!r}>"
    assert "http://" not in compared and "https://" not in compared
    assert "script" not in page.tags


def test_a_non_run_directory_is_named(two_runs, tmp_path):
    empty = tmp_path / "not-a-run"
    empty.mkdir()
    message = re.escape(f"not a run directory: {empty} (no config.yaml)")
    with pytest.raises(UserError, match=message):
        write_compare([two_runs[0], empty], out=tmp_path / "x.html")
    with pytest.raises(UserError, match="at least one run directory"):
        write_compare([], out=tmp_path / "x.html")
    assert not (tmp_path / "x.html").exists()
