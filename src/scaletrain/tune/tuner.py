"""`scaletrain.tune` and `scaletrain tune`: check everything, make the study directory, run
the workers, then write the trials table, best.yaml and report.html."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from scaletrain.config import load_config
from scaletrain.errors import UserError
from scaletrain.fileio import atomic_write_text
from scaletrain.tune.space import read_space
from scaletrain.tune.space_check import check_space
from scaletrain.tune.study import (
    StudyDir,
    StudyLock,
    StudySettings,
    grid_size,
    load_study,
    require_optuna,
    retry_dead_trials,
)
from scaletrain.tune.workers import run_workers


@dataclass(frozen=True)
class TuneResult:
    study_dir: Path
    best_value: float | None
    best_params: dict
    num_complete: int
    num_pruned: int
    num_failed: int
    retried: list[int]
    wall_s: float


def tune(
    config: str | Path,
    *,
    space: str | Path,
    num_trials: int,
    study_dir: str | Path | None = None,
    overrides: list[str] = (),
    **options,
) -> TuneResult:
    """Search `space` over `config` with Optuna; each trial a run in STUDY/trials/<number>.

    Args:
        config: the YAML config every trial starts from.
        space: SPACE.yaml: config keys and their ranges (docs/tune.md).
        num_trials: trials to complete or prune in all.
        study_dir: the study directory (default: RUN.OUT_DIR/RUN.NAME-tune); must not exist.
        overrides: dotted ``KEY=VALUE`` strings applied to the config first.
        options: StudySettings fields: metric, mode, sampler, pruner, seed, parallel,
            trial_nproc, timeout_min.
    """
    require_optuna()
    settings = StudySettings(num_trials=num_trials, **options)
    settings.check()
    search = read_space(space)
    cfg = load_config(config, list(overrides))
    check_space(search, cfg)
    if settings.sampler == "grid" and grid_size(search) < num_trials:
        raise UserError(
            f"--trials {num_trials}: the grid of {search.source} has {grid_size(search)} "
            "points; ask for at most that many"
        )
    root = StudyDir(study_dir or Path(cfg.run.out_dir) / f"{cfg.run.name}-tune")
    if root.root.exists() and any(root.root.iterdir()):
        raise UserError(
            f"{root.root} exists; continue it with `scaletrain tune --resume {root.root}` "
            "or choose another --out"
        )
    search, found = _resolve_lr_find(search, cfg)
    root.root.mkdir(parents=True, exist_ok=True)
    if found is not None:
        from scaletrain.tune.lr_find import write_page

        write_page(found, root.root / "lr_find.html", name=cfg.run.name)
    atomic_write_text(root.config, cfg.to_yaml())
    atomic_write_text(root.space, search.to_yaml())
    root.write_settings(settings)
    return _run(root, settings)


def resume_tune(study_dir: str | Path) -> TuneResult:
    """Continue a study: finished trials stay, trials a crash left running are retried."""
    require_optuna()
    root = StudyDir(study_dir)
    if not root.root.is_dir():
        raise UserError(f"--resume {study_dir}: no such study directory")
    return _run(root, root.read_settings())


def _resolve_lr_find(search, cfg):
    """An `lr_find` key: the range test once, then a log range around its suggestion."""
    if search.needs_lr_find() is None:
        return search, None
    from scaletrain.tune.lr_find import lr_find

    found = lr_find(cfg)
    search = search.with_lr_range(found.suggestion)
    check_space(search, cfg)
    return search, found


def _run(root: StudyDir, settings: StudySettings) -> TuneResult:
    from optuna.trial import TrialState

    from scaletrain.tune.outputs import write_outputs

    started = time.time()
    lock = StudyLock(root)
    lock.acquire_exclusive()  # no other process of this study is alive
    try:
        space = read_space(root.space)
        study = load_study(root, settings, space=space)
        retried = retry_dead_trials(study, root)
        lock.share()
        deadline = started + settings.timeout_min * 60 if settings.timeout_min else None
        run_workers(str(root.root), settings.parallel, deadline)
        study = load_study(root, settings, space=space)  # what the workers wrote
        write_outputs(study, root, settings)
    finally:
        lock.release()
    trials = study.get_trials(deepcopy=False)
    count = {state: sum(t.state == state for t in trials) for state in TrialState}
    best = _best(study)
    return TuneResult(
        study_dir=root.root,
        best_value=best.value if best else None,
        best_params=dict(best.params) if best else {},
        num_complete=count[TrialState.COMPLETE],
        num_pruned=count[TrialState.PRUNED],
        num_failed=count[TrialState.FAIL],
        retried=retried,
        wall_s=time.time() - started,
    )


def _best(study):
    try:
        return study.best_trial
    except ValueError:  # no trial completed
        return None
