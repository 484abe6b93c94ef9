"""Pipeline parallelism: a GPT's layers split into stages, one group of stages per pipeline
rank, micro batches streamed through `torch.distributed.pipelining`.

`parallel.strategy: pp` is the pure pipeline (dims `{pp: world}`): every rank reads the whole
batch. `parallel.strategy: fsdp` with `parallel.dims.pp > 1` composes it as torchtitan does:
the pipeline runs over `mesh["pp"]` (the outermost dim) and each stage is split inside its
data-parallel / tensor-parallel sub-mesh (`pipeline_mesh.py`); the ranks of one stage read
their data-parallel shard, the pipeline peers of a data-parallel rank the same batch.

The first stage embeds the tokens, the last one runs the head and the loss. A step's loss
and its metrics exist only there, so the other ranks report a loss share of zero: the
strategy's sums over ranks (the guard, the log, validation) then come out right without
another collective.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager, nullcontext

import torch
from torch import nn
from torch.distributed.device_mesh import DeviceMesh, init_device_mesh
from torch.distributed.pipelining import (
    PipelineStage,
    Schedule1F1B,
    ScheduleGPipe,
    ScheduleInterleaved1F1B,
)

from scaletrain.parallel.distributed import DistributedStrategy
from scaletrain.parallel.memory_pipeline import PipelineLayout, plan_rank
from scaletrain.parallel.memory_plan import MemoryEstimate
from scaletrain.parallel.pipeline_comm import PipelineComm
from scaletrain.parallel.pipeline_mesh import StageParallel, pure_pipeline_dims
from scaletrain.parallel.pipeline_split import StageModule, check_layout, layer_split, stage_ids
from scaletrain.parallel.strategy import WrapRequest
from scaletrain.parallel.tensor_parallel import full_value, local_value

SINGLE_STAGE_SCHEDULES = {"gpipe": ScheduleGPipe, "1f1b": Schedule1F1B}


def pipeline_mesh(device: torch.device, size: int) -> DeviceMesh:
    """The 1-D `pp` mesh of the pure pipeline (`parallel.strategy: pp`)."""
    return init_device_mesh(device.type, (size,), mesh_dim_names=("pp",))


class PipelineStrategy(DistributedStrategy):
    """Stages of one model across ranks; the schedule runs each step's forwards/backwards."""

    name = "pp"

    def __init__(self, cfg, *, env, device):
        super().__init__(cfg, env=env, device=device)
        self.pp = cfg.pp
        # fsdp with parallel.dims.pp > 1: each stage split over its dp/tp sub-mesh
        self.inner = StageParallel(cfg, env=env, device=device) if cfg.strategy != "pp" else None
        self.dims = self.inner.dims if self.inner else pure_pipeline_dims(cfg.pp.size, env)
        self.size = self.dims.pp
        self.num_stages = self.size * self.pp.stages_per_rank
        self.reduce_grad_norm = self._global_norm
        self.comm: PipelineComm | None = None
        self.stages: dict[int, StageModule] = {}  # this rank's stages by index

    def setup(self) -> None:
        super().setup()
        self.on_group_ready()

    def on_group_ready(self) -> None:
        """The `pp` group: of the run's one mesh when composed, else a 1-D mesh."""
        if self.inner is None:
            group = pipeline_mesh(self.device, self.size).get_group("pp")
        else:
            group, self._dp_group = self.inner.on_group_ready()
        self.comm = PipelineComm(group, device=self.device)

    @property
    def last_owner(self) -> int:
        """Pipeline rank of the last stage (it scores)."""
        return (self.num_stages - 1) % self.size

    def data_shard(self) -> tuple[int, int]:
        """The data-parallel position: every stage (and TP rank) of one pipeline reads the
        same batch."""
        return self.dims.dp_rank, self.dims.dp_size

    def eval_shard(self) -> tuple[int, int]:
        return self.data_shard()

    def copies_per_value(self) -> int:
        """Stages before the last add zeros, so a sum counts the last stage's value once per
        tensor-parallel rank (they hold the same one)."""
        return self.dims.tp

    @contextmanager
    def loss_parallel(self) -> Iterator[None]:
        with self.inner.loss_parallel() if self.inner else nullcontext():
            yield

    # --- model -------------------------------------------------------------------------
    def check_model(self, model: nn.Module, *, model_name: str | None = None) -> None:
        check_layout(model)
        if self.inner is not None:
            self.inner.check_model(model, model_name=model_name)

    def wrap_model(self, model: nn.Module, request: WrapRequest | None = None) -> nn.Module:
        """This rank's stages, under the full model's parameter names (checkpoints reshard
        across layouts); the layers other ranks own go to the meta device (memory freed).
        Composed: each stage tensor-parallel first, then checkpointed, then FSDP-sharded."""
        request = request or WrapRequest()
        check_layout(model)
        planned = self._plan_memory(model, request)  # measured on the whole model, on meta
        layers = layer_split(len(model.blocks), self.num_stages)
        mine = stage_ids(self.comm.rank, self.size, self.pp.stages_per_rank)
        last = self.num_stages - 1
        for index in mine:
            self.stages[index] = StageModule(
                model, layers[index], first=index == 0, last=index == last
            )
        owned = [layer for index in mine for layer in layers[index]]
        if len(mine) == 1:  # the stage is what the optimizer and the checkpoint see
            local = self.stages[mine[0]]
        else:
            local = StageModule(model, owned, first=0 in mine, last=last in mine)
        _free_others(model, kept=set(local.modules()))
        local.to(self.device)
        self.memory.start(local, planned)  # the peak from here, this rank's stages resident
        if self.inner is not None:
            self.inner.split_stages(self.stages.values(), request)
        blocks = self._checkpointed_blocks(model, request)
        if self.inner is not None:
            self.inner.shard_stages(self.stages.values(), blocks, request)
        return local

    def _plan_memory(self, model: nn.Module, request: WrapRequest) -> MemoryEstimate | None:
        """This pipeline rank's row of `scaletrain plan` (printed now; teardown prints it
        beside the measured peak)."""
        pp, dims = self.pp, self.dims
        layout = PipelineLayout(
            self.size, pp.schedule, pp.microbatches, pp.stages_per_rank, dims.dp_shard, dims.tp
        )
        planned = plan_rank(model, layout, self.cfg, self.comm.rank, request)
        if planned is not None and self.is_main:
            self.memory.estimate = planned
            print(self.memory.planned_line(), file=sys.stderr)
        return planned

    def sync_buffers(self, model: nn.Module) -> None:
        """Stages hold different buffers and no replicas: nothing to agree on."""

    def step_runner(self, model: nn.Module, *, loss_fn: nn.Module, precision):
        return PipelineRunner(self, loss_fn=loss_fn, precision=precision)

    def _global_norm(self, norm: torch.Tensor) -> torch.Tensor:
        """The model's gradient 2-norm from each stage's: sqrt of the summed squares (a
        stage's norm over its FSDP/TP shards is already reduced inside its sub-mesh)."""
        squared = full_value(norm).detach().float().square()
        self.comm.all_reduce(squared)
        return squared.sqrt()

    # --- evaluation --------------------------------------------------------------------
    @contextmanager
    def evaluation(self, model: nn.Module) -> Iterator:
        """Eval mode; yields a forward through every stage in turn (no schedule: a split's
        last batch may be shorter, which a schedule's fixed shapes would refuse). It returns
        the logits on the last stage's rank, None elsewhere. Composed: each stage's FSDP
        units stay gathered (data-parallel ranks may run different batch counts)."""
        with super().evaluation(model), ExitStack() as gathered:
            if self.inner is not None:
                for stage in self.stages.values():
                    gathered.enter_context(self.inner.fsdp.evaluation(stage))
            yield self._forward_only

    def _forward_only(self, inputs: torch.Tensor) -> torch.Tensor | None:
        activations = inputs
        size = self.size
        for index in sorted(self.stages):
            if index > 0:
                activations = self.comm.recv((index - 1) % size)
            activations = self.stages[index](activations, token_ids=inputs)
            if index < self.num_stages - 1:
                self.comm.send(activations, (index + 1) % size)
        # tensor parallel: the logits split along the vocabulary, gathered whole
        return full_value(activations) if self.last_owner == self.comm.rank else None

    def share_eval(self, result):
        """The last stage's loss, metrics (and predictions, to rank 0) on every rank."""
        return self.comm.share_result(result, src=self.last_owner)


