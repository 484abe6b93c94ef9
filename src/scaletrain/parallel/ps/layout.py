"""What a parameter server's shards are: one entry per parameter, and the JSON manifest.

The manifest (`server_<i>/manifest.json`) is the commit record of the files beside it: which
slot holds the committed data, at which version, for which parameters (names, shapes,
dtypes), with which optimizer (class and hyper-parameters per group) and each parameter's
optimizer state (tensor files, and scalars such as Adam's step count, stored in the manifest
itself). It is plain JSON, never pickle; anything in it that does not fit is one `UserError`
naming the file.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from scaletrain.errors import UserError

FORMAT = "scaletrain-ps-shards"
FORMAT_VERSION = 1


@dataclass(frozen=True)
class TensorSpec:
    """Shape and dtype of one stored tensor."""

    dtype: torch.dtype
    shape: tuple[int, ...]

    @property
    def numel(self) -> int:
        return math.prod(self.shape)

    @property
    def nbytes(self) -> int:
        return self.numel * self.dtype.itemsize


@dataclass
class ParamEntry:
    """One parameter: its spec, its optimizer group, and its optimizer state."""

    name: str
    spec: TensorSpec
    group: int
    tensors: dict[str, TensorSpec] = field(default_factory=dict)  # state tensors (files)
    scalars: dict[str, dict] = field(default_factory=dict)  # state scalars, JSON-encoded

    def copy(self) -> ParamEntry:
        return ParamEntry(self.name, self.spec, self.group, dict(self.tensors), dict(self.scalars))


def dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def parse_dtype(name: str) -> torch.dtype:
    dtype = getattr(torch, str(name), None)
    if not isinstance(dtype, torch.dtype):
        raise ValueError(f"unknown dtype {name!r}")
    return dtype


def encode_scalar(value: Any) -> dict:
    """A 0-dim tensor or Python number from optimizer state as JSON (exact for integers)."""
    if isinstance(value, torch.Tensor):
        return {"dtype": dtype_name(value.dtype), "value": value.item()}
    if value is None or isinstance(value, bool | int | float):
        return {"value": value}
    raise TypeError(f"optimizer state value of type {type(value).__name__} cannot be stored")


def decode_scalar(encoded: dict) -> Any:
    """A fresh tensor (or Python value) from `encode_scalar`'s JSON."""
    if "dtype" in encoded:
        return torch.tensor(encoded["value"], dtype=parse_dtype(encoded["dtype"]))
    return encoded["value"]


def entry_to_json(entry: ParamEntry) -> dict:
    return {
        "name": entry.name,
        **_spec_json(entry.spec),
        "group": entry.group,
        "tensors": {key: _spec_json(spec) for key, spec in entry.tensors.items()},
        "scalars": entry.scalars,
    }


def entry_from_json(data: dict) -> ParamEntry:
    tensors = {str(key): _spec_from(value) for key, value in dict(data["tensors"]).items()}
    scalars = {str(key): dict(value) for key, value in dict(data["scalars"]).items()}
    for value in scalars.values():
        decode_scalar(value)  # fails here, not in the middle of an update
    return ParamEntry(str(data["name"]), _spec_from(data), int(data["group"]), tensors, scalars)


def manifest_json(*, server: int, version: int, slot: int, optimizer: dict, entries) -> dict:
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "server": server,
        "version": version,
        "slot": slot,
        "optimizer": optimizer,
        "params": [entry_to_json(entry) for entry in entries],
    }


@dataclass
class Manifest:
    """A manifest read back: the committed slot and version, and the entries."""

    server: int
    version: int
    slot: int
    optimizer: dict
    entries: list[ParamEntry]


def read_manifest(path: Path) -> Manifest:
    """The manifest at `path`; missing, unreadable or malformed is one UserError naming it."""
    if not path.is_file():
        raise UserError(
            f"{path}: no shard manifest to resume from (the server never flushed here, or "
            "parallel.ps.shards_dir points at another folder)"
        )
    try:
        data = json.loads(path.read_text())
        if data.get("format") != FORMAT or data.get("format_version") != FORMAT_VERSION:
            raise ValueError(f"format {data.get('format')!r} v{data.get('format_version')}")
        manifest = Manifest(
            server=int(data["server"]),
            version=int(data["version"]),
            slot=int(data["slot"]),
            optimizer=dict(data["optimizer"]),
            entries=[entry_from_json(item) for item in data["params"]],
        )
        if manifest.slot not in (0, 1) or manifest.version < 0:
            raise ValueError(f"slot {manifest.slot}, version {manifest.version}")
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as error:
        raise UserError(f"{path}: not a readable shard manifest ({error})") from None
    return manifest


def check_same_params(path: Path, stored: list[ParamEntry], expected: list[ParamEntry]) -> None:
    """Refuse shards written for other parameters (names, order, shapes, dtypes, groups)."""
    if [entry.name for entry in stored] != [entry.name for entry in expected]:
        names = sorted({e.name for e in stored} ^ {e.name for e in expected})
        raise UserError(
            f"{path}: these shards hold other parameters than the model's "
            f"(differing: {', '.join(names[:5]) or 'their order'}); resume with the model "
            "that wrote them, or point parallel.ps.shards_dir at an empty folder"
        )
    for have, want in zip(stored, expected, strict=True):
        if (have.spec, have.group) != (want.spec, want.group):
            raise UserError(
                f"{path}: parameter {have.name} is {_describe(have)} there, but the model's is "
                f"{_describe(want)}; resume with the model and optimizer that wrote the shards"
            )


def check_same_optimizer(path: Path, stored: dict, wanted: dict) -> None:
    """Refuse shards stepped by another optimizer class or other hyper-parameters."""
    if stored.get("class") != wanted["class"]:
        raise UserError(
            f"{path}: the shards were stepped by {stored.get('class')}, but the run asks for "
            f"{wanted['class']}; resume with the optimizer that wrote them"
        )
    stored_groups, wanted_groups = list(stored.get("groups", [])), wanted["groups"]
    if len(stored_groups) != len(wanted_groups):
        raise UserError(
            f"{path}: the shards' optimizer has {len(stored_groups)} parameter groups, the "
            f"run's {len(wanted_groups)}; resume with the optimizer settings that wrote them"
        )
    for number, (have, want) in enumerate(zip(stored_groups, wanted_groups, strict=True)):
        for key in sorted(set(have) | set(want)):
            if have.get(key) != want.get(key):
                raise UserError(
                    f"{path}: the shards' optimizer has {key}={have.get(key)} in group "
                    f"{number}, the run asks for {key}={want.get(key)}; resume with the "
                    "optimizer settings that wrote them"
                )


def _describe(entry: ParamEntry) -> str:
    shape = "x".join(map(str, entry.spec.shape)) or "scalar"
    return f"{shape} {dtype_name(entry.spec.dtype)} (optimizer group {entry.group})"


def _spec_json(spec: TensorSpec) -> dict:
    return {"dtype": dtype_name(spec.dtype), "shape": list(spec.shape)}


def _spec_from(data: dict) -> TensorSpec:
    shape = tuple(int(size) for size in data["shape"])
    if any(size < 0 for size in shape):
        raise ValueError(f"negative size in shape {list(shape)}")
    return TensorSpec(parse_dtype(data["dtype"]), shape)
