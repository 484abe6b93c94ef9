"""Spare workers (`parallel.ps.spare_workers`): which process hosts each logical worker, and
the hand-over when one dies. Server 0 keeps this book; the spares wait on it.

The RPC group has a fixed size on torch 2.13 (a process started later cannot join), so the
spares are launched with the job and wait. When logical worker k's process is lost, the
first free spare becomes k: it trains k's data shard from the step after the last one
server 0 saw from k (`position`), under a new incarnation number that fences any late push
of the dead process.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass


@dataclass(frozen=True)
class Takeover:
    """Spare `spare` continues logical worker `worker` after its step `step`."""

    worker: int
    spare: str
    step: int
    incarnation: int
    spare_rank: int

    def as_dict(self) -> dict:
        return {
            "worker": self.worker,
            "spare": self.spare,
            "step": self.step,
            "incarnation": self.incarnation,
            "spare_rank": self.spare_rank,
        }


class WorkerSlots:
    """Logical workers -> the RPC name hosting each, the free spares, each worker's position."""

    def __init__(self, num_workers: int, spares: list[str]):
        self.hosts = {worker: f"worker{worker}" for worker in range(num_workers)}
        self.free = list(spares)
        # the spares' global ranks: right after the workers' (`Roles`)
        self.ranks = {spare: num_workers + index for index, spare in enumerate(spares)}
        self.incarnations = dict.fromkeys(range(num_workers), 0)
        self.positions: dict[int, int] = {}  # worker -> the last loop step it reported done
        self.takeovers: list[Takeover] = []
        self._assigned: dict[str, Takeover] = {}
        self._released = False
        self._changed = threading.Condition()

    def report(self, worker: int, step: int) -> None:
        """`worker` finished loop step `step` (a push) or stands at it (a pull)."""
        with self._changed:
            self.positions[worker] = max(step, self.positions.get(worker, step))

    def start_step(self, worker: int) -> int:
        """Where a spare continues `worker`: its last reported step; one that never reported
        starts where the others started (0, or a resume's checkpoint step)."""
        if worker in self.positions:
            return self.positions[worker]
        return min(self.positions.values(), default=0)

    def take_over(self, worker: int) -> Takeover | None:
        """Hand `worker` to the first free spare; None when none is left."""
        with self._changed:
            if not self.free or self._released:
                return None
            spare = self.free.pop(0)
            self.incarnations[worker] += 1
            self.hosts[worker] = spare
            takeover = Takeover(
                worker, spare, self.start_step(worker), self.incarnations[worker], self.ranks[spare]
            )
            self.positions[worker] = takeover.step
            self.takeovers.append(takeover)
            self._assigned[spare] = takeover
            self._changed.notify_all()
            return takeover

    def spare_lost(self, spare: str) -> None:
        """A waiting spare died: it takes nothing over."""
        with self._changed:
            if spare in self.free:
                self.free.remove(spare)

    def release(self) -> None:
        """Training is over: every waiting spare may leave."""
        with self._changed:
            self._released = True
            self._changed.notify_all()

    def wait(self, spare: str, timeout_s: float | None = None) -> Takeover | None:
        """Block until `spare` takes over a worker (its takeover) or is released (None)."""
        with self._changed:
            self._changed.wait_for(
                lambda: spare in self._assigned or self._released, timeout=timeout_s
            )
            return self._assigned.get(spare)
