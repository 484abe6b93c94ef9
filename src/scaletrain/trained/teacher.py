"""`distill.teacher`: a finished run loaded (pickle-free) as the teacher of a new run, after
checking it saw the same inputs the student will.

The student's batches hold its own preprocessed tensors only (raw inputs are gone by then),
so the teacher must have been trained on the very same preprocessing: its `preprocess.json`
must equal the student's. That also means the same data and train split (the statistics are
fit on it), so the teacher never saw the student's val or test samples. A `data.subsample` of
the same split keeps the preprocessing (it is fit on the whole split) and is allowed.
"""

from __future__ import annotations

from pathlib import Path

from scaletrain.checkpoint import CheckpointStore
from scaletrain.config import Config, UserModelConfig, load_run_config
from scaletrain.data import DataSpec, Preprocessor
from scaletrain.errors import ConfigError, UserError
from scaletrain.rundir import open_run_dir, read_json
from scaletrain.train.distill import TeacherModel
from scaletrain.trained.files import read_preprocessor, read_spec
from scaletrain.trained.weights import build_run_model, load_weights

FINISHED = ("finished", "stopped_early")
_SAME = ("task", "input_shape", "input_dtype", "num_outputs", "class_names", "vocab_size")


def load_teacher(cfg: Config, *, spec: DataSpec, preprocessor: Preprocessor) -> TeacherModel:
    """The teacher run's best weights in its built-in model (eval mode, on the CPU); any
    mismatch with this run is one ConfigError line naming `distill.teacher`."""
    where = f"distill.teacher: {cfg.distill.teacher}"
    try:
        run = open_run_dir(cfg.distill.teacher)
        teacher_cfg = load_run_config(run.config)
        _check_run(teacher_cfg, run.summary, where=where)
        teacher_spec = read_spec(run)
        _check_spec(teacher_spec, spec, where=where)
        if read_preprocessor(run).state_dict() != preprocessor.state_dict():
            raise ConfigError(
                f"{where}: its preprocessing (preprocess.json) differs from this run's, so it "
                "was trained on other inputs (other data, features, split or data.normalize); "
                "train the teacher with this run's data section"
            )
        # built and filled here, not by load_trained_model: under torchrun every rank loads
        # it (DCP's load is then a collective), and build_distiller places it on the device
        model = build_run_model(teacher_cfg, teacher_spec)
        path = CheckpointStore(run.checkpoints).find("best")
        load_weights(model, path, rank=0)
    except ConfigError:
        raise
    except UserError as exc:  # a missing or damaged run directory, named as the config key
        raise ConfigError(f"{where}: {exc}") from None
    return TeacherModel(model.eval(), run.root, int(path.name.removeprefix("step_")))


def _check_run(teacher_cfg: Config, summary: Path, *, where: str) -> None:
    if teacher_cfg.ensemble is not None or isinstance(teacher_cfg.model, UserModelConfig):
        kind = "an ensemble" if teacher_cfg.ensemble is not None else "a user module's run"
        raise ConfigError(f"{where}: is {kind}; the teacher must be one run of a built-in model")
    record = read_json(summary) if summary.is_file() else None
    status = record.get("status") if isinstance(record, dict) else None
    if status not in FINISHED:
        raise ConfigError(
            f"{where}: is not a finished run (status {status or 'unknown'}); finish it first "
            f"(scaletrain resume {Path(summary).parent})"
        )


def _check_spec(teacher: DataSpec, student: DataSpec, *, where: str) -> None:
    if teacher.task == "regression":
        raise ConfigError(
            f"{where}: is a regression run; distillation matches class probabilities "
            "(classification or language_model)"
        )
    for name in _SAME:
        theirs, ours = getattr(teacher, name), getattr(student, name)
        if theirs != ours:
            raise ConfigError(
                f"{where}: its data has {name} {theirs!r}, this run's {ours!r}; the teacher "
                "must be trained on the same data"
            )
