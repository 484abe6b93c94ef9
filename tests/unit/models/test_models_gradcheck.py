"""Analytic gradients of every model against finite differences (float64, tiny shapes)."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.autograd import gradcheck
from torch.func import functional_call

from scaletrain.config import CNNConfig, InitConfig, MLPConfig, TextCNNConfig
from scaletrain.models import build_model


def _check_inputs_and_parameters(model: nn.Module, inputs: torch.Tensor) -> None:
    """gradcheck the output w.r.t. the inputs and every parameter at once."""
    names = [name for name, _ in model.named_parameters()]
    parameters = [p.detach().clone().requires_grad_() for _, p in model.named_parameters()]

    def forward(x: torch.Tensor, *values: torch.Tensor) -> torch.Tensor:
        return functional_call(model, dict(zip(names, values, strict=True)), (x,))

    assert gradcheck(forward, (inputs.requires_grad_(), *parameters), eps=1e-6, atol=1e-5)


@pytest.mark.parametrize(
    ("activation", "batch_norm", "train_mode"),
    [
        ("relu", False, True),
        ("leaky_relu", False, True),
        ("tanh", True, True),
        ("gelu", True, False),
    ],
)
def test_mlp_gradients(activation, batch_norm, train_mode):
    torch.manual_seed(0)
    cfg = MLPConfig(hidden=[5, 4], activation=activation, batch_norm=batch_norm, dropout=0.0)
    model = build_model(cfg, input_shape=(2, 3), num_outputs=3).double().train(train_mode)
    # train-mode BatchNorm normalizes by batch statistics: the gradient couples samples
    _check_inputs_and_parameters(model, torch.randn(4, 2, 3, dtype=torch.float64))


@pytest.mark.parametrize(("batch_norm", "pool"), [(True, "max"), (False, "avg"), (True, "none")])
def test_cnn_gradients(batch_norm, pool):
    torch.manual_seed(0)
    # tanh: smooth, so finite differences never straddle a ReLU kink
    cfg = CNNConfig(channels=[2, 3], batch_norm=batch_norm, pool=pool, head=[4], activation="tanh")
    model = build_model(cfg, input_shape=(1, 4, 4), num_outputs=2).double().train()
    _check_inputs_and_parameters(model, torch.randn(2, 1, 4, 4, dtype=torch.float64))


def test_cnn_gradients_channels_last():
    torch.manual_seed(0)
    cfg = CNNConfig(channels=[2], batch_norm=True, head=[3], activation="tanh")
    model = build_model(cfg, input_shape=(2, 4, 4), num_outputs=2).double().eval()
    model = model.to(memory_format=torch.channels_last)
    inputs = torch.randn(2, 2, 4, 4, dtype=torch.float64).to(memory_format=torch.channels_last)
    _check_inputs_and_parameters(model, inputs)


@pytest.mark.parametrize("length", [7, 2])  # 2 < largest kernel: the padded path
def test_textcnn_gradients_wrt_all_weights(length):
    torch.manual_seed(0)
    cfg = TextCNNConfig(
        embed_dim=3,
        kernel_sizes=[2, 3],
        num_filters=2,
        dropout=0.0,
        padding_idx=0,
        init=InitConfig(name="normal", std=0.5),
    )
    model = build_model(cfg, input_shape=(length,), num_outputs=2, vocab_size=6).double()
    for name, parameter in model.named_parameters():
        if name.endswith("bias"):  # zero biases put all-padding windows exactly on ReLU's kink
            nn.init.uniform_(parameter.detach(), 0.2, 0.5)
    token_ids = torch.randint(0, 6, (2, length))  # integers: check w.r.t. the weights instead
    names = [name for name, _ in model.named_parameters()]
    parameters = [p.detach().clone() for _, p in model.named_parameters()]
    embedding_index = names.index("embedding.weight")
    # The padding row is frozen by design (zero gradient): vary only the other rows.
    padding_row = parameters[embedding_index][:1]
    parameters[embedding_index] = parameters[embedding_index][1:]

    def forward(*values: torch.Tensor) -> torch.Tensor:
        values = list(values)
        values[embedding_index] = torch.cat([padding_row, values[embedding_index]])
        return functional_call(model, dict(zip(names, values, strict=True)), (token_ids,))

    inputs = tuple(p.requires_grad_() for p in parameters)
    assert gradcheck(forward, inputs, eps=1e-6, atol=1e-5)


def test_textcnn_padding_row_gets_no_gradient():
    torch.manual_seed(0)
    cfg = TextCNNConfig(embed_dim=4, kernel_sizes=[2], num_filters=16, padding_idx=0, dropout=0.0)
    model = build_model(cfg, input_shape=(5,), num_outputs=2, vocab_size=8)
    model(torch.tensor([[3, 0, 5, 0, 0]])).sum().backward()
    gradient = model.embedding.weight.grad
    assert torch.count_nonzero(gradient[0]) == 0
    assert torch.count_nonzero(gradient[3]) > 0 and torch.count_nonzero(gradient[5]) > 0
