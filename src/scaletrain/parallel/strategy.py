"""The Strategy seam: everything distributed lives behind this protocol.

A Strategy owns the process group, wraps the model, says which samples this rank
reads (rank / world_size for the loader), reduces metrics, and decides which rank writes.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Protocol, runtime_checkable

import torch
from torch import nn

from scaletrain.config import ParallelConfig
from scaletrain.errors import ConfigError
from scaletrain.parallel.blocks import apply_activation_checkpointing, find_blocks
from scaletrain.parallel.memory_account import MemoryAccount
from scaletrain.parallel.memory_plan import Candidate


@runtime_checkable
class Strategy(Protocol):
    name: str
    rank: int
    world_size: int
    device: torch.device

    @property
    def is_main(self) -> bool: ...
    def setup(self) -> None: ...
    def wrap_model(self, model: nn.Module, **context) -> nn.Module: ...
    def unwrap_model(self, model: nn.Module) -> nn.Module: ...
    def no_sync(self, model: nn.Module, *, enabled: bool): ...
    def evaluation(self, model: nn.Module): ...
    def all_reduce_sum(self, tensor: torch.Tensor) -> torch.Tensor: ...
    def all_gather(self, tensor: torch.Tensor) -> list[torch.Tensor]: ...
    def any_flag(self, flag: bool) -> bool: ...
    def barrier(self) -> None: ...
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


class SingleStrategy:
    """One process, one device: every collective is the identity."""

    name = "single"
    rank = 0
    world_size = 1

    def __init__(self, device: torch.device, cfg: ParallelConfig | None = None):
        self.device = device
        self.cfg = cfg or ParallelConfig(strategy="single")
        self.memory = MemoryAccount(self.cfg, device)

    @property
    def is_main(self) -> bool:
        return True

    def setup(self) -> None:
        pass

    def wrap_model(
        self,
        model: nn.Module,
        *,
        precision=None,
        block_types: tuple[type[nn.Module], ...] | None = None,
        example_input: torch.Tensor | None = None,
        optimizer_states_per_param: int | None = None,
    ) -> nn.Module:
        """Checkpoint blocks if `parallel.activation_checkpointing` asks, move to the device."""
        candidate = Candidate("single", activation_checkpointing=self.cfg.activation_checkpointing)
        self.memory.plan(
            model,
            candidate,
            world_size=1,
            context={
                "precision": precision,
                "block_types": block_types,
                "example_input": example_input,
                "optimizer_states_per_param": optimizer_states_per_param,
            },
        )
        if self.cfg.activation_checkpointing != "none":
            blocks = find_blocks(
                model, block_types=block_types, class_names=self.cfg.fsdp.block_types
            )
            apply_activation_checkpointing(
                blocks,
                mode=self.cfg.activation_checkpointing,
                every=self.cfg.activation_checkpointing_every,
            )
        return model.to(self.device)

    def unwrap_model(self, model: nn.Module) -> nn.Module:
        return getattr(model, "_orig_mod", model)

    @contextmanager
    def no_sync(self, model: nn.Module, *, enabled: bool) -> Iterator[None]:
        yield

    @contextmanager
    def evaluation(self, model: nn.Module) -> Iterator[nn.Module]:
        """Eval mode for the block; yields the module to call."""
        was_training = model.training
        model.eval()
        try:
            yield model
        finally:
            model.train(was_training)

    def all_reduce_sum(self, tensor: torch.Tensor) -> torch.Tensor:
        return tensor

    def all_gather(self, tensor: torch.Tensor) -> list[torch.Tensor]:
        return [tensor]

    def any_flag(self, flag: bool) -> bool:
        return flag

    def barrier(self) -> None:
        pass

    def memory_report(self) -> dict | None:
        """Planned vs measured memory (MB), once wrap_model had an `example_input`."""
        return self.memory.report()

    def teardown(self) -> None:
        pass
