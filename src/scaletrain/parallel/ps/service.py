"""The server side of the asynchronous parameter server: pushes are gated by staleness,
applied by the shard's optimizer one at a time, and logged in the order applied.

RPC calls module-level functions by reference, so each server process holds its one
`ParameterServer` in `_SERVER`; a push that arrives before the store is built waits for it.
"""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from pathlib import Path

import torch

from scaletrain.parallel.ps.slots import Takeover, WorkerSlots

_SERVER: ParameterServer | None = None
_READY = threading.Event()


def tensor_bytes(tensors: dict[str, torch.Tensor] | None) -> int:
    if not tensors:
        return 0
    return sum(tensor.numel() * tensor.element_size() for tensor in tensors.values())


class ParameterServer:
    """One shard's parameters behind a lock: gate, apply, log; workers come and go."""

    def __init__(
        self,
        index: int,
        *,
        store,
        gate,
        log_path: Path | None,
        num_workers: int,
        slots: WorkerSlots | None = None,
    ):
        self.index, self.store, self.gate = index, store, gate
        self.num_workers = num_workers
        # server 0's book of which process hosts each logical worker (spare workers)
        self.slots = slots
        self.incarnations: dict[int, int] = {}  # worker -> newest incarnation seen (a fence)
        self.lock = threading.Lock()  # RPC handlers run on a thread pool: one update at a time
        self.trained = threading.Event()  # every worker finished training (or died)
        self.finished = threading.Event()  # every worker left: nobody calls any more
        self.done: set[int] = set()
        self.left: set[int] = set()
        self.lost: list[int] = []  # workers that died, in the order noticed
        self.rejoined: list[dict] = []  # takeovers by spare workers, in order
        # worker_lost / worker_rejoined records, timed; a resumed server 0 recalls earlier ones
        self.membership: list[dict] = []
        self.failure: Exception | None = None  # an update that failed halfway
        self.staleness = Counter()  # staleness of each push -> how many
        self.counts = Counter()  # applied, dropped, scaled, bytes_pushed, bytes_pulled
        self.workers: dict[int, dict] = {}  # worker -> pushes, dropped, first/last push time
        # line-buffered: a killed server's log still says what it had applied
        self._log = _open_log(log_path) if log_path else None
        self._started = time.time()

    def push(
        self, worker: int, step: int, base_version: int, grads: dict, lr: float, incarnation=0
    ):
        """Apply a worker's gradient computed on `base_version`, unless too stale; returns
        (applied, staleness, version, parameters if they changed since base_version).
        `step` is the worker's loop step; a push of a replaced process is refused."""
        with self.lock:
            if incarnation < self.incarnations.setdefault(worker, incarnation):
                self._write({"event": "push_of_replaced_process", "worker": worker, "step": step})
                raise RuntimeError(f"worker {worker} incarnation {incarnation} was replaced")
            self.incarnations[worker] = incarnation
            if self.slots is not None:
                self.slots.report(worker, step)
            current = self.store.version
            applied, scale, staleness = self.gate.decide(
                base_version=base_version, current_version=current
            )
            if applied:
                self._guarded(lambda: self.store.apply(grads, scale=scale, lr=lr, commit=False))
            self._count(staleness, applied=applied, scale=scale, pushed=tensor_bytes(grads))
            self._seen(worker, step, dropped=not applied)
            self._write(
                {
                    "version": self.store.version,
                    "worker": worker,
                    "step": step,
                    "base_version": base_version,
                    "staleness": staleness,
                    "applied": applied,
                    "scale": scale,
                    "lr": lr,
                }
            )
            # committed after its log line: a kill between the two leaves the log ahead of
            # the shards (an update lost after the last commit), never behind them
            self._guarded(self.store.commit_if_due)
            return (applied, staleness, *self._reply(base_version))

    def _guarded(self, action) -> None:
        """Run a store write; one that fails leaves the store torn: this server stops."""
        try:
            action()
        except Exception as error:
            self.failure = error
            self.finished.set()
            raise

    def pull(self, known_version: int, worker: int | None = None, step: int = 0):
        """(version, parameters) where they changed since `known_version`, else (version, None);
        a worker's pull also says which loop step it stands at."""
        with self.lock:
            if self.slots is not None and worker is not None:
                self.slots.report(worker, step)
            return self._reply(known_version)

    def _reply(self, known_version: int):
        version = self.store.version
        params = None if version == known_version else self.store.read()
        self.counts["bytes_pulled"] += tensor_bytes(params)
        return version, params

    def _count(self, staleness: int, *, applied: bool, scale: float, pushed: int) -> None:
        self.staleness[staleness] += 1
        self.counts["bytes_pushed"] += pushed
        if not applied:
            self.counts["dropped"] += 1
        else:
            self.counts["applied"] += 1
            self.counts["scaled"] += scale != 1.0

    def _seen(self, worker: int, step: int, *, dropped: bool) -> None:
        now = time.time()
        seen = self.workers.setdefault(worker, {"pushes": 0, "dropped": 0, "first": now})
        seen["pushes"] += 1
        seen["dropped"] += dropped
        seen["last"], seen["step"] = now, step

    def _write(self, record: dict) -> None:
        if self._log is not None:
            self._log.write(json.dumps(record) + "\n")

    def worker_done(self, worker: int) -> None:
        """`worker` took its last step (it may still pull, to evaluate)."""
        with self.lock:
            self.done.add(worker)
            if len(self.done) >= self.num_workers:
                self.trained.set()

    def worker_left(self, worker: int) -> None:
        """`worker` will call no more: when all have left, the server may close."""
        with self.lock:
            self.done.add(worker)
            self.left.add(worker)
            if len(self.done) >= self.num_workers:
                self.trained.set()
            if len(self.left) >= self.num_workers:
                self.finished.set()

    def worker_lost(self, worker: int) -> Takeover | None:
        """`worker` died: a free spare takes it over (server 0, while it still trains), or
        training goes on without it; either is logged and counted."""
        with self.lock:
            if worker in self.left:
                return None
            self.lost.append(worker)
            version = self.store.version
            process = {"process": self.slots.hosts[worker]} if self.slots is not None else {}
            self._event({"event": "worker_lost", "worker": worker, "version": version, **process})
            takeover = None
            # worker 0 writes the run directory: its loss stops the job, no spare becomes it
            if self.slots is not None and worker != 0 and worker not in self.done:
                takeover = self.slots.take_over(worker)
            if takeover is not None:
                self.incarnations[worker] = takeover.incarnation  # fence the dead process
                self._event({"event": "worker_rejoined", **takeover.as_dict(), "version": version})
                self.rejoined.append(_takeover(self.membership[-1]))
                return takeover
        self.worker_left(worker)
        return None

    def _event(self, record: dict) -> None:
        """A membership record: logged and kept, with when it happened."""
        when = {"time": time.time(), "run_step": self.workers.get(0, {}).get("step")}
        self.membership.append({**record, **when})
        self._write(self.membership[-1])

    def recall(self, history: list[dict]) -> None:
        """A resumed server 0: the earlier attempts' losses and takeovers (`read_history` of
        its log) stay in the run's account, before this attempt's own."""
        with self.lock:
            self.membership[:0] = history
            self.lost[:0] = [r["worker"] for r in history if r["event"] == "worker_lost"]
            earlier = [r for r in history if r["event"] == "worker_rejoined"]
            self.rejoined[:0] = [_takeover(record) for record in earlier]

    def wait_trained(self, timeout_s: float) -> dict:
        """Block until every worker finished training; then this server's summary."""
        self.trained.wait(timeout_s)
        with self.lock:
            return self.summary()

    def summary(self) -> dict:
        """What this server did, for the run directory's ps/ folder and the report."""
        return {
            "server": self.index,
            "version": self.store.version,
            "applied": self.counts["applied"],
            "dropped": self.counts["dropped"],
            "scaled": self.counts["scaled"],
            "bytes_pushed": self.counts["bytes_pushed"],
            "bytes_pulled": self.counts["bytes_pulled"],
            "staleness_histogram": {str(key): n for key, n in sorted(self.staleness.items())},
            "workers": {
                str(worker): {
                    "pushes": seen["pushes"],
                    "dropped": seen["dropped"],
                    "seconds": seen["last"] - seen["first"],
                }
                for worker, seen in sorted(self.workers.items())
            },
            "seconds": time.time() - self._started,
            "lost_workers": list(self.lost),
            "rejoined": list(self.rejoined),
            "membership": list(self.membership),
        }

    def close(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None


def _open_log(path: Path):
    """Append, line-buffered; after a line a kill cut short, from a new line (so the cut
    one stays the only unreadable record, and this attempt's first is whole)."""
    cut = False
    if path.is_file() and path.stat().st_size:
        with path.open("rb") as file:
            file.seek(-1, 2)
            cut = file.read(1) != b"\n"
    log = path.open("a", encoding="utf-8", buffering=1)
    if cut:
        log.write("\n")
    return log


def _takeover(record: dict) -> dict:
    """A worker_rejoined record as the summary lists takeovers."""
    return {key: value for key, value in record.items() if key != "event"}


def install(server: ParameterServer) -> None:
    """Make `server` the one this process's RPC handlers use."""
    global _SERVER
    _SERVER = server
    _READY.set()


def abandon() -> None:
    """This process will never serve (its start failed): answer waiting calls with an error
    now, or RPC's shutdown would wait for them."""
    _READY.set()


def _abandoned(timeout_s: float = 600.0) -> bool:
    """This process will never serve (waits while it may still start)."""
    return _READY.wait(timeout_s) and _SERVER is None


def _server(timeout_s: float = 600.0) -> ParameterServer:
    if not _READY.wait(timeout_s) or _SERVER is None:
        raise RuntimeError("this parameter server failed to start")
    return _SERVER


# --- RPC entry points (run on the server, called by workers) -------------------------------
def rpc_push(worker: int, step: int, base_version: int, grads: dict, lr: float, incarnation=0):
    return _server().push(worker, step, base_version, grads, lr, incarnation)


def rpc_pull(known_version: int, worker: int | None = None, step: int = 0):
    return _server().pull(known_version, worker, step)


def rpc_worker_done(worker: int) -> None:
    _server().worker_done(worker)


def rpc_ping() -> bool:
    return True


def rpc_worker_left(worker: int) -> None:
    if _abandoned():  # it never served (bad input): nothing to tell, no remote traceback
        return
    _server().worker_left(worker)


def rpc_wait_trained(timeout_s: float) -> dict:
    return _server().wait_trained(timeout_s)


def rpc_worker_lost(worker: int) -> None:  # from server 0: lost for good, stop waiting too
    _server().worker_lost(worker)


def rpc_wait_for_slot(spare: str) -> dict | None:
    """A spare waits here (on server 0) until it takes over a worker, or the run ends."""
    if _abandoned():
        return None
    takeover = _server().slots.wait(spare)
    return None if takeover is None else takeover.as_dict()
