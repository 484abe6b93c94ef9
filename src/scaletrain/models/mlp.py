"""Multi-layer perceptron on flattened inputs; its hidden block is reused by the CNN head."""

from __future__ import annotations

import math

from torch import Tensor, nn

from scaletrain.config import MLPConfig
from scaletrain.models.registry import register_model

_ACTIVATIONS: dict[str, type[nn.Module]] = {
    "relu": nn.ReLU,
    "gelu": nn.GELU,
    "tanh": nn.Tanh,
    "sigmoid": nn.Sigmoid,
    "silu": nn.SiLU,
    "leaky_relu": nn.LeakyReLU,
}


def make_activation(name: str) -> nn.Module:
    """A fresh activation module for a config's ``activation`` string."""
    return _ACTIVATIONS[name]()


class MLPBlock(nn.Module):
    """One hidden layer: Linear [+ BatchNorm1d] + activation [+ dropout]."""

    def __init__(
        self,
        in_features: int,
        out_features: int,
        *,
        activation: str,
        dropout: float = 0.0,
        batch_norm: bool = False,
    ) -> None:
        super().__init__()
        # A bias before BatchNorm is cancelled by its mean subtraction: skip it.
        self.linear = nn.Linear(in_features, out_features, bias=not batch_norm)
        self.norm = nn.BatchNorm1d(out_features) if batch_norm else nn.Identity()
        self.activation = make_activation(activation)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:  # (B, in) -> (B, out)
        return self.dropout(self.activation(self.norm(self.linear(x))))


def make_blocks(
    in_features: int, widths: list[int], *, activation: str, dropout: float, batch_norm: bool
) -> nn.Sequential:
    """Stack MLP blocks of the given widths, starting from ``in_features``."""
    blocks = []
    for width in widths:
        blocks.append(
            MLPBlock(
                in_features, width, activation=activation, dropout=dropout, batch_norm=batch_norm
            )
        )
        in_features = width
    return nn.Sequential(*blocks)


class MLP(nn.Module):
    """Flatten, hidden MLP blocks, then a linear layer to the outputs."""

    def __init__(self, cfg: MLPConfig, *, in_features: int, num_outputs: int) -> None:
        super().__init__()
        self.blocks = make_blocks(
            in_features,
            cfg.hidden,
            activation=cfg.activation,
            dropout=cfg.dropout,
            batch_norm=cfg.batch_norm,
        )
        last_width = cfg.hidden[-1] if cfg.hidden else in_features
        self.output = nn.Linear(last_width, num_outputs)

    def forward(self, x: Tensor) -> Tensor:  # (B, *input_shape) -> (B, num_outputs)
        # flatten, not view: inputs may be non-contiguous (channels_last images)
        return self.output(self.blocks(x.flatten(1)))


@register_model("mlp", config_class=MLPConfig, block_types=(MLPBlock,))
def build_mlp(
    cfg: MLPConfig,
    *,
    input_shape: tuple[int, ...],
    num_outputs: int,
    vocab_size: int | None = None,
    task: str = "classification",
) -> MLP:
    """Fully connected network on flattened features (any input shape)."""
    return MLP(cfg, in_features=math.prod(input_shape), num_outputs=num_outputs)
