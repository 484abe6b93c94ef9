"""Small things a new user meets first: --version, usage lines, help titles, `config check`
listing every mistake, and Ctrl-C saying how to continue."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import scaletrain
from scaletrain.cli import main

ROOT = Path(__file__).parents[2]


def _run(capsys, *args: str) -> tuple[int, str, str]:
    capsys.readouterr()
    try:
        code = main(list(args))
    except SystemExit as exc:  # argparse's usage errors, --help, --version
        code = exc.code
    out, err = capsys.readouterr()
    return code, out, err


def test_version_names_scaletrain_and_torch():
    result = subprocess.run(
        [sys.executable, "-m", "scaletrain", "--version"], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"scaletrain {scaletrain.__version__} (torch ")
    assert f"torch {torch.__version__}," in result.stdout


def test_train_without_arguments_asks_for_the_config_only(capsys):
    code, _, err = _run(capsys, "train")
    assert code == 2
    assert err.strip().splitlines()[-1] == (
        "scaletrain train: error: the following arguments are required: config"
    )


def test_help_group_titles_keep_their_case(capsys):
    code, out, _ = _run(capsys, "train", "--help")
    assert code == 0
    assert "Distributed (through torchrun's elastic agent):" in out
    assert "Torchrun'S" not in out and "Positional arguments:" in out


def test_config_check_lists_every_error_train_stops_at_one(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "optim:\n  lrr: 1\n  lr: -1\nmodel:\n  chanels: [3]\ntrain:\n  batch_size: 0\n"
        "data:\n  num_workers: -1\n"
    )
    code, _, err = _run(capsys, "config", "check", str(bad))
    assert code == 2
    assert err.strip().splitlines() == [
        "error: data.num_workers: input should be greater than or equal to 0, got -1",
        "error: unknown key `model.chanels`; did you mean `model.channels`?",
        "error: optim.lr: input should be greater than 0, got -1",
        "error: unknown key `optim.lrr`; did you mean `optim.lr`?",
        "error: train.batch_size: input should be greater than 0, got 0",
    ]
    code, _, err = _run(capsys, "train", str(bad), f"run.out_dir={tmp_path / 'runs'}")
    assert code == 2 and len(err.strip().splitlines()) == 1  # the first of them
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("text", ["", "# only a comment\n", "\n\n"])
def test_config_check_refuses_an_empty_yaml(tmp_path, capsys, text):
    empty = tmp_path / "empty.yaml"
    empty.write_text(text)
    code, _, err = _run(capsys, "config", "check", str(empty))
    assert code == 2
    assert err.strip().splitlines() == [
        f"error: {empty}: the config is empty (or only comments); give at least one "
        "section, or `{}` to train every default"
    ]


@pytest.mark.slow  # a real process trained and interrupted: make test, not test-fast
def test_ctrl_c_says_how_to_resume(tmp_path):
    """A real SIGINT mid-training: a final checkpoint, exit 130, and the resume command."""
    run_dir = tmp_path / "runs" / "digits-cnn"
    process = subprocess.Popen(
        [sys.executable, "-m", "scaletrain", "train", str(ROOT / "configs/default.yaml")]
        + [f"run.out_dir={tmp_path / 'runs'}", "train.max_epochs=200"]
        + ["train.precision=bf16-mixed", "log.report=false", "log.tensorboard=false"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 300
    while not (run_dir / "metrics.jsonl").is_file() and time.monotonic() < deadline:
        time.sleep(0.2)
    time.sleep(1.0)  # some steps in
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=300)
    assert process.returncode == 130, err
    assert (
        f"interrupted: a final checkpoint was written; continue from this checkpoint with "
        f"`scaletrain resume {run_dir}`"
    ) in err
    assert any((run_dir / "checkpoints").glob("step_*/manifest.json"))
