"""Model and optimizer state keyed by parameter names, for any strategy (DCP's state_dict API).

The rest of the package reaches `torch.distributed.checkpoint` only through these four
functions, so `train/` and `api.py` import no `torch.distributed`.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.distributed.checkpoint.state_dict import (
    get_model_state_dict,
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
    set_state_dict(
        model, optimizer, model_state_dict=state["model"], optim_state_dict=state["optim"]
    )


def model_state(model: nn.Module) -> dict:
    return get_model_state_dict(model)


def load_model_state(model: nn.Module, state: dict) -> None:
    set_model_state_dict(model, state)
