"""One optimizer update of one parameter (or a piece of one), with a real `torch.optim` class.

The store never holds one optimizer over all its parameters: their memory may be mapped one
parameter (or chunk) at a time. `OptimizerTemplate` calls the run's `make_optimizer` once on
stand-ins (zero-memory tensors of the right shape and dtype) to learn the class, the groups
and each parameter's group; `step` then builds that class over one tensor with its group's
hyper-parameters, hands it the stored state and steps. The single-tensor, foreach and fused
kernels of SGD, Adam and AdamW all update parameter by parameter, so this is bit-identical
to stepping the whole list at once (tests/unit/parallel/ps/test_param_step.py).

Optimizers whose update of an element depends only on that element and per-parameter scalars
(`ELEMENTWISE`) may also be stepped on a flat chunk of a parameter, each chunk starting from
the same scalars (Adam's step count): the bound on mapped memory for parameters larger than
the window. Others always step a whole parameter.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from scaletrain.parallel.ps.layout import TensorSpec

MakeOptimizer = Callable[[list[nn.Parameter]], torch.optim.Optimizer]

ELEMENTWISE: tuple[type[torch.optim.Optimizer], ...] = (
    torch.optim.SGD,
    torch.optim.Adam,
    torch.optim.AdamW,
    torch.optim.Adagrad,
    torch.optim.RMSprop,
    torch.optim.Adamax,
    torch.optim.NAdam,
    torch.optim.RAdam,
)


class OptimizerTemplate:
    """The class, groups and per-parameter group of `make_optimizer`'s optimizer."""

    def __init__(self, make_optimizer: MakeOptimizer, specs: Sequence[TensorSpec]):
        # expand() of a 0-dim tensor: the right shape and dtype, one element of memory
        standins = [nn.Parameter(torch.zeros((), dtype=s.dtype).expand(s.shape)) for s in specs]
        optimizer = make_optimizer(standins)
        self.cls: type[torch.optim.Optimizer] = type(optimizer)
        self.groups = [
            {key: value for key, value in group.items() if key != "params"}
            for group in optimizer.param_groups
        ]
        where = {
            id(param): index
            for index, group in enumerate(optimizer.param_groups)
            for param in group["params"]
        }
        missing = [position for position, p in enumerate(standins) if id(p) not in where]
        if missing:
            raise ValueError(f"make_optimizer left out the parameters at positions {missing}")
        self.group_of = [where[id(param)] for param in standins]
        self.elementwise = self.cls in ELEMENTWISE
        # (params, optimizer) built over exactly these tensors: building one costs ~100 us;
        # reused while the store hands over the same tensor objects (a slot's mappings)
        self._built: list[tuple[list[torch.Tensor], torch.optim.Optimizer]] = []

    def describe(self) -> dict:
        """Class and hyper-parameters as JSON, recorded in the manifest and checked on resume."""
        groups = [{key: _jsonable(value) for key, value in g.items()} for g in self.groups]
        return json.loads(json.dumps({"class": _qualified(self.cls), "groups": groups}))

    def step(
        self,
        indices: Sequence[int],
        params: Sequence[torch.Tensor],
        grads: Sequence[torch.Tensor],
        states: Sequence[dict[str, Any]],
        *,
        lr: float | None = None,
        keep: bool = True,
    ) -> list[dict[str, Any]]:
        """One update of `params` (the store's parameters `indices`, or chunks of them) in
        place from `grads` and `states` (stepped in place too, where they are given); returns
        each parameter's state after the step (new tensors where the optimizer made them).
        `keep=False` builds a throwaway optimizer (windows: nothing may hold their mapping)."""
        optimizer = self._optimizer_over(indices, params, keep=keep)
        for group, index in zip(optimizer.param_groups, self._group_indices(indices), strict=True):
            group["lr"] = self.groups[index]["lr"] if lr is None else lr
        optimizer.state.clear()
        for param, grad, state in zip(params, grads, states, strict=True):
            param.grad = grad
            if state:
                optimizer.state[param] = state
        optimizer.step()
        for param in params:
            param.grad = None
        after = [optimizer.state.get(param, {}) for param in params]
        if not keep:
            # torch's optimizers sit in reference cycles, freed only when the cyclic
            # collector runs: cut their links to the (mapped) tensors now
            optimizer.state.clear()
            optimizer.param_groups.clear()
        return after

    def forget(self) -> None:
        """Drop the built optimizers (and with them their references to mapped memory)."""
        self._built.clear()

    def _optimizer_over(self, indices, params, *, keep: bool) -> torch.optim.Optimizer:
        for built, optimizer in self._built:
            if len(built) == len(params) and all(
                a is b for a, b in zip(built, params, strict=True)
            ):
                return optimizer
        members: dict[int, list[torch.Tensor]] = {}
        for index, param in zip(indices, params, strict=True):
            members.setdefault(self.group_of[index], []).append(param)
        optimizer = self.cls([{**self.groups[g], "params": ps} for g, ps in members.items()])
        if not keep:
            return optimizer
        if len(self._built) >= 4:  # two slots' full sets, and a partial push or two
            self._built.pop(0)
        self._built.append((list(params), optimizer))
        return optimizer

    def _group_indices(self, indices: Sequence[int]) -> list[int]:
        return list(dict.fromkeys(self.group_of[index] for index in indices))


def _qualified(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def _jsonable(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return value.tolist()
    if isinstance(value, tuple | list):
        return [_jsonable(item) for item in value]
    if value is None or isinstance(value, bool | int | float | str):
        return value
    return repr(value)
