"""Structured rnn pruning of hidden units: a normal rnn (smaller `model.hidden`) that computes
what the original does with the removed units' gate rows zeroed (their state stays 0)."""

from __future__ import annotations

import pytest
import torch

from scaletrain.compress.shrink import channel_fraction, check_shrinkable, copy_kept, shrunk_config
from scaletrain.compress.shrink_rnn import kept_hidden
from scaletrain.config.models import RNNConfig
from scaletrain.models.rnn import RNN

VOCAB = 11


def _rnn(cfg: RNNConfig, language_model: bool) -> RNN:
    outputs = VOCAB if language_model else 3
    return RNN(cfg, vocab_size=VOCAB, num_outputs=outputs, language_model=language_model)


def _zero_removed(model: RNN, kept: list[list[torch.Tensor]]) -> None:
    """The reference: every gate's row of a removed unit (weights and biases) zero. Then an
    LSTM's c and h, a GRU's and a tanh rnn's h stay 0 for it, so nothing reads it."""
    rnn = model.recurrent.rnn
    hidden = rnn.hidden_size
    for layer, per_direction in enumerate(kept):
        for keep, suffix in zip(per_direction, ["", "_reverse"], strict=False):
            removed = torch.ones(hidden, dtype=torch.bool)
            removed[keep] = False
            for kind in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
                param = getattr(rnn, f"{kind}_l{layer}{suffix}")
                param.data.view(-1, hidden, *param.shape[1:])[:, removed] = 0


@pytest.mark.parametrize(
    ("cell", "layers", "bidirectional", "pool", "language_model"),
    [
        ("lstm", 2, True, "last", False),
        ("gru", 2, False, "max", False),
        ("lstm", 1, False, "last", True),
        ("rnn", 2, True, "mean", False),
    ],
)
def test_shrunk_rnn_equals_the_original_with_removed_units_zeroed(
    cell, layers, bidirectional, pool, language_model
):
    torch.manual_seed(0)
    cfg = RNNConfig(
        cell=cell, embed_dim=5, hidden=8, layers=layers, bidirectional=bidirectional, pool=pool
    )
    check_shrinkable(cfg)
    model = _rnn(cfg, language_model).double().eval()
    small_cfg = shrunk_config(cfg, 0.375)
    assert small_cfg.hidden == 5 and channel_fraction(cfg, small_cfg) == 0.375
    small = _rnn(small_cfg, language_model).double().eval()
    copy_kept(model, small)
    kept = kept_hidden(model, 5)
    assert len(kept) == layers and all(len(d) == (2 if bidirectional else 1) for d in kept)
    if bidirectional:  # each direction ranks its own units
        assert any(not torch.equal(forward, backward) for forward, backward in kept)
    tokens = torch.randint(1, VOCAB, (4, 7), generator=torch.Generator().manual_seed(1))
    tokens[0, 4:] = 0  # padding: packed sequences of different lengths
    with torch.no_grad():
        got = small(tokens)
        _zero_removed(model, kept)
        expected = model(tokens)
    torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-12)
    assert sum(p.numel() for p in small.parameters()) < sum(p.numel() for p in model.parameters())


def test_generation_cache_matches_the_smaller_width():
    cfg = RNNConfig(cell="gru", embed_dim=4, hidden=6)
    model, small = _rnn(cfg, True), _rnn(shrunk_config(cfg, 0.5), True)
    copy_kept(model, small)
    cache = small.new_cache(2, 5)
    assert cache.h.shape == (1, 2, 3)
    tokens = torch.randint(0, VOCAB, (2, 5), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        stepwise = torch.cat([small(tokens[:, i : i + 1], cache) for i in range(5)], dim=1)
        torch.testing.assert_close(stepwise, small(tokens), rtol=1e-5, atol=1e-6)
