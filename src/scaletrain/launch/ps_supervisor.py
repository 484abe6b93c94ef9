"""`--nproc N` (and `--nnodes M`) for `parallel.strategy: async_ps`: our own supervisor on
each node instead of torchrun's agent, which stops every process of every node when one
fails. Here a worker that dies is reported and the others train on (server 0 notices it
too: a spare takes its place, or the servers stop waiting for it); a server that dies, or
worker 0 (the rank that writes the run directory), stops the job with one line naming it.
Each process gets the variables torchrun would give it; on M nodes node R runs global ranks
R x N .. R x N + N - 1 and rank 0 (on node 0) holds the RPC rendezvous at --rdzv-endpoint.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass

from scaletrain.launch.torchrun import (
    LaunchError,
    LaunchFlagError,
    LaunchOptions,
    _check_port_free,
)

POLL_S = 0.1
# worker 0's exit code after it reported a lost server itself (parallel/ps/worker.py's
# ServerLostError; not imported: that would import torch into the launcher)
SERVER_LOST_EXIT = 3
STOP_GRACE_S = 5.0  # SIGTERM, then SIGKILL after this long
# worker 0 notices a lost server at its next push and prints the one line itself; on a
# loaded machine that took longer than STOP_GRACE_S (two lines then), so wait longer for it
SERVER_LOST_REPORT_S = 60.0


@dataclass
class Child:
    rank: int
    process: subprocess.Popen
    role: str  # worker | spare | server

    @property
    def label(self) -> str:
        if self.role == "server":
            return f"parameter server (rank {self.rank}, pid {self.process.pid})"
        if self.role == "spare":
            return f"spare worker rank {self.rank} (pid {self.process.pid})"
        return f"worker rank {self.rank} (pid {self.process.pid})"


def supervise(options: LaunchOptions, command: list[str], *, servers: int, spares: int = 0) -> int:
    """Run `scaletrain COMMAND` in `options.nproc` local processes: the last `servers` serve,
    the `spares` before them wait to take over a lost worker (parallel.ps.spare_workers)."""
    address = _rendezvous(options)
    world = options.nproc * options.nnodes
    first = options.node_rank * options.nproc  # this node's first global rank
    threads = max(1, (os.cpu_count() or 1) // options.nproc)
    children = []
    for local in range(options.nproc):
        rank = first + local
        role = _role(rank, world, servers=servers, spares=spares)
        ranks = _Ranks(rank, local, world, options.nproc)
        children.append(Child(rank, _spawn(ranks, address, threads, command), role))
    try:
        return _watch(children, spares=spares)
    except KeyboardInterrupt:
        _stop(children, signal.SIGINT)
        raise
    finally:
        _stop(children, signal.SIGTERM)


def _role(rank: int, nproc: int, *, servers: int, spares: int) -> str:
    """Workers first, then spares, then servers (parallel/ps/roles.py, which says it again)."""
    if rank >= nproc - servers:
        return "server"
    return "spare" if rank >= nproc - servers - spares else "worker"


@dataclass(frozen=True)
class _Ranks:
    rank: int
    local_rank: int
    world_size: int
    local_world_size: int


def _rendezvous(options: LaunchOptions) -> tuple[str, int]:
    """(MASTER_ADDR, MASTER_PORT): a free local port on one node, else --rdzv-endpoint
    (node 0's address, where rank 0 binds the RPC store; fixed node count only)."""
    if options.nnodes == 1:
        return "127.0.0.1", _free_port()
    if options.is_elastic:
        raise LaunchFlagError(
            f"--nnodes {options.nnodes_spec}: parallel.strategy=async_ps needs a fixed number "
            "of nodes (its RPC group has a fixed size); use --nnodes N"
        )
    if options.node_rank == 0:
        _check_port_free(options.rdzv_endpoint)
    host, _, port = options.rdzv_endpoint.rpartition(":")
    return host, int(port)


def _spawn(ranks: _Ranks, address: tuple[str, int], threads: int, command: list[str]):
    host, port = address
    env = {
        **os.environ,
        "RANK": str(ranks.rank),
        "LOCAL_RANK": str(ranks.local_rank),
        "WORLD_SIZE": str(ranks.world_size),
        "LOCAL_WORLD_SIZE": str(ranks.local_world_size),
        "MASTER_ADDR": host,
        "MASTER_PORT": str(port),
        "TORCHELASTIC_RUN_ID": f"scaletrain-ps-{port}",  # a launched worker: never relaunch
    }
    env.setdefault("OMP_NUM_THREADS", str(threads))
    return subprocess.Popen([sys.executable, "-m", "scaletrain", *command], env=env)


def _watch(children: list[Child], *, spares: int) -> int:
    """Until every process ended: a lost worker (not 0) or spare is reported, anything else
    stops all."""
    running = list(children)
    while running:
        time.sleep(POLL_S)
        ended = [child for child in running if child.process.poll() is not None]
        for child in ended:
            running.remove(child)
        failed = [child for child in ended if child.process.returncode != 0]
        # what failed first decides the message: a server, then bad input, then a worker
        failed.sort(key=lambda child: (child.role != "server", child.process.returncode != 2))
        for child in failed:
            code = child.process.returncode
            if code == SERVER_LOST_EXIT:  # a worker lost its server: report the server
                child = _failed_server(children) or child
                code = child.process.returncode
            if child.role != "server" and child.rank != 0 and code not in (2, SERVER_LOST_EXIT):
                then = (
                    " (a free spare takes its place)" if spares and child.role == "worker" else ""
                )
                print(
                    f"async_ps: {child.label} exited with code {code}; "
                    f"training goes on with the other workers{then}",
                    file=sys.stderr,
                )
                continue
            if code == 2 and (
                child.role == "server" or _reported_by_writer(children, exit_code=2, wait_s=5.0)
            ):  # a server, or rank 0 for every rank, printed why (bad input, a finished run)
                _stop(running, signal.SIGTERM)
                raise SystemExit(2)
            if child.role == "server" and _reported_by_writer(children):
                _stop(running, signal.SIGTERM)
                raise SystemExit(1)  # worker 0 said which server, in one line
            _stop(running, signal.SIGTERM)
            raise _failure(child)
    return 0


def _failed_server(children: list[Child]) -> Child | None:
    """The server that failed, once it has ended (it may still be exiting)."""
    deadline = time.monotonic() + STOP_GRACE_S
    while time.monotonic() < deadline:
        for child in children:
            if child.role == "server" and child.process.poll() not in (None, 0):
                return child
        time.sleep(POLL_S)
    return None


def _reported_by_writer(
    children: list[Child], *, exit_code: int = SERVER_LOST_EXIT, wait_s=SERVER_LOST_REPORT_S
) -> bool:
    """Worker 0 says itself what stopped the run (a dead server, noticed at its next push;
    bad input, refused by every rank alike) and exits with `exit_code`; wait for it (where
    it runs on this node)."""
    writer = children[0]
    if writer.rank != 0:
        return False
    try:
        writer.process.wait(timeout=wait_s)
    except subprocess.TimeoutExpired:
        return False
    return writer.process.returncode == exit_code


def _failure(child: Child) -> LaunchError:
    code = child.process.returncode
    if child.role == "server" and code == 2:
        return LaunchError(
            f"{child.label} refused to start (its error above); the other processes were stopped",
            exit_code=2,
        )
    if child.role == "server":
        return LaunchError(
            f"{child.label} exited with code {code} and stopped the run; the other processes "
            "were stopped: `scaletrain resume RUN_DIR --nproc N` continues from the last "
            "checkpoint and the servers' shards (parallel.ps.shards_dir)"
        )
    if code == SERVER_LOST_EXIT:  # a server of another node: node 0's worker 0 names it
        return LaunchError(
            f"{child.label} lost a parameter server on another node (worker 0 on node 0 "
            "names it); this node's other processes were stopped"
        )
    if code == 2:  # bad input: every process refuses it alike, rank 0 said why
        return LaunchError(
            f"{child.label} stopped on bad input (the error above); the other processes "
            "were stopped",
            exit_code=2,
        )
    return LaunchError(
        f"{child.label} exited with code {code} (the error above); it writes the run "
        "directory, so the other processes were stopped: `scaletrain resume RUN_DIR --nproc N` "
        "continues from the last checkpoint"
    )


def _stop(children: list[Child], signum: int) -> None:
    alive = [child for child in children if child.process.poll() is None]
    for child in alive:
        with contextlib.suppress(ProcessLookupError):
            child.process.send_signal(signum)
    deadline = time.monotonic() + STOP_GRACE_S
    for child in alive:
        try:
            child.process.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            child.process.kill()
            child.process.wait()


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]
