"""build_optimizer: N steps equal a hand-built torch optimizer; groups; kernel choice; errors."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from scaletrain.config import OptimConfig, validate_config
from scaletrain.errors import ConfigError, UserError
from scaletrain.optim import OPTIMIZERS, build_optimizer, choose_kernel

NUM_STEPS = 5

SETTINGS = {
    "sgd": dict(momentum=0.9, nesterov=True, weight_decay=0.01),
    "adam": dict(betas=(0.8, 0.99), eps=1e-7, weight_decay=0.01),
    "adamw": dict(betas=(0.9, 0.95), weight_decay=0.1),
    "rmsprop": dict(alpha=0.9, momentum=0.5, eps=1e-6, weight_decay=0.01),
    "adagrad": dict(eps=1e-9, weight_decay=0.01),
}


class MyRMSNorm(nn.Module):
    """A user norm layer, recognized by its class name."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.ones(width))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.scale * x / x.pow(2).mean(-1, keepdim=True).add(1e-6).sqrt()


def make_model() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Linear(6, 8),
        nn.LayerNorm(8),
        nn.Linear(8, 8, bias=False),
        nn.BatchNorm1d(8),
        MyRMSNorm(8),
        nn.Linear(8, 3),
    )


# Named by hand, independently of the code under test: biases and norm-layer parameters.
NO_DECAY_NAMES = ["0.bias", "1.weight", "1.bias", "3.weight", "3.bias", "4.scale", "5.bias"]
DECAY_NAMES = ["0.weight", "2.weight", "5.weight"]


def reference_optimizer(name: str, model: nn.Module, kernel: dict) -> torch.optim.Optimizer:
    settings = dict(SETTINGS[name])
    decay = settings.pop("weight_decay")
    named = dict(model.named_parameters())
    groups = [
        {"params": [named[key] for key in DECAY_NAMES], "weight_decay": decay},
        {"params": [named[key] for key in NO_DECAY_NAMES], "weight_decay": 0.0},
    ]
    classes = {
        "sgd": torch.optim.SGD,
        "adam": torch.optim.Adam,
        "adamw": torch.optim.AdamW,
        "rmsprop": torch.optim.RMSprop,
        "adagrad": torch.optim.Adagrad,
    }
    return classes[name](groups, lr=0.01, **settings, **kernel)


def train(model: nn.Module, optimizer: torch.optim.Optimizer) -> None:
    generator = torch.Generator().manual_seed(1)
    for _ in range(NUM_STEPS):
        inputs = torch.randn(16, 6, generator=generator)
        targets = torch.randint(0, 3, (16,), generator=generator)
        loss = nn.functional.cross_entropy(model(inputs), targets)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)


def expected_kernel(name: str, implementation: str) -> dict:
    if implementation == "auto":
        return {"fused": True} if name != "rmsprop" else {"foreach": True}
    return {"foreach": implementation == "foreach"}


@pytest.mark.parametrize("implementation", ["auto", "foreach", "loop"])
@pytest.mark.parametrize("name", sorted(SETTINGS))
def test_steps_equal_hand_built_torch_optimizer(name, implementation):
    cfg = OptimConfig(name=name, lr=0.01, implementation=implementation, **SETTINGS[name])
    model = make_model()
    optimizer = build_optimizer(cfg, model)
    kernel = expected_kernel(name, implementation)
    assert all(optimizer.defaults[flag] is value for flag, value in kernel.items())
    reference_model = make_model()
    reference = reference_optimizer(name, reference_model, kernel)
    train(model, optimizer)
    train(reference_model, reference)
    for (key, param), reference_param in zip(
        model.named_parameters(), reference_model.parameters(), strict=True
    ):
        assert torch.equal(param, reference_param), key
    assert not torch.equal(model[0].weight, make_model()[0].weight)  # it did train


def test_registry_holds_every_configurable_optimizer():
    assert set(OPTIMIZERS) == set(OptimConfig.model_fields["name"].annotation.__args__)


