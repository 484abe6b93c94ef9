"""User callbacks: a duck-typed protocol of a few events; the trainer is never subclassed."""

from __future__ import annotations

from typing import Protocol

EVENTS = ("on_train_start", "on_step_end", "on_log", "on_epoch_end", "on_train_end")


class Callback(Protocol):
    """Implement any subset of: on_train_start(state), on_step_end(state),
    on_log(state, record), on_epoch_end(state), on_train_end(state)."""


class CallbackList:
    def __init__(self, callbacks: list):
        self._hooks = {
            event: [getattr(cb, event) for cb in callbacks if hasattr(cb, event)]
            for event in EVENTS
        }

    def __getattr__(self, event: str):
        hooks = self._hooks.get(event)
        if hooks is None:
            raise AttributeError(event)
        return lambda *args: [hook(*args) for hook in hooks] and None
