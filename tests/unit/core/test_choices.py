"""The option tables of choices.py against the code that reads them: an option listed for an
entry changes what that entry builds, an option not listed changes nothing (or is refused).
`scaletrain list` shows these tables, so sgd does not show adam's `betas`."""

import pytest
import torch
from torch import nn

from scaletrain import choices
from scaletrain.catalog import catalog_table
from scaletrain.config import InitConfig, LossConfig, OptimConfig, ScheduleConfig
from scaletrain.errors import ConfigError
from scaletrain.models import INITS
from scaletrain.models.init import apply_init
from scaletrain.optim import LOSSES, OPTIMIZERS, SCHEDULES, build_loss, build_optimizer
from scaletrain.optim.schedules import lr_multiplier

# A value other than the base's for each option (validation skipped: model_copy).
OPTIM_CHANGES = {
    "lr": 0.01,
    "weight_decay": 0.1,
    "momentum": 0.7,
    "nesterov": False,
    "betas": (0.8, 0.9),
    "eps": 1e-6,
    "alpha": 0.9,
    "implementation": "loop",
}
SCHEDULE_CHANGES = {
    "warmup_steps": 5,
    "warmup_ratio": 0.1,
    "min_lr_ratio": 0.5,
    "step_size": 11,
    "milestones": [5, 20],
    "gamma": 0.9,
    "pct_start": 0.5,
    "div_factor": 10.0,
    "final_div_factor": 100.0,
    "cycles": 3,
}


def test_every_registered_entry_has_a_row_of_schema_options():
    tables = [
        (OPTIMIZERS, choices.OPTIMIZER_OPTIONS, OptimConfig),
        (SCHEDULES, choices.SCHEDULE_OPTIONS, ScheduleConfig),
        (INITS, choices.INIT_OPTIONS, InitConfig),
    ]
    for registry, table, schema in tables:
        assert set(registry) == set(table)
        assert all(set(options) <= set(schema.model_fields) for options in table.values())
    assert set(choices.LOSS_OPTIONS) == {*LOSSES, "auto"}
    assert set(OPTIM_CHANGES) == set(OptimConfig.model_fields) - {"name", *choices.OPTIM_SECTIONS}
    assert set(SCHEDULE_CHANGES) == set(ScheduleConfig.model_fields) - {"name"}


def _hyperparameters(cfg: OptimConfig) -> list[dict]:
    torch.manual_seed(0)
    optimizer = build_optimizer(cfg, nn.Linear(3, 2))
    return [{k: v for k, v in group.items() if k != "params"} for group in optimizer.param_groups]


@pytest.mark.parametrize("name", sorted(choices.OPTIMIZER_OPTIONS))
def test_an_optimizer_reads_exactly_its_listed_options(name):
    base = OptimConfig().model_copy(update={"name": name, "momentum": 0.5, "nesterov": True})
    if name != "sgd":
        base = base.model_copy(update={"nesterov": False})  # torch refuses it elsewhere
    reference = _hyperparameters(base)
    for key, value in OPTIM_CHANGES.items():
        changed = _hyperparameters(base.model_copy(update={key: value}))
        listed = key in choices.OPTIMIZER_OPTIONS[name]
        assert (changed != reference) == listed, f"{name}: {key} listed={listed}"


@pytest.mark.parametrize("name", sorted(choices.SCHEDULE_OPTIONS))
def test_a_schedule_reads_exactly_its_listed_options(name):
    base = ScheduleConfig().model_copy(
        update={"name": name, "step_size": 20, "milestones": [10, 30], "gamma": 0.5}
    )

    def curve(cfg: ScheduleConfig) -> list[float]:
        return [lr_multiplier(cfg, step, total_steps=100) for step in range(100)]

    reference = curve(base)
    for key, value in SCHEDULE_CHANGES.items():
        if name == "onecycle" and key.startswith("warmup"):
            continue  # refused by build_schedule: onecycle has its own rise
        changed = curve(base.model_copy(update={key: value}))
        listed = key in choices.SCHEDULE_OPTIONS[name]
        assert (changed != reference) == listed, f"{name}: {key} listed={listed}"


@pytest.mark.parametrize("name", sorted(choices.INIT_OPTIONS))
def test_an_init_reads_exactly_its_listed_options(name):
    def weights(cfg: InitConfig) -> torch.Tensor:
        torch.manual_seed(0)
        layer = nn.Linear(8, 8)
        apply_init(layer, cfg)
        return layer.weight.detach().clone()

    reference = weights(InitConfig(name=name))
    for key, value in {"std": 0.5, "bound": 0.5, "gain": 2.0}.items():
        changed = weights(InitConfig(name=name, **{key: value}))
        listed = key in choices.INIT_OPTIONS[name]
        assert (not torch.equal(changed, reference)) == listed, f"{name}: {key}"


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_a_loss_reads_its_listed_options_and_refuses_the_others(name):
    task = "classification" if name in ("cross_entropy", "kl_div") else "regression"
    output = torch.tensor([[2.0, -1.0, 0.5], [0.1, 0.3, -2.0]])
    target = torch.tensor([0, 2]) if name == "cross_entropy" else torch.rand(2, 3)

    def value(**options) -> torch.Tensor:
        cfg = LossConfig(name=name, **options)
        loss = build_loss(cfg, task=task, num_outputs=3, class_counts=[1, 1, 1])
        return loss(3 * output, target)

    reference = value()
    for key, option in {
        "label_smoothing": 0.2,
        "class_weights": [1.0, 2.0, 3.0],
        "huber_delta": 0.5,
    }.items():
        if key in choices.LOSS_OPTIONS[name]:
            assert not torch.equal(value(**{key: option}), reference), f"{name}: {key}"
        elif key == "huber_delta":
            assert torch.equal(value(**{key: option}), reference), name
        else:
            with pytest.raises(ConfigError, match=f"loss.{key}"):
                value(**{key: option})


def test_list_optimizers_shows_each_ones_own_options():
    rows = _rows("optimizers")
    assert "betas" not in rows["sgd"] and "nesterov=False" in rows["sgd"]
    assert "betas=(0.9, 0.999)" in rows["adamw"] and "momentum" not in rows["adamw"]
    assert "alpha=0.99" in rows["rmsprop"] and "alpha" not in rows["adam"]
    losses = _rows("losses")
    assert losses["mse"] == "(none)" and losses["huber"] == "huber_delta=1.0"


def _rows(kind: str) -> dict[str, str]:
    names, options = (list(column.cells) for column in catalog_table(kind).columns)
    return dict(zip(names, options, strict=True))
