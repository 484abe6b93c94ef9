"""Train an ensemble: K members, each a normal run directory under `RUN/members/m{i}`, one
after another in this process or on `nproc` worker processes; then evaluate them together.

Members never exchange gradients, so running them in parallel needs no process group. A
resumed ensemble keeps its finished members and continues or restarts the others.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

from scaletrain.config import Config, load_config, load_run_config, member_configs
from scaletrain.data import build_data
from scaletrain.ensemble.evaluate import evaluate_ensemble
from scaletrain.ensemble.jobs import MemberJobs, member_slots, run_member_jobs
from scaletrain.ensemble.members import MemberOutcome, member_dir, train_member
from scaletrain.ensemble.nodes import HostNode
from scaletrain.ensemble.parallel import train_in_parallel
from scaletrain.ensemble.records import write_record, write_summary
from scaletrain.ensemble.rounds import train_rounds
from scaletrain.ensemble.stacking import fit_combiner
from scaletrain.ensemble.user_parts import UserParts
from scaletrain.errors import ConfigError, UserError
from scaletrain.fileio import atomic_write_text
from scaletrain.report import write_report
from scaletrain.rundir import (
    API_REUSE_HINT,
    RunDir,
    RunLock,
    open_run_dir,
    prepare_run_dir,
    read_json,
)
from scaletrain.train.signals import StopRequest
from scaletrain.trained import Run
from scaletrain.trained.ensemble import load_ensemble_run, load_members


def train_ensemble(
    cfg: Config,
    *,
    overwrite: bool = False,
    nproc: int = 1,
    reuse_hint: str = API_REUSE_HINT,
    user: UserParts | None = None,
    host: HostNode | None = None,
) -> Run:
    """Train every member of `cfg.ensemble` and combine them; the Run's model averages them.
    `user`: the Python API's model factory and data, for every member (one process);
    `host`: node 0 of several (`--nnodes`), which spreads the members over them."""
    if user is not None:
        cfg = user.apply_to(cfg)
    members = member_configs(cfg)  # a member that does not load fails before any file
    _member_jobs(Path(cfg.run.out_dir) / cfg.run.name, cfg, nproc=nproc)  # --nproc checked
    task = _check_data(cfg, user)
    lock = RunLock(Path(cfg.run.out_dir) / cfg.run.name)
    try:
        run = prepare_run_dir(
            cfg.run.out_dir, cfg.run.name, overwrite=overwrite, lock=lock, reuse_hint=reuse_hint
        )
        cfg = load_config({**cfg.to_dict(), "data": {**cfg.to_dict()["data"], "task": task}})
        members = member_configs(cfg)  # with the task known (boosting: residuals or weights)
        atomic_write_text(run.config, cfg.to_yaml())
        write_record(run, cfg, members, weights=None)
        if host is not None:
            host.publish(run.root, nproc=nproc)
        return _train_and_combine(run, cfg, members, nproc=nproc, user=user, host=host)
    finally:
        lock.release()


def resume_ensemble(
    run_dir: str | Path,
    *,
    nproc: int = 1,
    user: UserParts | None = None,
    host: HostNode | None = None,
) -> Run:
    """Continue an interrupted ensemble: finished members are kept, the others resumed from
    their checkpoints (or started over where they have none)."""
    run = open_run_dir(run_dir)
    cfg = load_run_config(run.config)
    if cfg.ensemble is None:
        raise UserError(f"{run.root} is a single run, not an ensemble")
    _member_jobs(run.root, cfg, nproc=nproc)  # --nproc checked before the lock
    lock = RunLock(run.root).acquire()
    try:
        if host is not None:
            host.publish(run.root, nproc=nproc)
        members = member_configs(cfg)
        return _train_and_combine(run, cfg, members, nproc=nproc, user=user, host=host)
    finally:
        lock.release()


def _train_and_combine(
    run: RunDir,
    cfg: Config,
    members: list[Config],
    *,
    nproc: int,
    user: UserParts | None,
    host: HostNode | None = None,
) -> Run:
    start = time.perf_counter()
    jobs = _member_jobs(run.root, cfg, nproc=nproc, num_runs=len(members))
    if host is None:  # the processes used (a node's --nproc where there are several)
        nproc = min(max(1, nproc), len(members)) if jobs is None else jobs.slots * jobs.member_nproc
    data = user.data if user is not None else None
    bundle = build_data(cfg.data, seed=cfg.run.seed, user_data=data)  # data.split_seed
    alphas = rounds = None
    if cfg.ensemble.method == "boosting":  # sequential rounds, whatever nproc says
        nproc = cfg.ensemble.member_nproc
        boosted = train_rounds(members, bundle, cfg, user, jobs=jobs)
        outcomes, alphas, rounds = boosted.outcomes, boosted.alphas, boosted.history
    else:
        outcomes = _train_members(run, members, nproc=nproc, user=user, host=host, jobs=jobs)
    train_s = time.perf_counter() - start
    stopped = [outcome for outcome in outcomes if outcome.exit_code]
    if stopped or len(outcomes) < len(members):
        write_summary(run, cfg, outcomes, status="interrupted", train_s=train_s, nproc=nproc)
        exit_code = stopped[0].exit_code if stopped else 1
        return Run(run.root, {}, None, cfg, "interrupted", exit_code)
    first = member_dir(members[0])
    for name in ("data_spec.json", "preprocess.json"):  # shared by all members (one split)
        shutil.copyfile(first.root / name, run.root / name)
    weights = _member_weights(members) if cfg.ensemble.combine == "weighted" else alphas
    if alphas is not None and not any(alphas):
        raise UserError(f"{run.root}: no boosting round did better than chance; nothing to vote")
    snapshots = _snapshot_steps(first, cfg) if cfg.ensemble.method == "snapshot" else None
    stacking = None
    factory = user.new_model if user is not None and user.model_factory is not None else None
    if cfg.ensemble.method == "stacking":  # members' held-out predictions -> the combiner
        stacking = fit_combiner(
            load_members(run.root, model_factory=factory), cfg, bundle, out=run.root
        )
    write_record(
        run, cfg, members, weights=weights, snapshots=snapshots, stacking=stacking, rounds=rounds
    )
    combined = load_ensemble_run(run.root, cfg, model_factory=factory)
    member_cfgs = members * len(snapshots) if snapshots else members  # snapshots: one run
    metrics = evaluate_ensemble(combined.model, member_cfgs, cfg, bundle)
    write_summary(
        run, cfg, outcomes, status="finished", train_s=train_s, nproc=nproc, metrics=metrics
    )
    if cfg.log.report:
        write_report(run.root)  # the ensemble page (members' pages are their own)
    combined.metrics, combined.status = metrics.ensemble, "finished"
    return combined


def _member_jobs(
    root: Path, cfg: Config, *, nproc: int, num_runs: int | None = None
) -> MemberJobs | None:
    """Members as multi-process jobs (`ensemble.member_nproc` > 1), as many at once as
    `--nproc` holds (boosting: one round at a time); None for one-process members."""
    member_nproc = cfg.ensemble.member_nproc
    if member_nproc == 1:
        return None
    slots = member_slots(nproc, member_nproc)
    if cfg.ensemble.method == "boosting":
        slots = 1
    return MemberJobs(root, member_nproc, min(slots, num_runs or slots))


def _train_members(
    run: RunDir,
    members: list[Config],
    *,
    nproc: int,
    user: UserParts | None,
    host: HostNode | None,
    jobs: MemberJobs | None,
) -> list[MemberOutcome]:
    """Every member brought to its end: over the nodes, as jobs, on workers, or in turn."""
    if host is not None:
        member_nproc = 1 if jobs is None else jobs.member_nproc
        return host.train(run.root, members, nproc=nproc, member_nproc=member_nproc)
    if jobs is not None:
        return run_member_jobs(jobs, members, list(range(len(members))))
    if nproc > 1:  # (user parts were refused with nproc > 1: they stay in this process)
        return train_in_parallel(run.root, nproc=nproc)
    outcomes = []
    with StopRequest() as signals:  # a signal outside a member's loop: no next member
        for index, member_cfg in enumerate(members):
            if signals.requested:
                outcomes.append(
                    MemberOutcome(index, "not started", "interrupted", signals.exit_code)
                )
                break
            outcome = train_member(member_cfg, index, user)
            outcomes.append(outcome)
            if outcome.exit_code:  # stopped by a signal: the next resume goes on from here
                break
    return outcomes


def _check_data(cfg: Config, user: UserParts | None) -> str:
    """The task the data resolves to, and what the combination cannot do with it (before
    the run directory exists)."""
    data = user.data if user is not None else None
    bundle = build_data(cfg.data, seed=cfg.run.seed, user_data=data)
    spec, method = bundle.spec, cfg.ensemble.method
    if method in ("stacking", "boosting") and bundle.train.inputs is None:
        raise ConfigError(
            f"ensemble.method: `{method}` needs the train split in memory (not shards or a "
            "Dataset); use bagging or voting"
        )
    if method == "boosting":
        _check_boosting(cfg.ensemble, spec.task)
    if cfg.ensemble.combine == "vote" and spec.task != "classification":
        raise ConfigError(
            f"ensemble.combine: `vote` needs classes, but the data is a {spec.task} task; "
            "use mean or weighted"
        )
    if spec.task not in ("classification", "regression"):
        raise ConfigError(f"ensemble: members of a {spec.task} task cannot be combined yet")
    if cfg.ensemble.combine == "weighted" and cfg.data.val_fraction == 0:
        raise ConfigError(
            "ensemble.combine: `weighted` weighs members by their validation loss, but "
            "data.val_fraction is 0; give a validation split or use mean"
        )
    return spec.task


def _check_boosting(ensemble, task: str) -> None:
    """Boosting's options for the task it is not: refused, not silently ignored."""
    if task not in ("classification", "regression"):
        raise ConfigError(
            "ensemble.method: `boosting` is SAMME/SAMME.R (classification) or gradient "
            f"boosting (regression); the data is a {task} task; use bagging or voting"
        )
    unused = {"classification": ("learning_rate",), "regression": ("algorithm", "weights")}
    defaults = type(ensemble.boosting)()  # by value: config.yaml read back lists every key
    changed = [k for k in unused[task] if getattr(ensemble.boosting, k) != getattr(defaults, k)]
    if changed:
        raise ConfigError(
            f"ensemble.boosting.{changed[0]}: set, but it does not apply to a {task} task "
            "(classification: algorithm, weights; regression: learning_rate); remove it"
        )


def _member_weights(members: list[Config]) -> list[float]:
    """`weighted`: each member's weight is 1 / its validation loss (normalized when used)."""
    weights = []
    for member_cfg in members:
        summary = read_json(member_dir(member_cfg).summary)
        loss = (summary.get("metrics") or {}).get("val", {}).get("loss")
        if not isinstance(loss, int | float) or loss <= 0:
            raise UserError(f"{member_dir(member_cfg).summary}: no validation loss to weigh by")
        weights.append(1.0 / loss)
    return weights


def _snapshot_steps(run: RunDir, cfg: Config) -> list[int]:
    """The steps of a snapshot run's checkpoints: one at each cycle's end."""
    steps = sorted(
        int(path.parent.name.removeprefix("step_"))
        for path in run.checkpoints.glob("step_*/manifest.json")
    )
    if len(steps) != cfg.ensemble.members:
        raise UserError(
            f"{run.checkpoints}: {len(steps)} checkpoints for {cfg.ensemble.members} snapshot "
            "members (one per cycle end); was the run stopped early or its checkpoints removed?"
        )
    return steps