class PipelineRunner:
    """A step's micro batches through the schedule: `TrainStep`'s forward/backward seam.

    Each micro batch is cut into `parallel.pp.microbatches` pieces (fewer where a short last
    batch is not divisible: the largest divisor of its size). Each piece's mean loss is
    scaled to its share of the step's mean, so the summed gradients equal one process's.
    """

    def __init__(self, strategy: PipelineStrategy, *, loss_fn: nn.Module, precision):
        self.strategy, self.loss_fn, self.precision = strategy, loss_fn, precision
        self.schedules: dict[tuple[int, int], object] = {}  # (pieces, piece size) -> schedule
        self.scale = 1.0
        indices = strategy.stages
        self.has_first = 0 in indices
        self.has_last = strategy.num_stages - 1 in indices
        self.pools = any(stage.pool is not None for stage in indices.values())

    def _loss(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return self.loss_fn(output, target) * self.scale

    def __call__(self, batch) -> tuple[torch.Tensor, None]:
        strategy = self.strategy
        total, replicas = batch.num_samples_global, strategy.dims.dp_size
        step_loss = torch.zeros((), device=strategy.device)
        micro_batches, wanted = _even_micro_batches(
            batch, replicas=replicas, wanted=strategy.pp.microbatches
        )
        for inputs, targets in micro_batches:
            size = targets.shape[0]
            pieces = micro_batch_pieces(size, wanted, ranks=strategy.size)
            # FSDP averages gradients over the data-parallel ranks: scaled up to a sum
            self.scale = size / pieces / total * replicas
            schedule = self._schedule(pieces, size // pieces)
            losses: list[torch.Tensor] = []
            args = (inputs,) if self.has_first else ()
            kwargs = {"target": targets, "losses": losses} if self.has_last else {}
            if self.pools:  # the last stage's classifier pools over this rank's own ids
                kwargs["token_ids"] = inputs
            with strategy.loss_parallel(), self.precision.autocast():
                schedule.step(*args, return_outputs=False, **kwargs)
            if losses:
                losses = [local_value(loss.detach()) for loss in losses]
                step_loss = step_loss + torch.stack(losses).float().sum() / replicas
        return step_loss, None

    def _schedule(self, pieces: int, piece_size: int):
        """One schedule per piece shape: a stage infers its shapes on its first step."""
        key = (pieces, piece_size)
        if key not in self.schedules:
            strategy = self.strategy
            stages = [
                PipelineStage(
                    module,
                    index,
                    strategy.num_stages,
                    strategy.device,
                    group=strategy.comm.group,
                )
                for index, module in sorted(strategy.stages.items())
            ]
            options = {"loss_fn": self._loss, "scale_grads": False}
            name = strategy.pp.schedule
            if name == "interleaved_1f1b":
                schedule = ScheduleInterleaved1F1B(stages, pieces, **options)
            else:  # 1f1b needs a piece per stage: a short batch with fewer runs as gpipe
                name = "gpipe" if pieces < strategy.num_stages else name
                schedule = SINGLE_STAGE_SCHEDULES[name](stages[0], pieces, **options)
            self.schedules[key] = schedule
        return self.schedules[key]


def _free_others(model: nn.Module, *, kept: set[nn.Module]) -> None:
    """The parts of `model` another rank's stages own go to the meta device (memory freed)."""
    parts = [model.tok_emb, getattr(model, "pos_emb", None), *model.blocks, model.norm, model.head]
    for module in parts:
        if module is not None and module not in kept:
            module.to("meta")


def _even_micro_batches(batch, *, replicas: int, wanted: int) -> tuple[list, int]:
    """The micro batches and the pieces wanted of each: one piece shape per step, alike on
    every data-parallel rank (FSDP's collectives run once per piece on each).

    A step whose micro batches differ in size (a short last step) runs as one micro batch:
    a new piece shape means a new schedule, whose first step infers shapes with a real
    forward/backward and then drops the FSDP gradients, those of the step's earlier micro
    batches too. Where the step's samples do not divide evenly over the data-parallel ranks
    (shares differ by one), that micro batch is one piece on each rank.
    """
    even = batch.num_samples_global % replicas == 0
    if even and len({targets.shape[0] for _, targets in batch.micro_batches}) == 1:
        return batch.micro_batches, wanted
    inputs, targets = zip(*batch.micro_batches, strict=True)
    return [(torch.cat(inputs), torch.cat(targets))], wanted if even else 1


def micro_batch_pieces(size: int, wanted: int, *, ranks: int) -> int:
    """The largest divisor of `size` not above `wanted` that interleaved 1F1B accepts (a
    multiple of its rounds, `pieces // ranks`: any count below `ranks` is)."""
    return next(
        count
        for count in range(min(wanted, size), 0, -1)
        if size % count == 0 and count % max(1, count // ranks) == 0
    )


__all__ = ["PipelineRunner", "PipelineStrategy", "micro_batch_pieces", "pipeline_mesh"]
