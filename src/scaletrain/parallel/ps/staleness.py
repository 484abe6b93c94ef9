"""The staleness gate: whether a pushed gradient is still fresh enough to apply.

A worker's gradient was computed on parameters at `base_version`; by the time it reaches the
server, `current_version - base_version` other updates (the staleness) may have landed. Up to
`tau` the gradient is applied as it is. Beyond `tau`:

- `drop`: it is discarded (bounded staleness in the strict sense: no applied update is older
  than `tau`);
- `scale`: it is applied with its step shrunk to `(tau + 1) / (staleness + 1)`. This is
  staleness-aware asynchronous SGD's `1 / staleness` rule (Zhang et al., IJCAI 2016, there
  with staleness counted from 1) shifted so that it starts at the bound: the factor is 1 at
  `staleness == tau`, decreases smoothly past it (no jump from 1 to 0.5 at `tau + 1` as
  `1 / (1 + staleness - tau)` would have) and never reaches 0, and with `tau = 0` it is
  exactly Zhang et al.'s `1 / (1 + staleness)`.

A base version newer than the server's (the server restarted from its last flush and lost the
updates the worker had pulled) is dropped in both modes, staleness negative: the worker must
pull again, and the runtime learns it from the decision.
"""

from __future__ import annotations

from typing import Literal, NamedTuple


class Decision(NamedTuple):
    """What to do with one pushed gradient (a tuple: `apply, scale, staleness = ...`)."""

    apply: bool
    scale: float
    staleness: int


class StalenessGate:
    """Decides apply / drop / down-weight from the versions a gradient was computed against."""

    def __init__(self, tau: int, mode: Literal["drop", "scale"]):
        if tau < 0:
            raise ValueError(f"tau must be >= 0, got {tau}")
        if mode not in ("drop", "scale"):
            raise ValueError(f"mode must be 'drop' or 'scale', got {mode!r}")
        self.tau = tau
        self.mode = mode

    def decide(self, *, base_version: int, current_version: int) -> Decision:
        """Apply, scale and staleness (`current_version - base_version`) for one gradient."""
        staleness = current_version - base_version
        if staleness < 0:
            return Decision(False, 0.0, staleness)
        if staleness <= self.tau:
            return Decision(True, 1.0, staleness)
        if self.mode == "drop":
            return Decision(False, 0.0, staleness)
        return Decision(True, (self.tau + 1) / (staleness + 1), staleness)
