"""Switching a named choice by override (`model.name=mlp` on a cnn config) drops the file's
options the new choice does not take, with a note, and keeps the ones it shares."""

import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import yaml

from scaletrain.choices import ConfigNote
from scaletrain.config import CNNConfig, Config, MLPConfig, load_config
from scaletrain.errors import ConfigError

ROOT = Path(__file__).parents[3]
DEFAULT = ROOT / "configs/default.yaml"


def _notes(record) -> list[str]:
    return [str(item.message) for item in record if item.category is ConfigNote]


def test_model_switch_drops_the_old_models_options_and_keeps_shared_ones():
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        cfg = load_config(DEFAULT, ["model.name=mlp"])
    assert isinstance(cfg.model, MLPConfig)
    assert cfg.model.dropout == 0.2  # written in the file, and an mlp option too: kept
    assert cfg.model.hidden == MLPConfig().hidden and cfg.model.batch_norm is False
    assert _notes(record) == [
        f"model.name=mlp: dropped model.channels, model.head from {DEFAULT} "
        "(cnn options that mlp does not take)"
    ]


@pytest.mark.parametrize(
    "overrides",
    [["model.name=mlp", "model.channels=[8]"], ["model.channels=[8]", "model.name=mlp"]],
)
def test_an_old_option_set_with_the_switch_is_still_an_error(overrides):
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        with pytest.raises(ConfigError, match=r"unknown key `model\.channels`"):
            load_config(DEFAULT, overrides)
    assert _notes(record) == []  # a refused config is one line: no note before it


def test_a_file_that_names_one_model_and_writes_anothers_options_is_refused(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("model:\n  name: mlp\n  channels: [8]\n")
    with pytest.raises(ConfigError, match=r"unknown key `model\.channels`"):
        load_config(path)
    with pytest.raises(ConfigError, match=r"unknown key `model\.channels`"):
        load_config(path, ["model.name=mlp"])  # not a switch: the file already says mlp


def test_a_typo_in_the_file_is_still_refused_after_a_switch(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("model:\n  name: cnn\n  chanels: [8]\n  head: [4]\n")
    with pytest.raises(ConfigError, match=r"unknown key `model\.chanels`"):
        load_config(path, ["model.name=mlp"])  # not a cnn option either: not a leftover


def test_switch_from_a_config_object_notes_only_what_was_written():
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        cfg = load_config(Config(), ["model.name=mlp"])  # every cnn option a default
        assert isinstance(cfg.model, MLPConfig) and cfg.model.batch_norm is False
        assert _notes(record) == []
        written = load_config({"model": {"channels": [4], "batch_norm": True}})
        cfg = load_config(written, ["model.name=mlp"])
    assert cfg.model.batch_norm is True  # written, and an mlp option: kept
    assert _notes(record) == [
        "model.name=mlp: dropped model.channels from the config "
        "(cnn options that mlp does not take)"
    ]
    back = load_config(cfg, ["model.name=cnn"])
    assert isinstance(back, Config) and back.model == CNNConfig(batch_norm=True)


def test_optimizer_switch_drops_sgd_only_options():
    sgd = {"optim": {"name": "sgd", "lr": 0.05, "momentum": 0.9, "nesterov": True}}
    with pytest.raises(ConfigError, match="optim.momentum"):  # written for adamw: refused
        load_config({"optim": {**sgd["optim"], "name": "adamw"}})
    with pytest.warns(ConfigNote, match=r"dropped optim\.momentum, optim\.nesterov"):
        cfg = load_config(sgd, ["optim.name=adamw"])
    assert cfg.optim.name == "adamw" and cfg.optim.lr == 0.05
    assert cfg.optim.momentum == 0 and cfg.optim.nesterov is False
    with pytest.raises(ConfigError, match="optim.momentum"):
        load_config(sgd, ["optim.name=adamw", "optim.momentum=0.9"])


def test_data_source_switch_drops_the_builtin_name():
    with pytest.warns(ConfigNote, match=r"data\.source=csv: dropped data\.name"):
        cfg = load_config(DEFAULT, ["data.source=csv", "data.path=x.csv"])
    assert cfg.data.source == "csv" and cfg.data.path == "x.csv"


@pytest.mark.slow  # a real process that trains: make test, not test-fast
def test_cli_trains_the_switched_model(tmp_path):
    """The command from the issue, through `python -m scaletrain` (one short epoch)."""
    result = subprocess.run(
        [sys.executable, "-m", "scaletrain", "train", str(DEFAULT), "model.name=mlp"]
        + ["train.max_epochs=1", "train.precision=bf16-mixed", f"run.out_dir={tmp_path}"]
        + ["log.report=false", "log.tensorboard=false", "log.progress=false"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr.splitlines()[0] == (
        f"note: model.name=mlp: dropped model.channels, model.head from {DEFAULT} "
        "(cnn options that mlp does not take)"
    )
    resolved = yaml.safe_load((tmp_path / "digits-cnn" / "config.yaml").read_text())
    assert resolved["model"]["name"] == "mlp" and resolved["model"]["dropout"] == 0.2