@pytest.mark.parametrize("name", sorted(SETTINGS))
def test_decay_groups_hold_exactly_weights_and_exempt_biases_and_norms(name):
    model = make_model()
    optimizer = build_optimizer(OptimConfig(name=name, **SETTINGS[name]), model)
    names = {id(param): key for key, param in model.named_parameters()}
    groups = {group["name"]: group for group in optimizer.param_groups}
    assert [names[id(param)] for param in groups["decay"]["params"]] == DECAY_NAMES
    assert [names[id(param)] for param in groups["no_decay"]["params"]] == NO_DECAY_NAMES
    assert groups["decay"]["weight_decay"] == SETTINGS[name]["weight_decay"]
    assert groups["no_decay"]["weight_decay"] == 0.0


def test_adamw_decay_is_decoupled():
    model = nn.Linear(3, 1, bias=False)
    with torch.no_grad():
        model.weight.fill_(2.0)
    optimizer = build_optimizer(OptimConfig(name="adamw", lr=0.1, weight_decay=0.5), model)
    model.weight.grad = torch.zeros_like(model.weight)  # zero gradient: only decay moves it
    optimizer.step()
    assert torch.allclose(model.weight, torch.full((1, 3), 2.0 * (1 - 0.1 * 0.5)))


def test_no_weight_decay_gives_one_group_of_trainable_params_in_order():
    model = make_model()
    model[0].requires_grad_(False)
    optimizer = build_optimizer(OptimConfig(name="adam"), model)
    (group,) = optimizer.param_groups
    expected = [param for param in model.parameters() if param.requires_grad]
    assert [id(param) for param in group["params"]] == [id(param) for param in expected]
    assert group["weight_decay"] == 0.0


def test_frozen_params_are_left_out_of_decay_groups():
    model = make_model()
    model[5].requires_grad_(False)
    optimizer = build_optimizer(OptimConfig(name="adamw", weight_decay=0.1), model)
    held = {id(param) for group in optimizer.param_groups for param in group["params"]}
    assert id(model[5].weight) not in held and id(model[5].bias) not in held
    assert len(held) == sum(param.requires_grad for param in model.parameters())


def test_tied_parameter_appears_once():
    embedding = nn.Embedding(5, 4)
    head = nn.Linear(4, 5, bias=False)
    head.weight = embedding.weight
    model = nn.Sequential(embedding, head)
    optimizer = build_optimizer(OptimConfig(name="adamw", weight_decay=0.1), model)
    (group,) = optimizer.param_groups  # no biases or norms: the empty group is dropped
    assert group["name"] == "decay" and len(group["params"]) == 1


def test_auto_takes_fused_where_torch_has_it_else_foreach():
    cpu = [torch.zeros(2, requires_grad=True)]
    meta = [torch.zeros(2, device="meta", requires_grad=True)]  # no fused kernel on meta
    for name in ("sgd", "adam", "adamw", "adagrad"):
        assert choose_kernel(name, "auto", cpu) == {"fused": True}
        assert choose_kernel(name, "auto", meta) == {"foreach": True}
    assert choose_kernel("rmsprop", "auto", cpu) == {"foreach": True}
    assert choose_kernel("adam", "loop", cpu) == {"foreach": False}
    model = make_model()
    optimizer = build_optimizer(OptimConfig(name="adam"), model)
    assert kernel_run(optimizer, model, torch.randn(16, 6)) == "fused"
    optimizer = build_optimizer(OptimConfig(name="rmsprop"), model)
    assert kernel_run(optimizer, model, torch.randn(16, 6)) == "foreach"
    optimizer = build_optimizer(OptimConfig(name="sgd", implementation="loop"), model)
    assert kernel_run(optimizer, model, torch.randn(16, 6)) == "loop"


