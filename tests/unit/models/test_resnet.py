"""The `resnet` model: torchvision's parameter counts, shapes at every stage, the stem rule,
zero-init residuals, gradients against float64 and the forward against plain functional ops."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from scaletrain.config import ConfigError, InitConfig, ResNetConfig, load_config
from scaletrain.models import MODELS, BasicBlock, build_model
from scaletrain.models.resnet import stem_for
from scaletrain.parallel.blocks import find_blocks
from scaletrain.train.setup import wants_channels_last


def _resnet(input_shape=(1, 8, 8), num_outputs=10, **options) -> nn.Module:
    return build_model(ResNetConfig(**options), input_shape=input_shape, num_outputs=num_outputs)


def _num_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


# --------------------------------------------------------------------------- registry, config
def test_registered_with_basic_blocks_as_units():
    entry = MODELS["resnet"]
    assert entry.config_class is ResNetConfig and entry.block_types == (BasicBlock,)
    model = _resnet(width=4)
    blocks = find_blocks(model, block_types=entry.block_types)
    assert len(blocks) == 8 and all(isinstance(b, BasicBlock) for b in blocks)
    assert len(find_blocks(_resnet(width=4, depth=34), block_types=entry.block_types)) == 16


def test_overrides_choose_resnet_and_a_wrong_depth_names_the_key():
    cfg = load_config({}, ["model.name=resnet", "model.depth=34", "model.stem=small"])
    assert (cfg.model.name, cfg.model.depth, cfg.model.stem) == ("resnet", 34, "small")
    with pytest.raises(ConfigError, match=r"model\.depth"):
        load_config({}, ["model.name=resnet", "model.depth=50"])


def test_flat_inputs_are_one_line_naming_the_layout():
    with pytest.raises(ConfigError, match=r"model\.name: `resnet` needs image inputs.*\(64,\)"):
        _resnet(input_shape=(64,))


# --------------------------------------------------------------------------- sizes
@pytest.mark.parametrize(("depth", "expected"), [(18, 11_689_512), (34, 21_797_672)])
def test_parameter_count_equals_torchvision(depth, expected):
    """torchvision's resnet18 / resnet34: width 64, large stem, 3 channels, 1000 classes."""
    model = build_model(
        ResNetConfig(depth=depth, stem="large"), input_shape=(3, 224, 224), num_outputs=1000
    )
    assert _num_params(model) == expected


@pytest.mark.parametrize(
    ("input_shape", "stem", "stage_sides"),
    [
        ((1, 8, 8), "small", [8, 4, 2, 1]),  # digits: no stage shrinks it to nothing
        ((1, 28, 28), "small", [28, 14, 7, 4]),
        ((3, 64, 64), "large", [16, 8, 4, 2]),  # 64 -> 32 (7x7/2) -> 16 (max pool)
        ((3, 8, 8), "large", [2, 1, 1, 1]),  # forced large on a tiny image still works
    ],
)
def test_every_block_and_its_shortcut_have_the_stage_shape(input_shape, stem, stage_sides):
    width = 4
    model = _resnet(input_shape=input_shape, num_outputs=5, width=width, stem=stem)
    seen: dict[str, tuple] = {}

    def record(name: str):
        def hook(module, inputs, output) -> None:  # returns None: the output stays as it is
            seen[name] = tuple(output.shape)

        return hook

    hooks = [
        module.register_forward_hook(record(name))
        for name, module in model.named_modules()
        if isinstance(module, BasicBlock) or name.endswith("shortcut")
    ]
    output = model.eval()(torch.randn(3, *input_shape))
    for hook in hooks:
        hook.remove()
    assert output.shape == (3, 5)
    for stage, side in enumerate(stage_sides):
        expected = (3, width * 2**stage, side, side)
        for block in range(2):
            assert seen[f"stages.{stage}.{block}"] == expected
            assert seen[f"stages.{stage}.{block}.shortcut"] == expected
    # a 1x1 conv + BN shortcut exactly where the shape changes: each later stage's first block
    projections = [
        name
        for name, module in model.named_modules()
        if name.endswith("shortcut") and isinstance(module, nn.Sequential)
    ]
    assert projections == [f"stages.{s}.0.shortcut" for s in (1, 2, 3)]
    assert all(isinstance(m.shortcut, nn.Identity) for m in model.stages[0])


