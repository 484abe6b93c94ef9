"""Losses from the ``loss`` config section: a plain-dict registry of module builders.

Every loss module maps ``(output, target)`` to the mean over the batch (torch's standard
reduction; weighted cross-entropy divides by the summed weights of the targets, as torch
does). bf16/fp16 outputs are upcast to float32 first, so the loss keeps full precision.
Targets arrive as the data layer makes them: int64 class ids ``(B,)`` for classification,
float ``(B, k)`` for regression.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from scaletrain.config import LossConfig
from scaletrain.errors import ConfigError, UserError

# builder(cfg, *, num_outputs, class_counts) -> nn.Module
LossBuilder = Callable[..., nn.Module]
LOSSES: dict[str, LossBuilder] = {}
LOSS_TASKS: dict[str, tuple[str, ...]] = {}  # the data tasks each loss accepts
_AUTO = {"classification": "cross_entropy", "regression": "mse", "language_model": "cross_entropy"}


def register_loss(name: str, *, tasks: tuple[str, ...]) -> Callable[[LossBuilder], LossBuilder]:
    """Add a builder under ``loss.name: name`` for the given data tasks."""

    def decorator(builder: LossBuilder) -> LossBuilder:
        assert name not in LOSSES, f"loss {name!r} registered twice"
        LOSSES[name] = builder
        LOSS_TASKS[name] = tasks
        return builder

    return decorator


def _upcast(output: torch.Tensor) -> torch.Tensor:
    return output.float() if output.dtype in (torch.float16, torch.bfloat16) else output


class CrossEntropy(nn.Module):
    """Cross-entropy on logits ``(B, C)`` or ``(B, T, C)`` and class ids ``(B,)`` / ``(B, T)``."""

    def __init__(self, *, weight: torch.Tensor | None, label_smoothing: float) -> None:
        super().__init__()
        self.register_buffer("weight", weight)  # a buffer: `.to(device)` moves it
        self.label_smoothing = label_smoothing

    def forward(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        output = _upcast(output)
        if output.dim() > 2:  # (B, T, C) -> (B*T, C): F.cross_entropy wants classes on dim 1
            output, target = output.flatten(0, -2), target.flatten()
        weight = None if self.weight is None else self.weight.to(output.dtype)
        return F.cross_entropy(output, target, weight=weight, label_smoothing=self.label_smoothing)


class BCEWithLogits(nn.Module):
    """Binary cross-entropy on logits; class ids become one-hot rows (one-vs-rest)."""

    def forward(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        output = _upcast(output)
        if not target.is_floating_point() and target.shape != output.shape:
            if output.shape[-1] == 1:  # binary with one logit: ids 0/1 are the targets
                target = target.unsqueeze(-1)
            else:
                target = _one_hot(target, like=output)
        output, target = _match_shapes(output, target, loss="bce_with_logits")
        return F.binary_cross_entropy_with_logits(output, target.to(output.dtype))


class KLDiv(nn.Module):
    """KL(target || softmax(output)): logits in, probabilities (or class ids) as targets."""

    def forward(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        log_probs = F.log_softmax(_upcast(output), dim=-1)
        if not target.is_floating_point():
            target = _one_hot(target, like=log_probs)
        log_probs, target = _match_shapes(log_probs, target, loss="kl_div")
        return F.kl_div(log_probs, target.to(log_probs.dtype), reduction="batchmean")


class Regression(nn.Module):
    """A pointwise regression loss; ``(B, 1)`` outputs match ``(B,)`` targets."""

    def __init__(self, name: str, function: Callable[..., torch.Tensor], **options: float) -> None:
        super().__init__()
        self.name = name
        self.function = function
        self.options = options

    def forward(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        output, target = _match_shapes(_upcast(output), target, loss=self.name)
        return self.function(output, target.to(output.dtype), **self.options)


def _one_hot(target: torch.Tensor, *, like: torch.Tensor) -> torch.Tensor:
    # scatter, not F.one_hot: no range check, so no host sync on the accelerator
    return torch.zeros_like(like).scatter_(-1, target.unsqueeze(-1), 1.0)


def _match_shapes(
    output: torch.Tensor, target: torch.Tensor, *, loss: str
) -> tuple[torch.Tensor, torch.Tensor]:
    """Drop a trailing size-1 dim on either side; refuse shapes that would silently broadcast."""
    if output.shape == target.shape:
        return output, target
    if output.dim() == target.dim() + 1 and output.shape[-1] == 1:
        output = output.squeeze(-1)
    elif target.dim() == output.dim() + 1 and target.shape[-1] == 1:
        target = target.squeeze(-1)
    if output.shape != target.shape:
        raise UserError(
            f"loss.name={loss}: model output has shape {tuple(output.shape)} but targets have "
            f"{tuple(target.shape)}; the model's last layer must give one value per target"
        )
    return output, target


@register_loss("cross_entropy", tasks=("classification", "language_model"))
def _cross_entropy(cfg: LossConfig, *, num_outputs: int, class_counts: list[int] | None):
    """Softmax cross-entropy, with label smoothing and class weights."""
    weight = class_weights(cfg, num_outputs=num_outputs, class_counts=class_counts)
    return CrossEntropy(weight=weight, label_smoothing=cfg.label_smoothing)


@register_loss("bce_with_logits", tasks=("classification", "regression"))
def _bce_with_logits(cfg: LossConfig, *, num_outputs: int, class_counts: list[int] | None):
    """Sigmoid binary cross-entropy: multi-label, or binary with one output."""
    return BCEWithLogits()


@register_loss("mse", tasks=("regression",))
def _mse(cfg: LossConfig, *, num_outputs: int, class_counts: list[int] | None):
    """Mean squared error."""
    return Regression("mse", F.mse_loss)


@register_loss("mae", tasks=("regression",))
def _mae(cfg: LossConfig, *, num_outputs: int, class_counts: list[int] | None):
    """Mean absolute error (L1)."""
    return Regression("mae", F.l1_loss)


@register_loss("huber", tasks=("regression",))
def _huber(cfg: LossConfig, *, num_outputs: int, class_counts: list[int] | None):
    """Huber: squared below huber_delta, linear above."""
    return Regression("huber", F.huber_loss, delta=cfg.huber_delta)


@register_loss("kl_div", tasks=("classification", "regression"))
def _kl_div(cfg: LossConfig, *, num_outputs: int, class_counts: list[int] | None):
    """KL divergence from target probabilities to softmax(output), per sample."""
    return KLDiv()


def class_weights(
    cfg: LossConfig, *, num_outputs: int, class_counts: list[int] | None
) -> torch.Tensor | None:
    """Per-class weights: none, a given list, or ``balanced`` = n / (n_classes * count_c)."""
    if cfg.class_weights == "none":
        return None
    if cfg.class_weights == "balanced":
        if class_counts is None:
            raise ConfigError(
                "loss.class_weights: `balanced` needs the train split's class counts, and this "
                "data has none; give one weight per class as a list instead"
            )
        empty = [index for index, count in enumerate(class_counts) if count == 0]
        if empty:
            raise ConfigError(
                f"loss.class_weights: `balanced` needs every class in the train split; "
                f"class ids {empty} have no samples; give a list of weights instead"
            )
        assert len(class_counts) == num_outputs, (class_counts, num_outputs)
        total = sum(class_counts)
        weights = [total / (len(class_counts) * count) for count in class_counts]
        return torch.tensor(weights, dtype=torch.float32)
    if len(cfg.class_weights) != num_outputs:
        raise ConfigError(
            f"loss.class_weights: expected {num_outputs} weights (one per class), "
            f"got {len(cfg.class_weights)}"
        )
    return torch.tensor(cfg.class_weights, dtype=torch.float32)


def build_loss(
    cfg: LossConfig, *, task: str, num_outputs: int, class_counts: list[int] | None
) -> nn.Module:
    """The loss module for ``cfg.name`` (``auto``: by task), checked against the data task.

    Args:
        cfg: the ``loss`` config section.
        task: the data task: ``classification``, ``regression`` or ``language_model``
            (cross-entropy over every next token).
        num_outputs: classes, or regression targets (the model's output width).
        class_counts: samples per class in the train split (classification), else None.
    """
    name = _AUTO[task] if cfg.name == "auto" else cfg.name
    if task not in LOSS_TASKS[name]:
        fix = _AUTO[task]
        raise ConfigError(
            f"loss.name: `{name}` does not fit the data task `{task}` "
            f"(it takes {' or '.join(LOSS_TASKS[name])}); use `{fix}` or `auto`"
        )
    if name != "cross_entropy":
        _check_cross_entropy_options(cfg, name)
    return LOSSES[name](cfg, num_outputs=num_outputs, class_counts=class_counts)


def _check_cross_entropy_options(cfg: LossConfig, name: str) -> None:
    """Label smoothing and class weights only exist for cross_entropy: refuse silent no-ops."""
    if cfg.label_smoothing:
        raise ConfigError(
            f"loss.label_smoothing: only cross_entropy uses it, got loss.name={name}; set it to 0"
        )
    if cfg.class_weights != "none":
        raise ConfigError(
            f"loss.class_weights: only cross_entropy uses them, got loss.name={name}; "
            "set it to `none`"
        )
