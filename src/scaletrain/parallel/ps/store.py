"""One parameter server's state: its parameters and their optimizer state, stepped in place.

In host memory, whatever device the gradients come from: in RAM (`shards_dir: None`) or
memory-mapped under `shards_dir/server_<i>/` (backing.py): `numpy.memmap` files in two slots
plus `manifest.json` (layout.py). The tensors the optimizer updates are views of the mapped
files, so an update writes the page cache directly. With
`window_mb` only a window per tensor is mapped at a time: the address space needed is about
one parameter's gradient plus ~8 windows, whatever the store's size.

Flush policy and crash consistency (mapped stores; docs/distributed.md has the table):

- `version` counts the updates applied. Every `flush_every` updates (and on `flush()`,
  `close()` and `load_state_dict()`) the store commits: the working slot is made whole and
  fsynced, then the manifest naming it and the version is replaced atomically. Data first.
- A commit is all or nothing: the manifest never names a version whose data is not wholly on
  disk, and the slot it names is not written again until the next commit.
- Resuming (`resume=True`) reopens the last commit. A killed server (SIGKILL, mid-update or
  mid-commit) and a machine that lost power alike lose the updates applied since (at most
  `flush_every`), never more, and never resume half an update: the page cache keeps a killed
  process's writes, but they may be half an update, so they are not trusted.
- An exception inside `apply` leaves the live store torn: it refuses everything but `close()`
  (which then commits nothing); a resume continues from the last commit.
- Cost of a commit: a copy of every parameter and its state (copy on write, once per commit
  period), an fsync per file and the manifest's atomic write. `flush_every` trades that cost
  against the updates a crash loses.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path

import torch

from scaletrain.errors import UserError
from scaletrain.parallel.ps.backing import PARAM, MappedShards, RamShards
from scaletrain.parallel.ps.checkpoint_state import load_store_state, store_state_dict
from scaletrain.parallel.ps.layout import (
    ParamEntry,
    TensorSpec,
    check_same_optimizer,
    check_same_params,
    manifest_json,
    read_manifest,
)
from scaletrain.parallel.ps.param_step import MakeOptimizer, OptimizerTemplate
from scaletrain.parallel.ps.placement import plan_shards
from scaletrain.parallel.ps.staleness import Decision, StalenessGate
from scaletrain.parallel.ps.update import ShardUpdater, checked_indices

__all__ = ["DEFAULT_FLUSH_EVERY", "Decision", "ShardStore", "StalenessGate", "plan_shards"]

DEFAULT_FLUSH_EVERY = 100


class ShardStore:
    """One server's parameters and optimizer state, in RAM or memory-mapped under
    `shards_dir/server_<server>/`, updated in place by a real `torch.optim` optimizer.

    `params` gives names, shapes and dtypes (meta tensors will do); a new store takes its
    values from `initial(name)` when given (one parameter at a time), else from `params`."""

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
        initial: Callable[[str], torch.Tensor] | None = None,
    ):
        if flush_every < 1:
            raise ValueError(f"flush_every must be >= 1, got {flush_every}")
        if resume and shards_dir is None:
            raise ValueError("resume needs a shards_dir")
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
        self._committed = [entry.copy() for entry in self._entries]
        self.version = 0
        self._since_flush = 0
        self._dirty = False  # written since the last commit
        self._torn = False  # an update failed halfway: only a resume may continue
        self._closed = False
        window_bytes = None if window_mb is None else max(1, int(window_mb * 2**20))
        backing = _backing(shards_dir, server, window_bytes)
        self._updater = ShardUpdater(backing, self._template, window_bytes=window_bytes)
        if resume:
            self._reopen(backing)
        else:
            self._create(backing, initial or params.__getitem__)

    # --- what the server loop calls

    def apply(
        self,
        grads: Mapping[str, torch.Tensor],
        *,
        scale: float = 1.0,
        lr: float | None = None,
        commit: bool = True,
    ) -> int:
        """One optimizer update from `grads` (all or some of this server's parameters) times
        `scale`; `lr` replaces the groups' learning rate for this update (a schedule).
        Returns the new version. Names and shapes are checked before anything is written.
        `commit=False`: the caller calls `commit_if_due()` itself (after logging the update,
        so a logged version is never behind a committed one)."""
        self._check_open()
        indices = checked_indices(grads, self._index, self._entries)
        self._dirty = True
        try:
            self._updater.apply(self._entries, self._committed, grads, indices, scale=scale, lr=lr)
        except BaseException:
            self._torn = True  # some parameters took this update: never commit that
            raise
        self.version += 1
        self._since_flush += 1
        if commit:
            self.commit_if_due()
        return self.version

    def commit_if_due(self) -> None:
        """Flush once `flush_every` updates were applied since the last commit."""
        if self._since_flush >= self.flush_every:
            self.flush()

    @property
    def torn(self) -> bool:
        """An update failed halfway: only `close()` (which commits nothing) is allowed."""
        return self._torn

    def read(self, names: list[str] | None = None) -> dict[str, torch.Tensor]:
        """Copies in RAM of the current parameters (all, or those named)."""
        self._check_open()
        wanted = self.names if names is None else names
        return {
            name: self._updater.read(self._index[name], self._entries[self._index[name]], PARAM)
            for name in wanted
        }

    def flush(self) -> None:
        """Commit: everything applied so far is on disk, and the manifest says so. Nothing
        to do in RAM, or when nothing was written since the last commit."""
        self._check_open()
        self._since_flush = 0
        if not self._dirty:
            return
        header = manifest_json(
            server=self.server,
            version=self.version,
            slot=-1,  # the backing names the slot it commits
            optimizer=self._template.describe(),
            entries=self._entries,
        )
        self._updater.backing.commit(self._entries, self._committed, header)
        self._committed = [entry.copy() for entry in self._entries]
        self._dirty = False

    def close(self) -> None:
        """Flush (unless an update failed halfway) and unmap; a closed store refuses further
        use. Safe to call twice."""
        if self._closed:
            return
        if not self._torn:
            self.flush()
        self._template.forget()
        self._updater.backing.close()
        self._closed = True

    # --- checkpoints

    def state_dict(self) -> dict[str, torch.Tensor]:
        """Copies of parameters, optimizer state and version, by flat names
        (checkpoint_state.py): safetensors can store it as it is."""
        self._check_open()
        return store_state_dict(self._updater, self._entries, self.version)

    def load_state_dict(self, state: Mapping[str, torch.Tensor]) -> None:
        """Replace parameters, optimizer state and version with `state_dict()`'s, then flush."""
        self._check_open()
        self._dirty = True
        self.version = load_store_state(self._updater, self._entries, self._committed, state)
        self.flush()

    # --- opening

    def _create(self, backing: RamShards | MappedShards, initial: Callable) -> None:
        if isinstance(backing, MappedShards):
            if backing.manifest_path.exists():
                raise UserError(
                    f"{backing.manifest_path}: this folder already holds a server's shards; "
                    "resume from them, or point parallel.ps.shards_dir at an empty folder"
                )
            backing.committed_slot = 1  # written as the working slot, committed as slot 0
        for index, entry in enumerate(self._entries):
            backing.create(index, PARAM, entry.spec)
            self._updater.write(index, PARAM, entry.spec, initial(entry.name))
        self._dirty = True
        self.flush()

    def _reopen(self, backing: MappedShards) -> None:
        path = backing.manifest_path
        manifest = read_manifest(path)
        if manifest.server != self.server:
            raise UserError(
                f"{path}: shards of server {manifest.server}, not of {self.server}; each "
                "server resumes from its own server_<index> folder"
            )
        check_same_params(path, manifest.entries, self._entries)
        check_same_optimizer(path, manifest.optimizer, self._template.describe())
        backing.committed_slot = manifest.slot
        backing.check_files(manifest.entries)
        self._entries = manifest.entries
        self._committed = [entry.copy() for entry in self._entries]
        self.version = manifest.version

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError(f"the store of server {self.server} is closed")
        if self._torn:
            raise RuntimeError(
                f"server {self.server}: an update failed halfway, so the parameters are torn; "
                "reopen the store with resume=True (it holds the last commit)"
            )


def _backing(shards_dir: Path | str | None, server: int, window_bytes: int | None):
    if shards_dir is None:
        return RamShards()
    return MappedShards(Path(shards_dir) / f"server_{server}", window_bytes=window_bytes)
