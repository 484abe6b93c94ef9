"""Atomic DCP checkpoints: write step_N.tmp/, hash, manifest, rename; keep last K + best.

Tensors (model, optimizer) go through torch.distributed.checkpoint so any strategy and
world size can reload them, stored as safetensors files with JSON metadata (`storage.py`);
everything else is JSON, one file per rank (RNG differs). Nothing read is a pickle.
Older checkpoints are pruned only after a newer one is committed, so a crash or a full
disk at any moment leaves the previous complete checkpoint in place. Saving never writes
or deletes through a symbolic link: a link where a checkpoint folder goes is refused.
"""

from __future__ import annotations

import json
import re
import shutil
import threading
import time
import warnings
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint.api import CheckpointException

from scaletrain.checkpoint.commit import (
    commit,
    describe_failure,
    first_failure,
    new_checkpoint_group,
    refuse_link,
)
from scaletrain.checkpoint.formats import METADATA_FILES, storage_for
from scaletrain.checkpoint.manifest import Manifest, verify_manifest
from scaletrain.checkpoint.storage import JsonSavePlanner, SafetensorsWriter
from scaletrain.checkpoint.values import shown
from scaletrain.errors import CheckpointError
from scaletrain.fileio import atomic_write_json

_STEP_DIR = re.compile(r"^step_(\d{8})$")
_TMP_DIR = re.compile(r"^step_(\d{8})\.tmp$")
_STEP_NAME = re.compile(r"(?:step_)?(\d{1,8})")  # what --checkpoint accepts for a step
BEST_FILE = "best.json"


def tensor_bytes(tree) -> int:
    """Bytes of this rank's tensors in a state dict (a DTensor counts its local shard)."""
    if isinstance(tree, dict):
        return sum(tensor_bytes(value) for value in tree.values())
    if isinstance(tree, list | tuple):
        return sum(tensor_bytes(value) for value in tree)
    local = getattr(tree, "to_local", None)
    tree = local() if local is not None else tree
    return tree.numel() * tree.element_size() if hasattr(tree, "element_size") else 0


class CheckpointWarning(UserWarning):
    """A checkpoint was skipped; the CLI prints these as one `warning:` line."""


@dataclass
class SaveResult:
    path: Path  # the step directory (committed, or being written in the background)
    stall_s: float  # seconds the training loop was blocked by this save


@dataclass
class _InFlight:
    path: Path
    future: Future
    needed_bytes: int | None = None  # this rank's part: named if the disk fills up
    owned: bool = False  # a copy handed over (a best snapshot): a save may follow it at once


def step_folder_name(which: str) -> str:
    """`80`, `step_80` or `step_00000080` -> `step_00000080`; anything else is refused."""
    match = _STEP_NAME.fullmatch(str(which)) if isinstance(which, str | int) else None
    if match is None:
        raise CheckpointError(
            f"--checkpoint: expected best, last or step_N (80, step_80 or step_00000080), "
            f"got {shown(which)}"
        )
    return f"step_{int(match.group(1)):08d}"


