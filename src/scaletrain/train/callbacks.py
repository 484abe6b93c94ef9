"""User callbacks: a duck-typed protocol of a few events; the trainer is never subclassed."""

from __future__ import annotations

from typing import Protocol

EVENTS = (
    "on_train_start",
    "on_step_end",
    "on_log",
    "on_validation",
    "on_epoch_end",
    "on_train_end",
)


class Callback(Protocol):
    """Implement any subset of: on_train_start(state), on_step_end(state),
    on_log(state, record), on_validation(state, record), on_epoch_end(state),
    on_train_end(state).

    ``on_log`` receives each record written to metrics.jsonl for training: the step window's
    (``record["split"] == "train"``, every ``log.every_steps``) and, at each epoch's end
    before ``on_epoch_end``, the epoch's (``"train_epoch"``: ``loss`` and ``metrics``).

    ``on_validation`` receives each validation's record (``"val"``: ``loss``, ``metrics``);
    a true return value stops training after this step (status ``stopped_early``; a pruned
    tune trial), on every rank when any rank's callback asks."""


class CallbackList:
    """`callbacks.on_step_end(state)` calls every callback's hook, in order; an event no
    callback implements costs one empty call (the loop calls some every step)."""

    def __init__(self, callbacks: list):
        self.implemented: set[str] = set()
        for event in EVENTS:
            hooks = [getattr(cb, event) for cb in callbacks if hasattr(cb, event)]
            setattr(self, event, _dispatcher(hooks))
            if hooks:
                self.implemented.add(event)


def _dispatcher(hooks: list):
    if not hooks:
        return _nothing
    if len(hooks) == 1:
        return hooks[0]

    def dispatch(*args) -> bool:
        answers = [hook(*args) for hook in hooks]  # every hook runs, then any may say stop
        return any(answers)

    return dispatch


def _nothing(*args) -> None:
    pass
