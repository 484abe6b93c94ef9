"""The CLI as a user runs it: real subprocesses, real files."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).parents[2]


def scaletrain(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "scaletrain", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=600,
    )


def scaletrain_in_process(capsys, *args: str) -> tuple[int, str, str]:
    """The same `main` the console script runs, without paying the import per command."""
    from scaletrain.cli import main

    capsys.readouterr()
    try:
        code = main(list(args))
    except SystemExit as exc:  # argparse's --help and usage errors
        code = exc.code
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize(
    ("override", "culprit"),
    [
        ("optim.lrr=1", "optim.lrr"),
        ("optim.lr=-1", "optim.lr"),
        ("train.precision=16-mixed", "train.precision"),
        ("model.name=resnet9000", "model.name"),
        ("data.name=nope", "data.name"),
    ],
)
def test_bad_config_exits_2_with_one_line(tmp_path, capsys, override, culprit):
    code, _, err = scaletrain_in_process(
        capsys,
        "train",
        str(ROOT / "configs/default.yaml"),
        f"run.out_dir={tmp_path}",
        override,
        "train.device=cpu",
    )
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and culprit in lines[0], err
    assert not any(tmp_path.iterdir()), "a failed config left a run directory behind"


def test_bad_config_exit_code_of_the_real_process(tmp_path):
    result = scaletrain("train", str(ROOT / "configs/default.yaml"), "optim.lrr=1")
    assert result.returncode == 2 and result.stderr.strip().splitlines() == [
        "error: unknown key `optim.lrr`; did you mean `optim.lr`?"
    ], result.stderr


def test_config_show_and_check(tmp_path, capsys):
    code, out, err = scaletrain_in_process(
        capsys, "config", "show", str(ROOT / "configs/default.yaml"), "optim.lr=0.5"
    )
    assert code == 0, err
    resolved = yaml.safe_load(out)
    assert resolved["optim"]["lr"] == 0.5 and resolved["train"]["precision"] == "auto"
    bad = tmp_path / "bad.yaml"
    bad.write_text("optim:\n  lrr: 1\n")
    code, _, err = scaletrain_in_process(capsys, "config", "check", str(bad))
    assert code == 2 and "optim.lrr" in err


@pytest.mark.parametrize(
    "kind", ["models", "datasets", "optimizers", "schedules", "losses", "inits"]
)
def test_list(capsys, kind):
    code, out, err = scaletrain_in_process(capsys, "list", kind)
    assert code == 0, err
    expected = {
        "models": "textcnn",
        "datasets": "digits",
        "optimizers": "rmsprop",
        "schedules": "onecycle",
        "losses": "huber",
        "inits": "orthogonal",
    }[kind]
    assert expected in out


def test_help_on_every_command(capsys):
    commands = ("train", "resume", "eval", "predict", "config", "list", "report", "compare")
    for command in (*commands, "export", "prepare", "plan", "summary"):
        code, out, _ = scaletrain_in_process(capsys, command, "--help")
        assert code == 0 and "usage" in out.lower(), command
    result = scaletrain("--help")  # and once through `python -m scaletrain`
    assert result.returncode == 0 and "train" in result.stdout


@pytest.mark.slow  # end-to-end (or several processes): make test, not test-fast
def test_default_config_trains_eval_and_predict(tmp_path):
    """`make run`'s config reaches >= 0.97 test accuracy; eval/predict reuse the run."""
    result = scaletrain(
        "train", str(ROOT / "configs/default.yaml"), "--out", str(tmp_path), "log.report=false"
    )
    assert result.returncode == 0, result.stderr
    run = tmp_path / "digits-cnn"
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "finished"
    assert summary["metrics"]["test"]["accuracy"] >= 0.97
    assert (run / "config.yaml").is_file() and (run / "metrics.jsonl").is_file()

    again = scaletrain("train", str(ROOT / "configs/default.yaml"), "--out", str(tmp_path))
    assert again.returncode == 2 and "already exists" in again.stderr

    evaluated = scaletrain("eval", str(run), "--split", "test")
    assert evaluated.returncode == 0, evaluated.stderr
    assert f"{summary['metrics']['test']['accuracy']:.4f}" in evaluated.stdout

    from sklearn.datasets import load_digits

    digits = load_digits()
    inputs = tmp_path / "inputs.npy"
    import numpy as np

    np.save(inputs, digits.data[:50].reshape(50, 1, 8, 8).astype("float32"))
    out = tmp_path / "pred.csv"
    predicted = scaletrain("predict", str(run), str(inputs), "--out", str(out))
    assert predicted.returncode == 0, predicted.stderr
    rows = out.read_text().strip().splitlines()[1:]
    labels = [int(row.split(",")[0]) for row in rows]
    assert np.mean(np.array(labels) == digits.target[:50]) >= 0.9

    not_a_run = scaletrain("eval", str(tmp_path))
    assert not_a_run.returncode == 2 and "not a run directory" in not_a_run.stderr


def test_resume_flag_starts_over_where_no_checkpoint_was_committed(tmp_path, capsys):
    """A run (or a node) that failed before its first checkpoint: `--resume` trains anew."""
    args = [
        "train",
        str(ROOT / "configs/default.yaml"),
        "--out",
        str(tmp_path),
        "train.max_steps=3",
        "train.device=cpu",
        "log.report=false",
        "log.progress=false",
    ]
    code, _, err = scaletrain_in_process(capsys, *args)
    assert code == 0, err
    run_dir = next(tmp_path.iterdir())
    for checkpoint in (run_dir / "checkpoints").glob("step_*"):
        for path in sorted(checkpoint.rglob("*"), reverse=True):
            path.unlink() if path.is_file() else path.rmdir()
        checkpoint.rmdir()
    (run_dir / "summary.json").unlink()
    code, _, err = scaletrain_in_process(capsys, *args, "--resume")
    assert code == 0, err
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "finished" and summary["steps"] == 3
    events = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert not any(event.get("event") == "resume" for event in events)  # started over


def test_a_refused_config_leaves_nothing_that_refuses_the_rerun(tmp_path, capsys):
    """A batch size too large for torch once failed after the run directory existed, so the
    corrected command was refused with "already exists"."""
    args = [
        "train",
        str(ROOT / "configs/default.yaml"),
        "--out",
        str(tmp_path),
        "train.max_steps=1",
        "train.device=cpu",
        "log.report=false",
        "log.progress=false",
        "train.guard.nonfinite=off",  # documented words need no quotes
    ]
    code, _, err = scaletrain_in_process(
        capsys, *args, "train.batch_size=99999999999999999999999999999"
    )
    assert code == 2 and err.splitlines() == [
        "error: train.batch_size: input should be less than or equal to 16777216, got "
        "99999999999999999999999999999"
    ], err
    assert not any(tmp_path.iterdir())
    code, _, err = scaletrain_in_process(capsys, *args, "train.batch_size=32")
    assert code == 0, err
