"""The `rnn` model against plain torch and float64: gradients, packing, causality, the cache."""

from __future__ import annotations

import copy
import warnings

import pytest
import torch
import torch._dynamo  # noqa: F401  (FlopCounterMode's import sets an env var: see test_models_flops)
from torch import nn
from torch.autograd import gradcheck
from torch.func import functional_call

from scaletrain.config.models import RNNConfig
from scaletrain.errors import ConfigError
from scaletrain.models import MODELS, RecurrentStack, build_model, summarize_model
from scaletrain.models.flops import train_flops_per_sample

CELLS = ["lstm", "gru", "rnn"]
VOCAB = 11


def _model(task: str = "classification", *, num_outputs: int = 3, **options) -> nn.Module:
    torch.manual_seed(0)
    cfg = RNNConfig(**{"embed_dim": 4, "hidden": 5, **options})
    outputs = VOCAB if task == "language_model" else num_outputs
    model = build_model(cfg, input_shape=(7,), num_outputs=outputs, vocab_size=VOCAB, task=task)
    return model.eval()


def _padded_batch() -> tuple[torch.Tensor, list[int]]:
    """Three sequences of lengths 7, 3 and 5, padded with id 0 at the end as the encoder does."""
    lengths = [7, 3, 5]
    ids = torch.randint(1, VOCAB, (3, 7), generator=torch.Generator().manual_seed(1))
    for row, length in enumerate(lengths):
        ids[row, length:] = 0
    return ids, lengths


# --------------------------------------------------------------------------- registry
def test_registered_with_the_recurrent_stack_as_its_one_block():
    assert MODELS["rnn"].config_class is RNNConfig
    assert MODELS["rnn"].block_types == (RecurrentStack,)
    model = _model(layers=3)
    assert [type(m) for m in model.modules() if isinstance(m, RecurrentStack)] == [RecurrentStack]


@pytest.mark.parametrize(("cell", "torch_class"), [("lstm", nn.LSTM), ("gru", nn.GRU)])
def test_options_reach_the_torch_module(cell, torch_class):
    model = _model(cell=cell, layers=2, bidirectional=True, dropout=0.25, hidden=6)
    rnn = model.recurrent.rnn
    assert type(rnn) is torch_class and rnn.num_layers == 2 and rnn.bidirectional
    assert rnn.dropout == 0.25 and rnn.hidden_size == 6 and model.dropout.p == 0.25
    assert model.head.in_features == 12  # both directions


def test_one_layer_with_dropout_does_not_warn():
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # torch warns when dropout is set on a 1-layer stack
        model = _model(layers=1, dropout=0.5)
    assert model.recurrent.rnn.dropout == 0.0 and model.dropout.p == 0.5


@pytest.mark.parametrize("task", ["classification", "regression", "language_model"])
def test_output_shapes_per_task(task):
    model = _model(task, num_outputs=2)
    ids, _ = _padded_batch()
    expected = (3, 7, VOCAB) if task == "language_model" else (3, 2)
    output = model(ids)
    assert output.shape == expected and output.is_contiguous()


# --------------------------------------------------------------------------- config errors
def test_bidirectional_language_model_is_refused_naming_the_key():
    with pytest.raises(ConfigError, match=r"^model\.bidirectional: .*language") as error:
        _model("language_model", bidirectional=True)
    assert "\n" not in str(error.value)


@pytest.mark.parametrize(
    ("options", "shape", "vocab_size", "culprit"),
    [
        ({}, (7,), None, r"model\.vocab_size"),
        ({"padding_idx": VOCAB}, (7,), VOCAB, r"model\.padding_idx"),
        ({}, (1, 7), VOCAB, r"model\.name: `rnn` needs token-id sequences"),
    ],
)
def test_build_errors_name_the_key(options, shape, vocab_size, culprit):
    with pytest.raises(ConfigError, match=culprit):
        build_model(RNNConfig(**options), input_shape=shape, num_outputs=2, vocab_size=vocab_size)


