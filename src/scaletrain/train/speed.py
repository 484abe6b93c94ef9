"""Process-level speed settings the loop applies at setup: CPU threads and regional compile."""

from __future__ import annotations

import time

import torch
from torch import nn


def apply_num_threads(num_threads: int | None) -> int:
    """Set intra-op CPU threads where the config asks; return the count in effect.

    Small models gain little from a second thread and lose most of their speed when the
    cores are shared: every op waits at a barrier for a thread that is not running
    (bench/README.md: 12x on the digits CNN on a loaded 2-core machine).
    """
    if num_threads:
        torch.set_num_threads(num_threads)
    return torch.get_num_threads()


class FirstStepClock:
    """Seconds from the first forward to the second: compilation plus one step."""

    def __init__(self, model: nn.Module):
        self.seconds: float | None = None
        self._started: float | None = None
        self._handle = model.register_forward_pre_hook(self._tick)

    def _tick(self, module: nn.Module, args) -> None:
        now = time.perf_counter()
        if self._started is None:
            self._started = now
            return
        self.seconds = now - self._started
        self._handle.remove()


def compile_regions(model: nn.Module, block_types: tuple[type[nn.Module], ...]) -> int:
    """`torch.compile` each outermost block in place (the whole model where none is found).

    Identical blocks share one compiled graph, so the cold start costs about one block per
    block type instead of the whole model; compiling in place keeps parameter names, so
    checkpoints and the optimizer see the same state dict. Returns the number compiled.
    """
    chosen: list[str] = []
    for name, module in model.named_modules():
        inside = any(parent == "" or name.startswith(f"{parent}.") for parent in chosen)
        if block_types and isinstance(module, block_types) and not inside:
            chosen.append(name)
            module.compile()
    if not chosen:
        model.compile()
        return 1
    return len(chosen)


def block_types_of(model_cfg, model: nn.Module) -> tuple[type[nn.Module], ...]:
    """The registry's block types for a built-in model, else the user module's children."""
    from scaletrain.models import MODELS, default_block_types

    entry = MODELS.get(getattr(model_cfg, "name", ""))
    return entry.block_types if entry and entry.block_types else default_block_types(model)


def wants_channels_last(setting: bool | str, model: nn.Module, *, device, world_size: int) -> bool:
    """`train.channels_last`: `auto` is on where it was measured to help (one CPU process
    with 2-D convolutions); FSDP shards and GPU kernels were not measured with it yet."""
    if setting != "auto":
        return bool(setting)
    has_conv = any(isinstance(module, nn.Conv2d) for module in model.modules())
    return has_conv and device.type == "cpu" and world_size == 1
