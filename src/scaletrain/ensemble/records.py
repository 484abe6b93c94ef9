"""An ensemble's own records: `ensemble.json` (what it is made of) and `summary.json` (how
its members ran and how they and the ensemble score)."""

from __future__ import annotations

from scaletrain.config import Config
from scaletrain.fileio import atomic_write_json
from scaletrain.rundir import ENSEMBLE_FILE, RunDir


def write_record(
    run: RunDir,
    cfg: Config,
    members: list[Config],
    *,
    weights,
    snapshots=None,
    stacking=None,
    rounds=None,
) -> None:
    """ensemble.json: what the ensemble is made of, for loading and for the report."""
    record = {
        "method": cfg.ensemble.method,
        "combine": cfg.ensemble.combine,
        "members": _snapshot_entries(members[0], snapshots)
        if snapshots
        else [
            {
                "name": member.run.name,
                "dir": f"members/{member.run.name}",
                "seed": member.run.seed,
                "subsample": member.data.subsample.model_dump() if member.data.subsample else None,
            }
            for member in members
        ],
        "weights": weights,
    }
    if rounds is not None:  # boosting: each round's weighted error, or the train MSE so far
        record["rounds"] = rounds
    if stacking is not None:  # which rows the combiner learned from, and how well
        record["combiner"] = {
            "kind": cfg.ensemble.combiner,
            "file": "combiner.safetensors",
            "num_rows": len(stacking.rows),
            "train_loss": round(stacking.loss, 6),
        }
    atomic_write_json(run.root / ENSEMBLE_FILE, record)


def write_summary(
    run: RunDir, cfg: Config, outcomes, *, status: str, train_s: float, nproc: int, metrics=None
) -> None:
    summary = {
        "status": status,
        "name": cfg.run.name,
        "task": cfg.data.task,
        "ensemble": metrics.ensemble if metrics else {},
        "method": cfg.ensemble.method,
        "combine": cfg.ensemble.combine,
        "num_members": cfg.ensemble.members,
        "nproc": nproc,
        "member_nproc": cfg.ensemble.member_nproc,
        "train_wall_s": round(train_s, 3),
        "member_runs": [outcome.__dict__ for outcome in outcomes],
        "members": metrics.members if metrics else [],
        "mean_member": metrics.mean_member if metrics else {},
        "diversity": metrics.diversity if metrics else {},
    }
    summary["metrics"] = summary["ensemble"]  # where a single run keeps them
    atomic_write_json(run.summary, summary)


def _snapshot_entries(member: Config, steps: list[int]) -> list[dict]:
    """A snapshot ensemble's members: its one run's checkpoints at the cycle ends."""
    return [
        {
            "name": f"{member.run.name}@{step}",
            "dir": f"members/{member.run.name}",
            "seed": member.run.seed,
            "checkpoint": f"step_{step:08d}",
        }
        for step in steps
    ]
