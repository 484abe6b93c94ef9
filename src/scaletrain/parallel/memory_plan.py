"""The memory planner: bytes per device for each strategy, which fit, which to use.

Method (docs/distributed.md has the measured error): parameters, gradients and optimizer
state follow from the parameter bytes and the strategy's sharding; activations come from
a meta-device forward (`memory_probe.measure_model`); FSDP's working set is the gathered
(unsharded) parameters and gradients of the blocks in flight; DDP adds a gradient copy
unless its buckets are views.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from pathlib import Path

from scaletrain.config import ParallelConfig
from scaletrain.parallel.memory_probe import ModelFacts
from scaletrain.parallel.mesh import resolve_dims

_MB = 2**20

# Optimizer state tensors per parameter (each the parameter's size).
_OPTIMIZER_STATES = {"adam": 2, "adamw": 2, "sgd": 0, "rmsprop": 1, "adagrad": 1}


def optimizer_states_per_param(name: str, *, momentum: float = 0.0) -> int:
    """Adam keeps two moments; SGD a momentum buffer only when momentum > 0."""
    extra = 1 if momentum > 0 and name in ("sgd", "rmsprop") else 0
    return _OPTIMIZER_STATES.get(name, 2) + extra


@dataclass(frozen=True)
class Candidate:
    """One way to run: a strategy with its memory-relevant settings."""

    strategy: str  # single | ddp | fsdp
    reshard_after_forward: bool = True
    activation_checkpointing: str = "none"
    offload: str = "none"
    tp: int = 1  # parallel.dims.tp: each rank holds 1/tp of the blocks and activations

    @property
    def label(self) -> str:
        if self.strategy != "fsdp":
            text = self.strategy
        else:
            text = "fsdp-zero3" if self.reshard_after_forward else "fsdp-zero2"
        if self.tp > 1:
            text += f"+tp{self.tp}"
        if self.activation_checkpointing != "none":
            text += f"+ac-{self.activation_checkpointing}"
        return text + ("+offload" if self.offload == "cpu" else "")


@dataclass(frozen=True)
class MemoryEstimate:
    """Bytes on one device (and in host memory, for offloaded state)."""

    strategy: str
    candidate: Candidate
    params_bytes: int
    grads_bytes: int
    optimizer_bytes: int
    activations_bytes: int
    communication_bytes: int
    host_bytes: int = 0
    fits: bool | None = None

    @property
    def total_bytes(self) -> int:
        return (
            self.params_bytes
            + self.grads_bytes
            + self.optimizer_bytes
            + self.activations_bytes
            + self.communication_bytes
        )

    def breakdown_mb(self) -> dict[str, float]:
        parts = ("params", "grads", "optimizer", "activations", "communication", "host")
        return {part: round(getattr(self, f"{part}_bytes") / _MB, 2) for part in parts}


@dataclass(frozen=True)
class MemoryPlan:
    estimates: list[MemoryEstimate]
    recommended: MemoryEstimate | None  # the first candidate (least traffic) that fits
    device_memory_bytes: int | None
    world_size: int


def candidates(cfg: ParallelConfig, *, world_size: int, device_type: str) -> list[Candidate]:
    """Ordered by traffic and recompute cost: the planner recommends the first that fits."""
    checkpointing = cfg.activation_checkpointing
    if cfg.dims.tp > 1:  # a mesh with tensor parallelism: FSDP on it, the dims as given
        split = Candidate("fsdp", activation_checkpointing=checkpointing, tp=cfg.dims.tp)
        return [replace(split, reshard_after_forward=False), split]
    if world_size == 1:
        return [Candidate("single", activation_checkpointing=checkpointing)]
    found = [
        Candidate("ddp", activation_checkpointing=checkpointing),
        Candidate("fsdp", reshard_after_forward=False, activation_checkpointing=checkpointing),
        Candidate("fsdp", reshard_after_forward=True, activation_checkpointing=checkpointing),
    ]
    if checkpointing == "none":
        found.append(replace(found[-1], activation_checkpointing="full"))
    if device_type == "cuda":  # offloading to the host only frees memory on an accelerator
        found.append(replace(found[-1], offload="cpu"))
    return found


def estimate(
    facts: ModelFacts,
    candidate: Candidate,
    cfg: ParallelConfig,
    *,
    world_size: int,
    shard_size: int | None = None,
    optimizer_states: int = 2,
) -> MemoryEstimate:
    """Per-device bytes of `candidate`; `shard_size` < world size for hybrid sharding.

    `cfg` supplies the DDP bucket settings and `activation_checkpointing_every`.
    """
    facts = split_by_tensor_parallel(facts, candidate.tp)
    activations = activation_bytes(
        facts,
        candidate.activation_checkpointing,
        cfg.activation_checkpointing_every,
        tp=candidate.tp,
    )
    params = facts.param_bytes
    if candidate.strategy in ("single", "ddp", *_LOCAL_COPIES):
        parts = (params + facts.buffer_bytes, params, optimizer_states * params)
        buffers = _ddp_buffers(params, candidate, cfg)
        buffers += _LOCAL_COPIES.get(candidate.strategy, 0) * params
        return MemoryEstimate(candidate.label, candidate, *parts, activations, buffers)
    sharded = math.ceil(params / (shard_size or world_size))
    parts = (sharded + facts.buffer_bytes, sharded, optimizer_states * sharded)
    working_set = fsdp_working_set(facts, reshard_after_forward=candidate.reshard_after_forward)
    if candidate.offload == "cpu":  # the sharded state lives in host memory
        host = sum(parts) - facts.buffer_bytes
        return MemoryEstimate(
            candidate.label,
            candidate,
            facts.buffer_bytes,
            0,
            0,
            activations,
            working_set,
            host_bytes=host,
        )
    return MemoryEstimate(candidate.label, candidate, *parts, activations, working_set)


# local SGD: the global model and the sync's flat buffer; DiLoCo: the anchor, the outer
# momentum, the deltas and their flat buffer (parameter-sized copies; the anchor is fp32)
_LOCAL_COPIES = {"local_sgd": 2, "diloco": 4}


def split_by_tensor_parallel(facts: ModelFacts, tp: int) -> ModelFacts:
    """One rank's share under tensor + sequence parallelism (`tensor_parallel.py`'s plan).

    Parameters: 1/tp (the norms, replicated, are counted split too: a few KB). Activations:
    1/tp (heads, hidden units, vocabulary and, between blocks, the sequence are split), plus
    the two inputs per block that sequence parallelism all-gathers whole for attention and
    the MLP and autograd saves; each is taken as large as the block's input (exact in fp32;
    under bf16 autocast the saved copy is half that: an overestimate).
    """
    if tp == 1:
        return facts

    def split(value: int) -> int:
        return math.ceil(value / tp)

    gathered = tuple(2 * size - 2 * split(size) for size in facts.block_input_bytes)
    return replace(
        facts,
        param_bytes=split(facts.param_bytes),
        block_param_bytes=tuple(split(size) for size in facts.block_param_bytes),
        saved_bytes=split(facts.saved_bytes) + sum(gathered),
        block_saved_bytes=tuple(
            split(size) + extra
            for size, extra in zip(facts.block_saved_bytes, gathered, strict=True)
        ),
        block_input_bytes=tuple(split(size) for size in facts.block_input_bytes),
        block_recompute_bytes=tuple(
            split(size) + extra
            for size, extra in zip(facts.block_recompute_bytes, gathered, strict=True)
        ),
        largest_saved_bytes=split(facts.largest_saved_bytes),
        peak_live_bytes=split(facts.peak_live_bytes) + sum(gathered)
        if facts.peak_live_bytes
        else 0,
        output_fp32_bytes=split(facts.output_fp32_bytes),  # loss parallel: vocabulary split
    )


def fsdp_working_set(facts: ModelFacts, *, reshard_after_forward: bool) -> int:
    """Unsharded bytes in flight: gathered parameters, plus one block's gradients."""
    blocks = sorted(facts.block_param_bytes, reverse=True) + [0, 0]
    if reshard_after_forward:  # the running block and the prefetched one, and the root
        gathered = facts.root_param_bytes + blocks[0] + blocks[1]
    else:  # every block stays gathered from its forward until its backward
        gathered = facts.param_bytes
    return gathered + blocks[0]  # + the unsharded gradient being reduce-scattered


