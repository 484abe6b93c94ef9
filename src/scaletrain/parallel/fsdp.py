"""FSDP2: `fully_shard` per block, then the root; parameters are DTensor shards."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn
from torch.distributed.fsdp import (
    CPUOffloadPolicy,
    FSDPModule,
    MixedPrecisionPolicy,
    OffloadPolicy,
    fully_shard,
)

from scaletrain.parallel.blocks import apply_activation_checkpointing, find_blocks
from scaletrain.parallel.distributed import DistributedStrategy
from scaletrain.parallel.memory_plan import Candidate
from scaletrain.parallel.process_group import build_mesh


class FSDPStrategy(DistributedStrategy):
    """ZeRO-3 (`reshard_after_forward: true`), ZeRO-2 (`false`) or hybrid (HSDP)."""

    name = "fsdp"

    def candidate(self) -> Candidate:
        return Candidate(
            "fsdp",
            reshard_after_forward=self.cfg.fsdp.reshard_after_forward,
            activation_checkpointing=self.cfg.activation_checkpointing,
            offload=self.cfg.offload,
        )

    def wrap_model(
        self,
        model: nn.Module,
        *,
        precision=None,
        block_types: tuple[type[nn.Module], ...] | None = None,
        example_input: torch.Tensor | None = None,
        optimizer_states_per_param: int | None = None,
    ) -> nn.Module:
        """Checkpoint, then shard each block bottom-up, then the root (which owns the rest)."""
        self.plan_memory(
            model,
            {
                "precision": precision,
                "block_types": block_types,
                "example_input": example_input,
                "optimizer_states_per_param": optimizer_states_per_param,
            },
        )
        settings = self.cfg.fsdp
        blocks = find_blocks(model, block_types=block_types, class_names=settings.block_types)
        apply_activation_checkpointing(
            blocks,
            mode=self.cfg.activation_checkpointing,
            every=self.cfg.activation_checkpointing_every,
        )
        options = {
            "mesh": build_mesh(self.env, device=self.device, hybrid=settings.hybrid),
            "mp_policy": _mixed_precision(precision),
            "offload_policy": self._offload_policy(),
        }
        for block in blocks:
            fully_shard(block, reshard_after_forward=settings.reshard_after_forward, **options)
        # The root's own parameters stay gathered after forward: backward needs them first.
        fully_shard(model, reshard_after_forward=False, **options)
        return model

    def unwrap_model(self, model: nn.Module) -> nn.Module:
        """The same module: fully_shard works in place (its parameters stay DTensor shards)."""
        return getattr(model, "_orig_mod", model)

    @contextmanager
    def no_sync(self, model: nn.Module, *, enabled: bool) -> Iterator[None]:
        """FSDP decides in backward, which the loop runs after this block: set, don't restore.

        The last micro batch of every step enters with `enabled=False`, so its backward
        reduce-scatters the gradients accumulated without communication before it.
        """
        _fsdp_root(model).set_requires_gradient_sync(not enabled)
        yield

    @contextmanager
    def evaluation(self, model: nn.Module) -> Iterator[nn.Module]:
        """Gather every block once and keep it gathered: forwards then need no collectives.

        Ranks may run different numbers of eval batches (uneven shards) without deadlock;
        the cost is the whole model unsharded on every rank while evaluating.
        """
        root = _fsdp_root(model)
        units = [module for module in root.modules() if isinstance(module, FSDPModule)]
        was_training = model.training
        model.eval()
        for unit in units:
            unit.unshard()
            unit.set_reshard_after_forward(False, recurse=False)
        try:
            yield model
        finally:
            for unit in units:
                unit.reshard()
                unit.set_reshard_after_forward(self._reshards(unit, root), recurse=False)
            model.train(was_training)

    def _reshards(self, unit: FSDPModule, root: FSDPModule) -> bool:
        return False if unit is root else self.cfg.fsdp.reshard_after_forward

    def _offload_policy(self) -> OffloadPolicy:
        if self.cfg.offload == "cpu":
            # pinned host memory speeds GPU copies; on a CPU-only machine it is unavailable
            return CPUOffloadPolicy(pin_memory=self.device.type == "cuda")
        return OffloadPolicy()


def _mixed_precision(precision) -> MixedPrecisionPolicy:
    """Gather and compute in autocast's dtype; reduce gradients in fp32 (as torchtitan)."""
    compute_dtype = getattr(precision, "autocast_dtype", None)
    if compute_dtype is None:
        return MixedPrecisionPolicy()
    return MixedPrecisionPolicy(param_dtype=compute_dtype, reduce_dtype=torch.float32)


def _fsdp_root(model: nn.Module) -> FSDPModule:
    root = getattr(model, "_orig_mod", model)  # torch.compile keeps the module inside
    assert isinstance(root, FSDPModule), f"expected a fully_shard root, got {type(root)}"
    return root
