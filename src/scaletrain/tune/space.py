"""A search space read from SPACE.yaml: any config key as a float (linear/log), an int (step)
or a categorical, optionally only `when` earlier keys hold given values; checked against the
config before any trial runs."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from scaletrain.errors import ConfigError

KINDS = ("float", "int", "categorical", "lr_find")
_OPTIONS = {
    "float": {"type", "low", "high", "log", "step", "when"},
    "int": {"type", "low", "high", "log", "step", "when"},
    "categorical": {"type", "choices", "when"},
    "lr_find": {"type", "factor", "when"},
}


@dataclass(frozen=True)
class Param:
    """One config key to search; `when` maps earlier keys to the values that enable it."""

    key: str
    kind: str
    low: float | None = None
    high: float | None = None
    log: bool = False
    step: float | None = None
    choices: tuple = ()
    when: dict = field(default_factory=dict)
    factor: float = 10.0  # lr_find: [suggestion / factor, suggestion * factor]

    def enabled(self, values: dict) -> bool:
        """True where every `when` key took one of its listed values."""
        return all(key in values and values[key] in allowed for key, allowed in self.when.items())

    def suggest(self, trial):
        """The value an Optuna trial samples for this key."""
        if self.kind == "categorical":
            return trial.suggest_categorical(self.key, list(self.choices))
        if self.kind == "int":
            return trial.suggest_int(
                self.key, int(self.low), int(self.high), step=int(self.step or 1), log=self.log
            )
        return trial.suggest_float(self.key, self.low, self.high, step=self.step, log=self.log)

    def to_dict(self) -> dict:
        out = {"type": self.kind}
        if self.kind == "categorical":
            out["choices"] = list(self.choices)
        else:
            out.update(low=self.low, high=self.high)
            if self.log:
                out["log"] = True
            if self.step is not None:
                out["step"] = self.step
        if self.when:
            out["when"] = {key: list(allowed) for key, allowed in self.when.items()}
        return out


@dataclass(frozen=True)
class SearchSpace:
    params: tuple[Param, ...]
    source: str  # the file, for messages

    def sample(self, trial) -> dict:
        """The config values of one trial: keys in file order, a conditional key only where
        its condition holds (it is never even suggested otherwise)."""
        values: dict = {}
        for param in self.params:
            if param.enabled(values):
                values[param.key] = param.suggest(trial)
        return values

    def to_yaml(self) -> str:
        return yaml.safe_dump({p.key: p.to_dict() for p in self.params}, sort_keys=False)

    def needs_lr_find(self) -> Param | None:
        return next((p for p in self.params if p.kind == "lr_find"), None)

    def with_lr_range(self, suggestion: float) -> SearchSpace:
        """`lr_find` keys become log floats around the range test's suggestion."""
        params = tuple(
            Param(p.key, "float", suggestion / p.factor, suggestion * p.factor, True, when=p.when)
            if p.kind == "lr_find"
            else p
            for p in self.params
        )
        return SearchSpace(params, self.source)


def overrides_for(values: dict) -> list[str]:
    """`KEY=VALUE` overrides (JSON scalars are YAML the config reads back as typed)."""
    return [f"{key}={json.dumps(value)}" for key, value in values.items()]


def read_space(path: str | Path) -> SearchSpace:
    """Parse SPACE.yaml; each mistake is one line naming the file and key."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"search space file not found: {path}")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from None
    if not isinstance(raw, dict) or not raw:
        raise ConfigError(f"{path}: expected a mapping of config keys to ranges, e.g. optim.lr:")
    params: list[Param] = []
    for key, spec in raw.items():
        params.append(_param(str(key), spec, where=f"{path}: {key}", earlier=params))
    return SearchSpace(tuple(params), str(path))


def _param(key: str, spec, *, where: str, earlier: list[Param]) -> Param:
    if spec == "lr_find":
        spec = {"type": "lr_find"}
    if not isinstance(spec, dict) or spec.get("type") not in KINDS:
        raise ConfigError(f"{where}: expected a mapping with type: one of {', '.join(KINDS)}")
    kind = spec["type"]
    unknown = set(spec) - _OPTIONS[kind]
    if unknown:
        allowed = ", ".join(sorted(_OPTIONS[kind]))
        raise ConfigError(
            f"{where}: unknown option {sorted(unknown)[0]!r} (a {kind} takes {allowed})"
        )
    when = _when(spec.get("when", {}), where=where, earlier=earlier)
    if kind == "categorical":
        return Param(key, kind, choices=_choices(spec.get("choices"), where), when=when)
    if kind == "lr_find":
        factor = spec.get("factor", 10.0)
        if not _number(factor) or factor <= 1:
            raise ConfigError(f"{where}.factor: expected a number > 1, got {factor!r}")
        if key != "optim.lr":
            raise ConfigError(f"{where}: type lr_find is only for optim.lr")
        return Param(key, kind, factor=float(factor), when=when)
    return _numeric(key, kind, spec, where=where, when=when)


def _numeric(key: str, kind: str, spec: dict, *, where: str, when: dict) -> Param:
    low, high, step, log = (
        spec.get("low"),
        spec.get("high"),
        spec.get("step"),
        spec.get("log", False),
    )
    for name, value in (("low", low), ("high", high)):
        if not _number(value) or (kind == "int" and value != int(value)):
            raise ConfigError(
                f"{where}.{name}: expected {'an integer' if kind == 'int' else 'a number'}, got {value!r}"
            )
    if not low < high:
        raise ConfigError(f"{where}: low must be < high, got low={low} high={high}")
    if not isinstance(log, bool):
        raise ConfigError(f"{where}.log: expected true or false, got {log!r}")
    if log and low <= 0:
        raise ConfigError(f"{where}: a log range needs low > 0, got {low}")
    if step is not None and (not _number(step) or step <= 0 or log):
        raise ConfigError(f"{where}.step: expected a number > 0 (and no log), got {step!r}")
    return Param(key, kind, float(low), float(high), log, step, when=when)


def _choices(choices, where: str) -> tuple:
    if not isinstance(choices, list) or not choices:
        raise ConfigError(f"{where}.choices: expected a non-empty list, got {choices!r}")
    for choice in choices:
        if not (choice is None or isinstance(choice, bool | int | float | str)):
            raise ConfigError(f"{where}.choices: {choice!r} is not a number, string or bool")
    return tuple(choices)


def _when(when, *, where: str, earlier: list[Param]) -> dict:
    if not isinstance(when, dict):
        raise ConfigError(f"{where}.when: expected a mapping KEY: VALUE or KEY: [VALUES]")
    known = {param.key: param for param in earlier}
    out = {}
    for key, allowed in when.items():
        if key not in known or known[key].kind != "categorical":
            raise ConfigError(
                f"{where}.when: {key} must be a categorical key listed earlier in the space"
            )
        allowed = tuple(allowed) if isinstance(allowed, list) else (allowed,)
        missing = [value for value in allowed if value not in known[key].choices]
        if missing:
            raise ConfigError(f"{where}.when: {key} has no choice {missing[0]!r}")
        out[key] = allowed
    return out


def _number(value) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