def _ddp_buffers(params: int, candidate: Candidate, cfg: ParallelConfig) -> int:
    """DDP's buckets hold every gradient: as views they are the gradients, else a copy.

    The all-reduce runs in place on the buckets (measured: no extra bucket-sized buffer).
    """
    if candidate.strategy != "ddp" or cfg.ddp.gradient_as_bucket_view:
        return 0
    return params


def activation_bytes(facts: ModelFacts, checkpointing: str, every: int, *, tp: int = 1) -> int:
    """Saved activations, less what checkpointed blocks drop (they keep only their input)."""
    # the loss keeps the log-probabilities (the output in fp32), and its backward their gradient
    loss = facts.output_fp32_bytes
    kept = kept_activation_bytes(facts, checkpointing, every) + loss
    gradient = loss_backward_bytes(loss, tp=tp)
    return kept + backward_bytes(facts, checkpointing, every, loss_gradient=gradient)


def loss_backward_bytes(loss_bytes: int, *, tp: int) -> int:
    """What the loss's backward holds: the log-probabilities' gradient; under tensor
    parallelism torch's `loss_parallel` backward recomputes the softmax of the vocabulary
    shard and holds three shard-sized tensors at once (measured by peak RSS on 2 gloo
    ranks, torch 2.13: 12.1 MB for a 4 MB shard)."""
    return loss_bytes * (3 if tp > 1 else 1)


