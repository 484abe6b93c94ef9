"""Worker processes of a study: each asks for a trial (under `ask.lock`, so the study holds
exactly --trials counted trials and no number twice), trains it and tells the result."""

from __future__ import annotations

import fcntl
import multiprocessing
import sys
import time

from scaletrain.errors import UserError
from scaletrain.tune.space import read_space
from scaletrain.tune.study import StudyDir, StudyLock, counted_trials, load_study
from scaletrain.tune.trial import run_trial

MAX_FAILURES = 3  # failed trials in a row before a worker gives up: the config is broken


def run_worker(root: str, worker: int, deadline: float | None) -> None:
    """Trials until --trials are counted (complete or pruned, or running elsewhere) or time."""
    from optuna.trial import TrialState

    study_dir = StudyDir(root)
    lock = StudyLock(study_dir)
    lock.share()  # a resume waits for this process to be gone
    settings = study_dir.read_settings()
    space = read_space(study_dir.space)
    study = load_study(study_dir, settings, worker=worker, space=space)
    failures = 0
    try:
        while deadline is None or time.time() < deadline:
            trial = _ask(study, study_dir, settings.num_trials)
            if trial is None:
                return
            outcome = run_trial(trial, study_dir, settings, space)
            if outcome.error:
                trial.set_user_attr("error", outcome.error)
            study.tell(trial, outcome.value, state=TrialState[outcome.state])
            failures = failures + 1 if outcome.state == "FAIL" else 0
            if failures >= MAX_FAILURES:
                raise UserError(f"{MAX_FAILURES} trials failed in a row; last: {outcome.error}")
    finally:
        lock.release()


def _ask(study, study_dir: StudyDir, num_trials: int):
    with open(study_dir.root / "ask.lock", "a+") as file:
        fcntl.flock(file, fcntl.LOCK_EX)  # count and ask as one step across workers
        if counted_trials(study) >= num_trials:
            return None
        return study.ask()


def run_workers(root: str, num_workers: int, deadline: float | None) -> None:
    """`--parallel P`: this process is worker 0, P - 1 spawned ones (they get this one's
    sys.path) the others; all waited for."""
    context = multiprocessing.get_context("spawn")
    processes = [
        context.Process(target=_worker_main, args=(root, index, deadline))
        for index in range(1, num_workers)
    ]
    for process in processes:
        process.start()
    try:
        run_worker(root, 0, deadline)
    finally:
        for process in processes:
            process.join()
    failed = [(i, p.exitcode) for i, p in enumerate(processes, start=1) if p.exitcode != 0]
    if any(code == 130 for _, code in failed):  # Ctrl-C: said once, by the tune command
        raise KeyboardInterrupt
    if failed:
        raise UserError(f"tune worker {failed[0][0]} failed (exit {failed[0][1]}); see above")


def _worker_main(root: str, worker: int, deadline: float | None) -> None:
    try:
        run_worker(root, worker, deadline)
    except UserError as exc:
        print(f"error: worker {worker}: {exc}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:  # Ctrl-C reached the whole group: the tune process says it
        sys.exit(130)
