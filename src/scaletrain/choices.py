"""Config sections whose options depend on a name (`model.name`, `optim.name`, `data.source` …).

Two users: `scaletrain list` shows each entry's own options, and an override that switches
the name (`model.name=mlp` on a file written for a cnn) drops the file's options the new
choice does not read, with a one-line note, instead of refusing them as unknown keys. An
option the same overrides set for the old choice is still refused: that is a mistake, not a
leftover. Imports nothing of scaletrain: `config` hands in the schema's facts.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

# The options each optimizer reads (`optim/optimizers.py`); every one also takes the
# sub-sections `schedule`, `penalty` and `clip`.
OPTIMIZER_OPTIONS: dict[str, tuple[str, ...]] = {
    "sgd": ("lr", "weight_decay", "momentum", "nesterov", "implementation"),
    "adam": ("lr", "weight_decay", "betas", "eps", "implementation"),
    "adamw": ("lr", "weight_decay", "betas", "eps", "implementation"),
    "rmsprop": ("lr", "weight_decay", "momentum", "alpha", "eps", "implementation"),
    "adagrad": ("lr", "weight_decay", "eps", "implementation"),
}
OPTIM_SECTIONS = ("schedule", "penalty", "clip")

# The options each LR schedule shape reads (`optim/schedules.py`); onecycle has its own rise,
# so it refuses a warmup.
_WARMUP = ("warmup_steps", "warmup_ratio")
SCHEDULE_OPTIONS: dict[str, tuple[str, ...]] = {
    "constant": _WARMUP,
    "step": (*_WARMUP, "step_size", "gamma"),
    "multistep": (*_WARMUP, "milestones", "gamma"),
    "exponential": (*_WARMUP, "gamma"),
    "cosine": (*_WARMUP, "min_lr_ratio"),
    "cosine_restarts": (*_WARMUP, "min_lr_ratio", "cycles"),
    "linear": (*_WARMUP, "min_lr_ratio"),
    "onecycle": ("pct_start", "div_factor", "final_div_factor"),
}

# The options each loss reads (`optim/losses.py`); `auto` becomes cross_entropy or mse.
LOSS_OPTIONS: dict[str, tuple[str, ...]] = {
    "auto": ("label_smoothing", "class_weights"),
    "cross_entropy": ("label_smoothing", "class_weights"),
    "bce_with_logits": (),
    "mse": (),
    "mae": (),
    "huber": ("huber_delta",),
    "kl_div": (),
}

# The options each weight init reads (`models/init.py`).
INIT_OPTIONS: dict[str, tuple[str, ...]] = {
    "default": (),
    "zeros": (),
    "normal": ("std",),
    "uniform": ("bound",),
    "xavier_uniform": ("gain",),
    "xavier_normal": ("gain",),
    "kaiming_uniform": (),
    "kaiming_normal": (),
    "orthogonal": ("gain",),
}


class ConfigNote(UserWarning):
    """Something the config loader did for the user that they should know (one line)."""


@dataclass(frozen=True)
class Switch:
    """A section (dotted path) whose member is chosen by `key`; `options(name)` is the set of
    keys that member takes (None: it takes every key of the section)."""

    path: tuple[str, ...]
    key: str
    default: str
    options: Callable[[str], set[str] | None]


def explicit_keys(raw: dict, switches: Iterable[Switch]) -> dict[tuple[str, ...], set[str]]:
    """The keys each switchable section of `raw` sets, before any override is applied."""
    return {switch.path: set(_section(raw, switch.path) or {}) for switch in switches}


def drop_switched_options(
    raw: dict,
    switches: Iterable[Switch],
    *,
    explicit: dict[tuple[str, ...], set[str]],
    override_keys: list[tuple[str, ...]],
    before: dict[tuple[str, ...], Any],
    where: str,
) -> list[str]:
    """In place: where an override changed a section's choosing name, keep of the section
    only what the new member takes (and all that the overrides set); return one note per
    section that lost written options (`warn_notes` gives them once the config is valid).

    Args:
        raw: the config as a dict, overrides applied.
        switches: the switchable sections.
        explicit: each section's keys as written before the overrides (`explicit_keys`).
        override_keys: the dotted keys of the overrides, split.
        before: each section's choosing name before the overrides.
        where: where the config came from, for the note (a file name).
    """
    notes = []
    for switch in switches:
        section = _section(raw, switch.path)
        set_here = _keys_set_by(override_keys, switch.path)
        if section is None or set_here is None or switch.key not in set_here:
            continue  # not switched by an override (or the whole section was replaced)
        name = section.get(switch.key, switch.default)
        if name == before[switch.path] or not isinstance(name, str):
            continue
        options = switch.options(name)
        if options is None:
            continue
        old = before[switch.path]
        dropped = _drop(
            section,
            options | {switch.key},
            old=switch.options(old) if isinstance(old, str) else None,
            explicit=explicit[switch.path],
            overridden=set_here,
        )
        if dropped:
            notes.append(_note(switch, name, before[switch.path], dropped, where))
    return notes


def warn_notes(notes: list[str]) -> None:
    for note in notes:
        warnings.warn(note, ConfigNote, stacklevel=3)  # at the caller of load_config


def choice_before(raw: dict, switch: Switch) -> Any:
    section = _section(raw, switch.path)
    return (section or {}).get(switch.key, switch.default)


def _drop(
    section: dict,
    keep: set[str],
    *,
    old: set[str] | None,
    explicit: set[str],
    overridden: set[str],
) -> list[str]:
    """Remove the old member's options the new one does not take, and the old member's
    values the file never wrote (a Config's defaults); return the written keys that went. A
    written key the old member did not take either (a typo) stays, for validation to name."""
    dropped = []
    for key in list(section):
        if key in overridden or (key in keep and key in explicit):
            continue
        if key in explicit and old is not None and key not in old:
            continue
        del section[key]
        if key in explicit and key not in keep:
            dropped.append(key)
    return dropped


def _note(switch: Switch, name: str, old: Any, dropped: list[str], where: str) -> str:
    dotted = ".".join(switch.path)
    keys = ", ".join(f"{dotted}.{key}" for key in dropped)
    return (
        f"{dotted}.{switch.key}={name}: dropped {keys} from {where} ({old} options that "
        f"{name} does not take)"
    )


def _section(raw: dict, path: tuple[str, ...]) -> dict | None:
    node: Any = raw
    for part in path:
        node = node.get(part) if isinstance(node, dict) else None
    return node if isinstance(node, dict) else None


def _keys_set_by(override_keys: list[tuple[str, ...]], path: tuple[str, ...]) -> set[str] | None:
    """The section's keys the overrides set; None where one replaced the section itself (or
    a section above it)."""
    keys = set()
    for key in override_keys:
        if len(key) <= len(path) and key == path[: len(key)]:
            return None
        if key[: len(path)] == path:
            keys.add(key[len(path)])
    return keys
