"""Which parameters train, and which are biases or norm-layer parameters (no decay, no penalty)."""

from __future__ import annotations

from torch import nn

from scaletrain.errors import UserError

# torch's norm layers; user norms (e.g. a hand-written RMSNorm) are caught by the class name.
_NORM_TYPES = (
    nn.BatchNorm1d,
    nn.BatchNorm2d,
    nn.BatchNorm3d,
    nn.SyncBatchNorm,
    nn.InstanceNorm1d,
    nn.InstanceNorm2d,
    nn.InstanceNorm3d,
    nn.LayerNorm,
    nn.GroupNorm,
    nn.RMSNorm,
)


def trainable_parameters(model: nn.Module) -> list[nn.Parameter]:
    """Parameters with ``requires_grad``, in ``model.parameters()`` order (deterministic)."""
    params = [param for param in model.parameters() if param.requires_grad]
    if not params:
        raise UserError(
            f"model {type(model).__name__} has no trainable parameters "
            "(every parameter has requires_grad=False); unfreeze at least one"
        )
    return params


def is_norm_module(module: nn.Module) -> bool:
    """A normalization layer: torch's, or a user class whose name ends in ``Norm``."""
    return isinstance(module, _NORM_TYPES) or type(module).__name__.endswith("Norm")


def bias_and_norm_ids(model: nn.Module) -> set[int]:
    """``id`` of every bias (a parameter named ``bias``) and every norm-layer parameter."""
    exempt: set[int] = set()
    for module in model.modules():
        norm = is_norm_module(module)
        for name, param in module.named_parameters(recurse=False):
            if norm or name == "bias":
                exempt.add(id(param))
    return exempt