def _checkpointed(facts: ModelFacts, checkpointing: str, every: int) -> list[int]:
    if checkpointing == "none" or not facts.block_saved_bytes:
        return []
    indexes = list(range(len(facts.block_saved_bytes)))
    return indexes if checkpointing == "full" else indexes[::every]


def kept_activation_bytes(facts: ModelFacts, checkpointing: str, every: int) -> int:
    """What one micro batch keeps from its forward until its backward."""
    chosen = _checkpointed(facts, checkpointing, every)
    dropped = sum(facts.block_saved_bytes[i] for i in chosen)
    kept_inputs = sum(facts.block_input_bytes[i] for i in chosen)
    return facts.saved_bytes - dropped + kept_inputs


def backward_bytes(
    facts: ModelFacts, checkpointing: str, every: int, *, loss_gradient: int = 0
) -> int:
    """What backward adds for a moment: one recomputed block, and a gradient as large as the
    largest saved tensor (or a recurrent layer's gradients of all its steps, or the loss's,
    or what the meta pass saw alive beyond the saved tensors: gradients summed over several
    readers, kernel buffers)."""
    beyond_saved = facts.peak_live_bytes - facts.saved_bytes
    transient = max(
        facts.largest_saved_bytes, facts.recurrent_backward_bytes, loss_gradient, beyond_saved
    )
    chosen = _checkpointed(facts, checkpointing, every)
    # backward recomputes one block at a time; its input is already among the kept ones
    recomputed = max((facts.block_recompute_bytes[i] for i in chosen), default=0)
    return transient + recomputed


def plan_memory(
    facts: ModelFacts,
    cfg: ParallelConfig,
    *,
    world_size: int,
    local_world_size: int,
    device_type: str,
    optimizer_states: int,
    device_memory_bytes: int | None,
) -> MemoryPlan:
    """Every candidate's estimate, whether it fits, and the recommendation."""
    shard_size = local_world_size if cfg.fsdp.hybrid else world_size
    if not cfg.dims.is_default():  # the mesh's FSDP dim, as the strategy will build it
        nodes = world_size // local_world_size if cfg.fsdp.hybrid else None
        shard_size = resolve_dims(cfg.dims, world_size=world_size, nodes=nodes).dp_shard
    estimates = []
    for candidate in candidates(cfg, world_size=world_size, device_type=device_type):
        found = estimate(
            facts,
            candidate,
            cfg,
            world_size=world_size,
            shard_size=shard_size,
            optimizer_states=optimizer_states,
        )
        fits = None if device_memory_bytes is None else found.total_bytes <= device_memory_bytes
        estimates.append(replace(found, fits=fits))
    fitting = [each for each in estimates if each.fits]
    recommended = fitting[0] if fitting else None
    return MemoryPlan(estimates, recommended, device_memory_bytes, world_size)


def device_memory_bytes(device_type: str, *, local_world_size: int, index: int = 0) -> int:
    """What one rank may use: the GPU's memory, or available RAM shared by local ranks."""
    if device_type == "cuda":
        import torch

        return int(torch.cuda.get_device_properties(index).total_memory * 0.9)
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024 // max(local_world_size, 1)
    except OSError:
        pass
    return 8 * 2**30 // max(local_world_size, 1)  # no /proc: assume a small machine
