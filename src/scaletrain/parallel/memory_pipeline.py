"""The memory planner for pipeline parallelism: one estimate per pipeline rank.

Each stage is cut as `pipeline_split.py` cuts it and measured alone on the meta device
(one piece: the micro batch / `parallel.pp.microbatches`). A rank holds its stages'
parameters, gradients and optimizer state, and the activations of the pieces its schedule
has run forward but not yet backward (`pieces_in_flight`); the peak rank decides the fit.
On the mesh (`parallel.dims.pp > 1` under fsdp) each stage is split as the non-pipeline
plan splits a model: by `tp` (`memory_plan.split_by_tensor_parallel`), then its state
sharded over `dp_shard` with FSDP's working set beside it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import torch
from torch import nn

from scaletrain.config import ParallelConfig
from scaletrain.parallel.memory_plan import (
    Candidate,
    MemoryEstimate,
    MemoryPlan,
    backward_bytes,
    fsdp_working_set,
    kept_activation_bytes,
    loss_backward_bytes,
    split_by_tensor_parallel,
)
from scaletrain.parallel.memory_probe import ModelFacts, measure_model
from scaletrain.parallel.mesh import resolve_dims
from scaletrain.parallel.pipeline_split import StageModule, layer_split, stage_ids


@dataclass(frozen=True)
class PipelineLayout:
    """How many pipeline ranks, and how their schedule runs the pieces of a micro batch."""

    size: int
    schedule: str  # gpipe | 1f1b | interleaved_1f1b
    microbatches: int  # pieces per micro batch
    stages_per_rank: int = 1
    dp_shard: int = 1  # on the mesh: FSDP shards each stage's state over this many ranks
    tp: int = 1  # on the mesh: tensor parallel splits each stage over this many ranks

    @property
    def num_stages(self) -> int:
        return self.size * self.stages_per_rank


def pipeline_layout(
    cfg: ParallelConfig, *, world_size: int | None = None, nodes: int = 1
) -> PipelineLayout | None:
    """The pipeline the config asks for: `parallel.strategy: pp` (its size in
    `parallel.pp.size`) or a mesh with `parallel.dims.pp > 1` (with `world_size`, its
    `dp_shard` resolved as the strategy resolves it); None without one."""
    pp = cfg.pp
    if cfg.strategy == "pp":
        return PipelineLayout(pp.size, pp.schedule, pp.microbatches, pp.stages_per_rank)
    if cfg.dims.pp <= 1:
        return None
    shard = cfg.dims.dp_shard
    if world_size is not None:
        hybrid = nodes if cfg.fsdp.hybrid else None  # HSDP: shard inside a node
        shard = resolve_dims(cfg.dims, world_size=world_size, nodes=hybrid).dp_shard
    shard = shard if isinstance(shard, int) else 1  # `auto` without a world size
    return PipelineLayout(
        cfg.dims.pp, pp.schedule, pp.microbatches, pp.stages_per_rank, shard, cfg.dims.tp
    )


def pieces_in_flight(layout: PipelineLayout, rank: int) -> list[int]:
    """Stage index of every piece `rank` holds activations for at its peak (torch's order).

    gpipe: every piece of every stage (all forwards run before any backward). 1f1b: stage s
    runs min(pieces, stages - s) forwards before its first backward, then one forward per
    backward. interleaved: its warm-up forwards (`_get_warmup_ops` in torch's schedules)
    plus the first steady forward, each on the local stage the round-robin gives it.
    """
    stages = stage_ids(rank, layout.size, layout.stages_per_rank)
    pieces = layout.microbatches
    if layout.schedule == "gpipe":
        return [stage for stage in stages for _ in range(pieces)]
    if layout.schedule == "1f1b":
        return [stages[0]] * min(pieces, layout.num_stages - stages[0])
    local = layout.stages_per_rank
    per_round = pieces // max(1, pieces // layout.size)
    warmup = (local - 1) * per_round + 2 * (layout.size - 1 - rank)
    held = min(warmup + 1, pieces * local)
    return [stages[(op // per_round) % local] for op in range(held)]


@dataclass(frozen=True)
class StageFacts:
    """One stage measured on one piece, and the activations it exchanges."""

    index: int
    facts: ModelFacts
    input_bytes: int  # received from the previous stage (0 for the first: token ids)
    output_bytes: int  # sent on, kept until its backward; the last stage's logits
    loss_bytes: int  # the last stage: the loss's fp32 log-probabilities, kept until backward


def measure_stages(
    model: nn.Module,
    layout: PipelineLayout,
    *,
    example_input: torch.Tensor,
    compute_dtype: torch.dtype | None,
) -> list[StageFacts]:
    """Every stage of `model` (a GPT, as `pipeline_split.check_layout` accepts) on one piece
    of the micro batch shaped like `example_input` (B, T)."""
    layers = layer_split(len(model.blocks), layout.num_stages)
    batch, steps = example_input.shape[0] // layout.microbatches, example_input.shape[1]
    width, vocab = model.tok_emb.embedding_dim, model.head.out_features
    # a sequence classifier's head sees one pooled vector per sequence: (B, num_outputs)
    rows = batch * (steps if getattr(model, "task", "language_model") == "language_model" else 1)
    activation_size = torch.empty((), dtype=compute_dtype or torch.float32).element_size()
    hidden_bytes = batch * steps * width * activation_size
    tokens = torch.empty((batch, steps), dtype=example_input.dtype, device="meta")
    hidden = torch.empty((batch, steps, width), device="meta")
    found = []
    for index, owned in enumerate(layers):
        first, last = index == 0, index == len(layers) - 1
        stage = StageModule(model, owned, first=first, last=last)
        facts = measure_model(
            stage,
            blocks=[stage.blocks[str(layer)] for layer in owned],
            example_input=tokens if first else hidden,
            compute_dtype=compute_dtype,
        )
        output = rows * vocab * activation_size if last else hidden_bytes
        loss = rows * vocab * 4 if last else 0  # cross-entropy saves fp32 log-softmax
        found.append(StageFacts(index, facts, 0 if first else hidden_bytes, output, loss))
    return found


def split_stage(stage: StageFacts, tp: int) -> StageFacts:
    """One tensor-parallel rank's share of a stage: its facts as the non-pipeline plan
    splits them, and the activations it exchanges (sequence-parallel between stages, the
    logits split along the vocabulary by loss parallel) 1/tp."""
    if tp == 1:
        return stage
    return StageFacts(
        stage.index,
        split_by_tensor_parallel(stage.facts, tp),
        math.ceil(stage.input_bytes / tp),
        math.ceil(stage.output_bytes / tp),
        math.ceil(stage.loss_bytes / tp),
    )


def estimate_rank(
    stages: list[StageFacts],
    layout: PipelineLayout,
    cfg: ParallelConfig,
    *,
    rank: int,
    optimizer_states: int,
) -> MemoryEstimate:
    """Bytes on pipeline rank `rank`: its stages' state, the pieces in flight, the buffers."""
    stages = [split_stage(stage, layout.tp) for stage in stages]
    mine = [stages[index] for index in stage_ids(rank, layout.size, layout.stages_per_rank)]
    params = sum(stage.facts.param_bytes for stage in mine)
    buffers = sum(stage.facts.buffer_bytes for stage in mine)
    mode, every = cfg.activation_checkpointing, cfg.activation_checkpointing_every
    held = sum(
        kept_activation_bytes(stages[index].facts, mode, every)
        + stages[index].output_bytes
        + stages[index].loss_bytes
        for index in pieces_in_flight(layout, rank)
    )
    transient = max(
        backward_bytes(
            stage.facts,
            mode,
            every,
            loss_gradient=loss_backward_bytes(stage.loss_bytes, tp=layout.tp),
        )
        for stage in mine
    )
    # a receive buffer per piece: activations forward, their gradients backward
    last = layout.num_stages - 1
    received = layout.microbatches * sum(
        stage.input_bytes + (stage.output_bytes if stage.index < last else 0) for stage in mine
    )
    # on the mesh the run is `parallel.strategy: fsdp`: what the recommendation says to set
    candidate = Candidate(
        "pp" if cfg.strategy == "pp" else "fsdp",
        reshard_after_forward=cfg.fsdp.reshard_after_forward,
        activation_checkpointing=mode,
        tp=layout.tp,
    )
    label = f"pp-{layout.schedule} rank {rank}"  # stages rank, rank + size, ... (pipeline_split)
    if layout.dp_shard > 1 or layout.tp > 1:
        label += f" dp{layout.dp_shard} tp{layout.tp}"  # its stages split: FSDP over dp_shard
    found = MemoryEstimate(
        label,
        candidate,
        params + buffers,
        params,
        optimizer_states * params,
        held + transient,
        received,
    )
    return _sharded(found, mine, layout, cfg, optimizer_states=optimizer_states)


def _sharded(
    found: MemoryEstimate,
    mine: list[StageFacts],
    layout: PipelineLayout,
    cfg: ParallelConfig,
    *,
    optimizer_states: int,
) -> MemoryEstimate:
    """FSDP over the stage's `dp_shard` ranks: its state 1/dp_shard, plus the gathered
    parameters and gradient of the units in flight (every stage of the rank's, at most);
    with `parallel.offload: cpu` that sharded state lives in host memory."""
    buffers = found.params_bytes - found.grads_bytes
    if layout.dp_shard > 1:
        reshard = cfg.fsdp.reshard_after_forward
        sharded = math.ceil(found.grads_bytes / layout.dp_shard)
        working = [fsdp_working_set(stage.facts, reshard_after_forward=reshard) for stage in mine]
        found = replace(
            found,
            params_bytes=sharded + buffers,
            grads_bytes=sharded,
            optimizer_bytes=optimizer_states * sharded,
            communication_bytes=found.communication_bytes
            + (max(working) if reshard else sum(working)),
        )
    if cfg.offload != "cpu":
        return found
    host = found.params_bytes - buffers + found.grads_bytes + found.optimizer_bytes
    return replace(
        found,
        strategy=found.strategy + " offload",
        params_bytes=buffers,
        grads_bytes=0,
        optimizer_bytes=0,
        host_bytes=host,
    )


def plan_rank(
    model: nn.Module, layout: PipelineLayout, cfg: ParallelConfig, rank: int, request
) -> MemoryEstimate | None:
    """A pipeline run's own estimate for `rank`, before wrapping; None without
    `request.example_input` (`request`: the strategy's WrapRequest, duck-typed)."""
    if request.example_input is None:
        return None
    stages = measure_stages(
        model, layout, example_input=request.example_input, compute_dtype=request.compute_dtype
    )
    states = request.optimizer_states_per_param
    return estimate_rank(stages, layout, cfg, rank=rank, optimizer_states=states)


def plan_pipeline_memory(
    stages: list[StageFacts],
    layout: PipelineLayout,
    cfg: ParallelConfig,
    *,
    optimizer_states: int,
    device_memory_bytes: int | None,
) -> MemoryPlan:
    """One row per pipeline rank; the rank with the largest total decides whether it fits
    (it is the recommendation, marked, when every rank fits)."""
    estimates = []
    for rank in range(layout.size):
        found = estimate_rank(stages, layout, cfg, rank=rank, optimizer_states=optimizer_states)
        fits = None if device_memory_bytes is None else found.total_bytes <= device_memory_bytes
        estimates.append(MemoryEstimate(**{**found.__dict__, "fits": fits}))
    peak = max(estimates, key=lambda each: each.total_bytes)
    recommended = peak if peak.fits else None
    return MemoryPlan(estimates, recommended, device_memory_bytes, layout.size)
