"""The study directory and its Optuna study: a JournalStorage on `journal.log` (no database
server; appends under a file lock, so many worker processes share it and a crash loses at
most the line being written), the settings a resume continues with, and the study lock."""

from __future__ import annotations

import fcntl
import importlib.util
import json
import math
import os
import shutil
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path

from scaletrain.errors import ConfigError, UserError
from scaletrain.fileio import atomic_write_json

STUDY_NAME = "scaletrain"
SAMPLERS = ("tpe", "gp", "cmaes", "random", "grid")
PRUNERS = ("median", "hyperband", "none")
COUNTED = ("COMPLETE", "PRUNED")  # the states that make up --trials N


@dataclass(frozen=True)
class StudySettings:
    """What `scaletrain tune` was asked; saved as study.json so --resume continues alike."""

    num_trials: int
    metric: str = "val.accuracy"
    mode: str = "max"
    sampler: str = "tpe"
    pruner: str = "median"
    seed: int = 0
    parallel: int = 1
    trial_nproc: int = 1
    timeout_min: float | None = None

    def check(self) -> None:
        """One line per bad option, before anything is written."""
        if self.num_trials < 1:
            raise UserError(f"--trials: expected at least 1, got {self.num_trials}")
        if self.parallel < 1 or self.trial_nproc < 1:
            raise UserError("--parallel and --trial-nproc: expected at least 1")
        if not self.metric.startswith("val.") or self.metric == "val.":
            raise UserError(
                f"--metric: expected a validation metric val.NAME (val.accuracy, val.loss), "
                f"got {self.metric!r}; pruning reads each validation of the run"
            )
        if self.mode not in ("max", "min"):
            raise UserError(f"--mode: expected max or min, got {self.mode!r}")
        if self.sampler not in SAMPLERS:
            raise UserError(
                f"--sampler: expected one of {', '.join(SAMPLERS)}, got {self.sampler!r}"
            )
        if self.sampler == "cmaes" and importlib.util.find_spec("cmaes") is None:
            raise UserError("--sampler cmaes needs the cmaes package: pip install cmaes")
        if self.pruner not in PRUNERS:
            raise UserError(f"--pruner: expected one of {', '.join(PRUNERS)}, got {self.pruner!r}")


def require_optuna() -> None:
    """One line where the `tune` extra is not installed."""
    if importlib.util.find_spec("optuna") is None:
        raise UserError("scaletrain tune needs Optuna: pip install 'scaletrain[tune]'")


class StudyDir:
    """Paths of a study directory."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        self.journal = self.root / "journal.log"
        self.settings = self.root / "study.json"
        self.space = self.root / "space.yaml"
        self.config = self.root / "config.yaml"
        self.trials = self.root / "trials"
        self.trials_csv = self.root / "trials.csv"
        self.trials_json = self.root / "trials.json"
        self.best = self.root / "best.yaml"
        self.report = self.root / "report.html"
        self.lock = self.root / "study.lock"

    def trial_dir(self, number: int) -> Path:
        return self.trials / str(number)

    def write_settings(self, settings: StudySettings) -> None:
        atomic_write_json(self.settings, asdict(settings))

    def read_settings(self) -> StudySettings:
        if not self.settings.is_file():
            raise UserError(f"{self.root}: not a study directory (no study.json)")
        try:
            return StudySettings(**json.loads(self.settings.read_text()))
        except (ValueError, TypeError) as exc:
            raise UserError(f"{self.settings}: damaged ({exc})") from None


def open_storage(study_dir: StudyDir):
    """Optuna's JournalStorage on the study's journal file."""
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    return JournalStorage(JournalFileBackend(str(study_dir.journal)))


def load_study(study_dir: StudyDir, settings: StudySettings, *, worker: int = 0, space=None):
    """The study with this worker's sampler (seeded apart, so workers do not propose alike)."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna.create_study(
        study_name=STUDY_NAME,
        storage=open_storage(study_dir),
        sampler=build_sampler(settings.sampler, seed=settings.seed + worker, space=space),
        pruner=build_pruner(settings.pruner),
        direction="maximize" if settings.mode == "max" else "minimize",
        load_if_exists=True,
    )


