"""Every value a search space can give, tried on the config before any trial runs: a key the
config does not have, or a bound it refuses, is one line naming the space file and key."""

from __future__ import annotations

import warnings

from scaletrain.choices import ConfigNote
from scaletrain.config import Config, load_config
from scaletrain.errors import ConfigError
from scaletrain.tune.space import Param, SearchSpace, overrides_for


def check_space(space: SearchSpace, config: str | Config, overrides: list[str] = ()) -> None:
    """Load the config with each bound (each choice) of each key, its conditions satisfied."""
    by_key = {param.key: param for param in space.params}
    for param in space.params:
        if param.kind == "lr_find":
            continue  # its range exists once the range test ran (checked again then)
        enabling = _enabling(param, by_key)
        for value in _extremes(param):
            values = {**enabling, param.key: value}
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", ConfigNote)  # a switched choice: expected
                    load_config(config, [*overrides, *overrides_for(values)])
            except ConfigError as exc:
                raise ConfigError(f"{space.source}: {param.key}={value}: {exc}") from None


def _enabling(param: Param, by_key: dict[str, Param]) -> dict:
    """Values of earlier keys under which `param` is sampled (first allowed of each)."""
    values: dict = {}
    for key, allowed in param.when.items():
        values.update(_enabling(by_key[key], by_key))
        values[key] = allowed[0]
    return values


def _extremes(param: Param) -> list:
    if param.kind == "categorical":
        return list(param.choices)
    if param.kind == "int":
        step = int(param.step or 1)
        low, high = int(param.low), int(param.high)
        return [low, low + (high - low) // step * step]
    return [param.low, param.high]
