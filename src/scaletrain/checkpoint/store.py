"""Atomic DCP checkpoints: write step_N.tmp/, hash, manifest, rename; keep last K + best.

Tensors (model, optimizer) go through torch.distributed.checkpoint so any strategy and
world size can reload them; everything else is JSON, one file per rank (RNG differs).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch.distributed.checkpoint as dcp

from scaletrain.checkpoint.manifest import verify_manifest, write_manifest
from scaletrain.checkpoint.safe_reader import SafeFileSystemReader, SafeLoadPlanner
from scaletrain.errors import CheckpointError

_STEP_DIR = re.compile(r"^step_(\d{8})$")
BEST_FILE = "best.json"


@dataclass
class CheckpointStore:
    root: Path
    keep_last: int = 2

    def save(self, *, step: int, tensors: dict, side_state: dict, strategy) -> Path:
        """Collective: every rank calls it. Returns the committed directory."""
        final = self.root / f"step_{step:08d}"
        tmp = final.with_name(final.name + ".tmp")
        if strategy.is_main:
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir(parents=True)
        strategy.barrier()
        ok = True
        try:
            dcp.save(tensors, storage_writer=dcp.FileSystemWriter(tmp, sync_files=True))
            _write_json(tmp / f"rank_{strategy.rank:05d}.json", side_state)
        except OSError as exc:
            ok = False
            error = exc
        if strategy.any_flag(not ok):
            if strategy.is_main:
                shutil.rmtree(tmp, ignore_errors=True)
            reason = error.strerror if not ok else "another rank failed to write"
            raise CheckpointError(
                f"saving checkpoint {final} failed: {reason}; earlier checkpoints are untouched"
            )
        if strategy.is_main:
            write_manifest(tmp, step=step)
            if final.exists():
                shutil.rmtree(final)
            os.replace(tmp, final)
            self._prune()
        strategy.barrier()
        return final

    def mark_best(self, step: int, *, metric: str, value: float) -> None:
        _write_json(self.root / BEST_FILE, {"step": step, "metric": metric, "value": value})

    def best_step(self) -> int | None:
        path = self.root / BEST_FILE
        return json.loads(path.read_text())["step"] if path.is_file() else None

    def committed(self) -> list[Path]:
        """Committed step directories, oldest first (those with a manifest)."""
        if not self.root.is_dir():
            return []
        dirs = [p for p in self.root.iterdir() if _STEP_DIR.match(p.name) and p.is_dir()]
        return sorted(dirs, key=lambda p: p.name)

    def latest_valid(self) -> Path | None:
        """Newest checkpoint whose files match its manifest; warn and fall back otherwise."""
        for path in reversed(self.committed()):
            try:
                verify_manifest(path)
                return path
            except CheckpointError as exc:
                warnings.warn(f"skipping corrupt checkpoint: {exc}", stacklevel=2)
        return None

    def find(self, which: str) -> Path:
        """`last`, `best` or `step_N` -> a verified checkpoint directory."""
        if which == "best" and (step := self.best_step()) is not None:
            path = self.root / f"step_{step:08d}"
        elif which in ("last", "best"):
            path = self.latest_valid()
        else:
            path = self.root / which
        if path is None or not path.is_dir():
            raise CheckpointError(f"no checkpoint `{which}` in {self.root}")
        verify_manifest(path)
        return path

    def load(self, path: Path, *, tensors: dict, rank: int) -> dict:
        """Fill `tensors` in place from a verified checkpoint; return this rank's side state."""
        verify_manifest(path)
        dcp.load(tensors, storage_reader=SafeFileSystemReader(path), planner=SafeLoadPlanner())
        side = path / f"rank_{rank:05d}.json"
        if not side.is_file():  # resumed with more ranks than saved: rank 0's shared state
            side = path / "rank_00000.json"
        return json.loads(side.read_text())

    def _prune(self) -> None:
        keep = {p.name for p in self.committed()[-self.keep_last :]}
        best = self.best_step()
        if best is not None:
            keep.add(f"step_{best:08d}")
        for path in self.committed():
            if path.name not in keep:
                shutil.rmtree(path, ignore_errors=True)


def _write_json(path: Path, data: dict) -> None:
    with open(path, "w") as handle:
        json.dump(data, handle)
        handle.flush()
        os.fsync(handle.fileno())
