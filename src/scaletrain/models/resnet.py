"""ResNet with basic blocks (He et al. 2016): depth 18 or 34, any width, small or large stem.

Plain torch.nn, laid out as torchvision's ``resnet18``/``resnet34`` (same parameter count
for the same width, stem and classes), so its numbers compare with the literature.
"""

from __future__ import annotations

from torch import Tensor, nn

from scaletrain.config.models import ResNetConfig
from scaletrain.errors import ConfigError
from scaletrain.models.registry import register_model

# Basic blocks per stage; each stage after the first halves the side and doubles channels.
STAGE_BLOCKS: dict[int, tuple[int, ...]] = {18: (2, 2, 2, 2), 34: (3, 4, 6, 3)}
SMALL_STEM_BELOW_PX = 64  # `stem: auto`: images whose shorter side is under this get `small`


class BasicBlock(nn.Module):
    """Two 3x3 conv + BatchNorm layers plus a shortcut; the FSDP / checkpointing unit."""

    def __init__(
        self, in_channels: int, out_channels: int, *, stride: int, inner: int | None = None
    ) -> None:
        super().__init__()
        inner = inner or out_channels  # fewer after structured pruning; the residual keeps its
        # No conv biases: the BatchNorm after each conv subtracts its mean anyway.
        self.conv1 = nn.Conv2d(in_channels, inner, 3, stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(inner)
        self.conv2 = nn.Conv2d(inner, out_channels, 3, 1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU(inplace=True)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_channels != out_channels:  # the residual must match the output
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride, bias=False),
                nn.BatchNorm2d(out_channels),
            )

    def forward(self, x: Tensor) -> Tensor:  # (B, C_in, H, W) -> (B, C_out, H/s, W/s)
        residual = self.bn2(self.conv2(self.relu(self.bn1(self.conv1(x)))))
        return self.relu(residual + self.shortcut(x))


def make_stem(kind: str, in_channels: int, width: int) -> nn.Sequential:
    """`small`: 3x3 stride 1 (keeps 8x8 digits whole); `large`: 7x7 stride 2 + max pool (/4)."""
    if kind == "small":
        conv = nn.Conv2d(in_channels, width, 3, 1, padding=1, bias=False)
        return nn.Sequential(conv, nn.BatchNorm2d(width), nn.ReLU(inplace=True))
    conv = nn.Conv2d(in_channels, width, 7, 2, padding=3, bias=False)
    pool = nn.MaxPool2d(3, 2, padding=1)
    return nn.Sequential(conv, nn.BatchNorm2d(width), nn.ReLU(inplace=True), pool)


def stem_for(setting: str, height: int, width: int) -> str:
    """The stem `stem: auto` resolves to for images of this size."""
    if setting != "auto":
        return setting
    return "small" if min(height, width) < SMALL_STEM_BELOW_PX else "large"


def inner_width(out_channels: int, keep: float) -> int:
    """Channels between a block's two convs: `keep` of its output's, at least one."""
    return max(1, round(out_channels * keep))


class ResNet(nn.Module):
    """Stem, four stages of basic blocks, global average pool, dropout, linear head."""

    def __init__(self, cfg: ResNetConfig, *, input_shape: tuple[int, int, int], num_outputs: int):
        super().__init__()
        channels, height, width = input_shape
        self.stem = make_stem(stem_for(cfg.stem, height, width), channels, cfg.width)
        stages, in_channels = [], cfg.width
        for index, num_blocks in enumerate(STAGE_BLOCKS[cfg.depth]):
            out_channels = cfg.width * 2**index
            inner = inner_width(out_channels, cfg.inner_keep)
            blocks = [
                # Sides only shrink to 1, never 0: a stride-2, padding-1 3x3 conv maps 1 to 1.
                BasicBlock(
                    in_channels if i == 0 else out_channels, out_channels, stride=s, inner=inner
                )
                for i, s in enumerate([1 if index == 0 else 2] + [1] * (num_blocks - 1))
            ]
            stages.append(nn.Sequential(*blocks))
            in_channels = out_channels
        self.stages = nn.Sequential(*stages)
        self.pool = nn.AdaptiveAvgPool2d(1)  # any remaining side (1 on 8x8) -> 1x1
        self.dropout = nn.Dropout(cfg.dropout) if cfg.dropout > 0 else nn.Identity()
        self.head = nn.Linear(in_channels, num_outputs)
        self._init_weights(zero_init_residual=cfg.zero_init_residual)

    def _init_weights(self, *, zero_init_residual: bool) -> None:
        # He normal with fan_out for convs (as torchvision); `model.init` other than `default`
        # replaces it afterwards, and leaves the BatchNorm values set here.
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
        if zero_init_residual:
            for module in self.modules():
                if isinstance(module, BasicBlock):
                    nn.init.zeros_(module.bn2.weight)

    def forward(self, x: Tensor) -> Tensor:  # (B, C, H, W) -> (B, num_outputs)
        features = self.pool(self.stages(self.stem(x)))  # (B, 8 * width, 1, 1)
        # flatten, not view: channels_last activations are not contiguous in (C, H, W) order
        return self.head(self.dropout(features.flatten(1)))


@register_model("resnet", config_class=ResNetConfig, block_types=(BasicBlock,))
def build_resnet(
    cfg: ResNetConfig,
    *,
    input_shape: tuple[int, ...],
    num_outputs: int,
    vocab_size: int | None = None,
    task: str = "classification",
) -> ResNet:
    """ResNet-18/34 (basic blocks) for (C, H, W) images of any size, small or large stem."""
    if len(input_shape) != 3:
        raise ConfigError(
            f"model.name: `resnet` needs image inputs shaped (C, H, W), got samples shaped "
            f"{tuple(input_shape)}; set data.layout: image, or use model.name: mlp"
        )
    return ResNet(cfg, input_shape=tuple(input_shape), num_outputs=num_outputs)
