"""The `gpt` model: gradients against float64, the causal mask, the KV cache, GPT-2 init,
config errors and the 6N + 12·L·H·Q·T FLOPs formula the summary and MFU use."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from torch.autograd import gradcheck
from torch.func import functional_call

from scaletrain.config import InitConfig, load_config
from scaletrain.config.models import GPTConfig
from scaletrain.errors import ConfigError, UserError
from scaletrain.models import build_model, count_flops_per_sample, summarize_model
from scaletrain.models.flops import train_flops_per_sample
from scaletrain.models.gpt import GPTBlock, swiglu_hidden
from scaletrain.models.registry import block_types_of

VOCAB = 37
VARIANTS = [
    dict(norm="rmsnorm", positions="rope", mlp="swiglu"),
    dict(norm="layernorm", positions="learned", mlp="gelu", bias=True),
    dict(norm="rmsnorm", positions="learned", mlp="swiglu", tie_weights=False),
    dict(norm="layernorm", positions="rope", mlp="gelu"),
]


def _tiny(task: str = "language_model", *, length: int = 12, num_outputs: int = VOCAB, **options):
    cfg = GPTConfig(n_layer=2, d_model=16, n_head=2, **options)
    return build_model(
        cfg, input_shape=(length,), num_outputs=num_outputs, vocab_size=VOCAB, task=task
    )


@pytest.mark.parametrize("options", VARIANTS)
@pytest.mark.parametrize("task", ["language_model", "classification"])
def test_fp32_gradients_match_float64(options, task):
    torch.manual_seed(0)
    model = _tiny(task, num_outputs=VOCAB if task == "language_model" else 3, **options)
    reference = copy.deepcopy(model).double()
    token_ids = torch.randint(1, VOCAB, (3, 12))
    token_ids[0, 8:] = 0  # padding: the classification mean leaves it out
    for net in (model, reference):
        out = net(token_ids)
        weights = torch.linspace(-1, 1, out.numel(), dtype=out.dtype).view_as(out)
        (out * weights).sum().backward()
    for (name, param), (_, ref) in zip(
        model.named_parameters(), reference.named_parameters(), strict=True
    ):
        # k_proj.bias has a zero gradient (softmax ignores a shift shared by all keys)
        scale = ref.grad.abs().max().item()
        error = (param.grad.double() - ref.grad).abs().max().item()
        assert error <= 1e-4 * scale + 1e-8, f"{name}: {error} vs scale {scale}"


@pytest.mark.parametrize("options", VARIANTS[:2])
def test_gradcheck_of_one_block_in_float64(options):
    torch.manual_seed(0)
    cfg = GPTConfig(n_layer=1, d_model=8, n_head=2, mlp_ratio=1, **options)
    model = build_model(
        cfg, input_shape=(4,), num_outputs=VOCAB, vocab_size=VOCAB, task="language_model"
    ).double()
    names = [name for name, _ in model.named_parameters() if name.startswith("blocks.0")]
    values = [model.get_parameter(name).detach().clone().requires_grad_() for name in names]
    token_ids = torch.randint(0, VOCAB, (2, 4))

    def forward(*params):
        return functional_call(model, dict(zip(names, params, strict=True)), (token_ids,))

    assert gradcheck(forward, tuple(values), eps=1e-6, atol=1e-6, fast_mode=True)


@pytest.mark.parametrize("positions", ["rope", "learned"])
def test_no_position_sees_the_future(positions):
    torch.manual_seed(0)
    model = _tiny(positions=positions).eval()
    token_ids = torch.randint(0, VOCAB, (2, 12))
    before = model(token_ids)
    for t in (0, 5, 10):
        changed = token_ids.clone()
        changed[:, t + 1 :] = (changed[:, t + 1 :] + 1) % VOCAB
        after = model(changed)
        torch.testing.assert_close(after[:, : t + 1], before[:, : t + 1], rtol=0, atol=1e-6)
        assert not torch.allclose(after[:, t + 1], before[:, t + 1])  # the change does reach t+1


@pytest.mark.parametrize("positions", ["rope", "learned"])
def test_cached_steps_equal_the_full_pass(positions):
    torch.manual_seed(0)
    model = _tiny(positions=positions).eval()
    token_ids = torch.randint(0, VOCAB, (2, 12))
    cache = model.new_cache(2, 12)
    steps = [model(token_ids[:, :5], cache)]  # prefill, then one token at a time
    steps += [model(token_ids[:, t : t + 1], cache) for t in range(5, 12)]
    assert cache.length == 12
    torch.testing.assert_close(torch.cat(steps, dim=1), model(token_ids), rtol=0, atol=1e-5)


def _greedy(model, prompt: torch.Tensor, num_new: int, *, use_cache: bool) -> torch.Tensor:
    tokens = prompt
    cache = model.new_cache(prompt.shape[0], prompt.shape[1] + num_new) if use_cache else None
    step_input = prompt
    for _ in range(num_new):
        logits = model(step_input, cache) if use_cache else model(tokens)
        next_token = logits[:, -1].argmax(dim=-1, keepdim=True)
        tokens = torch.cat([tokens, next_token], dim=1)
        step_input = next_token
    return tokens


@pytest.mark.parametrize("positions", ["rope", "learned"])
def test_greedy_decoding_with_and_without_cache_agree(positions):
    torch.manual_seed(1)
    model = _tiny(positions=positions, length=24).eval()
    prompt = torch.randint(0, VOCAB, (3, 4))
    with torch.no_grad():
        cached = _greedy(model, prompt, 20, use_cache=True)
        plain = _greedy(model, prompt, 20, use_cache=False)
    assert torch.equal(cached, plain)
    assert len(set(cached[:, 4:].flatten().tolist())) > 1  # not one repeated token


def test_cache_overflow_and_context_are_one_line():
    model = _tiny(length=8).eval()
    cache = model.new_cache(1, 6)
    model(torch.zeros(1, 4, dtype=torch.long), cache)
    with pytest.raises(UserError, match=r"KV cache: 4 cached \+ 3 new tokens exceed") as info:
        model(torch.zeros(1, 3, dtype=torch.long), cache)
    assert "\n" not in str(info.value)
    assert cache.length == 4  # the refused call changed nothing
    with pytest.raises(UserError, match="max_length 9 exceeds model.context 8"):
        model.new_cache(1, 9)
    with pytest.raises(UserError, match="model.context: 9 positions exceed"):
        model(torch.zeros(1, 9, dtype=torch.long))


def test_gpt2_init_and_weight_tying():
    torch.manual_seed(0)
    cfg = GPTConfig(n_layer=8, d_model=256, n_head=4)
    model = build_model(
        cfg, input_shape=(16,), num_outputs=1000, vocab_size=1000, task="language_model"
    )
    residual = 0.02 / math.sqrt(2 * 8)
    for block in model.blocks:
        for layer in (block.attn.out_proj, block.mlp.w_out):
            assert layer.weight.std().item() == pytest.approx(residual, rel=0.05)
        assert block.attn.q_proj.weight.std().item() == pytest.approx(0.02, rel=0.05)
        assert block.mlp.w_in.weight.shape[0] == swiglu_hidden(256, 4.0) == 688
    assert model.tok_emb.weight.std().item() == pytest.approx(0.02, rel=0.05)
    assert model.head.weight.data_ptr() == model.tok_emb.weight.data_ptr()
    assert "head.weight" not in dict(model.named_parameters())  # one parameter, stored once

    untied = _tiny(tie_weights=False)
    assert untied.head.weight.data_ptr() != untied.tok_emb.weight.data_ptr()
    classifier = _tiny("classification", num_outputs=3)  # never tied: the head has 3 rows
    assert classifier.head.weight.shape == (3, 16)


def test_other_init_names_still_apply():
    torch.manual_seed(0)
    cfg = GPTConfig(n_layer=2, d_model=128, n_head=4, init=InitConfig(name="normal", std=0.1))
    model = build_model(cfg, input_shape=(8,), num_outputs=50, vocab_size=50, task="language_model")
    assert model.blocks[1].attn.out_proj.weight.std().item() == pytest.approx(0.1, rel=0.05)


def test_rope_tables_are_not_saved():
    model = _tiny()
    assert not any("cos" in key or "sin" in key for key in model.state_dict())
    assert model.blocks[0].attn.rotary.cos.shape == (12, 4)  # (context, head_dim / 2)


def test_classification_mean_leaves_padding_out():
    torch.manual_seed(0)
    model = _tiny("classification", num_outputs=3).eval()
    token_ids = torch.randint(1, VOCAB, (1, 12))
    padded = token_ids.clone()
    padded[0, 7:] = 0
    # causal: positions < 7 do not see the padding, so the mean over them is the short text's
    torch.testing.assert_close(model(padded), model(token_ids[:, :7]), rtol=0, atol=1e-6)


def test_regression_gives_one_row_per_sequence():
    model = _tiny("regression", num_outputs=2)
    assert model(torch.randint(0, VOCAB, (5, 12))).shape == (5, 2)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            ["model.d_model=30", "model.n_head=4"],
            "model.d_model: must be divisible by model.n_head",
        ),
        (["model.d_model=12", "model.n_head=4"], "model.n_head: rope needs an even head size"),
    ],
)
def test_head_errors_name_the_key(overrides, message):
    with pytest.raises(ConfigError) as info:
        load_config("configs/gpt-stdlib.yaml", overrides)
    assert str(info.value).startswith(message)
    assert "\n" not in str(info.value)


def test_window_longer_than_context_is_refused():
    cfg = GPTConfig(n_layer=1, d_model=16, n_head=2, context=8)
    with pytest.raises(ConfigError, match=r"model.context: the data's windows are 16 tokens"):
        build_model(
            cfg, input_shape=(16,), num_outputs=VOCAB, vocab_size=VOCAB, task="language_model"
        )


@pytest.mark.parametrize("task", ["language_model", "classification"])
@pytest.mark.parametrize("options", VARIANTS[:2])
def test_flops_formula_is_what_summary_and_mfu_use(task, options):
    length, num_outputs = 12, VOCAB if task == "language_model" else 3
    model = _tiny(task, length=length, num_outputs=num_outputs, **options)
    d_model, layers, heads, head_dim = 16, 2, 2, 8
    hidden = swiglu_hidden(16, 4.0) if options["mlp"] == "swiglu" else 64
    mlp = (3 if options["mlp"] == "swiglu" else 2) * d_model * hidden
    blocks = layers * (4 * d_model * d_model + mlp)
    head = num_outputs * d_model
    assert model.matmul_params() == (blocks, head)
    head_tokens = length if task == "language_model" else 1  # a classifier's head runs once
    expected = (6 * blocks + 12 * layers * heads * head_dim * length) * length + (
        6 * head * head_tokens
    )
    assert train_flops_per_sample(model, (length,), torch.int64) == expected  # MFU's count
    summary = summarize_model(model, (length,), input_dtype=torch.int64)
    assert summary.flops_per_sample * 3 == expected
    assert summary.flops_formula.startswith("6N + 12·L·H·Q·T per token")
    # the operator counter agrees on the matmuls; it has no formula for CPU attention kernels
    counted = count_flops_per_sample(model, (length,), input_dtype=torch.int64)
    attention = 4 * layers * heads * head_dim * length * length
    assert counted in (summary.flops_per_sample, summary.flops_per_sample - attention)


def test_language_model_refuses_another_vocab_size():
    cfg = GPTConfig(n_layer=1, d_model=16, n_head=2, vocab_size=50)
    with pytest.raises(ConfigError, match="model.vocab_size: a language model predicts"):
        build_model(
            cfg, input_shape=(8,), num_outputs=VOCAB, vocab_size=VOCAB, task="language_model"
        )


def test_gpt_blocks_are_the_fsdp_units():
    model = _tiny()
    assert block_types_of(GPTConfig(), model) == (GPTBlock,)
