"""`parallel.strategy: auto`: the memory planner picks ddp or an fsdp flavour per model."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager

import torch
import torch.distributed as dist
from torch import nn

from scaletrain.errors import ConfigError
from scaletrain.parallel.ddp import DDPStrategy
from scaletrain.parallel.distributed import DistributedStrategy
from scaletrain.parallel.fsdp import FSDPStrategy
from scaletrain.parallel.memory_plan import (
    MemoryEstimate,
    MemoryPlan,
    device_memory_bytes,
    plan_memory,
)
from scaletrain.parallel.strategy import WrapRequest

_GB = 2**30


class AutoStrategy(DistributedStrategy):
    """Joins the process group like ddp/fsdp; chooses between them once it sees the model."""

    name = "auto"

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.chosen: DistributedStrategy | None = None
        self.plan: MemoryPlan | None = None

    def wrap_model(self, model: nn.Module, request: WrapRequest | None = None) -> nn.Module:
        """Plan with the same numbers on every rank, then wrap as the first that fits."""
        request = request or WrapRequest()
        chosen = self._choose(model, request)
        candidate = chosen.candidate
        settings = {
            "strategy": candidate.strategy,
            "activation_checkpointing": candidate.activation_checkpointing,
            "offload": candidate.offload,
            "fsdp": self.cfg.fsdp.model_copy(
                update={"reshard_after_forward": candidate.reshard_after_forward}
            ),
        }
        strategy_class = DDPStrategy if candidate.strategy == "ddp" else FSDPStrategy
        cfg = self.cfg.model_copy(update=settings)
        self.chosen = strategy_class(cfg, env=self.env, device=self.device)
        self.chosen.on_group_ready()  # the group is auto's: the chosen one's setup never ran
        if self.is_main:
            available = _gb(self.plan.device_memory_bytes)
            print(
                f"parallel.strategy=auto: chose {chosen.strategy} "
                f"({_gb(chosen.total_bytes)} of {available} per device)",
                file=sys.stderr,
            )
        return self.chosen.wrap_model(model, request)

    def _choose(self, model: nn.Module, request: WrapRequest) -> MemoryEstimate:
        facts = self.memory.measure(
            model,
            compute_dtype=request.compute_dtype,
            block_types=request.block_types,
            example_input=request.example_input,
        )
        self.plan = plan_memory(
            facts,
            self.cfg,
            world_size=self.world_size,
            local_world_size=self.env.local_world_size,
            device_type=self.device.type,
            optimizer_states=request.optimizer_states_per_param,
            device_memory_bytes=self._smallest_device_memory(),
        )
        if self.plan.recommended is None:
            smallest = min(self.plan.estimates, key=lambda each: each.total_bytes)
            raise ConfigError(
                f"parallel.strategy: `auto` found nothing that fits "
                f"{_gb(self.plan.device_memory_bytes)} per device; the smallest, "
                f"{smallest.strategy}, needs {_gb(smallest.total_bytes)}; lower "
                "train.micro_batch_size, add processes or set parallel.device_memory_gb"
            )
        return self.plan.recommended

    def unwrap_model(self, model: nn.Module) -> nn.Module:
        return self._delegate().unwrap_model(model)

    @contextmanager
    def no_sync(self, model: nn.Module, *, enabled: bool) -> Iterator[None]:
        with self._delegate().no_sync(model, enabled=enabled):
            yield

    def reduce_gradients(self, model: nn.Module) -> None:
        self._delegate().reduce_gradients(model)

    def apply_update(self, update) -> None:
        self._delegate().apply_update(update)

    @contextmanager
    def evaluation(self, model: nn.Module) -> Iterator[nn.Module]:
        with self._delegate().evaluation(model) as module:
            yield module

    @property
    def comm_bytes_per_step(self) -> float | None:
        return self.chosen.comm_bytes_per_step if self.chosen else None

    def memory_report(self) -> dict | None:
        return self.chosen.memory_report() if self.chosen else None

    def teardown(self) -> None:
        if self.chosen is not None:
            self.chosen.teardown()
        super().teardown()

    def _delegate(self) -> DistributedStrategy:
        assert self.chosen is not None, "auto strategy used before wrap_model chose one"
        return self.chosen

    def _smallest_device_memory(self) -> int:
        """Every rank must choose alike: plan with the smallest device of the job."""
        if self.cfg.device_memory_gb is not None:
            return int(self.cfg.device_memory_gb * _GB)
        local = device_memory_bytes(
            self.device.type,
            local_world_size=self.env.local_world_size,
            index=self.device.index or 0,
        )
        value = torch.tensor([local], dtype=torch.int64, device=self.device)
        dist.all_reduce(value, op=dist.ReduceOp.MIN)
        return int(value.item())


def _gb(num_bytes: int | None) -> str:
    return "unknown" if num_bytes is None else f"{num_bytes / _GB:.2f} GB"
