"""What torch's RPC allows a restarted async_ps worker (docs/distributed.md, "Why a
restarted worker cannot rejoin yet"): in a dynamic-membership group a worker killed with
SIGKILL stays registered, so a restart under its name and rank is refused. (A restart under
a fresh name must call every registered member, the dead one too: it failed or hung in most
tries, so it is documented, not tested.)"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

MEMBER = Path(__file__).with_name("rpc_member.py")


def _port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _start(name: str, rank: int, folder: Path, port: int) -> subprocess.Popen:
    env = {**os.environ, "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)}
    return subprocess.Popen(
        [sys.executable, str(MEMBER), name, str(rank), str(folder)],
        env=env,
        stderr=subprocess.DEVNULL,
    )


def _record(folder: Path, name: str, timeout_s: float = 60.0) -> dict:
    path = folder / f"{name}.json"
    deadline = time.monotonic() + timeout_s
    while not path.exists():
        assert time.monotonic() < deadline, f"{name} never wrote {path.name}"
        time.sleep(0.1)
    time.sleep(0.05)  # written in one call; let it land
    return json.loads(path.read_text())


def test_a_killed_worker_cannot_rejoin_under_its_own_name(tmp_path):
    port = _port()
    # worker0 holds the store (rank 0), as in async_ps
    processes = [_start("worker0", 0, tmp_path, port), _start("server", 1, tmp_path, port)]
    try:
        victim = _start("worker1", 2, tmp_path, port)
        processes.append(victim)
        server_pid = _record(tmp_path, "server")["pid"]
        assert _record(tmp_path, "worker1")["server_pid"] == server_pid
        victim.send_signal(signal.SIGKILL)
        victim.wait(timeout=10)
        (tmp_path / "worker1.json").unlink()

        same = _start("worker1", 2, tmp_path, port)
        processes.append(same)
        refused = _record(tmp_path, "worker1")
        assert not refused["joined"]
        assert "not unique" in refused["error"]
        assert _record(tmp_path, "worker0")["server_pid"] == server_pid
    finally:  # leaving may hang on the dead member: what is left after 5 s is killed
        (tmp_path / "stop").touch()
        for process in processes:
            try:
                process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
