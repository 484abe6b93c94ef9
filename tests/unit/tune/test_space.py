"""SPACE.yaml parsing, its check against the config, and conditional keys."""

from __future__ import annotations

import optuna
import pytest
import yaml

from scaletrain.config import load_config
from scaletrain.errors import ConfigError
from scaletrain.tune.space import overrides_for, read_space
from scaletrain.tune.space_check import check_space

SPACE = {
    "optim.lr": {"type": "float", "low": 1e-4, "high": 1e-1, "log": True},
    "train.batch_size": {"type": "int", "low": 32, "high": 128, "step": 32},
    "optim.name": {"type": "categorical", "choices": ["adamw", "sgd"]},
    "optim.momentum": {"type": "float", "low": 0.5, "high": 0.99, "when": {"optim.name": "sgd"}},
}


def write(tmp_path, space) -> str:
    path = tmp_path / "space.yaml"
    path.write_text(yaml.safe_dump(space, sort_keys=False))
    return str(path)


def test_a_space_reads_every_kind(tmp_path):
    space = read_space(write(tmp_path, SPACE))
    kinds = {p.key: (p.kind, p.log, p.step) for p in space.params}
    assert kinds == {
        "optim.lr": ("float", True, None),
        "train.batch_size": ("int", False, 32),
        "optim.name": ("categorical", False, None),
        "optim.momentum": ("float", False, None),
    }
    assert space.params[3].when == {"optim.name": ("sgd",)}


def test_a_conditional_key_is_never_set_where_its_condition_excludes_it(tmp_path, tiny_config):
    space = read_space(write(tmp_path, SPACE))
    study = optuna.create_study(sampler=optuna.samplers.TPESampler(seed=0, n_startup_trials=5))
    sampled = []
    for _ in range(40):
        trial = study.ask()
        values = space.sample(trial)
        sampled.append(values)
        study.tell(trial, values["optim.lr"])
    names = {values["optim.name"] for values in sampled}
    assert names == {"adamw", "sgd"}  # both branches were visited
    for values in sampled:
        assert ("optim.momentum" in values) == (values["optim.name"] == "sgd")
        load_config(tiny_config, overrides_for(values))  # every trial's config is valid
    for trial in study.trials:  # Optuna itself never saw the excluded key either
        assert ("optim.momentum" in trial.params) == (trial.params["optim.name"] == "sgd")


@pytest.mark.parametrize(
    ("space", "culprit"),
    [
        ({"optim.lrr": {"type": "float", "low": 0.1, "high": 0.2}}, "optim.lrr"),
        ({"optim.lr": {"type": "float", "low": -0.1, "high": 0.2}}, "optim.lr=-0.1"),
        ({"train.batch_size": {"type": "int", "low": 0, "high": 8}}, "train.batch_size=0"),
        ({"optim.name": {"type": "categorical", "choices": ["adamw", "sgdd"]}}, "optim.name=sgdd"),
        # momentum exists only for sgd/rmsprop: without its condition the config refuses it
        ({"optim.momentum": {"type": "float", "low": 0.5, "high": 0.9}}, "optim.momentum=0.5"),
    ],
)
def test_a_key_or_range_the_config_refuses_is_one_line(tmp_path, tiny_config, space, culprit):
    path = write(tmp_path, space)
    with pytest.raises(ConfigError) as caught:
        check_space(read_space(path), load_config(tiny_config))
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith(f"{path}: {culprit}")


@pytest.mark.parametrize(
    ("spec", "words"),
    [
        ({"type": "float", "low": 1, "high": 1}, "low must be < high"),
        ({"type": "float", "low": 0, "high": 1, "log": True}, "log range needs low > 0"),
        ({"type": "int", "low": 1.5, "high": 4}, "low: expected an integer"),
        ({"type": "uniform", "low": 0, "high": 1}, "expected a mapping with type"),
        ({"type": "float", "low": 0, "high": 1, "lowest": 0}, "unknown option 'lowest'"),
        ({"type": "categorical", "choices": []}, "choices: expected a non-empty list"),
        ({"type": "float", "low": 0, "high": 1, "when": {"optim.name": "sgd"}}, "listed earlier"),
    ],
)
def test_a_bad_range_is_one_line_naming_file_and_key(tmp_path, spec, words):
    path = write(tmp_path, {"model.dropout": spec})
    with pytest.raises(ConfigError) as caught:
        read_space(path)
    assert str(caught.value).startswith(f"{path}: model.dropout")
    assert words in str(caught.value)


def test_the_lr_find_shortcut_becomes_a_log_range_around_the_suggestion(tmp_path, tiny_config):
    space = read_space(write(tmp_path, {"optim.lr": "lr_find", "model.dropout": SPACE["optim.lr"]}))
    assert space.needs_lr_find().key == "optim.lr"
    check_space(space, load_config(tiny_config))  # skipped until the range test ran
    (lr, dropout) = space.with_lr_range(0.01).params
    assert (lr.kind, lr.low, lr.high, lr.log) == ("float", pytest.approx(0.001), 0.1, True)
    assert dropout == space.params[1]
    with pytest.raises(ConfigError, match="only for optim.lr"):
        read_space(write(tmp_path, {"model.dropout": "lr_find"}))
