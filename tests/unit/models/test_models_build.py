"""Registry, output shapes and forward numerics of the built-in models against plain torch."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from scaletrain.config import CNNConfig, InitConfig, MLPConfig, TextCNNConfig, UserModelConfig
from scaletrain.errors import ConfigError
from scaletrain.models import (
    MODELS,
    ConvBlock,
    MLPBlock,
    TextConvBlock,
    build_model,
    default_block_types,
)


# --------------------------------------------------------------------------- registry
def test_registry_lists_each_model_with_its_config_class_and_blocks():
    assert MODELS["mlp"].config_class is MLPConfig
    assert MODELS["cnn"].config_class is CNNConfig
    assert MODELS["textcnn"].config_class is TextCNNConfig
    assert MODELS["mlp"].block_types == (MLPBlock,)
    assert set(MODELS["cnn"].block_types) == {ConvBlock, MLPBlock}
    assert MODELS["textcnn"].block_types == (TextConvBlock,)
    for entry in MODELS.values():
        assert entry.builder.__doc__, f"{entry.name}: the docstring is its `list` description"


def test_block_types_match_the_built_modules():
    model = build_model(CNNConfig(channels=[4, 8], head=[16]), input_shape=(1, 8, 8), num_outputs=3)
    blocks = [m for m in model.modules() if isinstance(m, MODELS["cnn"].block_types)]
    assert [type(b) for b in blocks] == [ConvBlock, ConvBlock, MLPBlock]


def test_unknown_model_name_is_a_config_error():
    fake = MLPConfig().model_copy(update={"name": "resnet9000"})
    with pytest.raises(ConfigError, match=r"model\.name: unknown model 'resnet9000'.*mlp"):
        build_model(fake, input_shape=(4,), num_outputs=2)


def test_user_placeholder_cannot_be_built_from_config():
    with pytest.raises(ConfigError, match=r"model\.name: `user`"):
        build_model(UserModelConfig(), input_shape=(4,), num_outputs=2)


def test_textcnn_without_vocab_names_the_key():
    with pytest.raises(ConfigError, match=r"model\.vocab_size"):
        build_model(TextCNNConfig(), input_shape=(10,), num_outputs=2)


def test_textcnn_vocab_from_config_wins_over_data():
    model = build_model(
        TextCNNConfig(vocab_size=50), input_shape=(10,), num_outputs=2, vocab_size=7
    )
    assert model.embedding.num_embeddings == 50
    model = build_model(TextCNNConfig(), input_shape=(10,), num_outputs=2, vocab_size=7)
    assert model.embedding.num_embeddings == 7


def test_textcnn_padding_idx_out_of_range_is_a_config_error():
    with pytest.raises(ConfigError, match=r"model\.padding_idx.*got 9"):
        build_model(TextCNNConfig(padding_idx=9), input_shape=(10,), num_outputs=2, vocab_size=5)


def test_cnn_on_flat_inputs_is_a_config_error():
    with pytest.raises(ConfigError, match=r"data\.layout"):
        build_model(CNNConfig(), input_shape=(64,), num_outputs=10)


def test_same_seed_gives_identical_weights():
    def weights(cfg, **shapes):
        torch.manual_seed(123)
        return build_model(cfg, **shapes).state_dict()

    cases = [
        (MLPConfig(init=InitConfig(name="xavier_normal")), {"input_shape": (5,)}),
        (CNNConfig(), {"input_shape": (1, 8, 8)}),
        (TextCNNConfig(init=InitConfig(name="normal")), {"input_shape": (9,), "vocab_size": 30}),
    ]
    for cfg, shapes in cases:
        first, second = weights(cfg, num_outputs=3, **shapes), weights(cfg, num_outputs=3, **shapes)
        assert all(torch.equal(first[key], second[key]) for key in first)
        torch.manual_seed(124)
        other = build_model(cfg, num_outputs=3, **shapes).state_dict()
        assert not all(torch.equal(first[key], other[key]) for key in first)


def test_default_block_types_of_a_user_module():
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.layers = nn.ModuleList([nn.Linear(4, 4), nn.Linear(4, 4)])
            self.activation = nn.ReLU()
            self.norm = nn.LayerNorm(4)
            self.head = nn.Linear(4, 2)

    assert default_block_types(Net()) == (nn.Linear, nn.LayerNorm)
    assert default_block_types(nn.Sequential(nn.Linear(3, 3), nn.Tanh(), nn.Linear(3, 1))) == (
        nn.Linear,
    )


# --------------------------------------------------------------------------- shapes
@pytest.mark.parametrize("input_shape", [(64,), (1, 8, 8), (3, 5, 2)])
def test_mlp_output_shape_on_any_input_shape(input_shape):
    model = build_model(MLPConfig(hidden=[16, 8]), input_shape=input_shape, num_outputs=4)
    assert model(torch.randn(6, *input_shape)).shape == (6, 4)


def test_mlp_without_hidden_layers_is_linear():
    model = build_model(MLPConfig(hidden=[]), input_shape=(5,), num_outputs=2).double()
    inputs = torch.randn(3, 5, dtype=torch.float64)
    expected = inputs @ model.output.weight.T + model.output.bias
    torch.testing.assert_close(model(inputs), expected)


@pytest.mark.parametrize(
    ("input_shape", "channels", "flat_features"),
    [
        ((1, 8, 8), [32, 64], 64 * 2 * 2),  # digits: 8 -> 4 -> 2
        ((3, 32, 32), [32, 64], 64 * 8 * 8),
        ((1, 8, 8), [4, 4, 4, 4, 4], 4 * 1 * 1),  # pooling stops at 1x1
        ((2, 5, 1), [4, 4], 4 * 5 * 1),  # width 1: never pooled
    ],
)
def test_cnn_output_shape_and_pooling(input_shape, channels, flat_features):
    cfg = CNNConfig(channels=channels, head=[16])
    model = build_model(cfg, input_shape=input_shape, num_outputs=10)
    assert model.head[0].linear.in_features == flat_features
    assert model(torch.randn(2, *input_shape)).shape == (2, 10)


@pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel")
def test_cnn_without_head_and_even_kernel():
    cfg = CNNConfig(channels=[4], kernel_size=2, head=[], dropout=0.3, pool="avg")
    model = build_model(cfg, input_shape=(1, 6, 6), num_outputs=3)
    assert model.output.in_features == 4 * 3 * 3
    assert model(torch.randn(2, 1, 6, 6)).shape == (2, 3)


@pytest.mark.parametrize("batch_norm", [True, False])
def test_cnn_channels_last_matches_contiguous(batch_norm):
    torch.manual_seed(0)
    cfg = CNNConfig(channels=[8, 16], batch_norm=batch_norm, head=[32])
    model = build_model(cfg, input_shape=(3, 12, 12), num_outputs=5).eval()
    inputs = torch.randn(4, 3, 12, 12)
    expected = model(inputs)
    model_cl = model.to(memory_format=torch.channels_last)
    result = model_cl(inputs.to(memory_format=torch.channels_last))
    torch.testing.assert_close(result, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("length", [1, 2, 4, 5, 40])
def test_textcnn_output_shape_any_length(length):
    cfg = TextCNNConfig(embed_dim=8, kernel_sizes=[3, 4, 5], num_filters=6)
    model = build_model(cfg, input_shape=(length,), num_outputs=3, vocab_size=20)
    token_ids = torch.randint(0, 20, (2, length))
    assert model(token_ids).shape == (2, 3)


def test_textcnn_short_sequence_reads_as_right_padded():
    cfg = TextCNNConfig(embed_dim=8, kernel_sizes=[2, 5], num_filters=4, padding_idx=0)
    model = build_model(cfg, input_shape=(3,), num_outputs=2, vocab_size=20).eval()
    short = torch.tensor([[4, 7, 9]])
    padded = torch.tensor([[4, 7, 9, 0, 0]])
    torch.testing.assert_close(model(short), model(padded))


# --------------------------------------------------------------------------- numerics
def test_mlp_forward_matches_hand_written_reference():
    cfg = MLPConfig(hidden=[6, 5], activation="tanh", batch_norm=True)
    model = build_model(cfg, input_shape=(2, 2), num_outputs=3).double().eval()
    for block in model.blocks:  # non-trivial running statistics and affine parameters
        block.norm.running_mean.uniform_(-1, 1)
        block.norm.running_var.uniform_(0.5, 2)
        nn.init.uniform_(block.norm.weight, 0.5, 1.5)
        nn.init.uniform_(block.norm.bias, -0.5, 0.5)
    inputs = torch.randn(7, 2, 2, dtype=torch.float64)
    hidden = inputs.reshape(7, 4)
    for block in model.blocks:
        norm = block.norm
        hidden = hidden @ block.linear.weight.T
        hidden = (hidden - norm.running_mean) / torch.sqrt(norm.running_var + norm.eps)
        hidden = torch.tanh(hidden * norm.weight + norm.bias)
    expected = hidden @ model.output.weight.T + model.output.bias
    torch.testing.assert_close(model(inputs), expected)


def test_textcnn_forward_matches_window_loop_reference():
    cfg = TextCNNConfig(embed_dim=5, kernel_sizes=[2, 3], num_filters=4, dropout=0.0)
    model = build_model(cfg, input_shape=(6,), num_outputs=3, vocab_size=11).double().eval()
    token_ids = torch.randint(0, 11, (2, 6))
    embedded = model.embedding.weight[token_ids]  # (B, T, E)
    features = []
    for block in model.blocks:
        weight, bias = block.conv.weight, block.conv.bias  # (F, E, k), (F,)
        width = weight.shape[2]
        windows = [
            sum(embedded[:, t + k] @ weight[:, :, k].T for k in range(width)) + bias
            for t in range(6 - width + 1)
        ]
        features.append(torch.stack(windows, dim=2).relu().max(dim=2).values)
    expected = torch.cat(features, dim=1) @ model.output.weight.T + model.output.bias
    torch.testing.assert_close(model(token_ids), expected)


def test_dropout_only_in_train_mode():
    cfg = MLPConfig(hidden=[64], dropout=0.5)
    model = build_model(cfg, input_shape=(8,), num_outputs=2)
    inputs = torch.randn(4, 8)
    model.eval()
    torch.testing.assert_close(model(inputs), model(inputs))
    model.train()
    torch.manual_seed(0)
    first = model(inputs)
    assert not torch.allclose(first, model(inputs))
