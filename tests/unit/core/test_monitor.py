from types import SimpleNamespace

import pytest

from scaletrain.config import EarlyStoppingConfig, MonitorConfig
from scaletrain.errors import ConfigError
from scaletrain.train.monitor import Monitor


def _state():
    return SimpleNamespace(step=0, best_value=None, best_step=None, evals_without_improvement=0)


@pytest.mark.parametrize(
    ("mode", "values", "patience", "stop_at"),
    [
        ("min", [1.0, 0.9, 0.95, 0.93, 0.92, 0.5], 3, 5),
        ("max", [0.1, 0.5, 0.4, 0.6, 0.6, 0.6], 2, 6),
        ("min", [3.0, 2.0, 1.0, 0.5], 1, None),
    ],
)
def test_early_stopping_on_a_constructed_sequence(mode, values, patience, stop_at):
    state = _state()
    monitor = Monitor(
        MonitorConfig(metric="val.score", mode=mode), EarlyStoppingConfig(patience=patience), state
    )
    stopped = None
    for index, value in enumerate(values, start=1):
        state.step = index * 10
        monitor.observe(SimpleNamespace(loss=0.0, metrics={"score": value}))
        if monitor.should_stop():
            stopped = index
            break
    assert stopped == stop_at
    best = min(values[:index]) if mode == "min" else max(values[:index])
    assert state.best_value == best


def test_min_delta_requires_a_real_improvement():
    state = _state()
    monitor = Monitor(MonitorConfig(), EarlyStoppingConfig(patience=2, min_delta=0.1), state)
    for value in (1.0, 0.95, 0.92):
        monitor.observe(SimpleNamespace(loss=value, metrics={}))
    assert state.best_value == 1.0 and monitor.should_stop()


def test_unknown_metric_names_the_key():
    monitor = Monitor(MonitorConfig(metric="val.acc"), EarlyStoppingConfig(), _state())
    with pytest.raises(ConfigError, match="train.monitor.metric.*val.accuracy"):
        monitor.observe(SimpleNamespace(loss=0.0, metrics={"accuracy": 1.0}))
