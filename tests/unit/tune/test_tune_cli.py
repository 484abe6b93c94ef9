"""`scaletrain tune` refuses bad input in one line, exit 2, before any trial or file."""

from __future__ import annotations

import importlib.util
import json

import yaml

from scaletrain.cli import main


def refuse(argv: list[str], capsys) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err, err
    return err


def test_a_space_key_the_config_lacks_is_one_line_and_no_study(tiny_config, tmp_path, capsys):
    config, space = tmp_path / "c.json", tmp_path / "space.yaml"
    config.write_text(json.dumps(tiny_config))
    space.write_text(yaml.safe_dump({"optim.lrate": {"type": "float", "low": 0.1, "high": 1}}))
    study = tmp_path / "study"
    err = refuse(
        ["tune", str(config), "--space", str(space), "--trials", "2", "--out", str(study)], capsys
    )
    assert f"{space}: optim.lrate=0.1" in err
    assert not study.exists()


def test_tune_options_are_checked_first(tiny_config, tmp_path, capsys):
    config, space = tmp_path / "c.json", tmp_path / "space.yaml"
    config.write_text(json.dumps(tiny_config))
    space.write_text(yaml.safe_dump({"optim.lr": {"type": "float", "low": 0.001, "high": 0.1}}))
    base = ["tune", str(config), "--space", str(space), "--out", str(tmp_path / "s")]
    assert "missing --trials" in refuse(base, capsys)
    assert "--metric: expected a validation metric" in refuse(
        [*base, "--trials", "2", "--metric", "test.accuracy"], capsys
    )
    assert "--sampler grid needs a step" in refuse(
        [*base, "--trials", "2", "--sampler", "grid"], capsys
    )
    if importlib.util.find_spec("cmaes") is None:  # not installed here (optuna's extra)
        assert "needs the cmaes package" in refuse(
            [*base, "--trials", "2", "--sampler", "cmaes"], capsys
        )
    assert "no such study directory" in refuse(["tune", "--resume", str(tmp_path / "x")], capsys)
    assert not (tmp_path / "s").exists()


def test_help_names_the_options(capsys):
    for command, option in (("tune", "--trial-nproc"), ("lr-find", "--max-lr")):
        try:
            main([command, "--help"])
        except SystemExit as exit_:
            assert exit_.code == 0
        assert option in capsys.readouterr().out
