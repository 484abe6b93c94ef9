"""Structured gpt pruning of the MLP hidden units: a normal gpt (smaller `model.mlp_hidden`)
that computes what the original does with the removed units zeroed; attention untouched."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from scaletrain.compress.shrink import channel_fraction, check_shrinkable, copy_kept, shrunk_config
from scaletrain.config import GPTConfig, load_config
from scaletrain.errors import ConfigError
from scaletrain.models.gpt import GPT
from scaletrain.parallel.tensor_parallel import check_tensor_parallel

VOCAB = 13
GPT_STDLIB = Path(__file__).parents[3] / "configs" / "gpt-stdlib.yaml"


def _gpt(cfg: GPTConfig, task: str) -> GPT:
    outputs = VOCAB if task == "language_model" else 3
    return GPT(cfg, vocab_size=VOCAB, num_outputs=outputs, context=6, task=task).double()


def _zero_removed(model: GPT, kept: list[torch.Tensor]) -> None:
    """The reference: each removed unit's rows (and biases) in, its column out, set to 0."""
    for block, keep in zip(model.blocks, kept, strict=True):
        removed = torch.ones(block.mlp.w_in.out_features, dtype=torch.bool)
        removed[keep] = False
        for layer in (block.mlp.w_in, block.mlp.w_gate):
            if layer is not None:
                layer.weight.data[removed] = 0
                if layer.bias is not None:
                    layer.bias.data[removed] = 0
        block.mlp.w_out.weight.data[:, removed] = 0


@pytest.mark.parametrize(
    ("mlp", "bias", "task", "hidden", "kept"),
    [
        ("swiglu", False, "language_model", 24, 18),  # tied head
        ("gelu", True, "classification", 32, 24),
    ],
)
def test_shrunk_gpt_equals_the_original_with_removed_units_zeroed(mlp, bias, task, hidden, kept):
    torch.manual_seed(0)
    cfg = GPTConfig(n_layer=2, d_model=8, n_head=2, mlp=mlp, bias=bias, padding_idx=None)
    check_shrinkable(cfg)
    model = _gpt(cfg, task).eval()
    for param in model.parameters():  # distinct biases and norm scales, so a mispairing shows
        param.data.add_(torch.randn_like(param) * 0.1)
    small_cfg = shrunk_config(cfg, 0.25)
    assert (model.blocks[0].mlp.w_in.out_features, small_cfg.mlp_hidden) == (hidden, kept)
    assert channel_fraction(cfg, small_cfg) == 0.25
    small = _gpt(small_cfg, task).eval()
    copy_kept(model, small)
    kept_units = []
    for old, new in zip(model.blocks, small.blocks, strict=True):
        score = old.mlp.w_in.weight.norm(dim=1) * old.mlp.w_out.weight.norm(dim=0)
        if old.mlp.w_gate is not None:
            score = score * old.mlp.w_gate.weight.norm(dim=1)
        keep = score.topk(kept).indices.sort().values
        assert torch.equal(new.mlp.w_out.weight, old.mlp.w_out.weight[:, keep])
        assert torch.equal(new.attn.q_proj.weight, old.attn.q_proj.weight)  # heads untouched
        kept_units.append(keep)
    if task == "language_model":
        assert small.head.weight is small.tok_emb.weight  # still tied
    tokens = torch.randint(0, VOCAB, (3, 6), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        got = small(tokens)
        _zero_removed(model, kept_units)
        expected = model(tokens)
    torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-12)
    assert sum(p.numel() for p in small.parameters()) < sum(p.numel() for p in model.parameters())


def test_the_fraction_removed_is_the_asked_one_after_rounding_to_whole_units():
    cfg = GPTConfig(d_model=16, n_head=2, mlp="gelu", mlp_ratio=2)  # 32 units per block
    small = shrunk_config(cfg, 0.3)
    assert small.mlp_hidden == round(32 * 0.7) == 22
    assert channel_fraction(cfg, small) == pytest.approx(1 - 22 / 32)
    again = shrunk_config(small, 0.5)  # a compressed run compressed again: from 22
    assert again.mlp_hidden == 11


def test_mlp_hidden_overrides_the_ratio_and_the_default_is_unchanged():
    default = GPT(
        GPTConfig(), vocab_size=VOCAB, num_outputs=VOCAB, context=4, task="language_model"
    )
    assert GPTConfig().mlp_hidden is None
    assert default.blocks[0].mlp.w_in.out_features == 344  # 2/3 * 4 * 128, up to 8s
    cfg = GPTConfig(mlp_hidden=21)
    model = GPT(cfg, vocab_size=VOCAB, num_outputs=VOCAB, context=4, task="language_model")
    assert model.blocks[0].mlp.w_gate.out_features == 21
    assert model.blocks[0].mlp.w_out.in_features == 21
    with pytest.raises(ValueError, match="mlp_hidden"):
        GPTConfig(mlp_hidden=0)


def test_tensor_parallel_refuses_a_hidden_width_it_cannot_split_evenly():
    cfg = GPTConfig(n_layer=1, d_model=8, n_head=2, mlp_hidden=7)
    model = GPT(cfg, vocab_size=VOCAB, num_outputs=VOCAB, context=4, task="language_model")
    with pytest.raises(ConfigError, match=r"^parallel.dims.tp: 2 does not divide the MLP's 7"):
        check_tensor_parallel(model, model_name="gpt", tp=2)
    overrides = ["parallel.strategy=fsdp", "parallel.dims.tp=5", "model.mlp_hidden=12"]
    with pytest.raises(ConfigError, match=r"^parallel.dims.tp: 5 does not divide model.mlp_hi"):
        load_config(GPT_STDLIB, overrides)
    assert load_config(GPT_STDLIB, [*overrides[:2], "model.mlp_hidden=15"]).model.mlp_hidden == 15
