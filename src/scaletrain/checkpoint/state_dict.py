"""Model and optimizer state keyed by parameter names, for any strategy (DCP's state_dict API).

The rest of the package reaches `torch.distributed.checkpoint` only through these
functions, so `train/` and `api.py` import no `torch.distributed`.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_optimizer_state_dict,
    get_state_dict,
    set_model_state_dict,
    set_state_dict,
)


def model_and_optimizer_state(model: nn.Module, optimizer: torch.optim.Optimizer) -> dict:
    """`{"model": ..., "optim": ...}`: full names, sharded tensors stay sharded (DCP reshards)."""
    model_state, optim_state = get_state_dict(model, optimizer)
    return {"model": model_state, "optim": optim_state}


def load_model_and_optimizer_state(
    model: nn.Module, optimizer: torch.optim.Optimizer, state: dict
) -> None:
    optim_state = _with_own_group_params(model, optimizer, state["optim"])
    set_state_dict(model, optimizer, model_state_dict=state["model"], optim_state_dict=optim_state)


def _with_own_group_params(model: nn.Module, optimizer: torch.optim.Optimizer, saved: dict):
    """The saved param groups' settings, with this rank's parameter names in them.

    A group's `params` list is one value per rank; where ranks hold different parameters
    (pipeline stages) DCP keeps one rank's list, and torch then matches a loaded group to
    this rank's group by those names: a stage whose names are not in it would lose its
    learning rate. The groups' settings agree on every rank, so only the names are ours.
    """
    groups = saved.get("param_groups")
    own = get_optimizer_state_dict(model, optimizer)["param_groups"]
    if not isinstance(groups, list) or len(groups) != len(own):
        return saved  # torch's own matching reports what does not fit
    merged = [{**group, "params": mine["params"]} for group, mine in zip(groups, own, strict=True)]
    return {**saved, "param_groups": merged}


def model_state(model: nn.Module) -> dict:
    return get_model_state_dict(model)


def full_model_state(model: nn.Module) -> dict:
    """Whole CPU tensors even where the model is sharded (FSDP's DTensors gathered)."""
    return get_model_state_dict(
        model, options=StateDictOptions(full_state_dict=True, cpu_offload=True)
    )


def load_model_state(model: nn.Module, state: dict) -> None:
    set_model_state_dict(model, state)
