"""Local SGD and DiLoCo: every rank trains alone for `parallel.local.steps` (H) updates, then
the ranks meet once. Local SGD averages their parameters; DiLoCo (Douillard et al., 2023)
averages how far each moved from a shared fp32 anchor and steps an outer SGD (Nesterov
momentum) on the anchor with that average as its gradient. Traffic falls H-fold against DDP.

Between syncs the ranks hold different weights, so "the model" is the global one of the last
sync (local SGD: the average; DiLoCo: the anchor): evaluation swaps it in and back, and a
checkpoint's `model` entry holds it. Each rank's own weights and optimizer state go under
`replicas.rank_NNNNN` (a key of its own: DCP writes a key that every rank has only once), so
a resume between syncs continues bit for bit. A run that ends (not interrupted) syncs once
more, so its last period may be shorter than H and the trained model holds every update.

Floating-point buffers (BatchNorm statistics) travel with the parameters: averaged at each
sync, nothing per step (DDP instead broadcasts rank 0's before each forward). Between syncs
each rank's statistics describe its own samples, which is what its local steps train on.
Integer buffers (BatchNorm's batch counter) count the same forwards on every rank and stay.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch
import torch.distributed as dist
from torch import nn

from scaletrain.errors import CheckpointError
from scaletrain.parallel.distributed import (
    DistributedStrategy,
    broadcast_in_place,
    constant_buffer_names,
)
from scaletrain.parallel.strategy import WrapRequest


class LocalSGDStrategy(DistributedStrategy):
    """No DDP wrapper and no per-step gradient all-reduce: parameters averaged every H
    updates, one all-reduce per dtype."""

    name = "local_sgd"
    validated_weights_are_final = False  # see BaseStrategy

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.period = self.cfg.local.steps
        self.since_sync = 0  # local updates since the last sync (saved with the side state)
        self.replicas = self  # TrainState asks it what a checkpoint holds
        self._load_from: str | None = None  # while a checkpoint loads: "replicas" | "global"
        self._saved: dict | None = None  # the loading checkpoint's `replicas` side state
        self.comm_bytes_per_step: float | None = None

    # --- model -------------------------------------------------------------------------
    def _place(self, model: nn.Module, blocks: list[nn.Module], request: WrapRequest):
        """Every rank starts from rank 0's weights (as DDP does); keep the global copy."""
        model = model.to(self.device)
        self.params = [param for param in model.parameters() if param.requires_grad]
        constants = constant_buffer_names(model)  # RoPE tables: the same on every rank
        self.buffers = [
            b
            for name, b in model.named_buffers()
            if b.is_floating_point() and name not in constants
        ]
        with torch.no_grad():
            state = [*self.params, *model.buffers()]
            if state and self.world_size > 1:
                broadcast_in_place(state, src=0)
            self.global_buffers = [buffer.detach().clone() for buffer in self.buffers]
            self._make_global()
        self.comm_bytes_per_step = self._sync_bytes() / self.period
        return model

    def _make_global(self) -> None:
        self.global_params = [param.detach().clone() for param in self.params]

    def _sync_bytes(self) -> int:
        """Payload this rank hands to the sync's all-reduces."""
        return sum(t.numel() * t.element_size() for t in (*self.global_params, *self.buffers))

    # --- the step ----------------------------------------------------------------------
    def sync_buffers(self, model: nn.Module) -> None:
        """Nothing per step: buffers are averaged at each sync (see the module docstring)."""

    def apply_update(self, update: Callable[[], None]) -> None:
        """The local optimizer step; every H of them, the ranks sync."""
        update()
        self.since_sync += 1
        if self.since_sync >= self.period:  # >: resumed with a shorter period
            self.sync()

    def sync(self) -> None:
        """Collective: the ranks agree on one model and continue from it."""
        with torch.no_grad():
            self._exchange()
            _copy(self.global_buffers, self.buffers)
        self.since_sync = 0

    def _exchange(self) -> None:
        average_in_place([*self.params, *self.buffers], world_size=self.world_size)
        _copy(self.global_params, self.params)

    def end_training(self, model: nn.Module) -> None:
        """The run ends: a last (shorter) period syncs, so the trained model is the global one."""
        if self.since_sync:
            self.sync()

    @contextmanager
    def evaluation(self, model: nn.Module) -> Iterator[nn.Module]:
        """Evaluate the global model of the last sync; this rank's weights come back after."""
        if not self.since_sync:  # just synced: every rank holds the global model
            with super().evaluation(model) as module:
                yield module
            return
        local = [tensor.detach().clone() for tensor in (*self.params, *self.buffers)]
        with torch.no_grad():
            _copy(self.params, self._global_params_as_model())
            _copy(self.buffers, self.global_buffers)
        try:
            with super().evaluation(model) as module:
                yield module
        finally:
            with torch.no_grad():
                _copy([*self.params, *self.buffers], local)

    def _global_params_as_model(self) -> list[torch.Tensor]:
        return self.global_params

    # --- checkpoints (TrainState and the Checkpointer call these) -----------------------
    def prepare_load(self, saved: dict | None, *, source: str) -> None:
        """Before a checkpoint's tensors are read (`saved`: its side state's `replicas`):
        this rank's own state where the checkpoint holds it (same strategy and world
        size); else the global model (it was saved at a sync, or by ddp/fsdp). Between
        syncs on another world size or strategy the ranks' own weights would be lost:
        refused (`source`: the checkpoint, named in the message)."""
        same = (
            saved is not None
            and saved.get("world_size") == self.world_size
            and saved.get("strategy") == self.name
        )
        if not same and saved is not None and saved.get("since_sync"):
            raise CheckpointError(
                f"{source}: saved by {saved.get('world_size')} "
                f"{saved.get('strategy')} ranks between two syncs, each with weights of its "
                f"own; resume it with --nproc {saved.get('world_size')} and "
                f"parallel.strategy={saved.get('strategy')}"
            )
        self._load_from = "replicas" if same else "global"
        self._saved = saved

    def checkpoint_tensors(self, base: dict) -> dict:
        """`base` ({"model", "optim"} of this rank) -> what a checkpoint holds: the global
        model under `model`, this rank's state under its own key, rank 0's optimizer state
        under `optim` (another strategy resumes from those two). To load after
        `prepare_load` chose the global model: `model` and `optim` into this rank."""
        if self._load_from == "global":
            return {**base, **self._extra_tensors(saved=self._saved)}
        tensors = {
            "model": self._global_state(base["model"]),
            "replicas": {f"rank_{self.rank:05d}": base},
            **self._extra_tensors(saved=self.state_dict()),
        }
        if self.is_main:
            tensors["optim"] = base["optim"]
        return tensors

    def restore_tensors(self, tensors: dict) -> dict:
        """After DCP filled `checkpoint_tensors`' dict in place (the global tensors, the
        anchor and the outer momentum with it): this rank's own state, to load."""
        if self._load_from == "global":
            return tensors
        return tensors["replicas"][f"rank_{self.rank:05d}"]

    def _extra_tensors(self, *, saved: dict | None) -> dict:
        return {}

    def _global_state(self, model_state: dict) -> dict:
        """The model's state dict with the global tensors in place of this rank's."""
        by_storage = {
            tensor.data_ptr(): value
            for tensor, value in zip(
                (*self.params, *self.buffers),
                (*self._global_params_as_model(), *self.global_buffers),
                strict=True,
            )
        }
        state = {
            name: by_storage.get(value.data_ptr(), value) for name, value in model_state.items()
        }
        placed = sum(value.data_ptr() in by_storage for value in model_state.values())
        assert placed >= len(by_storage), "a parameter is missing from the model's state dict"
        return state

    def state_dict(self) -> dict:
        return {
            "strategy": self.name,
            "world_size": self.world_size,
            "steps": self.period,
            "since_sync": self.since_sync,
            "outer_momentum": self.cfg.local.outer_momentum > 0,
        }

    def load_state_dict(self, state: dict | None) -> None:
        """After the tensors; `state` is None in another strategy's checkpoint."""
        if self._load_from == "global":  # every rank holds the global model: a sync point
            with torch.no_grad():
                self._global_from_params()
            self.since_sync = 0
        else:
            self.since_sync = state["since_sync"]
        self._load_from = None

    def _global_from_params(self) -> None:
        _copy(self.global_params, self.params)
        _copy(self.global_buffers, self.buffers)


