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
    ):
        self.index, self.store, self.gate = index, store, gate
        self.num_workers = num_workers
        self.lock = threading.Lock()  # RPC handlers run on a thread pool: one update at a time
        self.trained = threading.Event()  # every worker finished training (or died)
        self.finished = threading.Event()  # every worker left: nobody calls any more
        self.done: set[int] = set()
        self.left: set[int] = set()
        self.lost: list[int] = []  # workers that died, in the order noticed
        self.failure: Exception | None = None  # an update that failed halfway
        self.staleness = Counter()  # staleness of each push -> how many
        self.counts = Counter()  # applied, dropped, scaled, bytes_pushed, bytes_pulled
        self.workers: dict[int, dict] = {}  # worker -> pushes, dropped, first/last push time
        # line-buffered: a killed server's log still says what it had applied
        self._log = log_path.open("a", encoding="utf-8", buffering=1) if log_path else None
        self._started = time.time()

    def push(self, worker: int, step: int, base_version: int, grads: dict, lr: float):
        """Apply a worker's gradient computed on `base_version`, unless too stale; returns
        (applied, staleness, version, parameters if they changed since base_version)."""
        with self.lock:
            current = self.store.version
            applied, scale, staleness = self.gate.decide(
                base_version=base_version, current_version=current
            )
            if applied:
                try:
                    self.store.apply(grads, scale=scale, lr=lr)
                except Exception as error:  # the store is torn: this server stops
                    self.failure = error
                    self.finished.set()
                    raise
            self._count(staleness, applied=applied, scale=scale, pushed=tensor_bytes(grads))
            self._seen(worker, dropped=not applied)
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
            return (applied, staleness, *self._reply(base_version))

    def pull(self, known_version: int):
        """(version, parameters) where they changed since `known_version`, else (version, None)."""
        with self.lock:
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

    def _seen(self, worker: int, *, dropped: bool) -> None:
        now = time.time()
        seen = self.workers.setdefault(worker, {"pushes": 0, "dropped": 0, "first": now})
        seen["pushes"] += 1
        seen["dropped"] += dropped
        seen["last"] = now

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

    def worker_lost(self, worker: int) -> None:
        """`worker` died: training goes on without it (it is logged and counted)."""
        with self.lock:
            if worker in self.left:
                return
            self.lost.append(worker)
            self._write({"event": "worker_lost", "worker": worker, "version": self.store.version})
        self.worker_left(worker)

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
        }

    def close(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None


def ps_record(servers: list[dict], *, samples_per_step: int) -> dict:
    """The job's counts from every server's summary: per worker samples/s, the staleness
    histogram, dropped and scaled updates, bytes pushed and pulled."""
    histogram: dict[str, int] = {}
    for summary in servers:
        for key, count in summary["staleness_histogram"].items():
            histogram[key] = histogram.get(key, 0) + count
    first = servers[0]["workers"]  # every worker pushes to every server: server 0 saw all
    workers = {
        name: {
            "pushes": seen["pushes"],
            # pushes after the first over the time between the first and the last push
            "samples_per_s": (seen["pushes"] - 1) * samples_per_step / max(seen["seconds"], 1e-9),
        }
        for name, seen in first.items()
    }
    return {
        "servers": len(servers),
        "updates": sum(summary["applied"] for summary in servers),
        "dropped": sum(summary["dropped"] for summary in servers),
        "scaled": sum(summary["scaled"] for summary in servers),
        "bytes_pushed": sum(summary["bytes_pushed"] for summary in servers),
        "bytes_pulled": sum(summary["bytes_pulled"] for summary in servers),
        "staleness_histogram": dict(sorted(histogram.items(), key=lambda item: int(item[0]))),
        "workers": workers,
        "lost_workers": sorted({w for summary in servers for w in summary["lost_workers"]}),
    }


def install(server: ParameterServer) -> None:
    """Make `server` the one this process's RPC handlers use."""
    global _SERVER
    _SERVER = server
    _READY.set()


def abandon() -> None:
    """This process will never serve (its start failed): answer waiting calls with an error
    now, or RPC's shutdown would wait for them."""
    _READY.set()


def _server(timeout_s: float = 600.0) -> ParameterServer:
    if not _READY.wait(timeout_s) or _SERVER is None:
        raise RuntimeError("this parameter server failed to start")
    return _SERVER


# --- RPC entry points (run on the server, called by workers) -------------------------------
def rpc_push(worker: int, step: int, base_version: int, grads: dict, lr: float):
    return _server().push(worker, step, base_version, grads, lr)


def rpc_pull(known_version: int):
    return _server().pull(known_version)


def rpc_worker_done(worker: int) -> None:
    _server().worker_done(worker)


def rpc_ping() -> bool:
    return True


def rpc_worker_left(worker: int) -> None:
    _server().worker_left(worker)


def rpc_wait_trained(timeout_s: float) -> dict:
    return _server().wait_trained(timeout_s)
