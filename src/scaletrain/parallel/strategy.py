"""The Strategy seam: everything distributed lives behind this protocol.

A Strategy owns the process group, wraps the model, says which samples this rank reads
(rank / world_size for the loader), says how a step's gradients travel (`no_sync`,
`reduce_gradients`, `apply_update`) and its buffers (`sync_buffers`), reduces metrics, and
decides which rank writes.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import torch
from torch import nn

from scaletrain.config import ParallelConfig
from scaletrain.errors import ConfigError
from scaletrain.parallel.blocks import apply_activation_checkpointing, find_blocks
from scaletrain.parallel.memory_account import MemoryAccount
from scaletrain.parallel.memory_plan import Candidate


@dataclass(frozen=True)
class WrapRequest:
    """What the trainer tells a strategy about the model it wraps (built once per run)."""

    compute_dtype: torch.dtype | None = None  # autocast's dtype: FSDP gathers params in it
    block_types: tuple[type[nn.Module], ...] = ()  # FSDP units, checkpointed blocks
    # one micro batch on the meta device: the planner measures activations from its shape
    example_input: torch.Tensor | None = None
    optimizer_states_per_param: int = 2
    model_name: str | None = None  # `model.name`: the tensor-parallel plan is looked up by it
    fp32_modules: tuple[nn.Module, ...] = ()  # norm layers: fp32 params under mixed precision


@runtime_checkable
class Strategy(Protocol):
    name: str
    rank: int
    world_size: int
    device: torch.device

    @property
    def is_main(self) -> bool: ...
    def setup(self) -> None: ...
    def data_shard(self) -> tuple[int, int]: ...
    def check_model(self, model: nn.Module, *, model_name: str | None) -> None: ...
    def wrap_model(self, model: nn.Module, request: WrapRequest | None = None) -> nn.Module: ...
    def unwrap_model(self, model: nn.Module) -> nn.Module: ...
    def no_sync(self, model: nn.Module, *, enabled: bool): ...
    def loss_parallel(self): ...
    def reduce_gradients(self, model: nn.Module) -> None: ...
    def sync_buffers(self, model: nn.Module) -> None: ...
    def apply_update(self, update: Callable[[], None]) -> None: ...
    def end_training(self, model: nn.Module) -> None: ...
    def evaluation(self, model: nn.Module): ...
    def all_reduce_sum(self, tensor: torch.Tensor) -> torch.Tensor: ...
    def all_gather(self, tensor: torch.Tensor) -> list[torch.Tensor]: ...
    def any_flag(self, flag: bool) -> bool: ...
    def barrier(self) -> None: ...
    def evaluation_barrier(self) -> None: ...
    def memory_report(self) -> dict | None: ...
    def teardown(self) -> None: ...


def resolve_device(name: str, *, local_rank: int = 0) -> torch.device:
    """`auto` -> this rank's CUDA device when one is present, else the CPU."""
    if name == "cpu" or (name == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise ConfigError("train.device: `cuda` requested but no CUDA device is available")
    if local_rank >= torch.cuda.device_count():
        raise ConfigError(
            f"local rank {local_rank} has no GPU: {torch.cuda.device_count()} visible; "
            "start at most one process per GPU (--nproc)"
        )
    torch.cuda.set_device(local_rank)
    return torch.device("cuda", local_rank)


class BaseStrategy:
    """What every strategy shares: wrapping as plan -> checkpoint blocks -> place, and the
    step hooks in their synchronous form."""

    name = "base"
    rank = 0
    world_size = 1
    is_server = False  # a parameter server's process: serves instead of training
    is_spare = False  # a spare parameter-server worker: waits to take over a lost one
    writes_checkpoints = True  # every rank writes its part of a checkpoint
    # the weights validated after the last step are the weights the run ends with, so the
    # final evaluation may reuse that validation (not so where a last sync or a pull changes them)
    validated_weights_are_final = True
    # payload bytes this rank hands to gradient/parameter collectives per optimizer step
    # (amortized over a sync period); None: not counted (one process: none at all)
    comm_bytes_per_step: float | None = None
    # a strategy whose ranks hold weights of their own between syncs says what a
    # checkpoint holds (`checkpoint_tensors`, `restore_tensors`; see local_sgd.py)
    replicas = None
    # async_ps: a spare worker that took over a lost worker, and from which step
    # ({"worker", "step", ...}); train/takeover.py moves the fresh state there
    takeover: dict | None = None

    def __init__(self, cfg: ParallelConfig, device: torch.device):
        self.cfg = cfg
        self.device = device
        self.memory = MemoryAccount(cfg, device)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    # --- model -------------------------------------------------------------------------
    def candidate(self) -> Candidate:
        return Candidate(self.name, activation_checkpointing=self.cfg.activation_checkpointing)

    def wrap_model(self, model: nn.Module, request: WrapRequest | None = None) -> nn.Module:
        """Plan this rank's memory, checkpoint blocks if asked, then place the model."""
        request = request or WrapRequest()
        self.memory.plan(
            model,
            self.candidate(),
            request,
            world_size=self.world_size,
            shard_size=self._shard_size(),
        )
        line = self.memory.planned_line()
        if line and self.is_main and self.world_size > 1:  # teardown prints it beside the peak
            print(line, file=sys.stderr)
        self._split_model(model, request)
        return self._place(model, self._checkpointed_blocks(model, request), request)

    def _checkpointed_blocks(self, model: nn.Module, request: WrapRequest) -> list[nn.Module]:
        """The model's blocks, activation-checkpointed as `parallel.activation_checkpointing`
        says."""
        blocks = find_blocks(
            model, block_types=request.block_types, class_names=self.cfg.fsdp.block_types
        )
        apply_activation_checkpointing(
            blocks,
            mode=self.cfg.activation_checkpointing,
            every=self.cfg.activation_checkpointing_every,
        )
        return blocks

    def _shard_size(self) -> int | None:
        """Ranks one parameter is sharded over, where not the world (hybrid FSDP)."""
        return None

    def check_model(self, model: nn.Module, *, model_name: str | None) -> None:
        """Refuse, in one line, a model this strategy cannot split (before any planning)."""

    def _split_model(self, model: nn.Module, request: WrapRequest) -> None:
        """Split the model inside each data-parallel rank (tensor parallel); default: none."""

    @contextmanager
    def loss_parallel(self) -> Iterator[None]:
        """Around forward, loss and backward: where the logits stay split (loss parallel)."""
        yield

    def _place(self, model: nn.Module, blocks: list[nn.Module], request: WrapRequest):
        return model.to(self.device)

    def unwrap_model(self, model: nn.Module) -> nn.Module:
        model = getattr(model, "_orig_mod", model)  # torch.compile
        return getattr(model, "module", model)  # DistributedDataParallel

    # --- how a step's gradients travel -------------------------------------------------
    @contextmanager
    def no_sync(self, model: nn.Module, *, enabled: bool) -> Iterator[None]:
        """Forward and backward of a micro batch whose gradients are not reduced yet."""
        yield

    def reduce_gradients(self, model: nn.Module) -> None:
        """After the last micro batch's backward: on return `.grad` holds the global mean.

        DDP and FSDP reduce inside backward, so there is nothing left to do here; a
        strategy that reduces otherwise (or never, as local SGD) does it here.
        """

    def sync_buffers(self, model: nn.Module) -> None:
        """After the step's forwards: every rank holds the same buffers (one rank: nothing)."""

    def apply_update(self, update: Callable[[], None]) -> None:
        """Run the optimizer update (`update`: the precision's optimizer step).

        The place where a step's parameters travel: a parameter server pushes gradients
        and pulls parameters instead, local SGD averages parameters every few updates.
        """
        update()

    def finish_training(self, *, samples_per_step: int) -> list[dict]:
        """After the last step, before the final evaluation: records for metrics.jsonl."""
        return []

    def bind_optimizer(self, optimizer: torch.optim.Optimizer) -> None:
        """The run's optimizer, once built (a parameter server's workers read its lr)."""

    def bind_state(self, state) -> None:
        """The loop's TrainState, once built and resumed (a parameter server's workers label
        each push with its step)."""

    def eval_shard(self) -> tuple[int, int]:
        """(rank, ranks) splitting an evaluated split: each rank reads its part."""
        return self.rank, self.world_size

    def evaluation_barrier(self) -> None:
        """Before the final evaluation: rank 0 may still be writing best.json, so every rank
        reads the same weights."""
        self.barrier()

    def data_shard(self) -> tuple[int, int]:
        """(rank, ranks) splitting each training batch: the data-parallel position (pipeline
        stages read the same batch)."""
        return self.rank, self.world_size

    def step_runner(self, model: nn.Module, *, loss_fn: nn.Module, precision):
        """Who runs a step's forwards and backwards: None is `TrainStep`'s own loop over the
        micro batches; a pipeline returns its schedule (`pipeline.py`)."""
        return None

    # this rank's gradient 2-norm -> the model's, where ranks hold different parameters
    # (pipeline stages); None: this rank's norm is the model's (replicas, or DTensors)
    reduce_grad_norm: Callable[[torch.Tensor], torch.Tensor] | None = None

    def share_eval(self, result):
        """An evaluation's result as every rank must see it (a pipeline's last stage scored)."""
        return result

    def end_training(self, model: nn.Module) -> None:
        """After the last update of a run that was not interrupted: a strategy whose ranks
        drift apart between syncs syncs once more (see local_sgd.py)."""

    @contextmanager
    def evaluation(self, model: nn.Module) -> Iterator[nn.Module]:
        """Eval mode for the block; yields the module to call."""
        was_training = model.training
        model.eval()
        try:
            yield model
        finally:
            model.train(was_training)

    # --- memory ------------------------------------------------------------------------
    def memory_report(self) -> dict | None:
        """Planned vs measured per-rank memory (MB), once wrap_model had an `example_input`."""
        return self.memory.report()


class SingleStrategy(BaseStrategy):
    """One process, one device: every collective is the identity."""

    name = "single"

    def __init__(self, device: torch.device, cfg: ParallelConfig | None = None):
        super().__init__(cfg or ParallelConfig(strategy="single"), device)

    def setup(self) -> None:
        pass

    def all_reduce_sum(self, tensor: torch.Tensor) -> torch.Tensor:
        return tensor

    def all_gather(self, tensor: torch.Tensor) -> list[torch.Tensor]:
        return [tensor]

    def any_flag(self, flag: bool) -> bool:
        return flag

    def barrier(self) -> None:
        pass

    def teardown(self) -> None:
        pass
