"""`scaletrain plan`: build the config's model on the meta device and plan its memory."""

from __future__ import annotations

import torch
from rich.table import Table

from scaletrain.config import Config
from scaletrain.data import build_data
from scaletrain.models import MODELS, default_block_types
from scaletrain.parallel.blocks import find_blocks
from scaletrain.parallel.memory_pipeline import (
    measure_stages,
    pipeline_layout,
    plan_pipeline_memory,
)
from scaletrain.parallel.memory_plan import (
    MemoryPlan,
    device_memory_bytes,
    optimizer_states_per_param,
    plan_memory,
)
from scaletrain.parallel.memory_probe import measure_model
from scaletrain.parallel.pipeline_split import check_layout
from scaletrain.train.plan import Plan, make_plan
from scaletrain.train.precision import run_precision
from scaletrain.trained.weights import build_run_model

_GB = 2**30
_MB = 2**20


def plan_for_config(
    cfg: Config, *, nproc: int, nnodes: int = 1, device_memory_gb: float | None = None
) -> tuple[MemoryPlan, Plan]:
    """Per-device memory of every strategy for `cfg` on `nnodes` x `nproc` processes."""
    world_size = nproc * nnodes
    bundle = build_data(cfg.data, seed=cfg.run.seed)
    # async_ps: the batch is split over the workers; the servers and spares read no data
    ps = cfg.parallel.ps
    servers = ps.servers + ps.spare_workers if cfg.parallel.strategy == "async_ps" else 0
    # tensor-parallel peers and pipeline stages read the same samples: data-parallel ranks
    layout = pipeline_layout(cfg.parallel, world_size=world_size, nodes=nnodes)
    model_split = cfg.parallel.dims.tp * (layout.size if layout else 1)
    batch_plan = make_plan(
        cfg.train,
        world_size=max(1, (world_size - servers) // model_split),
        num_train_samples=len(bundle.train),
        drop_last=cfg.data.drop_last,
    )
    device_type = _target_device_type(cfg.train.device)
    if device_memory_gb is None:
        device_memory_gb = cfg.parallel.device_memory_gb
    memory = (
        int(device_memory_gb * _GB)
        if device_memory_gb is not None
        else device_memory_bytes(device_type, local_world_size=nproc)
    )
    optimizer_states = optimizer_states_per_param(cfg.optim.name, momentum=cfg.optim.momentum)
    measured = _measure(
        cfg,
        bundle.spec,
        micro_batch_size=batch_plan.micro_batch_size,
        device_type=device_type,
        layout=layout,
    )
    if layout is not None:
        plan = plan_pipeline_memory(
            measured,
            layout,
            cfg.parallel,
            optimizer_states=optimizer_states,
            device_memory_bytes=memory,
        )
        return plan, batch_plan
    plan = plan_memory(
        measured,
        cfg.parallel,
        world_size=world_size,
        local_world_size=nproc,
        device_type=device_type,
        optimizer_states=optimizer_states,
        device_memory_bytes=memory,
    )
    return plan, batch_plan


def _measure(cfg: Config, spec, *, micro_batch_size: int, device_type: str, layout=None):
    """Build the model on the meta device (shapes only: plans models larger than RAM); the
    whole model's facts, or each pipeline stage's under a `layout`."""
    with torch.device("meta"):
        model = build_run_model(cfg, spec)
    entry = MODELS.get(cfg.model.name)
    block_types = entry.block_types if entry else default_block_types(model)
    blocks = find_blocks(model, block_types=block_types, class_names=cfg.parallel.fsdp.block_types)
    precision = run_precision(
        cfg.train.precision,
        torch.device(device_type),
        model=model,
        spec=spec,
        batch_size=cfg.train.batch_size,
    )
    example = torch.empty(
        (micro_batch_size, *spec.input_shape), dtype=spec.input_dtype, device="meta"
    )
    model = model.to(dtype=precision.param_dtype)
    if layout is not None:
        check_layout(model)  # a model the pipeline cannot cut: one line, as training says
        return measure_stages(
            model, layout, example_input=example, compute_dtype=precision.autocast_dtype
        )
    return measure_model(
        model,
        blocks=blocks,
        example_input=example,
        compute_dtype=precision.autocast_dtype,
    )


def plan_table(plan: MemoryPlan, batch_plan: Plan) -> Table:
    """One row per strategy: MB per device by part, the total, whether it fits."""
    title = (
        f"MB per device, {plan.world_size} process(es), "
        f"{_mb(plan.device_memory_bytes)} MB each; global batch "
        f"{batch_plan.global_batch_size} = micro {batch_plan.micro_batch_size} x accumulation "
        f"{batch_plan.grad_accum_steps} x world {batch_plan.world_size}"
    )
    table = Table(title=title)
    offloads = any(each.host_bytes for each in plan.estimates)
    columns = ["strategy", "params", "grads", "optim", "activ", "comm", "total"]
    for name in [*columns, *(["host"] if offloads else []), "fits"]:
        table.add_column(name, justify="left" if name == "strategy" else "right", no_wrap=True)
    for each in plan.estimates:
        parts = [
            each.params_bytes,
            each.grads_bytes,
            each.optimizer_bytes,
            each.activations_bytes,
            each.communication_bytes,
            each.total_bytes,
        ]
        parts += [each.host_bytes] if offloads else []
        marker = "*" if each is plan.recommended else ""
        table.add_row(
            each.strategy + marker, *(_mb(part) for part in parts), "yes" if each.fits else "no"
        )
    return table


def recommendation_line(plan: MemoryPlan) -> str:
    if plan.recommended is None:
        pipeline = [each for each in plan.estimates if each.strategy.startswith("pp-")]
        if pipeline:  # the layout is the config's: say which rank is over and what helps
            peak = max(pipeline, key=lambda each: each.total_bytes)
            return (
                f"nothing fits: {peak.strategy} needs {_mb(peak.total_bytes)} MB; raise "
                "parallel.pp.microbatches or use parallel.pp.schedule=1f1b (fewer pieces in "
                "flight), lower train.micro_batch_size, or add pipeline ranks"
            )
        return "nothing fits: lower train.micro_batch_size, add processes, or add memory"
    candidate = plan.recommended.candidate
    overrides = [f"parallel.strategy={candidate.strategy}"]
    if candidate.strategy == "fsdp":
        overrides.append(
            f"parallel.fsdp.reshard_after_forward={str(candidate.reshard_after_forward).lower()}"
        )
    if candidate.activation_checkpointing != "none":
        overrides.append(f"parallel.activation_checkpointing={candidate.activation_checkpointing}")
    if candidate.offload != "none":
        overrides.append(f"parallel.offload={candidate.offload}")
    return f"recommended (*): {plan.recommended.strategy}: {' '.join(overrides)}"


def _mb(num_bytes: int) -> str:
    return f"{num_bytes / _MB:,.1f}"


def _target_device_type(name: str) -> str:
    if name == "cuda" or (name == "auto" and torch.cuda.is_available()):
        return "cuda"
    return "cpu"
