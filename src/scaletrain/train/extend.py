"""Which config keys a resume may change: those that leave the steps already taken as they
were (train longer, validate or save on another cadence, log differently). Anything else
would make the resumed run differ from one trained in one go, so it is refused by name."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from scaletrain.config import Config, ScheduleConfig, UserModelConfig, load_config, load_run_config
from scaletrain.errors import ConfigError, UserError

# exact keys, or sections ending in "." whose every key may change
RESUMABLE_KEYS = (
    "train.max_epochs",
    "train.max_steps",
    "train.eval_every_steps",
    "train.early_stopping.",
    "checkpoint.",
    "log.",
)
# the keys that decide how many steps the run takes
LENGTH_KEYS = ("train.max_epochs", "train.max_steps")


class RunFinished(UserError):
    """The newest checkpoint is at (or past) the run's last step: nothing left to train."""

    def __init__(self, step: int, epoch: int):
        super().__init__(f"the run is finished: step {step}, epoch {epoch}")
        self.step, self.epoch = step, epoch


def is_resumable_key(key: str) -> bool:
    return any(key == k or (k.endswith(".") and key.startswith(k)) for k in RESUMABLE_KEYS)


def schedule_needs_total(cfg: ScheduleConfig) -> str | None:
    """The schedule key whose learning rates depend on the run's total steps, or None:
    cosine/linear/onecycle decay over them (cosine_restarts cuts them into cycles), and
    warmup_ratio is a share of them."""
    if cfg.name in ("cosine", "cosine_restarts", "linear", "onecycle"):
        return "optim.schedule.name"
    if cfg.warmup_ratio and not cfg.warmup_steps:
        return "optim.schedule.warmup_ratio"
    return None


def resume_config(
    config_path: Path,
    overrides: list[str],
    *,
    has_model: bool,
    check: Callable[[Config], None] | None = None,
) -> Config:
    """The config a resume trains with: the run's own (read once; `check` sees it before any
    override), extended by `overrides`; refused in one line where the run needs a module
    only Python can pass (checked by the CLI before it starts any worker, and by
    `api.resume`)."""
    cfg = load_run_config(config_path)
    if check is not None:
        check(cfg)
    if overrides:
        cfg = apply_resume_overrides(cfg, overrides)
    if isinstance(cfg.model, UserModelConfig) and not has_model:
        root = config_path.parent
        raise UserError(
            f"{root} was trained with a user module ({cfg.model.class_name}); "
            "resume it from Python: scaletrain.api.resume(run_dir, model=..., data=...)"
        )
    return cfg


def apply_resume_overrides(cfg: Config, overrides: list[str]) -> Config:
    """`cfg` with `overrides` applied, where each changes only a resumable key; a run whose
    learning rates depend on its total steps cannot be made longer or shorter."""
    for item in overrides:
        key = item.partition("=")[0].strip()
        if not is_resumable_key(key):
            allowed = ", ".join(k + ("*" if k.endswith(".") else "") for k in RESUMABLE_KEYS)
            raise ConfigError(
                f"{key}: a resume cannot change it, since it would change the training of the "
                f"steps already taken; a resume may change {allowed}; for anything else "
                "train a new run"
            )
    new = load_config(cfg, list(overrides))
    schedule_key = schedule_needs_total(cfg.optim.schedule)
    changed = [key for key in LENGTH_KEYS if _get(new, key) != _get(cfg, key)]
    if changed and schedule_key:
        value = _get(cfg, schedule_key)
        raise ConfigError(
            f"{changed[0]}: cannot change on resume, because {schedule_key}={value} spreads "
            "the learning rate over the run's total steps, so the steps already taken would "
            "have had other rates; train a new run (or use a schedule such as constant, step "
            "or exponential, which a resume can extend)"
        )
    return new


def finished_message(run_dir: str, cfg: Config, finished: RunFinished) -> str:
    """What a resume of a finished run says: where it ended and how to extend it."""
    if cfg.train.max_steps:  # it wins over max_epochs where set
        extend = f"train.max_steps={max(finished.step, 1) * 2}"
        limit = f"train.max_steps={cfg.train.max_steps}"
    else:
        extend = f"train.max_epochs={max(finished.epoch, 1) * 2}"
        limit = f"train.max_epochs={cfg.train.max_epochs}"
    return (
        f"{run_dir}: the run is finished (step {finished.step}, epoch {finished.epoch}; "
        f"{limit}); to train it longer, give it more: scaletrain resume {run_dir} {extend} "
        f"(Python: scaletrain.resume(run_dir, overrides=[{extend!r}]))"
    )


def _get(cfg: Config, dotted: str):
    node = cfg
    for part in dotted.split("."):
        node = getattr(node, part)
    return node
