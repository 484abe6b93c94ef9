"""What every multi-process strategy shares: the process group and the collectives."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager

import torch
import torch.distributed as dist
from torch import nn

from scaletrain.config import ParallelConfig
from scaletrain.parallel.blocks import find_blocks
from scaletrain.parallel.env import LaunchEnv
from scaletrain.parallel.memory_plan import Candidate, MemoryEstimate, estimate
from scaletrain.parallel.memory_probe import ModelFacts, PeakTracker, measure_model
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
        self.memory_estimate: MemoryEstimate | None = None  # set by wrap_model
        self.peak_tracker = PeakTracker(device)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    # --- lifecycle ---------------------------------------------------------------------
    def setup(self) -> None:
        init_process_group(self.env, device=self.device, timeout_s=self.cfg.timeout_s)

    def teardown(self) -> None:
        """Idempotent; runs from `finally`, so after errors and Ctrl-C too."""
        if self.is_main and self.memory_estimate is not None:
            print(self.memory_line(), file=sys.stderr)
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

    def plan_memory(
        self,
        model: nn.Module,
        *,
        precision=None,
        block_types: tuple[type[nn.Module], ...] | None = None,
        example_input: torch.Tensor | None = None,
        optimizer_states_per_param: int | None = None,
    ) -> None:
        """Estimate this rank's memory before wrapping; start measuring the real peak."""
        facts = None
        if example_input is not None:
            facts = self.measure(model, precision=precision, block_types=block_types,
                                 example_input=example_input)
            self.memory_estimate = estimate(
                facts, self.candidate(), world_size=self.world_size,
                shard_size=self.env.local_world_size if self.cfg.fsdp.hybrid else None,
                optimizer_states=2 if optimizer_states_per_param is None else optimizer_states_per_param,
                bucket_cap_mb=self.cfg.ddp.bucket_cap_mb,
                checkpoint_every=self.cfg.activation_checkpointing_every,
            )
        resident = sum(t.numel() * t.element_size() for t in [*model.parameters(), *model.buffers()])
        on_device = next(model.parameters()).device == self.device if resident else False
        self.peak_tracker.start(already_counted_bytes=resident if on_device else 0)

    def measure(self, model: nn.Module, *, precision, block_types, example_input) -> ModelFacts:
        blocks = find_blocks(model, block_types=block_types, class_names=self.cfg.fsdp.block_types)
        return measure_model(
            model, blocks=blocks, example_input=example_input,
            compute_dtype=getattr(precision, "autocast_dtype", None),
        )

    def memory_report(self) -> dict | None:
        """Planned vs measured per-rank memory (MB), for the run's summary and console."""
        if self.memory_estimate is None:
            return None
        estimate_mb = self.memory_estimate.total_bytes / 2**20
        peak_mb = self.peak_tracker.peak_mb()
        error = (estimate_mb - peak_mb) / peak_mb if peak_mb > 0 else None
        return {
            "strategy": self.memory_estimate.strategy,
            "estimate_mb": round(estimate_mb, 2),
            "estimate": self.memory_estimate.breakdown_mb(),
            "measured_peak_mb": round(peak_mb, 2),
            "measured_by": self.peak_tracker.method,
            "relative_error": round(error, 4) if error is not None else None,
        }

    def memory_line(self) -> str:
        report = self.memory_report()
        error = report["relative_error"]
        error_text = f"{error:+.0%}" if error is not None else "n/a"
        return (
            f"memory per rank ({report['strategy']}): planned {report['estimate_mb']:.1f} MB, "
            f"measured peak {report['measured_peak_mb']:.1f} MB ({report['measured_by']}), "
            f"planner error {error_text}"
        )


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
    pieces = [part[tuple(slice(0, size) for size in dims)] for part, dims in zip(gathered, sizes, strict=True)]
    return [piece.to(torch.bool) for piece in pieces] if tensor.dtype == torch.bool else pieces
