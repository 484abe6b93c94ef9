"""Hang diagnosis for multi-process runs: a per-rank heartbeat file and a stack-dump watchdog.

Every rank rewrites `heartbeat/rank_NNNNN.json` in the run directory after each step (one
small pwrite, no fsync). When a collective fails (e.g. it timed out after
`parallel.timeout_s`), the failing rank records the error, gives its peers a few seconds to
record theirs, and names the ranks that reported none: they never reached the collective.
A rank that itself makes no progress for `timeout_s + WATCHDOG_MARGIN_S` has its Python
stacks dumped to stderr by faulthandler and exits, so no process outlives the bound.
"""

from __future__ import annotations

import faulthandler
import json
import os
import socket
import sys
import time
from pathlib import Path

WATCHDOG_MARGIN_S = 15  # after a collective's own timeout: room for the others to report
PEER_GRACE_S = 5.0  # how long a failing rank waits for its peers' error records
_RECORD_BYTES = 512


class Heartbeat:
    """Collective-free; enabled for world_size > 1 only (one process cannot hang on a peer)."""

    def __init__(self, root: Path, *, rank: int, world_size: int, timeout_s: float):
        self.enabled = world_size > 1
        self.root, self.rank, self.world_size = root, rank, world_size
        self.watchdog_s = timeout_s + WATCHDOG_MARGIN_S
        self._fd: int | None = None
        if self.enabled:
            root.mkdir(parents=True, exist_ok=True)
            path = root / f"rank_{rank:05d}.json"
            self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)

    def beat(self, step: int, *, error: str | None = None, arm: bool = True) -> None:
        """Step `step` is complete; re-arm the watchdog (costs ~10 µs)."""
        if not self.enabled:
            return
        record = {
            "rank": self.rank,
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "step": step,
            "time": time.time(),
            "error": error,
        }
        os.pwrite(self._fd, json.dumps(record).encode().ljust(_RECORD_BYTES), 0)
        if arm and error is None:
            # no progress for this long: print every thread's stack to stderr and exit(1)
            faulthandler.dump_traceback_later(self.watchdog_s, exit=True, file=sys.stderr)

    def failed(self, step: int, error: BaseException) -> str | None:
        """Record this rank's error; return (and print) a line naming the stalled ranks."""
        if not self.enabled:
            return None
        faulthandler.cancel_dump_traceback_later()
        reason = (str(error).strip().splitlines() or [type(error).__name__])[-1][:200]
        self.beat(step, error=reason, arm=False)
        peers = self._wait_for_peers()
        silent = [peer for peer in peers if not peer.get("error")]
        if not silent:
            return None
        now = time.time()
        named = "; ".join(_describe(peer, now) for peer in silent)
        line = (
            f"rank {self.rank} failed during step {step + 1} ({reason}); stalled rank(s), "
            f"which never reached that collective: {named}"
        )
        print(f"error: {line}", file=sys.stderr, flush=True)
        error.add_note(line)
        return line

    def stop(self) -> None:
        """Disarm the watchdog (the loop is over: evaluation and teardown may take long)."""
        if self._fd is not None:
            faulthandler.cancel_dump_traceback_later()
            os.close(self._fd)
            self._fd = None

    def _wait_for_peers(self) -> list[dict]:
        deadline = time.monotonic() + PEER_GRACE_S
        while True:
            peers = [
                read_heartbeat(self.root, rank) or {"rank": rank, "step": None}
                for rank in range(self.world_size)
                if rank != self.rank
            ]
            if all(p.get("error") for p in peers) or time.monotonic() > deadline:
                return peers
            time.sleep(0.2)


def _describe(peer: dict, now: float) -> str:
    if peer["step"] is None:
        return f"rank {peer['rank']}: no heartbeat yet (it never completed a step)"
    return (
        f"rank {peer['rank']} (pid {peer['pid']} on {peer['host']}): last completed step "
        f"{peer['step']}, {now - peer['time']:.0f} s ago, reported no error"
    )


def read_heartbeat(root: Path, rank: int) -> dict | None:
    """A rank's last record, or None if it never wrote one."""
    try:
        return json.loads((root / f"rank_{rank:05d}.json").read_bytes().rstrip(b" \0") or b"null")
    except (FileNotFoundError, json.JSONDecodeError):
        return None
