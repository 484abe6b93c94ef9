"""What a resume may change (train longer, log and save differently) and what it refuses."""

import shutil

import pytest
import yaml

import scaletrain
from scaletrain.cli import main
from scaletrain.config import load_config
from scaletrain.errors import ConfigError
from scaletrain.train.checkpointing import config_hash
from scaletrain.train.extend import apply_resume_overrides


def _cfg(tmp_path, **schedule):
    return {
        "run": {"name": "tiny", "out_dir": str(tmp_path), "seed": 1},
        "data": {"name": "iris"},
        "model": {"name": "mlp", "hidden": [8]},
        "optim": {"name": "sgd", "lr": 0.05, "schedule": schedule or {"name": "constant"}},
        "train": {"max_steps": 2, "batch_size": 32, "precision": "32"},
        "log": {"progress": False, "tensorboard": False, "report": False},
    }


@pytest.mark.parametrize(
    "override", ["optim.lr=0.1", "train.batch_size=16", "data.name=wine", "run.seed=2"]
)
def test_keys_that_change_the_steps_taken_are_refused_by_name(tmp_path, override):
    key = override.partition("=")[0]
    with pytest.raises(ConfigError, match=rf"^{key}: a resume cannot change it"):
        apply_resume_overrides(load_config(_cfg(tmp_path)), [override])


def test_allowed_keys_apply_and_leave_the_math_hash_alone(tmp_path):
    cfg = load_config(_cfg(tmp_path))
    overrides = [
        "train.max_steps=50",
        "train.eval_every_steps=5",
        "train.early_stopping.patience=3",
        "checkpoint.keep_last=2",
        "log.every_steps=1",
    ]
    extended = apply_resume_overrides(cfg, overrides)
    assert extended.train.max_steps == 50 and extended.checkpoint.keep_last == 2
    assert config_hash(extended) == config_hash(cfg)
    assert config_hash(load_config(cfg, ["optim.lr=0.2"])) != config_hash(cfg)


@pytest.mark.parametrize(
    ("schedule", "named"),
    [
        ({"name": "cosine"}, "optim.schedule.name=cosine"),
        ({"name": "onecycle"}, "optim.schedule.name=onecycle"),
        ({"name": "constant", "warmup_ratio": 0.1}, "optim.schedule.warmup_ratio=0.1"),
    ],
)
def test_a_schedule_spread_over_the_total_steps_cannot_be_extended(tmp_path, schedule, named):
    cfg = load_config(_cfg(tmp_path, **schedule))
    with pytest.raises(ConfigError, match=rf"^train.max_steps: .*{named}"):
        apply_resume_overrides(cfg, ["train.max_steps=50"])
    apply_resume_overrides(cfg, ["log.every_steps=1"])  # what leaves the length alone is fine
    # its length is part of the math: an edited config.yaml still warns on resume
    assert config_hash(load_config(cfg, ["train.max_steps=50"])) != config_hash(cfg)


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs")
    return scaletrain.train(_cfg(out)).run_dir


def _resume_cli(run_dir, capfd, *overrides) -> tuple[int, list[str]]:
    code = main(["resume", str(run_dir), *overrides])
    return code, capfd.readouterr().err.strip().splitlines()


def test_resume_of_a_finished_run_says_so_and_how_to_extend(finished_run, tmp_path, capfd):
    run_dir = tmp_path / "copy"
    shutil.copytree(finished_run, run_dir)
    summary = (run_dir / "summary.json").read_text()
    code, lines = _resume_cli(run_dir, capfd)
    assert code == 2 and len(lines) == 1, lines
    assert "the run is finished (step 2" in lines[0]
    assert f"scaletrain resume {run_dir} train.max_steps=4" in lines[0]
    assert (run_dir / "summary.json").read_text() == summary  # nothing rewritten


def test_refused_key_on_the_cli_is_one_line_and_the_run_is_untouched(finished_run, tmp_path, capfd):
    run_dir = tmp_path / "copy"
    shutil.copytree(finished_run, run_dir)
    config = (run_dir / "config.yaml").read_text()
    code, lines = _resume_cli(run_dir, capfd, "optim.lr=1.0")
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error: optim.lr: "), lines
    code, lines = _resume_cli(run_dir, capfd, "train.max_steps=1")  # shorter than done
    assert code == 2 and "the run is finished" in lines[0], lines
    assert (run_dir / "config.yaml").read_text() == config


def test_extending_records_the_new_length_and_trains_on(finished_run, tmp_path, capfd):
    run_dir = tmp_path / "copy"
    shutil.copytree(finished_run, run_dir)
    code, _ = _resume_cli(run_dir, capfd, "train.max_steps=4")
    assert code == 0
    assert yaml.safe_load((run_dir / "config.yaml").read_text())["train"]["max_steps"] == 4
    summary = yaml.safe_load((run_dir / "summary.json").read_text())
    assert summary["status"] == "finished" and summary["steps"] == 4
