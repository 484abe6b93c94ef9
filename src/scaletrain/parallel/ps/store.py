"""One parameter server's state: its parameters and their optimizer state, stepped in place.

In RAM (`shards_dir: null`) or memory-mapped under `shards_dir/server_<i>/` (backing.py):
`numpy.memmap` files in two slots plus `manifest.json` (layout.py). The tensors the optimizer
updates are views of the mapped files, so an update writes the page cache directly; with
`window_mb` set only a window per tensor is mapped at a time (parameters larger than the
address space a process may have).

Flush policy and crash consistency (mapped stores):

- `version` counts the updates applied. Every `flush_every` updates (and on `flush()`,
  `close()` and `load_state_dict()`) the store commits: the working slot is made whole,
  fsynced, and the manifest naming it and the version is replaced atomically, data first.
- A commit is all or nothing: the manifest never names a version whose data is not wholly on
  disk, and the slot it names is not written again until the next commit. A kill (SIGKILL or
  any other death) mid-update or mid-commit leaves the last commit intact.
- Resuming (`resume=True`) reopens the last commit: a killed server, and equally a machine
  that lost power, loses the updates applied since (at most `flush_every`), never more, and
  never resumes half an update. Workers that pulled newer parameters push gradients whose
  base version is ahead of the server; the staleness gate drops them (staleness.py).
- Cost of a commit: a copy of every parameter and its state (once per commit period, copy on
  write, on the first write after a commit), an fsync per file and the manifest's atomic
  write: `flush_every` trades that cost against the updates a crash loses.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from scaletrain.errors import UserError
from scaletrain.parallel.ps.backing import (
    PARAM,
    MappedShards,
    RamShards,
    chunk_ranges,
    window_numel,
)
from scaletrain.parallel.ps.layout import (
    ParamEntry,
    TensorSpec,
    check_same_params,
    decode_scalar,
    encode_scalar,
    manifest_json,
    read_manifest,
)
from scaletrain.parallel.ps.param_step import MakeOptimizer, OptimizerTemplate
from scaletrain.parallel.ps.placement import plan_shards
from scaletrain.parallel.ps.staleness import Decision, StalenessGate

__all__ = ["Decision", "ShardStore", "StalenessGate", "plan_shards"]

DEFAULT_FLUSH_EVERY = 100


class ShardStore:
    """One server's parameters and optimizer state, in RAM or memory-mapped under
    `shards_dir/server_<server>/`, updated in place by a real `torch.optim` optimizer."""

    def __init__(
        self,
        params: Mapping[str, torch.Tensor],
        *,
        make_optimizer: MakeOptimizer,
        shards_dir: Path | str | None,
        server: int,
        flush_every: int = DEFAULT_FLUSH_EVERY,
        resume: bool = False,
        window_mb: float | None = None,
    ):
        if flush_every < 1:
            raise ValueError(f"flush_every must be >= 1, got {flush_every}")
        self.server = server
        self.flush_every = flush_every
        self.names = list(params)
        self._index = {name: index for index, name in enumerate(self.names)}
        specs = [TensorSpec(params[n].dtype, tuple(params[n].shape)) for n in self.names]
        self._template = OptimizerTemplate(make_optimizer, specs)
        self._entries = [
            ParamEntry(name, spec, group)
            for name, spec, group in zip(self.names, specs, self._template.group_of, strict=True)
        ]
        self.version = 0
        self._since_flush = 0
        self._closed = False
        window_bytes = None if window_mb is None else max(1, int(window_mb * 2**20))
        self._window_bytes = window_bytes
        if shards_dir is None:
            if resume:
                raise ValueError("resume needs a shards_dir")
            self._backing: RamShards | MappedShards = RamShards()
            self._write_initial(params)
        else:
            root = Path(shards_dir) / f"server_{server}"
            self._backing = MappedShards(root, window_bytes=window_bytes)
            if resume:
                self._reopen(root)
            else:
                self._create(root, params)
        self._committed = [entry.copy() for entry in self._entries]

    # --- the interface the server loop calls

    def apply(
        self, grads: Mapping[str, torch.Tensor], *, scale: float = 1.0, lr: float | None = None
    ) -> int:
        """One optimizer update from `grads` (a subset of the parameters may be given; each
        tensor is read once, so a lazy mapping works) times `scale`; `lr` overrides the
        groups' learning rate for this update (a schedule). Returns the new version."""
        self._check_open()
        indices = self._check_grads(grads)
        for index in indices:
            self._step(index, grads[self.names[index]], scale=scale, lr=lr)
        self.version += 1
        self._since_flush += 1
        if self._since_flush >= self.flush_every:
            self.flush()
        return self.version

    def read(self, names: list[str] | None = None) -> dict[str, torch.Tensor]:
        """Copies of the current parameters (all, or those named), in RAM."""
        self._check_open()
        wanted = self.names if names is None else names
        return {name: self._read_tensor(self._index[name], PARAM) for name in wanted}

    def flush(self) -> None:
        """Commit: everything applied so far is on disk, and the manifest says so."""
        self._check_open()
        header = manifest_json(
            server=self.server,
            version=self.version,
            slot=-1,  # the backing names the slot it commits
            optimizer=self._template.describe(),
            entries=self._entries,
        )
        self._backing.commit(self._entries, self._committed, header)
        self._committed = [entry.copy() for entry in self._entries]
        self._since_flush = 0

    def close(self) -> None:
        """Flush and unmap; a closed store refuses further use. Safe to call twice."""
        if self._closed:
            return
        self.flush()
        self._backing.close()
        self._closed = True

    # --- checkpoints: every tensor by a flat name, safetensors-able

    def state_dict(self) -> dict[str, torch.Tensor]:
        """Copies of parameters and optimizer state: `param/<name>`, `state/<name>/<key>`
        (tensors), `scalar/<name>/<key>` (0-dim tensors), `number/<name>/<key>` (Python
        numbers as 0-dim tensors) and `version` (0-dim int64)."""
        self._check_open()
        out: dict[str, torch.Tensor] = {"version": torch.tensor(self.version)}
        for index, entry in enumerate(self._entries):
            out[f"param/{entry.name}"] = self._read_tensor(index, PARAM)
            for key in entry.tensors:
                out[f"state/{entry.name}/{key}"] = self._read_tensor(index, key)
            for key, encoded in entry.scalars.items():
                value = decode_scalar(encoded)
                if isinstance(value, torch.Tensor):
                    out[f"scalar/{entry.name}/{key}"] = value
                elif value is not None:
                    out[f"number/{entry.name}/{key}"] = torch.tensor(value)
        return out

    def load_state_dict(self, state: Mapping[str, torch.Tensor]) -> None:
        """Replace parameters, optimizer state and version with `state_dict()`'s, then flush."""
        self._check_open()
        _check_state(state, self._entries)
        for index, entry in enumerate(self._entries):
            self._backing.begin_write(index, self._committed[index])
            entry.tensors, entry.scalars = {}, {}
            self._write_tensor(index, PARAM, entry.spec, state[f"param/{entry.name}"])
            for key, value in _entry_state(state, entry.name).items():
                if isinstance(value, torch.Tensor) and value.dim() > 0:
                    self._store_state_value(index, entry, key, value, entry.spec.numel)
                else:
                    entry.scalars[key] = encode_scalar(value)
        self.version = int(state["version"])
        self.flush()

    # --- inside

    def _step(self, index: int, grad: torch.Tensor, *, scale: float, lr: float | None) -> None:
        entry = self._entries[index]
        self._backing.begin_write(index, self._committed[index])
        grad = grad.detach().reshape(-1).to(entry.spec.dtype)
        if scale != 1.0:
            grad = grad * scale  # the one parameter-sized temporary of an update
        fresh = not (entry.tensors or entry.scalars)  # the optimizer initializes its state
        scalars = entry.scalars
        for start, count in self._chunks(entry):
            param = self._backing.view(index, PARAM, entry.spec, start, count)
            state = {} if fresh else self._load_state(index, entry, start, count)
            piece = grad[start : start + count].view(param.shape)
            new_state = self._template.step(index, param, piece, state, lr=lr)
            scalars = {}
            for key, value in new_state.items():
                if isinstance(value, torch.Tensor) and value.dim() > 0:
                    self._store_state_value(index, entry, key, value, count, start=start)
                else:
                    scalars[key] = encode_scalar(value)
        entry.scalars = scalars

    def _load_state(self, index: int, entry: ParamEntry, start: int, count: int) -> dict[str, Any]:
        state: dict[str, Any] = {
            key: self._backing.view(index, key, spec, start, count)
            for key, spec in entry.tensors.items()
        }
        # fresh tensors for every chunk: each must start from the same step count
        state.update({key: decode_scalar(value) for key, value in entry.scalars.items()})
        return state

    def _store_state_value(
        self, index: int, entry: ParamEntry, key: str, value: torch.Tensor, count: int, start=0
    ) -> None:
        """A state tensor after a step: already in place in its file, or copied there."""
        if key not in entry.tensors:
            chunked = count != entry.spec.numel
            shape = entry.spec.shape if chunked else tuple(value.shape)
            entry.tensors[key] = TensorSpec(value.dtype, shape)
            self._backing.create(index, key, entry.tensors[key])
        target = self._backing.view(index, key, entry.tensors[key], start, value.numel())
        if target.data_ptr() != value.data_ptr():
            target.copy_(value.view(target.shape))

    def _chunks(self, entry: ParamEntry) -> list[tuple[int, int]]:
        if self._window_bytes is None or not self._template.elementwise:
            return [(0, entry.spec.numel)]
        return chunk_ranges(entry.spec.numel, window_numel(self._window_bytes, entry.spec.dtype))

    def _read_tensor(self, index: int, key: str) -> torch.Tensor:
        entry = self._entries[index]
        spec = entry.spec if key == PARAM else entry.tensors[key]
        out = torch.empty(spec.shape, dtype=spec.dtype)
        flat = out.view(-1)
        for start, count in self._chunks_of(spec):
            piece = self._backing.view(index, key, spec, start, count)
            flat[start : start + count].copy_(piece.reshape(-1))
        return out

    def _write_tensor(self, index: int, key: str, spec: TensorSpec, value: torch.Tensor) -> None:
        flat = value.detach().reshape(-1).to(spec.dtype)
        for start, count in self._chunks_of(spec):
            target = self._backing.view(index, key, spec, start, count)
            target.copy_(flat[start : start + count].view(target.shape))

    def _chunks_of(self, spec: TensorSpec) -> list[tuple[int, int]]:
        return chunk_ranges(spec.numel, window_numel(self._window_bytes, spec.dtype))

    def _write_initial(self, params: Mapping[str, torch.Tensor]) -> None:
        for index, entry in enumerate(self._entries):
            self._backing.create(index, PARAM, entry.spec)
            self._write_tensor(index, PARAM, entry.spec, params[entry.name])

    def _create(self, root: Path, params: Mapping[str, torch.Tensor]) -> None:
        if (root / "manifest.json").exists():
            raise UserError(
                f"{root / 'manifest.json'}: this folder already holds a server's shards; "
                "resume from them, or point parallel.ps.shards_dir at an empty folder"
            )
        assert isinstance(self._backing, MappedShards)
        self._backing.committed_slot = 1  # written as the working slot, then committed as 0
        self._write_initial(params)
        self._committed = [entry.copy() for entry in self._entries]
        self.flush()

    def _reopen(self, root: Path) -> None:
        assert isinstance(self._backing, MappedShards)
        path = root / "manifest.json"
        manifest = read_manifest(path)
        if manifest.server != self.server:
            raise UserError(f"{path}: shards of server {manifest.server}, not of {self.server}")
        check_same_params(path, manifest.entries, self._entries)
        wanted = self._template.describe()
        if manifest.optimizer != wanted:
            raise UserError(
                f"{path}: the shards were stepped by {manifest.optimizer}, but the run asks "
                f"for {wanted}; resume with the optimizer settings that wrote them"
            )
        self._backing.committed_slot = manifest.slot
        self._backing.check_files(manifest.entries)
        self._entries = manifest.entries
        self.version = manifest.version

    def _check_grads(self, grads: Mapping[str, torch.Tensor]) -> list[int]:
        """Indices of the given gradients, every name and shape checked before any write."""
        unknown = [name for name in grads if name not in self._index]
        if unknown:
            raise ValueError(f"server {self.server} holds no parameters named {unknown}")
        indices = sorted(self._index[name] for name in grads)
        for index in indices:
            shape = tuple(grads[self.names[index]].shape)
            if shape != self._entries[index].spec.shape:
                raise ValueError(
                    f"gradient of {self.names[index]} has shape {list(shape)}, "
                    f"expected {list(self._entries[index].spec.shape)}"
                )
        return indices

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError(f"the store of server {self.server} is closed")


def _entry_state(state: Mapping[str, torch.Tensor], name: str) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for prefix in ("state", "scalar", "number"):
        head = f"{prefix}/{name}/"
        for key, value in state.items():
            if key.startswith(head) and "/" not in key[len(head) :]:
                values[key[len(head) :]] = value.item() if prefix == "number" else value
    return values


def _check_state(state: Mapping[str, torch.Tensor], entries: list[ParamEntry]) -> None:
    if "version" not in state:
        raise UserError("parameter-server state: no `version` entry")
    for entry in entries:
        value = state.get(f"param/{entry.name}")
        if value is None or tuple(value.shape) != entry.spec.shape:
            found = "missing" if value is None else f"shape {list(value.shape)}"
            raise UserError(
                f"parameter-server state: param/{entry.name} is {found}, expected shape "
                f"{list(entry.spec.shape)}"
            )
