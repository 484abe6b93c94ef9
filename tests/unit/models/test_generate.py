"""Sampling (models/generate.py): the KV cache changes no token, seeds reproduce, top-k/top-p
filtering against a hand computation, a window past the context, refusals of bad values."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from scaletrain.config.models import GPTConfig
from scaletrain.errors import UserError
from scaletrain.models import build_model
from scaletrain.models.generate import Sampling, filter_logits, generate

VOCAB = 41


def _gpt(*, context: int = 32, seed: int = 0, **options) -> nn.Module:
    torch.manual_seed(seed)
    cfg = GPTConfig(n_layer=2, d_model=32, n_head=4, context=context, **options)
    model = build_model(
        cfg, input_shape=(context,), num_outputs=VOCAB, vocab_size=VOCAB, task="language_model"
    )
    with torch.no_grad():  # larger logits than GPT-2 init: sampled tokens differ by seed
        model.head.weight.mul_(20)
    return model.eval()


class WithoutCache(nn.Module):
    """The same GPT seen as a user module: no ``new_cache``, so every token is a full pass."""

    def __init__(self, gpt: nn.Module) -> None:
        super().__init__()
        self.gpt, self.context = gpt, gpt.context

    def forward(self, token_ids):
        return self.gpt(token_ids)


PROMPT = torch.tensor([[5, 9, 2, 7], [1, 1, 3, 4]])


@pytest.mark.parametrize(
    "options", [dict(positions="rope"), dict(positions="learned", norm="layernorm", mlp="gelu")]
)
def test_greedy_with_and_without_kv_cache_identical(options):
    model = _gpt(**options)
    cached = generate(model, PROMPT, max_new_tokens=20, sampling=Sampling(temperature=0))
    full = generate(
        WithoutCache(model), PROMPT, max_new_tokens=20, sampling=Sampling(temperature=0)
    )
    assert cached.token_ids.shape == (2, 20)
    assert torch.equal(cached.token_ids, full.token_ids)


def test_greedy_past_the_context_matches_a_sliding_window_of_halves():
    """The cache refills from the last context // 2 tokens; the recomputed path slides by one,
    so compare the first context - len(prompt) tokens exactly, and the rest only in shape."""
    model = _gpt(context=8)
    cached = generate(model, PROMPT, max_new_tokens=12, sampling=Sampling(temperature=0))
    full = generate(WithoutCache(model), PROMPT, max_new_tokens=12, sampling=Sampling(0))
    assert cached.token_ids.shape == full.token_ids.shape == (2, 12)
    assert torch.equal(cached.token_ids[:, :5], full.token_ids[:, :5])


def test_greedy_step_by_step_is_the_argmax_of_a_full_forward():
    model = _gpt()
    out = generate(model, PROMPT, max_new_tokens=6, sampling=Sampling(temperature=0)).token_ids
    sequence = PROMPT
    for index in range(6):
        expected = model(sequence)[:, -1].argmax(dim=-1, keepdim=True)
        assert torch.equal(out[:, index : index + 1], expected)
        sequence = torch.cat((sequence, expected), dim=1)


def test_same_seed_same_tokens_other_seed_other_tokens():
    model = _gpt()
    draws = {
        seed: generate(model, PROMPT, max_new_tokens=30, seed=seed).token_ids for seed in (0, 0, 1)
    }
    again = generate(model, PROMPT, max_new_tokens=30, seed=0).token_ids
    assert torch.equal(draws[0], again)
    assert not torch.equal(draws[0], draws[1])


@pytest.mark.parametrize("sampling", [Sampling(top_k=1), Sampling(top_p=1e-6)])
def test_top_k_one_and_tiny_top_p_are_greedy(sampling):
    model = _gpt()
    greedy = generate(model, PROMPT, max_new_tokens=15, sampling=Sampling(temperature=0))
    for seed in (0, 1, 2):
        sampled = generate(model, PROMPT, max_new_tokens=15, sampling=sampling, seed=seed)
        assert torch.equal(sampled.token_ids, greedy.token_ids)


def test_filter_logits_against_hand_computation():
    logits = torch.log(torch.tensor([[0.05, 0.4, 0.1, 0.3, 0.15]]))
    top_k = filter_logits(logits, top_k=2, top_p=None)
    assert torch.isfinite(top_k).tolist() == [[False, True, False, True, False]]
    # nucleus 0.75: 0.4 + 0.3 = 0.7 < 0.75, so 0.15 joins; 0.1 and 0.05 are cut
    top_p = filter_logits(logits, top_k=None, top_p=0.75)
    assert torch.isfinite(top_p).tolist() == [[False, True, False, True, True]]
    both = filter_logits(logits, top_k=2, top_p=0.6)  # within the top 2: 0.4/0.7 < 0.6
    assert torch.isfinite(both).tolist() == [[False, True, False, True, False]]
    assert torch.equal(filter_logits(logits, top_k=None, top_p=1.0), logits)


def test_sampled_frequencies_follow_the_filtered_distribution():
    """Temperature 1, top-p 0.75 on fixed logits: draws follow 0.4/0.3/0.15 renormalized."""
    probs = torch.tensor([0.05, 0.4, 0.1, 0.3, 0.15])

    class Fixed(nn.Module):
        def forward(self, token_ids):
            return probs.log().expand(token_ids.shape[0], token_ids.shape[1], 5)

    draws = generate(
        Fixed(),
        torch.zeros(4000, 1, dtype=torch.long),
        max_new_tokens=1,
        seed=3,
        sampling=Sampling(top_p=0.75),
    ).token_ids.flatten()
    counts = torch.bincount(draws, minlength=5).double() / len(draws)
    expected = torch.tensor([0, 0.4, 0, 0.3, 0.15], dtype=torch.float64) / 0.85
    assert torch.allclose(counts, expected, atol=0.03)


def test_prompt_longer_than_context_keeps_the_last_tokens():
    model = _gpt(context=8)
    long_prompt = torch.randint(1, VOCAB, (1, 13))
    out = generate(model, long_prompt, max_new_tokens=3, sampling=Sampling(temperature=0))
    tail = generate(model, long_prompt[:, -8:], max_new_tokens=3, sampling=Sampling(0))
    assert out.prompt_tokens_dropped == 5 and tail.prompt_tokens_dropped == 0
    assert torch.equal(out.token_ids, tail.token_ids)


def test_eos_stops_every_row():
    model = _gpt()
    greedy = generate(model, PROMPT[:1], max_new_tokens=10, sampling=Sampling(0)).token_ids
    eos = int(greedy[0, 2])
    out = generate(model, PROMPT[:1], max_new_tokens=10, sampling=Sampling(0), eos_id=eos)
    first = int((greedy[0] == eos).nonzero()[0])
    assert out.token_ids.tolist() == [greedy[0, : first + 1].tolist()]


@pytest.mark.parametrize(
    ("kwargs", "culprit"),
    [
        (dict(sampling=Sampling(temperature=-0.5)), "temperature"),
        (dict(sampling=Sampling(top_p=0.0)), "top_p"),
        (dict(sampling=Sampling(top_p=1.5)), "top_p"),
        (dict(sampling=Sampling(top_k=0)), "top_k"),
        (dict(max_new_tokens=0), "max_new_tokens"),
    ],
)
def test_bad_values_are_one_line_naming_the_culprit(kwargs, culprit):
    options = dict(max_new_tokens=4) | kwargs
    with pytest.raises(UserError, match=rf"^{culprit}: ") as info:
        generate(_gpt(), PROMPT, **options)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_rnn_greedy_with_and_without_its_state_cache_identical(cell):
    """The rnn's hidden-state cache (models/rnn.py, the same contract) changes no token."""
    rnn = pytest.importorskip("scaletrain.models.rnn")
    from scaletrain.config.models import RNNConfig

    torch.manual_seed(0)
    cfg = RNNConfig(cell=cell, embed_dim=16, hidden=32, layers=2)
    model = build_model(
        cfg, input_shape=(12,), num_outputs=VOCAB, vocab_size=VOCAB, task="language_model"
    ).eval()
    assert isinstance(model, rnn.RNN)

    class Uncached(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.inner = model

        def forward(self, token_ids):
            return self.inner(token_ids)

    greedy = Sampling(temperature=0)
    cached = generate(model, PROMPT, max_new_tokens=25, sampling=greedy).token_ids
    full = generate(Uncached(), PROMPT, max_new_tokens=25, sampling=greedy).token_ids
    assert cached.shape == (2, 25) and torch.equal(cached, full)
    sampled = generate(model, PROMPT, max_new_tokens=25, seed=4).token_ids
    assert torch.equal(sampled, generate(Uncached(), PROMPT, max_new_tokens=25, seed=4).token_ids)
