"""Blocks: the units FSDP shards and activation checkpointing recomputes."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

import torch
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
    dropout masks in the recomputation equal those of the forward, and BatchNorm running
    statistics are put back after it, so they are updated once per forward, as without.
    """
    if mode == "none":
        return 0
    chosen = blocks if mode == "full" else blocks[::every]
    for block in chosen:
        contexts = _batch_norm_kept_on_recompute(block)
        checkpoint(block, **({"context_fn": contexts} if contexts else {}))
    return len(chosen)


_BATCH_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm)


def _batch_norm_kept_on_recompute(block: nn.Module) -> Callable | None:
    """checkpoint's `context_fn` (forward context, recomputation context) for a block with
    BatchNorm layers: the recomputation restores their buffers (running mean, variance and
    count), which its second forward in train mode would otherwise update again."""
    norms = [module for module in block.modules() if isinstance(module, _BATCH_NORMS)]
    if not norms:
        return None

    @contextlib.contextmanager
    def restoring() -> Iterator[None]:
        # a copy per norm layer and step: a few KB, against statistics drifting twice as fast
        saved = [(buffer, buffer.clone()) for norm in norms for buffer in norm.buffers()]
        try:
            yield
        finally:  # also when the recomputation stops early (it raises once it has enough)
            with torch.no_grad():
                for buffer, value in saved:
                    buffer.copy_(value)

    return lambda: (contextlib.nullcontext(), restoring())


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


def separate_units(model: nn.Module, blocks: list[nn.Module], *, taken=()) -> list[nn.Module]:
    """The blocks that can be FSDP units of their own: not one already (`taken`: norm layers
    sharded first to keep fp32 weights; a user module's top-level norm is also a block), and
    owning all their parameters (a tied embedding/head pair stays with the root, which holds
    each shared parameter once: FSDP2 refuses one parameter in two units)."""
    taken_ids = {id(module) for module in taken}
    return [
        block
        for block in blocks
        if id(block) not in taken_ids and not _shares_parameters(model, block)
    ]


def _shares_parameters(model: nn.Module, block: nn.Module) -> bool:
    inside = {id(module) for module in block.modules()}
    owned = {id(parameter) for parameter in block.parameters()}
    return any(
        id(parameter) in owned
        for module in model.modules()
        if id(module) not in inside
        for parameter in module.parameters(recurse=False)
    )