def build_sampler(name: str, *, seed: int, space=None):
    """--sampler NAME as an Optuna sampler (`grid` enumerates the space's steps)."""
    from optuna import samplers
    from optuna.exceptions import ExperimentalWarning

    if name == "grid":
        return _grid_sampler(grid_values(space), seed=seed)
    if name == "gp":
        return samplers.GPSampler(seed=seed)
    if name == "cmaes":
        return samplers.CmaEsSampler(seed=seed, warn_independent_sampling=False)
    if name == "random":
        return samplers.RandomSampler(seed=seed)
    with warnings.catch_warnings():  # multivariate/group: "experimental" since optuna 2.2
        warnings.simplefilter("ignore", ExperimentalWarning)
        return samplers.TPESampler(seed=seed, multivariate=True, group=True)


def grid_values(space) -> dict[str, list]:
    """Each key's grid: the choices, or low..high by step; a key without a grid is refused."""
    grid = {}
    for param in space.params:
        if param.when:
            raise ConfigError(f"{space.source}: {param.key}: --sampler grid takes no `when` keys")
        if param.kind == "categorical":
            grid[param.key] = list(param.choices)
            continue
        if param.step is None and param.kind != "int":
            raise ConfigError(f"{space.source}: {param.key}: --sampler grid needs a step")
        step = param.step or 1
        count = math.floor((param.high - param.low) / step + 1e-9) + 1  # 0.02 // 0.01 == 1.0
        values = [round(param.low + index * step, 12) for index in range(count)]
        grid[param.key] = [int(v) for v in values] if param.kind == "int" else values
    return grid


def _grid_sampler(grid: dict[str, list], *, seed: int):
    """Optuna's GridSampler calls `study.stop()` once the grid is used up, which raises
    outside `study.optimize` (the workers ask and tell): here the workers' count stops."""
    from optuna.samplers import GridSampler

    class AskTellGridSampler(GridSampler):
        def after_trial(self, study, trial, state, values) -> None:
            pass

    return AskTellGridSampler(grid, seed=seed)


def grid_size(space) -> int:
    return math.prod(len(values) for values in grid_values(space).values())


def build_pruner(name: str):
    from optuna import pruners

    if name == "median":
        return pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=0)
    if name == "hyperband":
        return pruners.HyperbandPruner(min_resource=1)
    return pruners.NopPruner()


class StudyLock:
    """`study.lock`: every process of a running study holds it shared; starting or resuming
    takes it exclusively first, so trials left RUNNING are known dead (optuna 5.1's
    JournalStorage has no heartbeat) and a second `tune` on the same study is refused."""

    def __init__(self, study_dir: StudyDir):
        self.path = study_dir.lock
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)  # closed by release()

    def acquire_exclusive(self) -> None:
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self.release()
            raise UserError(
                f"{self.path.parent}: the study is in use by a running `scaletrain tune` "
                "(study.lock is held); wait for it or stop it"
            ) from None

    def share(self) -> None:
        fcntl.flock(self.fd, fcntl.LOCK_SH)

    def release(self) -> None:
        os.close(self.fd)


def retry_dead_trials(study, study_dir: StudyDir) -> list[int]:
    """Trials a crash left RUNNING become FAIL and their parameters are queued again (the
    retry gets a new number); their half-written run directories go. Call under the
    exclusive lock only."""
    from optuna.trial import TrialState

    retried = []
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        study._storage.set_trial_state_values(trial._trial_id, state=TrialState.FAIL)
        study.enqueue_trial(trial.params, user_attrs={"retry_of": trial.number})
        shutil.rmtree(study_dir.trial_dir(trial.number), ignore_errors=True)
        retried.append(trial.number)
    return retried


def counted_trials(study) -> int:
    from optuna.trial import TrialState

    states = tuple(TrialState[name] for name in COUNTED) + (TrialState.RUNNING,)
    return len(study.get_trials(deepcopy=False, states=states))
