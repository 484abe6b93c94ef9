"""Dataset views over memory-mapped shards: indexing reads only the rows it needs.

``ShardSamples`` (inputs/targets shards) and ``TokenWindows`` (a token stream read as
(context_length + 1)-token windows) are map-style Datasets with ``__getitems__``: a whole
micro batch is gathered at once, shard by shard, as two tensors; the loader gathers
``read_rows`` samples (several micro batches, ``data.shards.read_mib``) per call. At most ``max_open`` shard
files are mapped at a time per process, so address space and resident memory stay bounded
whatever the dataset size; scaletrain's loader threads share one set of maps. They pickle
without their maps, so a user's own DataLoader worker processes reopen them.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from scaletrain.errors import DataError

READ_BYTES = 8 << 20  # default size of one loader read (data.shards.read_mib)


class MappedShards:
    """Shard files opened as read-only memmaps on demand, least recently used closed first.

    Safe to share between loader threads: the map table is changed under a lock, and a map
    closed while another thread still reads from it lives on until that read's view is gone.
    """

    def __init__(self, root: Path, paths: list[str], *, max_open: int):
        self.paths = [Path(root) / path for path in paths]
        self.max_open = max_open
        self._open: OrderedDict[int, np.ndarray] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, index: int) -> np.ndarray:
        """Shard ``index`` as a memmap (opening costs a header read, no data)."""
        with self._lock:
            array = self._open.get(index)
            if array is None:
                if len(self._open) >= self.max_open:
                    self._open.popitem(last=False)  # unmapped once no view of it is left
                # A plain ndarray over the map: np.memmap's Python-level indexing costs
                # ~10 us per call, a real share of a small model's step.
                array = self._map(self.paths[index])
                self._open[index] = array
            else:
                self._open.move_to_end(index)
            return array

    @staticmethod
    def _map(path: Path) -> np.ndarray:
        """The shard as an ndarray over its map; a shard that went missing or changed since
        the run checked it is one DataError naming the file."""
        try:
            return np.load(path, mmap_mode="r").view(np.ndarray)
        except (OSError, ValueError) as error:
            reason = getattr(error, "strerror", None) or str(error)
            raise DataError(
                f"{path}: the shard cannot be read any more ({reason}); was the prepared "
                "folder changed or removed while the run was reading it?"
            ) from None

    def __getstate__(self) -> dict:  # maps and locks do not cross processes
        return {**self.__dict__, "_open": OrderedDict(), "_lock": None}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state, _lock=threading.Lock())


class ShardSamples(Dataset):
    """One split's samples across shards; ``__getitems__`` returns (inputs, targets) batches."""

    returns_batches = True  # loaders take __getitems__'s tensors as the batch (no collate)

    def __init__(
        self,
        root: Path,
        split: dict,
        fields: dict[str, dict],
        *,
        max_open: int,
        read_bytes: int = READ_BYTES,
    ):
        counts = np.array([shard["num_samples"] for shard in split["shards"]], dtype=np.int64)
        self.starts = np.concatenate([[0], np.cumsum(counts)])
        self.num_samples = int(self.starts[-1])
        self.fields = fields
        self.maps = {
            name: MappedShards(
                root, [shard["files"][name]["path"] for shard in split["shards"]], max_open=max_open
            )
            for name in fields
        }
        self.read_rows = max(1, read_bytes // max(1, self.sample_bytes))

    def __len__(self) -> int:
        return self.num_samples

    @property
    def sample_bytes(self) -> int:
        """Bytes of one sample as ``__getitems__`` returns it (sizes ``read_rows``)."""
        return sum(
            int(np.prod(field["shape"], dtype=np.int64))
            * np.dtype(field.get("load_dtype", field["dtype"])).itemsize
            for field in self.fields.values()
        )

    def gather(self, rows: np.ndarray, *, names=("inputs", "targets")) -> dict[str, np.ndarray]:
        """Rows (indices into this split) of the named fields, in the order given."""
        rows = np.asarray(rows, dtype=np.int64)
        shard_of_row = np.searchsorted(self.starts, rows, side="right") - 1
        first = int(shard_of_row[0]) if len(rows) else 0
        if len(rows) and (shard_of_row == first).all():  # common: one shard, one gather
            local = rows - self.starts[first]
            return {name: self.maps[name].get(first)[local] for name in names}
        out = {
            name: np.empty((len(rows), *self.fields[name]["shape"]), self.fields[name]["dtype"])
            for name in names
        }
        for shard in np.unique(shard_of_row):
            picked = np.flatnonzero(shard_of_row == shard)
            local = rows[picked] - self.starts[shard]
            for name in names:
                out[name][picked] = self.maps[name].get(int(shard))[local]  # only these rows
        return out

    def describe(self, rows: list[int]) -> str:
        """The shard files and their local rows holding `rows`, for error messages."""
        rows_array = np.asarray(rows, dtype=np.int64)
        shard_of_row = np.searchsorted(self.starts, rows_array, side="right") - 1
        name = "inputs" if "inputs" in self.maps else next(iter(self.maps))
        parts = []
        for shard in np.unique(shard_of_row)[:3]:
            local = rows_array[shard_of_row == shard] - self.starts[shard]
            listed = ", ".join(str(int(row)) for row in local[:4])
            more = ", ..." if len(local) > 4 else ""
            parts.append(f"{self.maps[name].paths[int(shard)]} rows [{listed}{more}]")
        return "; ".join(parts) + f" ({len(rows)} samples)"

    def field(self, name: str, *, chunk_rows: int = 1 << 16):
        """Yield one field of the whole split in order, chunk by chunk (a streaming pass)."""
        for start in range(0, self.num_samples, chunk_rows):
            rows = np.arange(start, min(start + chunk_rows, self.num_samples))
            yield self.gather(rows, names=(name,))[name]

    def __getitems__(self, indices: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        arrays = self.gather(np.asarray(indices))
        return tuple(  # token ids stored as uint16/uint32 are read as int64
            torch.from_numpy(
                arrays[name].astype(field.get("load_dtype", field["dtype"]), copy=False)
            )
            for name, field in self.fields.items()
        )

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        inputs, targets = self.__getitems__([index])
        return inputs[0], targets[0]


class TokenWindows(Dataset):
    """Window i = tokens [i*T, i*T + T + 1): inputs the first T, targets the last T (int64)."""

    returns_batches = True

    def __init__(
        self,
        root: Path,
        split: dict,
        *,
        context_length: int,
        max_open: int,
        read_bytes: int = READ_BYTES,
    ):
        counts = np.array([shard["num_tokens"] for shard in split["shards"]], dtype=np.int64)
        self.starts = np.concatenate([[0], np.cumsum(counts)])
        self.context_length = context_length
        self.num_samples = max(0, (int(self.starts[-1]) - 1) // context_length)
        paths = [shard["files"]["tokens"]["path"] for shard in split["shards"]]
        self.maps = MappedShards(root, paths, max_open=max_open)
        self.read_rows = max(1, read_bytes // self.sample_bytes)

    def __len__(self) -> int:
        return self.num_samples

    @property
    def sample_bytes(self) -> int:
        return 2 * self.context_length * 8  # int64 inputs and targets

    def read(self, start: int, length: int) -> np.ndarray:
        """Tokens [start, start + length) of the stream, across shard boundaries."""
        parts, position, stop = [], start, start + length
        while position < stop:
            shard = int(np.searchsorted(self.starts, position, side="right") - 1)
            end = min(stop, int(self.starts[shard + 1]))
            local = position - self.starts[shard]
            parts.append(self.maps.get(shard)[local : local + end - position])
            position = end
        return np.concatenate(parts)

    def windows(self, indices: np.ndarray) -> np.ndarray:
        """(B, T + 1) int64 windows; one fancy index per shard for windows inside it."""
        width = self.context_length + 1
        starts = np.asarray(indices, dtype=np.int64) * self.context_length
        out = np.empty((len(starts), width), dtype=np.int64)
        shard_of = np.searchsorted(self.starts, starts, side="right") - 1
        inside = starts + width <= self.starts[shard_of + 1]
        for shard in np.unique(shard_of[inside]):
            picked = np.flatnonzero(inside & (shard_of == shard))
            local = starts[picked] - self.starts[shard]
            out[picked] = self.maps.get(int(shard))[local[:, None] + np.arange(width)]
        for row in np.flatnonzero(~inside):  # the few windows that cross a shard boundary
            out[row] = self.read(int(starts[row]), width)
        return out

    def __getitems__(self, indices: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        windows = torch.from_numpy(self.windows(np.asarray(indices)))
        return windows[:, :-1].contiguous(), windows[:, 1:].contiguous()

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        inputs, targets = self.__getitems__([index])
        return inputs[0], targets[0]
