"""What every multi-process strategy shares: the process group and the collectives."""

from __future__ import annotations

import sys

import torch
import torch.distributed as dist
from torch import nn

from scaletrain.config import ParallelConfig
from scaletrain.parallel.env import LaunchEnv
from scaletrain.parallel.process_group import destroy_process_group, init_process_group
from scaletrain.parallel.strategy import BaseStrategy


class DistributedStrategy(BaseStrategy):
    """Base of ddp/fsdp: one process per device, joined by torchrun's environment."""

    name = "distributed"

    def __init__(self, cfg: ParallelConfig, *, env: LaunchEnv, device: torch.device):
        super().__init__(cfg, device)
        self.env = env
        self.rank = env.rank
        self.world_size = env.world_size
        self._dp_group = None  # None: every rank is a data-parallel rank of its own
        self._buffers: dict[int, list[torch.Tensor]] = {}  # per model: updated in place

    # --- lifecycle ---------------------------------------------------------------------
    def setup(self) -> None:
        init_process_group(self.env, device=self.device, timeout_s=self.cfg.timeout_s)

    def on_group_ready(self) -> None:
        """What a strategy builds on the process group once it exists; auto calls it on the
        strategy it chose, whose own setup never runs."""

    def teardown(self) -> None:
        """Idempotent; runs from `finally`, so after errors and Ctrl-C too."""
        line = self.memory.line()
        if self.is_main and line:
            print(line, file=sys.stderr)
        destroy_process_group()

    def _shard_size(self) -> int | None:
        return self.env.local_world_size if self.cfg.fsdp.hybrid else None

    # --- buffers -----------------------------------------------------------------------
    def sync_buffers(self, model: nn.Module) -> None:
        """Every rank takes rank 0's buffers (BatchNorm's running statistics), as DDP's
        `broadcast_buffers` does before each forward.

        Each rank's forwards update its buffers from its own samples, so without this the
        ranks end a step with different statistics: evaluation then scores each shard with
        another model, and a checkpoint keeps whichever rank's copy DCP chose to write,
        so a restarted run evaluates differently from an uninterrupted one. Costs one
        small broadcast per step, none for a model without buffers; constants (the GPT's
        RoPE tables) stay out of it.
        """
        buffers = self.buffers_to_sync(model)
        if buffers and self.world_size > 1:
            broadcast_in_place(buffers, src=0)

    def buffers_to_sync(self, model: nn.Module) -> list[torch.Tensor]:
        """The buffers `sync_buffers` sends: all but the constants (found once per model)."""
        if id(model) not in self._buffers:
            constants = constant_buffer_names(model)
            self._buffers[id(model)] = [
                buffer for name, buffer in model.named_buffers() if name not in constants
            ]
        return self._buffers[id(model)]

    # --- collectives -------------------------------------------------------------------
    def all_reduce_sum(self, tensor: torch.Tensor) -> torch.Tensor:
        """A reduced copy, each data-parallel rank counted once; the argument is left as it was.

        Ranks of one tensor-parallel group hold the same values (the same samples): the sum
        runs over all ranks, so a flag raised on any rank reaches every rank, and is then
        divided by the group size.
        """
        total = tensor.detach().clone()
        dist.all_reduce(total, op=dist.ReduceOp.SUM)
        copies = self.copies_per_value()
        if copies > 1:
            total = total / copies if total.is_floating_point() else total // copies
        return total

    def copies_per_value(self) -> int:
        """Ranks that hold the same value of a summed metric: a tensor-parallel group."""
        return self.world_size // self.data_shard()[1]

    def all_gather(self, tensor: torch.Tensor) -> list[torch.Tensor]:
        """Every data-parallel rank's tensor in rank order; sizes may differ in any dimension."""
        return all_gather_uneven(tensor, group=self._dp_group)

    def any_flag(self, flag: bool) -> bool:
        value = torch.tensor([int(flag)], device=self.device)
        dist.all_reduce(value, op=dist.ReduceOp.MAX)
        return bool(value.item())

    def barrier(self) -> None:
        if self.device.type == "cuda":
            dist.barrier(device_ids=[self.device.index])
        else:
            dist.barrier()


def constant_buffer_names(model: nn.Module) -> set[str]:
    """Buffers no checkpoint holds (`persistent=False`: the GPT's RoPE tables). Exact resume
    rebuilds them from the config alone, so every rank computes the same values: constants
    that no rank needs to send (~0.46 MB per step for configs/gpt-stdlib.yaml)."""
    saved = model.state_dict().keys()
    return {name for name, _ in model.named_buffers() if name not in saved}


def broadcast_in_place(tensors: list[torch.Tensor], *, src: int) -> None:
    """Overwrite `tensors` with rank `src`'s values in one broadcast: their raw bytes travel
    together (one collective's latency, whatever the dtypes: float statistics, int64
    counters)."""
    flat = torch.cat([tensor.detach().reshape(-1).view(torch.uint8) for tensor in tensors])
    dist.broadcast(flat, src=src)
    if dist.get_rank() == src:
        return
    sizes = [tensor.numel() * tensor.element_size() for tensor in tensors]
    with torch.no_grad():
        for tensor, data in zip(tensors, flat.split(sizes), strict=True):
            # clone: a byte slice may start off the dtype's alignment
            tensor.copy_(data.clone().view(tensor.dtype).reshape(tensor.shape))


def all_gather_uneven(tensor: torch.Tensor, *, group=None) -> list[torch.Tensor]:
    """all_gather for tensors whose shapes differ across ranks: pad to the max, then trim."""
    world_size = dist.get_world_size(group)
    shape = torch.tensor(tensor.shape, dtype=torch.int64, device=tensor.device)
    shapes = [torch.empty_like(shape) for _ in range(world_size)]
    dist.all_gather(shapes, shape, group=group)
    sizes = [tuple(int(size) for size in each.tolist()) for each in shapes]
    # gloo has no bool all_gather: send bytes
    payload = tensor.to(torch.uint8) if tensor.dtype == torch.bool else tensor
    max_shape = tuple(max(dims) for dims in zip(*sizes, strict=True)) if tensor.dim() else ()
    padded = payload.new_zeros(max_shape)
    padded[tuple(slice(0, size) for size in payload.shape)] = payload
    gathered = [torch.empty_like(padded) for _ in range(world_size)]
    dist.all_gather(gathered, padded.contiguous(), group=group)
    pieces = [
        part[tuple(slice(0, size) for size in dims)]
        for part, dims in zip(gathered, sizes, strict=True)
    ]
    return [piece.to(torch.bool) for piece in pieces] if tensor.dtype == torch.bool else pieces
