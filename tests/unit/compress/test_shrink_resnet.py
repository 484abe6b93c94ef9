"""Structured resnet pruning inside the basic blocks: a normal resnet (smaller
`model.inner_keep`) that computes what the original does with the removed inner channels
silenced, residual shapes unchanged."""

from __future__ import annotations

import pytest
import torch

from scaletrain.compress.shrink import channel_fraction, check_shrinkable, copy_kept, shrunk_config
from scaletrain.config import ResNetConfig
from scaletrain.models.resnet import BasicBlock, ResNet


def _trained_like(model: ResNet) -> ResNet:
    """Non-trivial BatchNorm state, as after training, so the ranking and running stats show."""
    generator = torch.Generator().manual_seed(2)
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            size = module.num_features
            module.weight.data = torch.rand(size, generator=generator) * 2 - 1
            module.bias.data = torch.rand(size, generator=generator) - 0.5
            module.running_mean = torch.rand(size, generator=generator) * 0.4 - 0.2
            module.running_var = torch.rand(size, generator=generator) + 0.5
    return model.eval()


def test_shrunk_resnet_equals_the_original_with_removed_inner_channels_silenced():
    torch.manual_seed(0)
    cfg = ResNetConfig(width=4)
    check_shrinkable(cfg)
    model = _trained_like(ResNet(cfg, input_shape=(1, 8, 8), num_outputs=3))
    small_cfg = shrunk_config(cfg, 0.5)
    assert small_cfg.inner_keep == 0.5 and small_cfg.width == 4
    assert channel_fraction(cfg, small_cfg) == 0.5
    small = ResNet(small_cfg, input_shape=(1, 8, 8), num_outputs=3).eval()
    copy_kept(model, small)
    x = torch.randn(5, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        got = small(x)
        for old, new in zip(model.modules(), small.modules(), strict=True):
            if isinstance(old, BasicBlock):
                assert new.conv1.out_channels == old.conv1.out_channels // 2
                assert new.conv2.out_channels == old.conv2.out_channels  # residual unchanged
                removed = (
                    old.bn1.weight.abs()
                    < old.bn1.weight.abs().topk(new.bn1.num_features).values.min()
                )
                old.bn1.weight[removed] = 0  # bn1 output 0, relu 0: conv2 sees nothing there
                old.bn1.bias[removed] = 0
        expected = model(x)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    assert sum(p.numel() for p in small.parameters()) < sum(p.numel() for p in model.parameters())


@pytest.mark.slow
def test_structured_resnet_run_reloads_as_a_normal_resnet(tmp_path):
    import scaletrain
    from scaletrain.compress import CompressOptions, compress

    cfg = {
        "run": {"name": "resnet", "seed": 0, "out_dir": str(tmp_path)},
        "data": {"source": "builtin", "name": "digits"},
        "model": {"name": "resnet", "width": 4},
        "train": {"max_steps": 2, "batch_size": 32, "precision": "bf16-mixed"},
        "log": {"progress": False, "tensorboard": False, "report": False},
    }
    source = scaletrain.train(cfg).wait()
    options = CompressOptions(prune=0.5, structured=True, latency_repeats=1)
    result = compress(source.run_dir, options, out=tmp_path / "s")
    assert result.sparsity == 0.5 and result.after.total < result.before.total
    reloaded = scaletrain.load_run(tmp_path / "s")
    assert reloaded.config.model.inner_keep == 0.5
    x = torch.randn(4, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(reloaded.model.float().cpu().eval()(x), result.model.eval()(x))