@dataclass
class CheckpointStore:
    root: Path
    keep_last: int = 2
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _in_flight: list[_InFlight] = field(default_factory=list, repr=False)  # commit order
    _group: object = field(default=None, repr=False)

    def save(self, *, step: int, tensors: dict, side_state: dict, strategy) -> Path:
        """Collective: every rank calls it. Returns the committed directory."""
        return self._save(step, tensors, side_state, strategy, asynchronous=False).path

    def save_async(
        self, *, step: int, tensors: dict, side_state: dict, strategy, owned: bool = False
    ) -> SaveResult:
        """Collective: stage to CPU memory, write and commit in a background thread.
        `owned` (one process): `tensors` are a copy no one changes any more (a best
        snapshot), written as they are, and the next save need not wait for them: it
        commits after them."""
        if owned and strategy.world_size != 1:
            raise ValueError("owned saves are for one process")
        return self._save(step, tensors, side_state, strategy, asynchronous=True, owned=owned)

    def wait(self, strategy) -> Path | None:
        """Collective: finish the saves in flight (if any); raise on every rank if one
        failed (the first, in commit order)."""
        in_flight, self._in_flight = self._in_flight, []
        errors = [(save, save.future.exception()) for save in in_flight]
        failed, error = next(((save, e) for save, e in errors if e is not None), (None, None))
        if strategy.any_flag(error is not None):
            reason = (
                describe_failure(error, self.root, needed_bytes=failed.needed_bytes)
                if error
                else "another rank"
            )
            path = failed.path if failed else in_flight[-1].path
            raise CheckpointError(
                f"saving checkpoint {path} failed: {reason}; earlier checkpoints are untouched"
            )
        return in_flight[-1].path if in_flight else None

    def drain(self) -> None:
        """Let the saves in flight finish (committed by their threads, or cleaned up); no
        collective."""
        in_flight, self._in_flight = self._in_flight, []
        for save in in_flight:
            save.future.exception()

    def _save(
        self, step, tensors, side_state, strategy, *, asynchronous: bool, owned: bool = False
    ) -> SaveResult:
        started = time.perf_counter()
        if not (asynchronous and all(save.owned for save in self._in_flight)):
            self.wait(strategy)  # one save in flight at a time (after a snapshot: two)
        final = self.root / f"step_{step:08d}"
        tmp = final.with_name(final.name + ".tmp")
        self._make_folder(tmp, final, strategy)
        error = None
        try:
            # a plain write: the commit fsyncs every file of the folder before naming it
            side = json.dumps(side_state) + "\n"  # serialized first: a bad value writes nothing
            (tmp / f"rank_{strategy.rank:05d}.json").write_text(side, encoding="utf-8")
            writer, planner = SafetensorsWriter(tmp, sync_files=True), JsonSavePlanner()
            after = self._in_flight[-1].future if self._in_flight else None
            if owned:  # one process, no collectives: the whole write in the thread
                upload = _background(
                    dcp.save, tensors, storage_writer=writer, planner=planner, no_dist=True
                )
            elif asynchronous:
                if self._group is None:  # never the training group: no interleaving
                    self._group = new_checkpoint_group(strategy)
                upload = dcp.async_save(
                    tensors, storage_writer=writer, planner=planner, process_group=self._group
                )
            else:
                dcp.save(tensors, storage_writer=writer, planner=planner)
        except (Exception, CheckpointException) as exc:  # a BaseException wrapping ENOSPC
            error = exc
        if strategy.any_flag(error is not None):
            if strategy.is_main:
                shutil.rmtree(tmp, ignore_errors=True)
            reason = (
                describe_failure(error, self.root, needed_bytes=tensor_bytes(tensors))
                if error
                else "another rank failed"
            )
            raise CheckpointError(
                f"saving checkpoint {final} failed: {reason}; earlier checkpoints are untouched"
            )
        if asynchronous:
            future = _background(
                self._finish_async, upload, tmp, final, step, strategy.is_main, after
            )
            self._in_flight.append(_InFlight(final, future, tensor_bytes(tensors), owned))
        else:
            self._finish(tmp, final, step, strategy)
        return SaveResult(final, time.perf_counter() - started)

    def _make_folder(self, tmp: Path, final: Path, strategy) -> None:
        """Rank 0 clears crashed saves and makes `tmp`; every rank learns if that failed."""
        error = None
        if strategy.is_main:
            try:
                for path in (tmp, final):
                    refuse_link(path)
                self._remove_incomplete()
                tmp.mkdir(parents=True)
            except (OSError, CheckpointError) as exc:
                error = exc
        if strategy.any_flag(error is not None):  # also the barrier before every rank writes
            if isinstance(error, CheckpointError):
                raise error
            reason = describe_failure(error, self.root) if error else "rank 0 failed"
            raise CheckpointError(f"saving checkpoint {final} failed: {reason}")

    def _finish(self, tmp: Path, final: Path, step: int, strategy) -> None:
        """Every rank's files are written: manifest, rename, then prune (rank 0)."""
        error = None
        if strategy.is_main:
            try:
                self._commit(tmp, final, step)
            except Exception as exc:  # e.g. no space left for the manifest
                error = exc
        if strategy.any_flag(error is not None):  # also the barrier after the commit
            reason = describe_failure(error, self.root) if error else "rank 0 failed to commit"
            raise CheckpointError(
                f"saving checkpoint {final} failed: {reason}; earlier checkpoints are untouched"
            )

    def _finish_async(
        self, upload: Future, tmp: Path, final: Path, step: int, is_main, after: Future | None
    ) -> None:
        """Commit once the files are written and the save before this one has ended (its
        failure is its own: `wait` reports it)."""
        try:  # rank 0's DCP finish step gathers every rank's write results: all files exist
            upload.result()
        except BaseException:  # DCP's CheckpointException is not an Exception
            if is_main:
                shutil.rmtree(tmp, ignore_errors=True)
            raise
        finally:
            if after is not None:
                after.exception()  # commits stay in the order the saves began
        if is_main:
            self._commit(tmp, final, step)

    def _commit(self, tmp: Path, final: Path, step: int) -> None:
        try:
            with self._lock:
                commit(tmp, final, step=step)
                self._prune()
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise

    def mark_best(self, step: int, *, metric: str, value: float) -> None:
        with self._lock:
            # atomic: a background prune reads it while the loop marks a new best
            atomic_write_json(
                self.root / BEST_FILE, {"step": step, "metric": metric, "value": value}
            )

    def best_step(self) -> int | None:
        """The step `best.json` names (None without one); CheckpointError if it is damaged."""
        path = self.root / BEST_FILE
        if not (path.exists() or path.is_symlink()):
            return None
        refuse_link(path)
        raw = path.read_bytes() if path.is_file() else b""
        try:
            step = json.loads(raw).get("step")
        except (ValueError, RecursionError, AttributeError):  # not JSON, or not an object
            step = None
        if type(step) is not int or not 0 <= step < 10**8:
            got = shown(raw[:80].decode(errors="replace"))
            raise CheckpointError(
                f'{path}: expected {{"step": N, ...}} naming a checkpoint, got {got}; '
                "delete it to use the last checkpoint"
            )
        return step

    def check_folder(self) -> None:
        """Before a resume: a damaged `best.json` or a link among the checkpoint folders is
        refused now, not when the run tries to save over it at its end."""
        self.best_step()
        if self.root.is_dir():
            for path in self.root.iterdir():
                if _STEP_DIR.match(path.name) or _TMP_DIR.match(path.name):
                    refuse_link(path)

    def committed(self) -> list[Path]:
        """Committed step directories, oldest first (`.tmp` ones are never checkpoints)."""
        if not self.root.is_dir():
            return []
        dirs = [p for p in self.root.iterdir() if _STEP_DIR.match(p.name) and p.is_dir()]
        return sorted(dirs, key=lambda p: p.name)

    def latest_valid(self) -> Path | None:
        """Newest checkpoint whose files match its manifest, with a warning for each newer
        corrupt one passed over; None without any. Where every one is corrupt, the newest's
        refusal is the one line (no warnings before it: nothing was fallen back to)."""
        refusals = []
        for path in reversed(self.committed()):
            try:
                self.verify(path)
            except CheckpointError as exc:
                refusals.append(exc)
                continue
            for exc in refusals:
                warnings.warn(
                    f"skipping corrupt checkpoint: {exc}", CheckpointWarning, stacklevel=2
                )
            return path
        if refusals:
            raise CheckpointError(f"{refusals[0]} (no valid checkpoint in {self.root})")
        return None

    def find(self, which: str) -> Path:
        """`last`, `best`, or a step (`80`, `step_80`, `step_00000080`) -> a verified
        checkpoint directory; an unknown one is refused with the names that exist."""
        which = str(which) if isinstance(which, int) else which
        best = self.best_step() if which == "best" else None
        if best is not None and (self.root / f"step_{best:08d}").is_dir():
            path = self.root / f"step_{best:08d}"
        elif which in ("last", "best"):
            path = self.latest_valid()
        else:
            path = self.root / step_folder_name(which)  # a bare name: no separators or `..`
        if path is None or not path.is_dir():
            raise CheckpointError(f"no checkpoint `{which}` in {self.root}; {self._choices()}")
        self.verify(path)
        return path

    def _choices(self) -> str:
        steps = [path.name for path in self.committed()]
        if not steps:
            return "it holds none yet"
        return f"use best, last or one of: {', '.join(steps)}"

    def verify(self, path: Path) -> Manifest:
        """Checksums match the manifest, the files a DCP checkpoint needs are listed, and the
        folder really is inside this store (a symlink cannot point reads elsewhere)."""
        if path.is_symlink() or not path.resolve().is_relative_to(self.root.resolve()):
            raise CheckpointError(f"{path}: a link out of {self.root}; refusing to read it")
        manifest = verify_manifest(path)
        missing = {METADATA_FILES[manifest.version], "rank_00000.json"} - set(manifest.files)
        if missing:
            raise CheckpointError(f"{path}: not a scaletrain checkpoint (lacks {sorted(missing)})")
        return manifest

    def load(self, path: Path, *, tensors: dict, rank: int) -> dict:
        """Fill `tensors` in place from a verified checkpoint; return this rank's side state.
        Every file read is one the manifest lists, with its hash checked."""
        manifest = self.verify(path)
        reader, planner = storage_for(path, manifest)
        try:
            dcp.load(tensors, storage_reader=reader, planner=planner)
        except CheckpointException as exc:  # a BaseException: surface our own refusal as is
            raise first_failure(exc, path) from None
        return self._read_side(path, manifest, rank=rank)

    def side_state(self, path: Path, *, rank: int) -> dict:
        """This rank's side state alone: what to load can depend on it (local SGD's ranks)."""
        return self._read_side(path, self.verify(path), rank=rank)

    def _read_side(self, path: Path, manifest: Manifest, *, rank: int) -> dict:
        side = self.side_file(path, manifest, rank=rank)
        try:
            state = json.loads(side.read_bytes())
        except (UnicodeDecodeError, ValueError, RecursionError):
            raise CheckpointError(f"{side}: side state is not JSON; refusing to read it") from None
        if not isinstance(state, dict):
            raise CheckpointError(
                f"{side}: side state must be a JSON object, got {type(state).__name__}"
            )
        return state

    @staticmethod
    def side_file(path: Path, manifest: Manifest, *, rank: int) -> Path:
        """This rank's JSON side state; rank 0's when resumed with more ranks than saved."""
        name = f"rank_{rank:05d}.json"
        return path / (name if name in manifest.files else "rank_00000.json")

    def _prune(self) -> None:
        """Keep the newest `keep_last` committed checkpoints and the best one; links are
        never checkpoints of this store, so they neither count nor are deleted."""
        folders = [p for p in self.committed() if not p.is_symlink()]
        keep = {p.name for p in folders[-self.keep_last :]}
        best = self.best_step()
        if best is not None:
            keep.add(f"step_{best:08d}")
        for path in folders:
            if path.name not in keep:
                shutil.rmtree(path, ignore_errors=True)

    def _remove_incomplete(self) -> None:
        """Half-written `.tmp` folders of crashed saves (not those of saves in flight)."""
        writing = {save.path.name + ".tmp" for save in self._in_flight}
        if self.root.is_dir():
            for path in self.root.iterdir():
                if _TMP_DIR.match(path.name) and not path.is_symlink() and path.name not in writing:
                    shutil.rmtree(path, ignore_errors=True)


def _background(function, *args, **kwargs) -> Future:
    """Run `function(*args, **kwargs)` in a short-lived daemon-free worker thread."""
    executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="scaletrain-checkpoint")
    future = executor.submit(function, *args, **kwargs)
    executor.shutdown(wait=False)
    return future
