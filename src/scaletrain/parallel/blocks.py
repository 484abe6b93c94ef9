"""Blocks: the units FSDP shards and activation checkpointing recomputes."""

from __future__ import annotations

from torch import nn
from torch.distributed._composable import checkpoint

from scaletrain.errors import ConfigError

# Containers have no forward of their own (or only chain children): look inside them.
_CONTAINERS = (nn.Sequential, nn.ModuleList, nn.ModuleDict)


def find_blocks(
    model: nn.Module,
    *,
    block_types: tuple[type[nn.Module], ...] | None = None,
    class_names: list[str] | None = None,
) -> list[nn.Module]:
    """Outermost submodules that are blocks, in forward-definition order.

    Args:
        model: the root module (never itself a block).
        block_types: classes from the model registry; default: direct children with params.
        class_names: `parallel.fsdp.block_types`, which wins over `block_types`.
    """
    if class_names:
        return _outermost(model, _types_named(model, class_names))
    if block_types:
        return _outermost(model, tuple(block_types))
    return [child for child in _direct_children(model) if _has_params(child)]


def apply_activation_checkpointing(blocks: list[nn.Module], *, mode: str, every: int) -> int:
    """Recompute the chosen blocks' activations in backward; returns how many were chosen.

    The composable API works through hooks, so parameter names (and checkpoints) keep their
    FQNs, and it composes with `fully_shard` applied afterwards. RNG state is replayed, so
    dropout masks in the recomputation equal those of the forward.
    """
    if mode == "none":
        return 0
    chosen = blocks if mode == "full" else blocks[::every]
    for block in chosen:
        checkpoint(block)
    return len(chosen)


def _types_named(model: nn.Module, class_names: list[str]) -> tuple[type[nn.Module], ...]:
    present = {type(module).__name__: type(module) for module in model.modules()}
    missing = [name for name in class_names if name not in present]
    if missing:
        raise ConfigError(
            f"parallel.fsdp.block_types: no module of class {missing[0]!r} in the model; "
            f"classes present: {', '.join(sorted(present))}"
        )
    return tuple(present[name] for name in class_names)


def _outermost(model: nn.Module, types: tuple[type[nn.Module], ...]) -> list[nn.Module]:
    found: list[nn.Module] = []

    def visit(module: nn.Module) -> None:
        for child in module.children():
            if isinstance(child, types):
                found.append(child)  # a block inside a block belongs to the outer one
            else:
                visit(child)

    visit(model)
    return found


def _direct_children(module: nn.Module) -> list[nn.Module]:
    children = []
    for child in module.children():
        children.extend(_direct_children(child) if isinstance(child, _CONTAINERS) else [child])
    return children


def _has_params(module: nn.Module) -> bool:
    return any(True for _ in module.parameters())
