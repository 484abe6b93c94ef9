"""Where a store's tensors live: in RAM, or in memory-mapped files in two slots.

`MappedShards` keeps every tensor (parameter, optimizer state) as one raw file per slot,
`slot_<s>/<index>.<key>.bin`, mapped with `numpy.memmap` and viewed as a torch tensor that
shares its memory. One slot is committed (named by the manifest and never written until the
next commit); updates go to the other, the working slot: before a parameter's first write
after a commit, its committed files are copied over (copy on write). A commit copies what was
not written, fsyncs the working files, then atomically replaces the manifest to name the
working slot, which becomes the committed one. So the committed slot is whole at its version
whatever happens to the process in between (see store.py for the guarantees).

`window_bytes` (None: keep every file mapped) maps a fresh window of at most that many bytes
per tensor for each access instead, so the address space a store needs is a few windows,
not its total size (RLIMIT_AS counts every mapping).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from scaletrain.errors import UserError
from scaletrain.fileio import atomic_write_json, fsync_dir, fsync_file
from scaletrain.parallel.ps.layout import ParamEntry, TensorSpec

PARAM = "param"  # the key of the parameter itself among its files
CHUNK_ALIGN = 64  # elements; see window_numel


class RamShards:
    """Tensors in RAM (`shards_dir: null`): no files, nothing to copy or commit."""

    def __init__(self) -> None:
        self._tensors: dict[tuple[int, str], torch.Tensor] = {}

    def create(self, index: int, key: str, spec: TensorSpec) -> None:
        self._tensors[index, key] = torch.zeros(spec.shape, dtype=spec.dtype)

    def view(self, index: int, key: str, spec: TensorSpec, start: int, count: int) -> torch.Tensor:
        whole = self._tensors[index, key]  # the same object every time: optimizers are cached
        return whole if count == spec.numel else whole.view(-1)[start : start + count]

    def begin_write(self, index: int, committed: ParamEntry) -> None:
        pass

    def commit(self, entries: list[ParamEntry], committed: list[ParamEntry], header: dict) -> None:
        pass

    def close(self) -> None:
        self._tensors.clear()


class MappedShards:
    """Tensors in `numpy.memmap` files under `root`, in a committed and a working slot."""

    def __init__(self, root: Path, *, window_bytes: int | None, committed_slot: int = 0):
        self.root = root
        self.window_bytes = window_bytes
        self.committed_slot = committed_slot
        self._copied: set[int] = set()  # parameters whose working files are current
        self._mapped: dict[tuple[int, int, str], torch.Tensor] = {}

    @property
    def working_slot(self) -> int:
        return 1 - self.committed_slot

    @property
    def manifest_path(self) -> Path:
        return self.root / "manifest.json"

    def file(self, slot: int, index: int, key: str) -> Path:
        return self.root / f"slot_{slot}" / f"{index:05d}.{key}.bin"

    def create(self, index: int, key: str, spec: TensorSpec) -> None:
        """A file sized for a new tensor in the working slot (where it is current from now on)."""
        self._size_file(self.file(self.working_slot, index, key), spec.nbytes)
        self._copied.add(index)

    def view(self, index: int, key: str, spec: TensorSpec, start: int, count: int) -> torch.Tensor:
        """Elements [start, start + count) of the current copy, sharing the file's memory."""
        slot = self.working_slot if index in self._copied else self.committed_slot
        return self._view(slot, index, key, spec, start, count)

    def begin_write(self, index: int, committed: ParamEntry) -> None:
        """Copy a parameter's committed files into the working slot before its first write."""
        if index in self._copied:
            return
        for key, spec in ((PARAM, committed.spec), *committed.tensors.items()):
            self._size_file(self.file(self.working_slot, index, key), spec.nbytes)
            for start, count in chunk_ranges(spec.numel, self._window_numel(spec)):
                source = self._view(self.committed_slot, index, key, spec, start, count)
                self._view(self.working_slot, index, key, spec, start, count).copy_(source)
        self._copied.add(index)

    def commit(self, entries: list[ParamEntry], committed: list[ParamEntry], header: dict) -> None:
        """Make the working slot whole and durable, then name it in the manifest."""
        for index, old in enumerate(committed):
            self.begin_write(index, old)
        for index, entry in enumerate(entries):
            for key in (PARAM, *entry.tensors):
                fsync_file(self.file(self.working_slot, index, key))
        fsync_dir(self.root / f"slot_{self.working_slot}")
        # the data is on disk before the manifest that names it: a crash between the two
        # leaves the old manifest, whose slot nothing has written since it was committed
        atomic_write_json(self.manifest_path, {**header, "slot": self.working_slot})
        self.committed_slot = self.working_slot
        self._copied.clear()

    def check_files(self, entries: list[ParamEntry]) -> None:
        """Every committed file present with its exact size, else one UserError naming it."""
        for index, entry in enumerate(entries):
            for key, spec in ((PARAM, entry.spec), *entry.tensors.items()):
                path = self.file(self.committed_slot, index, key)
                size = path.stat().st_size if path.is_file() else None
                if size != spec.nbytes:
                    found = "missing" if size is None else f"{size} bytes"
                    raise UserError(
                        f"{path}: shard file of {entry.name} ({key}) is {found}, expected "
                        f"{spec.nbytes} bytes; the shards are damaged: restore the folder or "
                        "start without resume"
                    )

    def close(self) -> None:
        self._mapped.clear()  # the last reference to each numpy.memmap unmaps it

    def _view(self, slot: int, index: int, key: str, spec: TensorSpec, start: int, count: int):
        if spec.numel == 0:
            return torch.empty(spec.shape, dtype=spec.dtype)  # an empty file cannot be mapped
        if self.window_bytes is not None:
            flat = _map(self.file(slot, index, key), spec.dtype, start, count)
            return flat.view(spec.shape) if count == spec.numel else flat
        whole = self._mapped.get((slot, index, key))
        if whole is None:  # one object per file: the store caches optimizers by identity
            whole = _map(self.file(slot, index, key), spec.dtype, 0, spec.numel).view(spec.shape)
            self._mapped[slot, index, key] = whole
        return whole if count == spec.numel else whole.view(-1)[start : start + count]

    def _window_numel(self, spec: TensorSpec) -> int | None:
        return window_numel(self.window_bytes, spec.dtype)

    def _size_file(self, path: Path, nbytes: int) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        descriptor = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            if os.fstat(descriptor).st_size != nbytes:
                self._mapped = {k: v for k, v in self._mapped.items() if self.file(*k) != path}
                os.ftruncate(descriptor, nbytes)
        finally:
            os.close(descriptor)


