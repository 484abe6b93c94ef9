"""One rank's memory: the planner's estimate when the model is wrapped, and the peak since."""

from __future__ import annotations

from functools import partial

import torch
from torch import nn

from scaletrain.config import ParallelConfig
from scaletrain.parallel.blocks import find_blocks
from scaletrain.parallel.memory_plan import Candidate, MemoryEstimate, estimate
from scaletrain.parallel.memory_probe import ModelFacts, PeakTracker, measure_model

_MB = 2**20


class MemoryAccount:
    """Planned vs measured bytes on this rank (the planner's error is visible on every run)."""

    def __init__(self, cfg: ParallelConfig, device: torch.device):
        self.cfg = cfg
        self.device = device
        self.estimate: MemoryEstimate | None = None
        self.tracker = PeakTracker(device)

    def measure(self, model: nn.Module, *, compute_dtype, block_types, example_input) -> ModelFacts:
        blocks = find_blocks(model, block_types=block_types, class_names=self.cfg.fsdp.block_types)
        return measure_model(
            model, blocks=blocks, example_input=example_input, compute_dtype=compute_dtype
        )

    def plan(
        self,
        model: nn.Module,
        candidate: Candidate,
        request,
        *,
        world_size: int,
        shard_size: int | None = None,
    ) -> None:
        """Estimate before wrapping (from `request.example_input`, if any); start the peak.

        `request` is the strategy's WrapRequest (not imported: strategy.py imports this).
        """
        if request.example_input is not None:
            measure = partial(
                self.measure,
                model,
                compute_dtype=request.compute_dtype,
                block_types=request.block_types,
            )
            try:
                facts = measure(example_input=request.example_input)
            except Exception:  # a forward the meta device cannot run (.item(), numpy, ...):
                facts = measure(example_input=None)  # plan without activations, train anyway
            self.estimate = estimate(
                facts,
                candidate,
                self.cfg,
                world_size=world_size,
                shard_size=shard_size,
                optimizer_states=request.optimizer_states_per_param,
            )
        self.start(model)

    def start(self, model: nn.Module, planned: MemoryEstimate | None = None) -> None:
        """Start the peak from here; `planned`: an estimate made elsewhere (a pipeline
        rank's, `memory_pipeline.estimate_rank`)."""
        if planned is not None:
            self.estimate = planned
        tensors = [*model.parameters(), *model.buffers()]
        on_device = bool(tensors) and tensors[0].device == self.device
        resident = sum(t.numel() * t.element_size() for t in tensors) if on_device else 0
        self.tracker.start(already_counted_bytes=resident)

    def report(self) -> dict | None:
        """Planned vs measured MB for the run's summary; None before an estimate exists."""
        if self.estimate is None:
            return None
        estimate_mb = self.estimate.total_bytes / _MB
        peak_mb = self.tracker.peak_mb()
        error = (estimate_mb - peak_mb) / peak_mb if peak_mb > 0 else None
        return {
            "strategy": self.estimate.strategy,
            "estimate_mb": round(estimate_mb, 2),
            "estimate": self.estimate.breakdown_mb(),
            "measured_peak_mb": round(peak_mb, 2),
            "measured_by": self.tracker.method,
            "relative_error": round(error, 4) if error is not None else None,
        }

    def planned_line(self) -> str | None:
        """The estimate by part, for the start of a run."""
        if self.estimate is None:
            return None
        breakdown = self.estimate.breakdown_mb().items()
        parts = ", ".join(f"{part} {size_mb:.1f}" for part, size_mb in breakdown if size_mb)
        total = round(self.estimate.total_bytes / _MB, 2)  # rounded as report() rounds it
        return f"memory per rank ({self.estimate.strategy}): planned {total:.1f} MB ({parts})"

    def line(self) -> str | None:
        report = self.report()
        if report is None:
            return None
        error = report["relative_error"]
        return (
            f"memory per rank ({report['strategy']}): planned {report['estimate_mb']:.1f} MB, "
            f"measured peak {report['measured_peak_mb']:.1f} MB ({report['measured_by']}), "
            f"planner error {'n/a' if error is None else format(error, '+.0%')}"
        )
