"""A notice board for the launchers of a multi-node ensemble: a TCPStore that node 0 hosts at
its `--rdzv-endpoint` and the other nodes join. Members never communicate; the launchers only
post small JSON notes (node 0's plan, each node's outcomes) and poll for them, so a
Ctrl-C or SIGTERM is noticed within a poll."""

from __future__ import annotations

import json
import time
from datetime import timedelta

from torch.distributed import TCPStore

from scaletrain.errors import UserError

POLL_S = 0.5


class NodeBoard:
    def __init__(self, endpoint: str, *, is_host: bool, timeout_s: int):
        host, _, port = endpoint.rpartition(":")
        if not host or not port.isdigit():
            raise UserError(f"--rdzv-endpoint: expected HOST:PORT of node 0, got {endpoint!r}")
        self.endpoint = endpoint
        try:  # a joining node retries the connection until timeout_s
            self._store = TCPStore(
                host, int(port), is_master=is_host, timeout=timedelta(seconds=timeout_s),
                wait_for_workers=False,
            )  # fmt: skip
        except (RuntimeError, OSError) as error:
            what = "host the board on" if is_host else "reach node 0 at"
            raise UserError(
                f"--rdzv-endpoint {endpoint}: cannot {what} it within {timeout_s} s "
                f"({str(error).splitlines()[0]}); check the address, the port and that node 0 "
                "runs the same command with --node-rank 0"
            ) from None

    def post(self, key: str, note: dict) -> None:
        try:
            self._store.set(key, json.dumps(note))
        except (RuntimeError, OSError) as error:
            raise UserError(
                f"node 0's board at {self.endpoint} is gone ({str(error).splitlines()[0]}); "
                "the members trained here are saved: resume the ensemble from node 0"
            ) from None

    def read(self, key: str) -> dict | None:
        """The note under `key`, or None while nobody posted it (never blocks)."""
        if not self._store.check([key]):
            return None
        return json.loads(self._store.get(key))

    def wait_any(self, keys: list[str], *, timeout_s: float | None = None) -> tuple[str, dict]:
        """The first of `keys` posted, and its note; UserError after `timeout_s`."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while deadline is None or time.monotonic() < deadline:
            for key in keys:
                note = self.read(key)
                if note is not None:
                    return key, note
            time.sleep(POLL_S)
        raise UserError(
            f"--rdzv-endpoint {self.endpoint}: nothing from node 0 within {timeout_s} s "
            f"(waiting for {keys[0]!r}); is node 0 running the same command?"
        )
