"""TextCNN's `same` padding and hidden layer against plain torch (the Keras walkthrough's
Conv1D(64, 7, padding="same") -> GlobalMaxPool1D -> Dense(32, relu) -> Dropout -> Dense)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from scaletrain.config import TextCNNConfig
from scaletrain.models import build_model


def test_same_padding_and_hidden_layer_match_plain_torch():
    cfg = TextCNNConfig(embed_dim=6, kernel_sizes=[7], num_filters=5, padding="same", hidden=4)
    model = build_model(cfg, input_shape=(9,), num_outputs=3, vocab_size=13).double().eval()
    token_ids = torch.randint(0, 13, (4, 9))
    conv = model.blocks[0].conv
    embedded = model.embedding.weight[token_ids].transpose(1, 2)  # (B, E, T)
    # `same` for kernel 7: three zero positions on each side, output length = input length
    features = F.conv1d(embedded, conv.weight, conv.bias, padding=3)
    assert features.shape[2] == 9
    pooled = features.relu().amax(dim=2)  # (B, F)
    dense = model.hidden[0]
    hidden = (pooled @ dense.weight.T + dense.bias).relu()  # (B, 4)
    expected = hidden @ model.output.weight.T + model.output.bias
    torch.testing.assert_close(model(token_ids), expected)


def test_hidden_zero_keeps_the_parameter_names():
    plain = build_model(TextCNNConfig(), input_shape=(9,), num_outputs=2, vocab_size=20)
    hidden = build_model(TextCNNConfig(hidden=32), input_shape=(9,), num_outputs=2, vocab_size=20)
    assert not any(name.startswith("hidden") for name in plain.state_dict())
    assert hidden.hidden[0].weight.shape == (32, 64 * 3)
    assert hidden.output.weight.shape == (2, 32)


@pytest.mark.parametrize("length", [1, 3, 7, 50])
def test_same_padding_any_length(length):
    cfg = TextCNNConfig(kernel_sizes=[7], padding="same", hidden=32)
    model = build_model(cfg, input_shape=(length,), num_outputs=4, vocab_size=30)
    assert model(torch.randint(0, 30, (2, length))).shape == (2, 4)