# --------------------------------------------------------------------------- gradients
def _loss(model: nn.Module, ids: torch.Tensor) -> torch.Tensor:
    output = model(ids)
    return (output * torch.linspace(-1, 1, output.shape[-1], dtype=output.dtype)).sum()


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize(
    ("task", "pool", "bidirectional"),
    [
        ("classification", "last", True),
        ("classification", "max", False),
        ("language_model", "last", False),
    ],
)
def test_float32_gradients_match_float64(cell, task, pool, bidirectional):
    model = _model(task, cell=cell, layers=2, pool=pool, bidirectional=bidirectional)
    reference = copy.deepcopy(model).double()
    ids, _ = _padded_batch()
    _loss(model, ids).backward()
    _loss(reference, ids).backward()
    for (name, parameter), exact in zip(
        model.named_parameters(), reference.parameters(), strict=True
    ):
        assert exact.grad.abs().sum() > 0, f"{name}: no gradient reaches it"
        torch.testing.assert_close(parameter.grad, exact.grad.float(), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("pool", ["last", "mean"])
def test_gradcheck_wrt_every_weight_in_float64(cell, pool):
    model = _model(cell=cell, layers=2, bidirectional=True, pool=pool, hidden=3).double()
    ids, _ = _padded_batch()
    # the padding row of the embedding is frozen by design: vary every other weight
    names = [name for name, _ in model.named_parameters() if name != "embedding.weight"]
    values = [model.get_parameter(name).detach().clone().requires_grad_() for name in names]

    def forward(*weights: torch.Tensor) -> torch.Tensor:
        return functional_call(model, dict(zip(names, weights, strict=True)), (ids,))

    assert gradcheck(forward, tuple(values), eps=1e-6, atol=1e-5, fast_mode=True)


# --------------------------------------------------------------------------- packing
@pytest.mark.parametrize("cell", ["lstm", "gru"])
@pytest.mark.parametrize("pool", ["last", "mean", "max"])
@pytest.mark.parametrize("bidirectional", [False, True])
def test_padded_batch_equals_each_sequence_alone(cell, pool, bidirectional):
    model = _model(cell=cell, layers=2, pool=pool, bidirectional=bidirectional)
    ids, lengths = _padded_batch()
    with torch.no_grad():
        batched = model(ids)
        alone = torch.cat([model(ids[row : row + 1, :n]) for row, n in enumerate(lengths)])
        # the same model reading the padding as tokens differs: the test can fail
        model.padding_idx = None
        unpacked = model(ids)
    torch.testing.assert_close(batched, alone, rtol=1e-5, atol=1e-6)
    assert not torch.allclose(unpacked[1:], alone[1:], atol=1e-4)


def test_bidirectional_last_joins_forward_last_step_and_backward_first_step():
    model = _model(cell="lstm", layers=2, pool="last", bidirectional=True)
    ids, lengths = _padded_batch()
    rnn, hidden = model.recurrent.rnn, 5
    with torch.no_grad():
        expected = []
        for row, n in enumerate(lengths):  # plain torch on the unpadded sequence
            outputs, _ = rnn(model.embedding(ids[row, :n]).unsqueeze(1))  # (n, 1, 2H)
            expected.append(torch.cat([outputs[n - 1, 0, :hidden], outputs[0, 0, hidden:]]))
        torch.testing.assert_close(model(ids), model.head(torch.stack(expected)))


def test_all_padding_sequence_reads_as_one_padding_step():
    model = _model(pool="mean", bidirectional=True)
    ids, _ = _padded_batch()
    ids[1] = 0
    with torch.no_grad():
        output = model(ids)
        one_step = model(torch.zeros(1, 1, dtype=torch.long))
    assert torch.isfinite(output).all()
    torch.testing.assert_close(output[1:2], one_step)


def test_no_padding_id_reads_every_step():
    ids, _ = _padded_batch()
    model = _model(padding_idx=None, pool="last")
    rnn = model.recurrent.rnn
    with torch.no_grad():
        expected = model.head(rnn(model.embedding(ids).transpose(0, 1))[1][0][-1])
        assert torch.equal(model(ids), expected)


# --------------------------------------------------------------------------- language model
@pytest.mark.parametrize("cell", CELLS)
def test_language_model_is_causal(cell):
    model = _model("language_model", cell=cell, layers=2)
    ids = torch.randint(1, VOCAB, (2, 7), generator=torch.Generator().manual_seed(2))
    changed = ids.clone()
    changed[:, 4:] = (ids[:, 4:] % (VOCAB - 1)) + 1  # a different token at every step >= 4
    with torch.no_grad():
        before, after = model(ids), model(changed)
    assert torch.equal(before[:, :4], after[:, :4])  # no step sees the future
    assert not torch.allclose(before[:, 4:], after[:, 4:])


@pytest.mark.parametrize("cell", CELLS)
def test_cached_token_by_token_logits_equal_the_full_pass(cell):
    model = _model("language_model", cell=cell, layers=2)
    ids = torch.randint(1, VOCAB, (2, 7), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        full = model(ids)
        cache = model.new_cache(batch_size=2, max_length=7)
        pieces = [model(ids[:, :3], cache=cache)]  # prefill
        assert cache.length == 3
        pieces += [model(ids[:, step : step + 1], cache=cache) for step in range(3, 7)]
    assert cache.length == 7 and (cache.c is not None) == (cell == "lstm")
    torch.testing.assert_close(torch.cat(pieces, dim=1), full, rtol=1e-5, atol=1e-6)


def test_cache_under_bf16_autocast_keeps_its_dtype_and_follows_the_full_pass():
    model = _model("language_model", cell="lstm", layers=2)
    ids = torch.randint(1, VOCAB, (2, 7), generator=torch.Generator().manual_seed(4))
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        full = model(ids)
        cache = model.new_cache(2, 7)
        pieces = [model(ids[:, :3], cache=cache)]
        pieces += [model(ids[:, step : step + 1], cache=cache) for step in range(3, 7)]
    assert cache.h.dtype == cache.c.dtype == torch.float32
    torch.testing.assert_close(torch.cat(pieces, dim=1).float(), full.float(), rtol=0, atol=0.05)


def test_cache_misuse_is_refused():
    model = _model("language_model")
    cache = model.new_cache(batch_size=1, max_length=3)
    with pytest.raises(ValueError, match="made for 3 tokens; it holds 0 and was given 4"):
        model(torch.ones(1, 4, dtype=torch.long), cache=cache)
    classifier = _model()
    with pytest.raises(ValueError, match="language models"):
        classifier.new_cache(batch_size=1, max_length=3)


# --------------------------------------------------------------------------- precision
@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("task", ["classification", "language_model"])
def test_bf16_autocast_trains_close_to_float32(cell, task):
    model = _model(task, cell=cell, layers=2, pool="mean")
    ids, _ = _padded_batch()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        output = model(ids)
    output.float().sum().backward()
    with torch.no_grad():
        reference = model(ids)
    assert all(torch.isfinite(p.grad).all() for p in model.parameters())
    torch.testing.assert_close(output.float(), reference, rtol=0, atol=0.05)


# --------------------------------------------------------------------------- FLOPs
@pytest.mark.parametrize(
    ("cell", "gates", "task"),
    [("lstm", 4, "classification"), ("gru", 3, "language_model"), ("rnn", 1, "classification")],
)
def test_train_flops_hand_count_over_all_steps(cell, gates, task):
    # the CPU kernel hides its products from the counter; on meta they are counted
    model = _model(task, cell=cell, layers=2, embed_dim=4, hidden=5)
    embed, hidden, steps = 4, 5, 7
    per_step = 2 * gates * hidden * (embed + hidden) + 2 * gates * hidden * (hidden + hidden)
    head = 2 * hidden * (VOCAB * steps if task == "language_model" else 3)
    forward = steps * per_step + head
    assert train_flops_per_sample(model, (steps,), torch.int64) == 3 * forward
    summary = summarize_model(model, (steps,), input_dtype=torch.int64)
    assert summary.shapes_from == "meta" and summary.flops_per_sample == forward
