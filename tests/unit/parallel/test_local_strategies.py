"""local_sgd / diloco in one process: the config refusals, DiLoCo's outer step against a
float64 reference, evaluation of the global model between syncs, what a checkpoint holds."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from scaletrain.config import ParallelConfig, load_config
from scaletrain.errors import ConfigError
from scaletrain.parallel import DiLoCoStrategy, LocalSGDStrategy, build_strategy
from scaletrain.parallel.local_sgd import average_in_place

DEFAULT = Path(__file__).parents[3] / "configs" / "default.yaml"


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        (
            ["parallel.strategy=ddp", "parallel.local.steps=4"],
            "parallel.local.steps: only used by parallel.strategy=local_sgd or diloco, got 'ddp'",
        ),
        (["parallel.local.outer_lr=0.5"], "parallel.local.outer_lr: only used by"),  # auto
        (
            ["parallel.strategy=local_sgd", "parallel.local.outer_momentum=0.5"],
            "parallel.local.outer_momentum: local_sgd averages parameters without an outer",
        ),
        (
            ["parallel.strategy=diloco", "parallel.local.outer_momentum=0"],
            "parallel.local.outer_nesterov: Nesterov needs parallel.local.outer_momentum > 0",
        ),
        (["parallel.strategy=diloco", "parallel.local.steps=0"], "parallel.local.steps"),
        (["parallel.strategy=diloco", "parallel.local.outer_momentum=1"], "outer_momentum"),
        (["parallel.strategy=local_sgd", "parallel.offload=cpu"], "parallel.offload"),
        (["parallel.strategy=diloco", "parallel.fsdp.hybrid=true"], "parallel.fsdp.hybrid"),
    ],
)
def test_settings_that_mean_nothing_together_are_refused(overrides, expected):
    with pytest.raises(ConfigError) as info:
        load_config({}, overrides)
    assert expected in str(info.value)
    assert "\n" not in str(info.value)


def test_a_resolved_config_of_another_strategy_loads(tmp_path):
    """config.yaml lists every key with its default: that is no setting of parallel.local."""
    path = tmp_path / "config.yaml"
    path.write_text(load_config({}, ["parallel.strategy=ddp"]).to_yaml())
    assert load_config(path).parallel.local.steps == 8
    cfg = load_config({}, ["parallel.strategy=diloco", "parallel.local.steps=3"])
    assert (cfg.parallel.local.steps, cfg.parallel.local.outer_lr) == (3, 0.7)


def test_the_cli_refuses_in_one_line(tmp_path):
    finished = subprocess.run(
        [sys.executable, "-m", "scaletrain", "train", str(DEFAULT), "--out", str(tmp_path)]
        + ["parallel.strategy=fsdp", "parallel.local.steps=4"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert finished.returncode == 2
    assert finished.stderr.strip().count("\n") == 0, finished.stderr
    assert "parallel.local.steps" in finished.stderr
    assert not list(tmp_path.iterdir())  # no half-written run directory


@pytest.fixture
def strategy_of():
    built = []

    def build(**local) -> LocalSGDStrategy:
        strategy = build_strategy(
            ParallelConfig(strategy=local.pop("strategy"), local=local), device_name="cpu"
        )
        strategy.setup()
        built.append(strategy)
        return strategy

    yield build
    for strategy in built:
        strategy.teardown()


def _model_and_data() -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    return nn.Linear(4, 3), torch.randn(5, 4), torch.randn(5, 3)


def _train(strategy, model, optimizer, inputs, targets, updates: int) -> None:
    for _ in range(updates):
        optimizer.zero_grad()
        ((model(inputs) - targets) ** 2).mean().backward()
        strategy.apply_update(optimizer.step)


def test_diloco_outer_step_matches_a_float64_reference(strategy_of):
    """H = 3, 7 updates, end of training: inner SGD; outer Nesterov SGD (lr 0.7, momentum
    0.9) on anchor - params, twice in full and once on the shorter last period."""
    strategy = strategy_of(strategy="diloco", steps=3)
    assert isinstance(strategy, DiLoCoStrategy)
    model, inputs, targets = _model_and_data()
    reference = [p.detach().double().clone() for p in model.parameters()]
    model = strategy.wrap_model(model)
    _train(strategy, model, torch.optim.SGD(model.parameters(), lr=0.1), inputs, targets, 7)
    strategy.end_training(model)

    anchor, momentum = reference, [torch.zeros_like(p) for p in reference]
    local = [p.clone() for p in anchor]
    for period in (3, 3, 1):
        for _ in range(period):
            weight, bias = (p.requires_grad_() for p in local)
            loss = ((inputs.double() @ weight.T + bias - targets.double()) ** 2).mean()
            grads = torch.autograd.grad(loss, [weight, bias])
            local = [(p - 0.1 * g).detach() for p, g in zip(local, grads, strict=True)]
        for index, (a, p) in enumerate(zip(anchor, local, strict=True)):
            outer_grad = a - p
            momentum[index] = 0.9 * momentum[index] + outer_grad
            anchor[index] = a - 0.7 * (outer_grad + 0.9 * momentum[index])
        local = [a.clone() for a in anchor]
    for got, expected in zip(model.parameters(), anchor, strict=True):
        torch.testing.assert_close(got.detach().double(), expected, rtol=1e-5, atol=1e-6)
    assert strategy.since_sync == 0


def test_evaluation_sees_the_global_model_between_syncs(strategy_of):
    strategy = strategy_of(strategy="local_sgd", steps=3)
    model, inputs, targets = _model_and_data()
    start = [p.detach().clone() for p in model.parameters()]
    model = strategy.wrap_model(model)
    _train(strategy, model, torch.optim.SGD(model.parameters(), lr=0.1), inputs, targets, 1)
    local = [p.detach().clone() for p in model.parameters()]
    assert not torch.equal(local[0], start[0])
    with strategy.evaluation(model) as evaluated:
        assert not evaluated.training
        for got, expected in zip(evaluated.parameters(), start, strict=True):
            assert torch.equal(got, expected)  # the last sync's (here: the start)
    for got, expected in zip(model.parameters(), local, strict=True):
        assert torch.equal(got, expected) and model.training  # this rank's weights are back


def test_a_checkpoint_holds_the_global_model_and_this_ranks_own_state(strategy_of):
    strategy = strategy_of(strategy="diloco", steps=3)
    model, inputs, targets = _model_and_data()
    model = strategy.wrap_model(model)
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.1)
    _train(strategy, model, optimizer, inputs, targets, 4)  # one sync, one update after
    from scaletrain.checkpoint.state_dict import model_and_optimizer_state

    base = model_and_optimizer_state(model, optimizer)
    tensors = strategy.checkpoint_tensors(base)
    assert set(tensors) == {"model", "optim", "replicas", "outer"}
    assert tensors["replicas"] == {"rank_00000": base}
    anchor = tensors["outer"]["anchor"]
    assert torch.equal(tensors["model"]["weight"], anchor["00000"])
    assert not torch.equal(tensors["model"]["weight"], base["model"]["weight"])
    assert tensors["outer"]["momentum"]["00000"].abs().sum() > 0  # one outer step taken
    assert strategy.restore_tensors(tensors) is base
    assert strategy.state_dict() == {
        "strategy": "diloco",
        "world_size": 1,
        "steps": 3,
        "since_sync": 1,
        "outer_momentum": True,
    }


def test_average_in_place_sends_one_buffer_per_dtype(strategy_of):
    strategy_of(strategy="local_sgd", steps=2)  # a process group of one
    tensors = [torch.ones(3), torch.ones(2, dtype=torch.float64), torch.full((2, 2), 2.0)]
    assert average_in_place(tensors, world_size=1) == 3 * 4 + 2 * 8 + 4 * 4
    assert torch.equal(tensors[2], torch.full((2, 2), 2.0))
