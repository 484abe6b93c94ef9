"""The commit step of a save (a directory rename) and failure messages a user can act on."""

from __future__ import annotations

import errno
import os
import shutil
from pathlib import Path

from torch.distributed.checkpoint.api import CheckpointException

from scaletrain.checkpoint.manifest import write_manifest
from scaletrain.errors import CheckpointError
from scaletrain.fileio import fsync_dir

# DCP reports a full disk as "unexpected pos ..." from its zip writer, not as ENOSPC.
_LOW_SPACE_BYTES = 1 << 20


def commit(tmp: Path, final: Path, *, step: int) -> None:
    """Manifest (hashes of fsynced files) last, then one rename: the checkpoint exists."""
    write_manifest(tmp, step=step)
    refuse_link(final)  # refused before the save began too; never delete through a link
    if final.exists():  # a save at the same step (e.g. `best` then `final`): replace it
        shutil.rmtree(final)
    os.replace(tmp, final)
    fsync_dir(final.parent)


def describe_failure(
    error: BaseException | None, directory: Path, *, needed_bytes: int | None = None
) -> str:
    """One line: the OS reason if there is one; on a full disk also what this rank's part of
    the checkpoint needs and what is free, so the user knows how much room to make."""
    root = _root_cause(error)
    free = _free_bytes(directory)
    full = getattr(root, "errno", None) == errno.ENOSPC or (
        free is not None and free < _LOW_SPACE_BYTES
    )
    if full:
        room = f"{_mb(free)} free in {directory}" if free is not None else f"in {directory}"
        need = f"; this rank's part needs about {_mb(needed_bytes)}" if needed_bytes else ""
        return f"{os.strerror(errno.ENOSPC)} ({room}{need})"
    if isinstance(root, OSError) and root.strerror:
        return root.strerror
    text = str(root).strip().splitlines()
    return text[0] if text else type(root).__name__


def _mb(num_bytes: int) -> str:
    return f"{num_bytes / 2**20:.1f} MB"


def new_checkpoint_group(strategy):
    """A process group for background saves, so their collectives never interleave with the
    training loop's on the default group; None for one process (no collectives)."""
    if strategy.world_size == 1:
        return None
    group = getattr(strategy, "checkpoint_group", None)  # a strategy may provide its own
    if group is None:
        import torch.distributed as dist

        group = dist.new_group(backend="gloo")  # collective: every rank saves together
    return group


def refuse_link(path: Path) -> None:
    """Links are never checkpoints here: saving must not follow or delete through one."""
    if path.is_symlink():
        raise CheckpointError(
            f"{path}: a symbolic link; scaletrain never reads, writes or deletes through "
            "links in a checkpoints folder: remove it"
        )


def first_failure(exc: CheckpointException, path: Path) -> CheckpointError:
    """DCP wraps each rank's error; our refusals are CheckpointErrors already."""
    failure, _trace = next(iter(exc.failures.values()), (None, None))
    if isinstance(failure, CheckpointError):
        return failure
    if failure is None:
        return CheckpointError(f"{path}: {exc}")
    lines = str(failure).strip().splitlines()
    return CheckpointError(f"{path}: {type(failure).__name__}: {lines[0] if lines else ''}"[:300])


def _root_cause(error: BaseException | None) -> BaseException | None:
    failures = getattr(error, "failures", None)  # DCP's CheckpointException: rank -> (exc, tb)
    if failures:
        first = next(iter(failures.values()))
        error = first[0] if isinstance(first, tuple) else first
    while error is not None and error.__cause__ is not None:
        error = error.__cause__
    return error


def _free_bytes(directory: Path) -> int | None:
    for candidate in (directory, *directory.parents):
        if candidate.exists():
            return shutil.disk_usage(candidate).free
    return None
