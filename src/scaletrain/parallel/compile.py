"""Regional `torch.compile` beside wrapping: each block compiled in place before the strategy
wraps the model, and the clock of the first (compiling) step."""

from __future__ import annotations

import functools
import time

import torch
from torch import nn


class FirstStepClock:
    """Seconds from the first forward to the second: compilation plus one step.

    Forwards on the meta device (the memory planner's shape-only pass at setup) do not count:
    they would start the clock before the real first step.
    """

    def __init__(self, model: nn.Module):
        self.seconds: float | None = None
        self._started: float | None = None
        self._handle = model.register_forward_pre_hook(self._tick)

    def _tick(self, module: nn.Module, args) -> None:
        if _on_meta(args):
            return
        now = time.perf_counter()
        if self._started is None:
            self._started = now
            return
        self.seconds = now - self._started
        self._handle.remove()


def compile_regions(model: nn.Module, block_types: tuple[type[nn.Module], ...]) -> int:
    """`torch.compile` each outermost block's forward in place (the whole model where none is
    found); return the number of regions compiled.

    Identical blocks share one compiled graph, so the cold start costs about one graph per
    distinct block instead of the whole model; compiling in place keeps parameter names, so
    checkpoints and the optimizer see the same state dict (no `_orig_mod.` prefixes).

    Each region compiles once for training and once more for evaluation (Dynamo guards on
    the grad mode), and no more: the batch dimension of every tensor argument is marked
    dynamic before the first call, so the partial last batch of an epoch and the eval batch
    sizes reuse the graph instead of recompiling (the default would compile a static graph,
    recompile it on the first other size, and keep both). The recompile limit, counted per
    forward's code and so shared by all blocks of one class, is raised to cover those two
    graphs for each block. Hooks of the block stay outside the compiled region.
    """
    chosen: list[str] = []
    regions: list[nn.Module] = []
    for name, module in model.named_modules():
        inside = any(parent == "" or name.startswith(f"{parent}.") for parent in chosen)
        if block_types and isinstance(module, block_types) and not inside:
            chosen.append(name)
            regions.append(module)
    regions = regions or [model]
    for module in regions:
        _compile_forward(module)
    per_code: dict[object, int] = {}
    for module in regions:
        code = getattr(type(module).forward, "__code__", None)
        per_code[code] = per_code.get(code, 0) + GRAPHS_PER_REGION
    limit = max(per_code.values())
    import torch._dynamo  # only here: importing it costs ~1.4 s, paid by compiling runs only

    dynamo_config = torch._dynamo.config
    dynamo_config.recompile_limit = max(dynamo_config.recompile_limit, limit)
    dynamo_config.accumulated_recompile_limit = max(
        dynamo_config.accumulated_recompile_limit, sum(per_code.values())
    )
    return len(regions)


GRAPHS_PER_REGION = 2  # training (grad on) and evaluation (no_grad); batch size is dynamic
# dropout through ATen's RNG: the same masks as eager for a seed, and faster on CPU (inductor's
# per-element RNG: 0.37 ms vs ATen's 0.09 ms for the digits CNN head's dropout at batch 64)
COMPILE_OPTIONS: dict = {"fallback_random": True}


def _compile_forward(module: nn.Module) -> None:
    """Replace `module.forward` (an instance attribute) by its compiled self, batch dim dynamic."""
    eager = module.forward
    compiled = torch.compile(eager, options=COMPILE_OPTIONS)

    @functools.wraps(eager)
    def forward(*args, **kwargs):
        if _on_meta((*args, *kwargs.values())):  # the memory planner's shape-only pass
            return eager(*args, **kwargs)
        for value in (*args, *kwargs.values()):
            if isinstance(value, torch.Tensor) and value.dim() > 0:
                # may still specialize (size 1, or code that needs the size): no error then
                torch._dynamo.maybe_mark_dynamic(value, 0)
        return compiled(*args, **kwargs)

    module.forward = forward


def _on_meta(values) -> bool:
    return any(isinstance(value, torch.Tensor) and value.is_meta for value in values)
