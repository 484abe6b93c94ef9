"""One member of an ensemble: trained, resumed from its checkpoints, or left as it is."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from scaletrain import api
from scaletrain.config import Config
from scaletrain.ensemble.user_parts import UserParts
from scaletrain.rundir import RunDir, read_json

DONE = ("finished", "stopped_early")  # a member whose summary says so is not trained again


@dataclass(frozen=True)
class MemberOutcome:
    index: int
    action: str  # trained | resumed | kept (finished before) | not started (a signal came first)
    status: str  # the member run's status
    exit_code: int = 0
    node: int = 0  # the node that trained it (--nnodes)


def member_dir(cfg: Config) -> RunDir:
    """Where a member's config places its run directory."""
    return RunDir(Path(cfg.run.out_dir) / cfg.run.name)


def is_finished(run: RunDir) -> bool:
    """A member is finished when its run directory says so (summary.json's status)."""
    if not run.summary.is_file():
        return False
    summary = read_json(run.summary)
    return isinstance(summary, dict) and summary.get("status") in DONE


def has_checkpoint(run: RunDir) -> bool:
    return any(run.checkpoints.glob("step_*/manifest.json"))


def train_member(cfg: Config, index: int, user: UserParts | None = None) -> MemberOutcome:
    """Member `index` brought to the end of its training: kept when finished, resumed from its
    newest checkpoint when interrupted after one, trained from scratch otherwise (with the
    user's fresh module and data where the Python API was given them)."""
    run = member_dir(cfg)
    if is_finished(run):
        return MemberOutcome(index, "kept", read_json(run.summary)["status"])
    model, data = (user.new_model(), user.data) if user is not None else (None, None)
    if has_checkpoint(run):
        result = api.resume(run.root, model=model, data=data)
        action = "resumed"
    else:  # never started, or stopped before its first checkpoint: start over
        result = api.train(cfg, model=model, data=data, overwrite=run.root.exists())
        action = "trained"
    return MemberOutcome(index, action, result.status, result.exit_code)


def assigned(index: int, *, rank: int, nproc: int) -> bool:
    """Round-robin: process `rank` of `nproc` trains members rank, rank + nproc, ..."""
    return index % nproc == rank
