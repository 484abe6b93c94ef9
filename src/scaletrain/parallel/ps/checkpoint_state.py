"""A store as a flat dict of tensors for checkpoints (safetensors), and back.

Names: `param/<name>`, `state/<name>/<key>` (optimizer state tensors), `scalar/<name>/<key>`
(0-dim tensors such as Adam's step count), `number/<name>/<key>` (Python numbers, as 0-dim
tensors) and `version` (0-dim int64). Everything is copied into RAM: a store larger than RAM
is checkpointed by its shards on disk, not by this.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from scaletrain.errors import UserError
from scaletrain.parallel.ps.backing import PARAM
from scaletrain.parallel.ps.layout import ParamEntry, decode_scalar, encode_scalar
from scaletrain.parallel.ps.update import ShardUpdater


def store_state_dict(
    updater: ShardUpdater, entries: list[ParamEntry], version: int
) -> dict[str, torch.Tensor]:
    out: dict[str, torch.Tensor] = {"version": torch.tensor(version, dtype=torch.int64)}
    for index, entry in enumerate(entries):
        out[f"param/{entry.name}"] = updater.read(index, entry, PARAM)
        for key in entry.tensors:
            out[f"state/{entry.name}/{key}"] = updater.read(index, entry, key)
        for key, encoded in entry.scalars.items():
            value = decode_scalar(encoded)
            if isinstance(value, torch.Tensor):
                out[f"scalar/{entry.name}/{key}"] = value
            elif value is not None:
                out[f"number/{entry.name}/{key}"] = torch.tensor(value)
    return out


def load_store_state(
    updater: ShardUpdater,
    entries: list[ParamEntry],
    committed: list[ParamEntry],
    state: Mapping[str, torch.Tensor],
) -> int:
    """Write `state` (from `store_state_dict`) into the working copy; returns its version."""
    _check_state(state, entries)
    for index, entry in enumerate(entries):
        updater.backing.begin_write(index, committed[index])
        entry.tensors, entry.scalars = {}, {}
        updater.write(index, PARAM, entry.spec, state[f"param/{entry.name}"])
        for key, value in _entry_state(state, entry.name).items():
            if isinstance(value, torch.Tensor) and value.dim() > 0:
                updater.store_state_tensor(index, entry, key, value)
            else:
                entry.scalars[key] = encode_scalar(value)
    return int(state["version"])


def _entry_state(state: Mapping[str, torch.Tensor], name: str) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for prefix in ("state", "scalar", "number"):
        head = f"{prefix}/{name}/"
        for key, value in state.items():
            if key.startswith(head) and "/" not in key[len(head) :]:
                values[key[len(head) :]] = value.item() if prefix == "number" else value
    return values


def _check_state(state: Mapping[str, torch.Tensor], entries: list[ParamEntry]) -> None:
    """Every parameter present with its shape and a version, before anything is written."""
    if "version" not in state:
        raise UserError("parameter-server checkpoint state: no `version` entry")
    for entry in entries:
        value = state.get(f"param/{entry.name}")
        if value is None or tuple(value.shape) != entry.spec.shape:
            found = "missing" if value is None else f"of shape {list(value.shape)}"
            raise UserError(
                f"parameter-server checkpoint state: param/{entry.name} is {found}, expected "
                f"shape {list(entry.spec.shape)}; the checkpoint belongs to another model"
            )
