"""What every multi-process strategy shares: the process group and the collectives."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager

import torch
import torch.distributed as dist
from torch import nn

from scaletrain.config import ParallelConfig
from scaletrain.parallel.env import LaunchEnv
from scaletrain.parallel.memory_account import MemoryAccount
from scaletrain.parallel.memory_plan import Candidate
from scaletrain.parallel.process_group import destroy_process_group, init_process_group


class DistributedStrategy:
    """Base of ddp/fsdp: one process per device, joined by torchrun's environment."""

    name = "distributed"

    def __init__(self, cfg: ParallelConfig, *, env: LaunchEnv, device: torch.device):
        self.cfg = cfg
        self.env = env
        self.device = device
        self.rank = env.rank
        self.world_size = env.world_size
        self.memory = MemoryAccount(cfg, device)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    # --- lifecycle ---------------------------------------------------------------------
    def setup(self) -> None:
        init_process_group(self.env, device=self.device, timeout_s=self.cfg.timeout_s)

    def teardown(self) -> None:
        """Idempotent; runs from `finally`, so after errors and Ctrl-C too."""
        line = self.memory.line()
        if self.is_main and line:
            print(line, file=sys.stderr)
        destroy_process_group()

    # --- model -------------------------------------------------------------------------
    def wrap_model(self, model: nn.Module, **context) -> nn.Module:
        raise NotImplementedError

    def unwrap_model(self, model: nn.Module) -> nn.Module:
        model = getattr(model, "_orig_mod", model)  # torch.compile
        return getattr(model, "module", model)  # DistributedDataParallel

    @contextmanager
    def evaluation(self, model: nn.Module) -> Iterator[nn.Module]:
        """Eval mode; yields the module to call (ranks may run different batch counts)."""
        was_training = model.training
        model.eval()
        try:
            yield model
        finally:
            model.train(was_training)

    # --- collectives -------------------------------------------------------------------
    def all_reduce_sum(self, tensor: torch.Tensor) -> torch.Tensor:
        """A reduced copy; the argument is left as it was."""
        total = tensor.detach().clone()
        dist.all_reduce(total, op=dist.ReduceOp.SUM)
        return total

    def all_gather(self, tensor: torch.Tensor) -> list[torch.Tensor]:
        """Every rank's tensor in rank order; sizes may differ in any dimension."""
        return all_gather_uneven(tensor)

    def any_flag(self, flag: bool) -> bool:
        value = torch.tensor([int(flag)], device=self.device)
        dist.all_reduce(value, op=dist.ReduceOp.MAX)
        return bool(value.item())

    def barrier(self) -> None:
        if self.device.type == "cuda":
            dist.barrier(device_ids=[self.device.index])
        else:
            dist.barrier()

    # --- memory ------------------------------------------------------------------------
    def candidate(self) -> Candidate:
        return Candidate(self.name, activation_checkpointing=self.cfg.activation_checkpointing)

    def plan_memory(self, model: nn.Module, context: dict) -> None:
        """Estimate this rank's memory before wrapping (rank 0 prints it); start the peak.

        Teardown prints the estimate again next to the measured peak.
        """
        self.memory.plan(
            model,
            self.candidate(),
            world_size=self.world_size,
            context=context,
            shard_size=self.env.local_world_size if self.cfg.fsdp.hybrid else None,
        )
        line = self.memory.planned_line()
        if self.is_main and line:
            print(line, file=sys.stderr)

    def memory_report(self) -> dict | None:
        """Planned vs measured per-rank memory (MB), for the run's summary."""
        return self.memory.report()


def all_gather_uneven(tensor: torch.Tensor) -> list[torch.Tensor]:
    """all_gather for tensors whose shapes differ across ranks: pad to the max, then trim."""
    world_size = dist.get_world_size()
    shape = torch.tensor(tensor.shape, dtype=torch.int64, device=tensor.device)
    shapes = [torch.empty_like(shape) for _ in range(world_size)]
    dist.all_gather(shapes, shape)
    sizes = [tuple(int(size) for size in each.tolist()) for each in shapes]
    # gloo has no bool all_gather: send bytes
    payload = tensor.to(torch.uint8) if tensor.dtype == torch.bool else tensor
    max_shape = tuple(max(dims) for dims in zip(*sizes, strict=True)) if tensor.dim() else ()
    padded = payload.new_zeros(max_shape)
    padded[tuple(slice(0, size) for size in payload.shape)] = payload
    gathered = [torch.empty_like(padded) for _ in range(world_size)]
    dist.all_gather(gathered, padded.contiguous())
    pieces = [
        part[tuple(slice(0, size) for size in dims)]
        for part, dims in zip(gathered, sizes, strict=True)
    ]
    return [piece.to(torch.bool) for piece in pieces] if tensor.dtype == torch.bool else pieces
