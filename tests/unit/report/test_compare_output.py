"""`scaletrain compare` without --out writes beside the first run, not into the folder the
command happens to run in, and says where."""

from __future__ import annotations

from run_builders import digits_spec, write_run

from scaletrain.cli import main
from scaletrain.report.compare import default_compare_path


def test_compare_writes_beside_the_first_run_and_says_where(tmp_path, monkeypatch, capsys):
    runs = tmp_path / "runs"
    first = write_run(runs / "baseline", digits_spec(name="baseline"))
    second = write_run(runs / "bigger-lr", digits_spec(name="bigger-lr"))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    assert main(["compare", str(first), str(second)]) == 0
    expected = runs / "compare-baseline-vs-bigger-lr.html"
    assert expected.is_file() and "Comparison of 2 runs" in expected.read_text()
    assert list(elsewhere.iterdir()) == []  # nothing written where the command ran
    assert f"comparison: {expected}" in capsys.readouterr().err.replace("\n", "")
    assert main(["compare", str(first), str(second), "--out", "mine.html"]) == 0
    assert (elsewhere / "mine.html").is_file()  # --out still goes where it says


def test_default_name_stays_a_file_name_for_many_or_odd_runs(tmp_path):
    odd = [tmp_path / "a b:c", tmp_path / "d"]
    assert default_compare_path(odd) == tmp_path / "compare-a_b_c-vs-d.html"
    many = [tmp_path / f"run-{index:03d}-{'x' * 30}" for index in range(20)]
    path = default_compare_path(many)
    assert path.parent == tmp_path and len(path.name) < 255
    assert path.name == f"compare-run-000-{'x' * 30}-and-19-more.html"