def window_numel(window_bytes: int | None, dtype: torch.dtype) -> int | None:
    """Elements per window: a multiple of `CHUNK_ALIGN`, at least one multiple.

    The CPU kernels (fused Adam/AdamW among them) run SIMD blocks from the start of the tensor
    they are given and finish its tail element by element, which rounds differently; chunks
    that start on a multiple of 64 elements (AVX-512: 16 floats, unrolled) are split into the
    same blocks as the whole tensor, so chunked updates stay bit-identical.
    """
    if window_bytes is None:
        return None
    return max(CHUNK_ALIGN, window_bytes // dtype.itemsize // CHUNK_ALIGN * CHUNK_ALIGN)


def chunk_ranges(numel: int, per_chunk: int | None) -> list[tuple[int, int]]:
    """(start, count) pieces of a flat tensor, each at most `per_chunk` (None: one piece)."""
    if per_chunk is None or numel <= per_chunk:
        return [(0, numel)]
    return [(start, min(per_chunk, numel - start)) for start in range(0, numel, per_chunk)]


def _map(path: Path, dtype: torch.dtype, start: int, count: int) -> torch.Tensor:
    """Elements [start, start + count) of a raw file as a tensor sharing the mapping."""
    itemsize = dtype.itemsize
    array = np.memmap(
        path, dtype=np.uint8, mode="r+", offset=start * itemsize, shape=(count * itemsize,)
    )
    return torch.from_numpy(array).view(dtype)