class DiLoCoStrategy(LocalSGDStrategy):
    """Local SGD whose sync is an outer optimizer step: outer gradient = anchor - mean of the
    ranks' parameters; a real `torch.optim.SGD` (Nesterov) steps the fp32 anchor, then every
    rank continues from it. With outer lr 1 and no momentum it is local SGD."""

    name = "diloco"

    def _make_global(self) -> None:
        self.global_params = [
            nn.Parameter(param.detach().float().clone(), requires_grad=True)
            for param in self.params
        ]
        local = self.cfg.local
        self.outer = torch.optim.SGD(
            self.global_params,
            lr=local.outer_lr,
            momentum=local.outer_momentum,
            nesterov=local.outer_nesterov,
        )
        if local.outer_momentum > 0:  # now, not at the first step: checkpoints always hold it
            for anchor in self.global_params:  # (a zero buffer gives the lazy one's first step)
                self.outer.state[anchor]["momentum_buffer"] = torch.zeros_like(anchor)

    def _exchange(self) -> None:
        deltas = [
            anchor.detach() - param.float()
            for anchor, param in zip(self.global_params, self.params, strict=True)
        ]
        average_in_place([*deltas, *self.buffers], world_size=self.world_size)
        for anchor, delta in zip(self.global_params, deltas, strict=True):
            anchor.grad = delta
        self.outer.step()
        self.outer.zero_grad(set_to_none=True)
        _copy(self.params, [anchor.detach() for anchor in self.global_params])

    def _global_params_as_model(self) -> list[torch.Tensor]:
        return [
            anchor.detach().to(param.dtype)
            for anchor, param in zip(self.global_params, self.params, strict=True)
        ]

    def _extra_tensors(self, *, saved: dict | None) -> dict:
        """The fp32 anchor and the outer momentum, where `saved` (a side state) says the
        checkpoint holds them."""
        if saved is None or saved.get("strategy") != self.name:
            return {}
        names = [f"{index:05d}" for index in range(len(self.global_params))]
        outer = {"anchor": dict(zip(names, (a.detach() for a in self.global_params), strict=True))}
        if saved.get("outer_momentum") and self.cfg.local.outer_momentum > 0:
            outer["momentum"] = {
                name: self.outer.state[anchor]["momentum_buffer"]
                for name, anchor in zip(names, self.global_params, strict=True)
            }
        return {"outer": outer}

    def _global_from_params(self) -> None:
        """The anchor was read from the checkpoint where a diloco run saved it."""
        if self._saved is None or self._saved.get("strategy") != self.name:
            _copy([anchor.detach() for anchor in self.global_params], self.params)
        _copy(self.global_buffers, self.buffers)


def _copy(targets: list[torch.Tensor], sources: list[torch.Tensor]) -> None:
    """`targets[i] = sources[i]` in one foreach kernel (which refuses empty lists)."""
    if targets:
        torch._foreach_copy_(targets, sources)


def average_in_place(tensors: list[torch.Tensor], *, world_size: int) -> int:
    """Replace each tensor by its mean over the ranks: one all-reduce per dtype (a flat
    buffer). Returns the payload bytes handed to the all-reduces."""
    by_dtype: dict[torch.dtype, list[torch.Tensor]] = {}
    for tensor in tensors:
        by_dtype.setdefault(tensor.dtype, []).append(tensor)
    sent = 0
    for group in by_dtype.values():
        flat = torch.cat([tensor.detach().reshape(-1) for tensor in group])
        if world_size > 1:
            dist.all_reduce(flat, op=dist.ReduceOp.SUM)  # gloo has no AVG
            flat.div_(world_size)
        sent += flat.numel() * flat.element_size()
        for tensor, part in zip(group, flat.split([t.numel() for t in group]), strict=True):
            tensor.detach().copy_(part.view_as(tensor))
    return sent
