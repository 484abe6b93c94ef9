"""Pipeline stages on the run's one DeviceMesh: `parallel.strategy: fsdp` with
`parallel.dims.pp > 1`, composed in torchtitan's order.

The pipeline runs over `mesh["pp"]` (the outermost dim); inside each stage the split is the
FSDP strategy's own: tensor parallel over `mesh["tp"]` first, then activation checkpointing
(the pipeline strategy's), then `fully_shard` per block and on the stage over the stage's
data-parallel sub-mesh (`dp_shard`, or (`dp_replicate`, `dp_shard`) for HSDP). This module
holds that FSDP strategy and hands it one stage at a time.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable

from torch import nn

from scaletrain.errors import ConfigError
from scaletrain.parallel.fsdp import FSDPStrategy
from scaletrain.parallel.mesh import ParallelDims, data_parallel_group
from scaletrain.parallel.strategy import WrapRequest
from scaletrain.parallel.tensor_parallel import tp_plan_for


class StageParallel:
    """The data/tensor-parallel split of each of this rank's pipeline stages."""

    def __init__(self, cfg, *, env, device):
        self.fsdp = FSDPStrategy(cfg, env=env, device=device)
        self.dims: ParallelDims = self.fsdp.dims

    def on_group_ready(self):
        """The one mesh; returns the `pp` group and the data-parallel group (metrics are
        gathered over it: the ranks of one stage that read different samples)."""
        self.fsdp.on_group_ready()
        mesh = self.fsdp.mesh
        dp_group = self.fsdp._dp_group or data_parallel_group(mesh)
        return mesh["pp"].get_group(), dp_group

    def check_model(self, model: nn.Module, *, model_name: str | None) -> None:
        self.fsdp.check_model(model, model_name=model_name)

    def loss_parallel(self):
        return self.fsdp.loss_parallel()

    def split_stages(self, stages: Iterable[nn.Module], request: WrapRequest) -> None:
        """Tensor parallel on each stage, by the model's plan (only the parts it holds)."""
        if not self.dims.tp_enabled:
            return
        plan = tp_plan_for(request.model_name, tp=self.dims.tp)
        for stage in stages:
            plan.apply(stage, self.fsdp.mesh["tp"])

    def shard_stages(
        self, stages: Iterable[nn.Module], blocks: list[nn.Module], request: WrapRequest
    ) -> None:
        """`fully_shard` each stage's blocks, then the stage (its root) on the dp sub-mesh."""
        for stage in stages:
            mine = set(stage.modules())
            fp32 = tuple(module for module in request.fp32_modules if module in mine)
            stage_request = dataclasses.replace(request, fp32_modules=fp32)
            self.fsdp._place(stage, [block for block in blocks if block in mine], stage_request)


def pure_pipeline_dims(size: int, env) -> ParallelDims:
    """`parallel.strategy: pp`: dims `{pp: world}`, every rank one stage of one pipeline."""
    if env.world_size != size:
        raise ConfigError(
            f"parallel.pp.size: {size} pipeline ranks, but {env.world_size} "
            f"process(es) were launched; launch {size} (--nproc {size}) or set "
            f"parallel.pp.size={env.world_size}"
        )
    return ParallelDims(pp=size, dp_replicate=1, dp_shard=1, tp=1, rank=env.rank)
