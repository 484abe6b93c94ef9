"""FSDP2: `fully_shard` per block, then the root; parameters are DTensor shards."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager, nullcontext

import torch
from torch import nn
from torch.distributed.fsdp import (
    CPUOffloadPolicy,
    FSDPModule,
    MixedPrecisionPolicy,
    OffloadPolicy,
    fully_shard,
)
from torch.distributed.tensor.parallel import loss_parallel

from scaletrain.errors import ConfigError
from scaletrain.parallel.blocks import separate_units
from scaletrain.parallel.distributed import DistributedStrategy
from scaletrain.parallel.memory_plan import Candidate
from scaletrain.parallel.mesh import (
    ParallelDims,
    build_device_mesh,
    data_parallel_group,
    data_parallel_mesh,
    resolve_dims,
)
from scaletrain.parallel.strategy import WrapRequest
from scaletrain.parallel.tensor_parallel import (
    FullOutput,
    apply_tensor_parallel,
    check_tensor_parallel,
)


class FSDPStrategy(DistributedStrategy):
    """ZeRO-3 (`reshard_after_forward: true`), ZeRO-2 (`false`) or hybrid (HSDP), on the
    `parallel.dims` mesh: tensor parallel inside each data-parallel rank when `tp > 1`."""

    name = "fsdp"

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.dims = _resolve(self.cfg, self.env)
        self.mesh = None  # built in setup(), once the process group exists

    def data_shard(self) -> tuple[int, int]:
        """The data-parallel position: the ranks of one tensor-parallel group share it."""
        return self.dims.dp_rank, self.dims.dp_size

    def eval_shard(self) -> tuple[int, int]:
        return self.data_shard()

    def setup(self) -> None:
        super().setup()
        self.on_group_ready()

    def on_group_ready(self) -> None:
        """The mesh over the process group (this strategy's setup, or auto's that chose it)."""
        self.mesh = build_device_mesh(self.dims, self.device.type)
        if self.dims.tp_enabled:
            self._dp_group = data_parallel_group(self.mesh)

    def _shard_size(self) -> int | None:
        return self.dims.dp_shard if self.dims.dp_shard != self.world_size else None

    def _split_model(self, model: nn.Module, request: WrapRequest) -> None:
        """Tensor parallel first (torchtitan's order): checkpointing and FSDP then see the
        DTensor shards of each block."""
        if self.dims.tp_enabled:
            apply_tensor_parallel(model, self.mesh["tp"], model_name=request.model_name)

    def check_model(self, model: nn.Module, *, model_name: str | None) -> None:
        if self.dims.tp_enabled:
            check_tensor_parallel(model, model_name=model_name, tp=self.dims.tp)

    @contextmanager
    def loss_parallel(self) -> Iterator[None]:
        """Under TP the logits stay split along the vocabulary: cross-entropy from shards."""
        with loss_parallel() if self.dims.tp_enabled else nullcontext():
            yield

    def candidate(self) -> Candidate:
        return Candidate(
            "fsdp",
            reshard_after_forward=self.cfg.fsdp.reshard_after_forward,
            activation_checkpointing=self.cfg.activation_checkpointing,
            offload=self.cfg.offload,
            tp=self.dims.tp,
        )

    def _place(self, model: nn.Module, blocks: list[nn.Module], request: WrapRequest):
        """Shard each block bottom-up, then the root (which owns the rest)."""
        settings = self.cfg.fsdp
        reshard = settings.reshard_after_forward
        options = {
            "mesh": data_parallel_mesh(self.mesh, self.dims),
            "mp_policy": _mixed_precision(request.compute_dtype),
            "offload_policy": self._offload_policy(),
        }
        fp32_modules = request.fp32_modules if request.compute_dtype is not None else ()
        # norm layers keep fp32 weights, like their fp32 running statistics (a bf16 weight
        # beside fp32 statistics fails in batch_norm): own units, never cast
        keep_fp32 = {**options, "mp_policy": _KEEP_FP32}
        for module in fp32_modules:
            fully_shard(module, reshard_after_forward=reshard, **keep_fp32)
        for block in separate_units(model, blocks, taken=fp32_modules):
            fully_shard(block, reshard_after_forward=reshard, **options)
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
            yield FullOutput(model) if self.dims.tp_enabled else model
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


# params as stored (fp32), inputs as they come, gradients reduced in fp32
_KEEP_FP32 = MixedPrecisionPolicy(reduce_dtype=torch.float32, cast_forward_inputs=False)


def _mixed_precision(compute_dtype: torch.dtype | None) -> MixedPrecisionPolicy:
    """Gather and compute in autocast's dtype; reduce gradients in fp32 (as torchtitan)."""
    if compute_dtype is None:
        return MixedPrecisionPolicy()
    return MixedPrecisionPolicy(param_dtype=compute_dtype, reduce_dtype=torch.float32)


def _fsdp_root(model: nn.Module) -> FSDPModule:
    root = getattr(model, "_orig_mod", model)  # torch.compile keeps the module inside
    assert isinstance(root, FSDPModule), f"expected a fully_shard root, got {type(root)}"
    return root


def _resolve(cfg, env) -> ParallelDims:
    """`parallel.dims` for this world; `parallel.fsdp.hybrid` replicates across nodes."""
    nodes = None
    if cfg.fsdp.hybrid:
        if env.world_size % env.local_world_size:
            raise ConfigError(
                f"parallel.fsdp.hybrid: world size {env.world_size} is not a multiple of the "
                f"{env.local_world_size} processes per node; start the same --nproc on every node"
            )
        nodes = env.world_size // env.local_world_size
    return resolve_dims(cfg.dims, world_size=env.world_size, rank=env.rank, nodes=nodes)