@pytest.mark.parametrize(
    ("size", "expected"), [((8, 8), "small"), ((63, 200), "small"), ((64, 64), "large")]
)
def test_auto_stem_is_small_under_64_px_on_the_shorter_side(size, expected):
    assert stem_for("auto", *size) == expected
    model = _resnet(input_shape=(3, *size), width=4)
    assert model.stem[0].kernel_size == ((3, 3) if expected == "small" else (7, 7))
    assert isinstance(model.stem[-1], nn.MaxPool2d) == (expected == "large")
    assert stem_for("large", 8, 8) == "large" and stem_for("small", 500, 500) == "small"


# --------------------------------------------------------------------------- init
def test_zero_init_residual_makes_each_fresh_block_relu_of_its_shortcut():
    torch.manual_seed(0)
    model = _resnet(input_shape=(1, 16, 16), width=4, zero_init_residual=True).train()
    x = model.stem(torch.randn(4, 1, 16, 16))
    for block in model.modules():
        if isinstance(block, BasicBlock):
            torch.testing.assert_close(block(x), F.relu(block.shortcut(x)), rtol=0, atol=0)
            x = block(x)
    plain = _resnet(input_shape=(1, 16, 16), width=4).train()
    block = plain.stages[0][0]
    x = plain.stem(torch.randn(4, 1, 16, 16))
    assert not torch.allclose(block(x), F.relu(block.shortcut(x)))


def test_default_init_is_he_fan_out_and_other_inits_replace_only_weights():
    torch.manual_seed(0)
    model = _resnet(input_shape=(3, 32, 32), width=32, zero_init_residual=True)
    conv = model.stages[3][1].conv2  # 256 x 256 x 3 x 3: std sqrt(2 / fan_out) = 0.0295
    assert conv.weight.std().item() == pytest.approx(math.sqrt(2 / (256 * 9)), rel=0.02)
    normal = _resnet(
        input_shape=(3, 32, 32), width=32, zero_init_residual=True, init=InitConfig(name="normal")
    )
    assert normal.stages[3][1].conv2.weight.std().item() == pytest.approx(0.02, rel=0.02)
    assert torch.all(normal.stages[0][0].bn2.weight == 0)  # norms keep the model's own values
    assert torch.all(normal.stages[0][0].bn1.weight == 1)


# --------------------------------------------------------------------------- numerics
def test_fp32_gradients_match_float64_of_the_same_weights():
    torch.manual_seed(0)
    model32 = _resnet(width=4, depth=18, num_outputs=3).train()
    model64 = _resnet(width=4, depth=18, num_outputs=3).double().train()
    model64.load_state_dict(model32.state_dict())
    inputs = torch.randn(6, 1, 8, 8, dtype=torch.float64)  # batch > 1: train-mode BatchNorm
    targets = torch.tensor([0, 1, 2, 0, 1, 2])
    F.cross_entropy(model32(inputs.float()), targets).backward()
    F.cross_entropy(model64(inputs), targets).backward()
    for (name, p32), p64 in zip(model32.named_parameters(), model64.parameters(), strict=True):
        scale = p64.grad.abs().max().item()
        assert scale > 0, f"{name}: no gradient reaches it"
        torch.testing.assert_close(
            p32.grad.double(), p64.grad, rtol=1e-3, atol=1e-4 * scale, msg=name
        )


def test_block_forward_matches_plain_functional_ops():
    torch.manual_seed(0)
    block = BasicBlock(3, 6, stride=2).double().eval()
    for module in block.modules():  # non-trivial statistics and affine values
        if isinstance(module, nn.BatchNorm2d):
            for tensor in (module.running_mean, module.weight, module.bias):
                tensor.data.normal_()
            module.running_var.data.uniform_(0.5, 2.0)

    def batch_norm(x, bn):
        return F.batch_norm(x, bn.running_mean, bn.running_var, bn.weight, bn.bias, eps=bn.eps)

    x = torch.randn(2, 3, 9, 9, dtype=torch.float64)
    hidden = F.relu(batch_norm(F.conv2d(x, block.conv1.weight, stride=2, padding=1), block.bn1))
    residual = batch_norm(F.conv2d(hidden, block.conv2.weight, padding=1), block.bn2)
    shortcut = batch_norm(F.conv2d(x, block.shortcut[0].weight, stride=2), block.shortcut[1])
    torch.testing.assert_close(block(x), F.relu(residual + shortcut))


def test_channels_last_takes_the_cnn_path_and_gives_the_same_outputs():
    torch.manual_seed(0)
    model = _resnet(input_shape=(3, 16, 16), width=4).eval()
    assert wants_channels_last("auto", model, device=torch.device("cpu"), world_size=1)
    inputs = torch.randn(2, 3, 16, 16)
    expected = model(inputs)
    nhwc = model.to(memory_format=torch.channels_last)
    got = nhwc(inputs.contiguous(memory_format=torch.channels_last))
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
