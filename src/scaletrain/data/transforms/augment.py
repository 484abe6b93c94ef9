"""Train-only image augmentation, batch-wise on the device (no per-sample Python loop).

``build_data`` attaches it to the train split and the training ``BatchLoader`` calls
``inputs, targets = augment(inputs, targets)`` on every micro batch (evaluation never does);
with nothing enabled ``augment`` returns its arguments untouched. Random crop (zero padding,
i.e. the mean colour after standardization), flip, noise, cutout, mixup and cutmix are plain
tensor code; rotation and colour jitter use kornia. Colour jitter needs pixels in [0, 1], so
it undoes the scaling first and reapplies it after. Mixup/cutmix return soft targets (B, C):
``F.cross_entropy`` takes class probabilities as targets. Randomness comes from torch's
generators, whose states every checkpoint saves, so a resumed run augments identically.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from scaletrain.config import AugmentConfig
from scaletrain.errors import ConfigError


def build_augmentation(cfg: AugmentConfig, *, spec, preprocessor) -> Augmentation:
    """The training-batch augmentation for ``cfg`` (identity when everything is off).

    Args:
        cfg: the ``data.augment`` section.
        spec: the DataSpec (image layout and number of classes).
        preprocessor: its scaling is undone for colour jitter, which works on [0, 1] pixels.
    """
    enabled = {name for name, value in cfg.model_dump().items() if value}
    if enabled and not spec.is_image:
        raise ConfigError(
            f"data.augment.{sorted(enabled)[0]}: augmentation needs images (N, C, H, W); "
            f"this data has samples shaped {tuple(spec.input_shape)}"
        )
    if (cfg.mixup_alpha or cfg.cutmix_alpha) and spec.task != "classification":
        raise ConfigError("data.augment.mixup_alpha/cutmix_alpha: need a classification task")
    return Augmentation(cfg, num_classes=spec.num_outputs, preprocessor=preprocessor)


class Augmentation:
    """Callable ``(inputs, targets) -> (inputs, targets)`` for one training micro batch."""

    def __init__(self, cfg: AugmentConfig, *, num_classes: int, preprocessor=None):
        self.cfg = cfg
        self.num_classes = num_classes
        self.preprocessor = preprocessor
        self.enabled = any(cfg.model_dump().values())
        self._rotate = self._jitter = None
        if cfg.rotation:
            import kornia.augmentation as kornia_augmentation  # ~seconds to import: only if used

            self._rotate = kornia_augmentation.RandomRotation(degrees=cfg.rotation, p=1.0)
        if cfg.color_jitter:
            import kornia.augmentation as kornia_augmentation

            strength = cfg.color_jitter
            self._jitter = kornia_augmentation.ColorJitter(
                brightness=strength, contrast=strength, saturation=strength, p=1.0
            )

    def __call__(self, inputs: torch.Tensor, targets: torch.Tensor):
        if not self.enabled:
            return inputs, targets
        cfg = self.cfg
        if cfg.crop_padding:
            inputs = random_crop(inputs, padding=cfg.crop_padding)
        if cfg.hflip:
            flip = torch.rand(len(inputs), device=inputs.device) < cfg.hflip
            inputs = torch.where(flip[:, None, None, None], inputs.flip(-1), inputs)
        if self._rotate is not None:
            inputs = self._rotate(inputs)
        if self._jitter is not None:
            inputs = self._color_jitter(inputs)
        if cfg.noise_std:
            inputs = inputs + torch.randn_like(inputs) * cfg.noise_std
        if cfg.cutout:
            inputs = cutout(inputs, fraction=cfg.cutout)
        if cfg.mixup_alpha or cfg.cutmix_alpha:
            inputs, targets = self._mix(inputs, targets)
        return inputs, targets

    def _color_jitter(self, inputs: torch.Tensor) -> torch.Tensor:
        scaling = self.preprocessor is not None and self.preprocessor.method != "none"
        if scaling:
            shift, scale = self.preprocessor._on(inputs.device)
            inputs = inputs * scale + shift  # back to [0, 1] pixels
        if inputs.shape[1] == 1:  # kornia's saturation needs RGB
            inputs = self._jitter(inputs.expand(-1, 3, -1, -1))[:, :1]
        else:
            inputs = self._jitter(inputs)
        return (inputs - shift) / scale if scaling else inputs

    def _mix(self, inputs: torch.Tensor, targets: torch.Tensor):
        use_cutmix = bool(self.cfg.cutmix_alpha) and (
            not self.cfg.mixup_alpha or torch.rand(()).item() < 0.5  # CPU draw: no device sync
        )
        alpha = self.cfg.cutmix_alpha if use_cutmix else self.cfg.mixup_alpha
        share = float(torch.distributions.Beta(alpha, alpha).sample())
        order = torch.randperm(len(inputs)).to(inputs.device)
        soft = targets if targets.is_floating_point() else one_hot(targets, self.num_classes)
        if use_cutmix:
            inputs, share = paste_box(inputs, inputs[order], share=share)
        else:
            inputs = inputs * share + inputs[order] * (1 - share)
        return inputs, soft * share + soft[order] * (1 - share)


def one_hot(targets: torch.Tensor, num_classes: int) -> torch.Tensor:
    """float32 (B, C) rows with a 1 at each class id."""
    return F.one_hot(targets, num_classes).to(torch.float32)


def random_crop(inputs: torch.Tensor, *, padding: int) -> torch.Tensor:
    """Zero-pad every side, then cut a random (H, W) window per sample (one gather)."""
    batch, _, height, width = inputs.shape
    padded = F.pad(inputs, (padding,) * 4)
    device = inputs.device
    top = torch.randint(0, 2 * padding + 1, (batch, 1), device=device)
    left = torch.randint(0, 2 * padding + 1, (batch, 1), device=device)
    rows = (top + torch.arange(height, device=device))[:, :, None]  # (B, H, 1)
    columns = (left + torch.arange(width, device=device))[:, None, :]  # (B, 1, W)
    samples = torch.arange(batch, device=device)[:, None, None]
    return padded.permute(0, 2, 3, 1)[samples, rows, columns].permute(0, 3, 1, 2).contiguous()


def cutout(inputs: torch.Tensor, *, fraction: float) -> torch.Tensor:
    """Zero one random square (side = fraction of the image side) per sample."""
    batch, _, height, width = inputs.shape
    side_y, side_x = max(1, round(height * fraction)), max(1, round(width * fraction))
    device = inputs.device
    center_y = torch.randint(0, height, (batch, 1, 1), device=device)
    center_x = torch.randint(0, width, (batch, 1, 1), device=device)
    rows = torch.arange(height, device=device)[None, :, None]
    columns = torch.arange(width, device=device)[None, None, :]
    inside = ((rows - center_y).abs() <= side_y // 2) & ((columns - center_x).abs() <= side_x // 2)
    return inputs.masked_fill(inside[:, None], 0.0)


def paste_box(inputs: torch.Tensor, other: torch.Tensor, *, share: float):
    """CutMix: paste one box of ``other`` covering about 1 - share of the area."""
    _, _, height, width = inputs.shape
    cut = math.sqrt(1.0 - share)
    box_h, box_w = int(height * cut), int(width * cut)
    top = int(torch.randint(0, height - box_h + 1, ()))
    left = int(torch.randint(0, width - box_w + 1, ()))
    mixed = inputs.clone()
    mixed[:, :, top : top + box_h, left : left + box_w] = other[
        :, :, top : top + box_h, left : left + box_w
    ]
    return mixed, 1.0 - box_h * box_w / (height * width)  # the exact share kept