@pytest.mark.parametrize("name", ["sgd", "adam", "adamw", "adagrad"])
def test_auto_kernel_updates_every_element_of_bf16_parameters(name):
    """torch 2.13's fused CPU SGD skips every full SIMD block of a bf16 tensor (pytorch#191763):
    bf16-true SGD silently did not learn. Each kernel `auto` picks moves the weights as the
    per-parameter loop does (within bf16 rounding)."""
    weights = {}
    for implementation in ("auto", "loop"):
        torch.manual_seed(0)
        layer = nn.Linear(64, 64).to(torch.bfloat16)
        settings = OptimConfig(
            name=name, lr=1.0 if name == "sgd" else 0.01, implementation=implementation
        )
        optimizer = build_optimizer(settings, layer)
        layer(torch.randn(8, 64, dtype=torch.bfloat16)).square().mean().backward()
        before = layer.weight.detach().clone()
        optimizer.step()
        weights[implementation] = layer.weight.detach().float()
    assert (weights["auto"] != before.float()).float().mean() > 0.9
    torch.testing.assert_close(weights["auto"], weights["loop"], rtol=0.02, atol=1e-3)
    low = [torch.zeros(2, dtype=torch.bfloat16, requires_grad=True)]
    expected = {"foreach": True} if name == "sgd" else {"fused": True}
    assert choose_kernel(name, "auto", low) == expected
    if name == "sgd":
        with pytest.raises(ConfigError, match="bf16/fp16 parameters on cpu"):
            choose_kernel(name, "fused", low)


def kernel_run(optimizer: torch.optim.Optimizer, model: nn.Module, inputs) -> str:
    """The update kernel one real step ran, as the profiler saw it: `fused` (one
    `aten::_fused_<name>_`; it counts steps with a foreach op), `foreach` or `loop`."""
    model(inputs).square().mean().backward()
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as profiler:
        optimizer.step()
    names = {event.name for event in profiler.events()}
    optimizer.zero_grad()
    for kind in ("fused", "foreach"):
        if any(name.startswith(f"aten::_{kind}_") for name in names):
            return kind
    return "loop"


def test_forced_fused_without_a_kernel_names_the_key():
    with pytest.raises(ConfigError, match="optim.implementation"):
        build_optimizer(OptimConfig(name="rmsprop", implementation="fused"), make_model())
    meta = [torch.zeros(2, device="meta", requires_grad=True)]
    with pytest.raises(ConfigError, match="optim.implementation"):
        choose_kernel("adam", "fused", meta)


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        (dict(name="sgd", nesterov=True), r"^optim\.nesterov: needs optim\.momentum > 0, got 0"),
        # momentum already 0.9: the fix is the optimizer, not "set optim.momentum=0.9"
        (
            dict(name="rmsprop", momentum=0.9, nesterov=True),
            r"^optim\.nesterov: Nesterov momentum is an sgd option, got optim\.name=rmsprop; "
            r"set optim\.name=sgd or optim\.nesterov=false$",
        ),
        (dict(name="adam", nesterov=True), r"^optim\.nesterov: .* got optim\.name=adam"),
        (dict(name="adamw", momentum=0.9), r"^optim\.momentum: only sgd and rmsprop"),
    ],
)
def test_momentum_settings_are_refused_at_config_time_saying_what_is_wrong(settings, message):
    with pytest.raises(ConfigError, match=message):
        validate_config({"optim": settings})


def test_fully_frozen_model_is_a_user_error():
    model = make_model().requires_grad_(False)
    with pytest.raises(UserError, match="no trainable parameters"):
        build_optimizer(OptimConfig(), model)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("name", sorted(SETTINGS))
def test_auto_kernel_steps_on_cuda(name):
    model = make_model().cuda()
    optimizer = build_optimizer(OptimConfig(name=name, **SETTINGS[name]), model)
    before = model[0].weight.detach().clone()
    # which kernel ran, not how torch spells its defaults (None or False by version)
    expected = "foreach" if name in ("rmsprop", "adagrad") else "fused"
    assert kernel_run(optimizer, model, torch.randn(16, 6, device="cuda")) == expected
    assert not torch.equal(model[0].weight, before)
