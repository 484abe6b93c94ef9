"""Preemption: SIGTERM/SIGINT set a flag the loop reads at step boundaries, never mid-step."""

from __future__ import annotations

import signal
import threading


class StopRequest:
    """While active, the first SIGTERM or SIGINT is recorded; a second SIGINT interrupts now.

    Nested (an ensemble's members trained in turn): a signal the outer one recorded before
    the inner became active (a member's setup) counts for the inner too, and one the inner
    records reaches the outer, so the caller stops before its next member."""

    def __init__(self):
        self.signum: int | None = None
        self._previous: dict[int, object] = {}
        self._outer: StopRequest | None = None

    def __enter__(self) -> StopRequest:
        if threading.current_thread() is threading.main_thread():
            for signum in (signal.SIGTERM, signal.SIGINT):
                self._previous[signum] = signal.signal(signum, self._handle)
            outer = getattr(self._previous[signal.SIGTERM], "__self__", None)
            if isinstance(outer, StopRequest):
                self._outer, self.signum = outer, outer.signum
        return self

    def __exit__(self, *exc) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)

    @property
    def requested(self) -> bool:
        return self.signum is not None

    @property
    def exit_code(self) -> int:
        """The shell convention: 128 + signal number (143 for SIGTERM, 130 for SIGINT)."""
        return 128 + (self.signum or signal.SIGINT)

    def _handle(self, signum: int, frame) -> None:
        if self.signum == signal.SIGINT and signum == signal.SIGINT:
            raise KeyboardInterrupt  # impatient second Ctrl-C
        self.signum = signum
        if self._outer is not None and self._outer.signum is None:
            self._outer.signum = signum
