"""Small image CNN: conv blocks with 2x2 pooling, then an MLP head."""

from __future__ import annotations

from torch import Tensor, nn

from scaletrain.config import CNNConfig
from scaletrain.errors import ConfigError
from scaletrain.models.mlp import MLPBlock, make_activation, make_blocks
from scaletrain.models.registry import register_model

_POOLS: dict[str, type[nn.Module]] = {"max": nn.MaxPool2d, "avg": nn.AvgPool2d}


class ConvBlock(nn.Module):
    """Conv2d (same padding) [+ BatchNorm2d] + activation [+ 2x2 pool]."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        *,
        kernel_size: int,
        activation: str,
        batch_norm: bool,
        pool: str,
    ) -> None:
        super().__init__()
        # A bias before BatchNorm is cancelled by its mean subtraction: skip it.
        self.conv = nn.Conv2d(
            in_channels, out_channels, kernel_size, padding="same", bias=not batch_norm
        )
        self.norm = nn.BatchNorm2d(out_channels) if batch_norm else nn.Identity()
        self.activation = make_activation(activation)
        self.pool = _POOLS[pool](2) if pool in _POOLS else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:  # (B, C_in, H, W) -> (B, C_out, H', W')
        return self.pool(self.activation(self.norm(self.conv(x))))


class CNN(nn.Module):
    """Conv blocks, flatten, MLP head blocks, linear output."""

    def __init__(self, cfg: CNNConfig, *, input_shape: tuple[int, int, int], num_outputs: int):
        super().__init__()
        channels, height, width = input_shape
        blocks = []
        for out_channels in cfg.channels:
            # Pool only while both sides can halve: digits (8x8) with many blocks stays valid.
            pool = cfg.pool if height >= 2 and width >= 2 else "none"
            blocks.append(
                ConvBlock(
                    channels,
                    out_channels,
                    kernel_size=cfg.kernel_size,
                    activation=cfg.activation,
                    batch_norm=cfg.batch_norm,
                    pool=pool,
                )
            )
            if pool != "none":
                height, width = height // 2, width // 2
            channels = out_channels
        self.features = nn.Sequential(*blocks)
        num_features = channels * height * width
        self.head = make_blocks(
            num_features, cfg.head, activation=cfg.activation, dropout=cfg.dropout, batch_norm=False
        )
        # Without head layers, dropout acts on the flattened features instead.
        self.dropout = nn.Dropout(cfg.dropout) if cfg.dropout > 0 and not cfg.head else None
        last_width = cfg.head[-1] if cfg.head else num_features
        self.output = nn.Linear(last_width, num_outputs)

    def forward(self, x: Tensor) -> Tensor:  # (B, C, H, W) -> (B, num_outputs)
        # flatten, not view: channels_last activations are not contiguous in (C, H, W) order
        features = self.features(x).flatten(1)  # (B, C' * H' * W')
        if self.dropout is not None:
            features = self.dropout(features)
        return self.output(self.head(features))


@register_model("cnn", config_class=CNNConfig, block_types=(ConvBlock, MLPBlock))
def build_cnn(
    cfg: CNNConfig,
    *,
    input_shape: tuple[int, ...],
    num_outputs: int,
    vocab_size: int | None = None,
    task: str = "classification",
) -> CNN:
    """Conv blocks with 2x2 pooling and an MLP head, for (C, H, W) images."""
    if len(input_shape) != 3:
        raise ConfigError(
            f"model.name: `cnn` needs image inputs shaped (C, H, W), got samples shaped "
            f"{tuple(input_shape)}; set data.layout: image, or use model.name: mlp"
        )
    return CNN(cfg, input_shape=tuple(input_shape), num_outputs=num_outputs)
