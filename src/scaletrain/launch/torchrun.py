"""Start N local workers (and join other nodes) through torchrun's elastic agent.

We call `torch.distributed.run.run(args)` in this process rather than spawning a
`torchrun` subprocess: the agent's failures then arrive as typed exceptions
(`ChildFailedError` with every rank's exit code and recorded error, rendezvous timeouts,
connection errors) that become one clear line, and there is one interpreter fewer. The
arguments go through torchrun's own parser, so every default matches `torchrun`.
"""

from __future__ import annotations

import os
import signal
import socket
import sys
from dataclasses import dataclass

from scaletrain.errors import UserError

DEFAULT_PORT = 29400  # torchrun's c10d default
# Elastic (--nnodes MIN:MAX) rendezvous timings, c10d dynamic rendezvous keys (--rdzv-conf):
LAST_CALL_S = 5  # last_call_timeout: wait for more nodes once MIN joined (torch: 30 s)
KEEP_ALIVE_S = 2  # keep_alive_interval: agent heartbeat period (torch: 5 s)
KEEP_ALIVE_MISSES = 3  # keep_alive_max_attempt: a node silent this many periods is dead


class LaunchError(UserError):
    """The job could not start or a worker failed; the message names the cause."""

    def __init__(self, message: str, *, exit_code: int = 1):
        super().__init__(message)
        self.exit_code = exit_code


class LaunchFlagError(LaunchError):
    """A bad launch flag: a usage error, exit code 2 like any other bad input."""

    def __init__(self, message: str):
        super().__init__(message, exit_code=2)


@dataclass(frozen=True)
class LaunchOptions:
    nproc: int = 1
    nnodes: int = 1  # with min_nnodes: the most nodes of an elastic job (--nnodes MIN:MAX)
    node_rank: int = 0
    rdzv_endpoint: str | None = None  # HOST:PORT of node 0; default: a free local port
    max_restarts: int = 0
    rdzv_timeout_s: int = 600  # how long agents wait for every node to join
    local_addr: str | None = None  # this node's address as peers see it (multi-homed hosts)
    min_nnodes: int | None = None  # elastic: the job runs on any MIN..nnodes nodes
    rdzv_last_call_s: int = LAST_CALL_S  # elastic: wait this long for more nodes after MIN

    @property
    def is_multi_process(self) -> bool:
        return self.nproc > 1 or self.nnodes > 1

    @property
    def is_elastic(self) -> bool:
        return self.min_nnodes is not None and self.min_nnodes != self.nnodes

    @property
    def nnodes_spec(self) -> str:
        """torchrun's --nnodes: N, or MIN:MAX for an elastic job."""
        return f"{self.min_nnodes}:{self.nnodes}" if self.is_elastic else str(self.nnodes)


def parse_nnodes(text: str) -> tuple[int | None, int]:
    """`--nnodes N` -> (None, N); `--nnodes MIN:MAX` -> (MIN, MAX). LaunchError if neither."""
    low, colon, high = str(text).strip().partition(":")
    try:
        numbers = (int(low), int(high)) if colon else (None, int(low))
    except ValueError:
        raise LaunchFlagError(f"--nnodes: expected N or MIN:MAX (e.g. 1:4), got {text!r}") from None
    return numbers


def parse_nproc(text: str) -> int:
    """`--nproc N`; a MIN:MAX range is refused: torchrun is elastic in nodes only."""
    if ":" in str(text):
        raise LaunchFlagError(
            f"--nproc {text}: torchrun's elastic range applies to nodes, not to processes per "
            "node; use a fixed --nproc N with --nnodes MIN:MAX"
        )
    try:
        return int(text)
    except ValueError:
        raise LaunchFlagError(f"--nproc: expected a whole number, got {text!r}") from None


def inside_torchrun() -> bool:
    """True in a worker that torchrun's agent started (never relaunch from there)."""
    return "TORCHELASTIC_RUN_ID" in os.environ


def needs_launch(options: LaunchOptions) -> bool:
    """True outside torchrun with more than one process; LaunchError for bad flags."""
    if inside_torchrun():
        return False
    _check_options(options)  # also for one process: `--nnodes 2:1` must not run alone
    return options.is_multi_process


def torchrun_args(options: LaunchOptions, command: list[str]) -> list[str]:
    """The torchrun command line (without `torchrun`) that runs `python -m scaletrain ...`."""
    _check_options(options)
    endpoint = options.rdzv_endpoint or "127.0.0.1:0"  # port 0: the agent binds a free one
    # c10d ranks nodes by arrival; --node-rank only says who hosts the rendezvous store
    host_flag = int(options.node_rank == 0)
    conf = f"join_timeout={options.rdzv_timeout_s},is_host={host_flag}"
    if options.is_elastic:  # notice a lost node in seconds, then re-form without waiting long
        conf += (
            f",last_call_timeout={options.rdzv_last_call_s}"
            f",keep_alive_interval={KEEP_ALIVE_S},keep_alive_max_attempt={KEEP_ALIVE_MISSES}"
        )
    return [
        "--nnodes", options.nnodes_spec,
        "--nproc-per-node", str(options.nproc),
        "--rdzv-backend", "c10d",
        "--rdzv-endpoint", endpoint,
        "--rdzv-id", f"scaletrain-{endpoint}",
        "--rdzv-conf", conf,
        "--max-restarts", str(options.max_restarts),
        *(["--local-addr", options.local_addr] if options.local_addr else []),
        "--module", "scaletrain", *command,
    ]  # fmt: skip


def launch(options: LaunchOptions, command: list[str]) -> int:
    """Run `scaletrain COMMAND` on every worker; raise LaunchError naming what failed."""
    from torch.distributed.run import get_args_parser, run

    if options.rdzv_endpoint and options.node_rank == 0:
        _check_port_free(options.rdzv_endpoint)
    # the command is set after parsing: argparse would read its flags (--nproc) as torchrun's
    args = get_args_parser().parse_args(torchrun_args(options, []))
    args.training_script_args = list(command)
    saved_environment = dict(os.environ)  # the agent sets variables for its workers
    # torchrun would set 1 thread per worker (and warn); share this node's cores instead
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // options.nproc)))
    if options.is_elastic:
        # torch 2.13 shares the agents' TCPStore with the workers by default, and an agent
        # keeps the store address of the first round it joined, which is wrong once the
        # rank-0 node changes: a node joining a later round waits for a MASTER_ADDR that
        # nobody publishes (seen here; related: pytorch#135712). Without sharing, each
        # round's rank-0 worker hosts a fresh store.
        os.environ.setdefault("TORCH_DISABLE_SHARE_RDZV_TCP_STORE", "1")
    try:
        run(args)
    except Exception as error:
        explained = _explain(error, options, endpoint=args.rdzv_endpoint)
        if explained is error:
            raise
        raise explained from None
    finally:
        os.environ.clear()
        os.environ.update(saved_environment)
    return 0


def _explain(error: Exception, options: LaunchOptions, *, endpoint: str) -> BaseException:
    """The agent's exception as one clear LaunchError (or KeyboardInterrupt for Ctrl-C)."""
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.elastic.rendezvous.api import (
        RendezvousClosedError,
        RendezvousConnectionError,
        RendezvousTimeoutError,
    )

    if isinstance(error, ChildFailedError):
        return _worker_failure(error)
    if isinstance(error, RendezvousTimeoutError):
        needed = (
            f"fewer than {options.min_nnodes} nodes joined"
            if options.is_elastic
            else f"not all {options.nnodes} nodes joined"
        )
        return LaunchError(
            f"rendezvous at {endpoint} did not complete within {options.rdzv_timeout_s} s: "
            f"{needed}; start the same command with --node-rank 1..N-1 on the other nodes "
            "(--rdzv-timeout to wait longer)"
        )
    if isinstance(error, SignalException):  # the agent has already stopped the workers
        if error.sigval == signal.SIGINT:
            return KeyboardInterrupt()
        return LaunchError(f"stopped by {error.sigval.name}", exit_code=128 + error.sigval)
    if isinstance(error, (RendezvousConnectionError, RendezvousClosedError)):
        return LaunchError(
            f"cannot use the rendezvous at {endpoint}: {error.__cause__ or error}; check the "
            "host, the port and that node 0 is running"
        )
    return error


def _worker_failure(error) -> LaunchError:
    rank, failure = error.get_first_failure()
    message = failure.message if isinstance(failure.message, str) else ""
    if not message or message.startswith("To enable traceback"):
        message = "see its output above"
    exit_code = failure.exitcode if failure.exitcode > 0 else 1
    return LaunchError(
        f"worker rank {rank} (local rank {failure.local_rank}, pid {failure.pid}) exited with "
        f"code {failure.exitcode}: {message.strip().splitlines()[-1]}; "
        f"{len(error.failures)} worker(s) failed, all were stopped",
        exit_code=exit_code,
    )


def _check_options(options: LaunchOptions) -> None:
    """Bad launch flags: one line naming the flag, exit code 2 (a usage error)."""
    if options.min_nnodes is not None and not 1 <= options.min_nnodes <= options.nnodes:
        raise LaunchFlagError(
            f"--nnodes {options.min_nnodes}:{options.nnodes}: expected MIN:MAX with 1 <= MIN <= MAX"
        )
    if options.nproc < 1 or options.nnodes < 1:
        raise LaunchFlagError(
            f"--nproc and --nnodes must be >= 1, got {options.nproc}, {options.nnodes}"
        )
    if not 0 <= options.node_rank < options.nnodes:
        raise LaunchFlagError(
            f"--node-rank: expected 0..{options.nnodes - 1} for --nnodes "
            f"{options.nnodes_spec}, got {options.node_rank}"
        )
    if options.nnodes > 1 and not options.rdzv_endpoint:
        raise LaunchFlagError(
            "--rdzv-endpoint: multi-node runs need HOST:PORT of node 0, e.g. 10.0.0.1:29400"
        )
    if options.is_elastic and options.rdzv_last_call_s < 0:
        raise LaunchFlagError(
            f"--rdzv-last-call: expected seconds >= 0, got {options.rdzv_last_call_s}"
        )


def _check_port_free(endpoint: str) -> None:
    """Node 0 binds the rendezvous port: fail now, clearly, if something else holds it."""
    host, _, port_text = endpoint.rpartition(":")
    if not host or not port_text.isdigit():
        raise LaunchError(f"--rdzv-endpoint: expected HOST:PORT, got {endpoint!r}")
    port = int(port_text)
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        try:
            probe.bind(("", port))
        except OSError as error:
            raise LaunchError(
                f"--rdzv-endpoint {endpoint}: port {port} is already in use "
                f"({error.strerror}); pick a free port, or stop the process holding it"
            ) from None


def quiet_unless_rank_zero() -> bool:
    """In workers of rank > 0, silence stdout (results, tables); errors stay on stderr."""
    if not inside_torchrun() or os.environ.get("RANK", "0") == "0":
        return False
    sys.stdout = open(os.devnull, "w")  # noqa: SIM115 (lives as long as the process)
    return True


def record_worker_error(error: BaseException) -> None:
    """Hand torchrun's agent this worker's error (call it inside the `except` block)."""
    if "TORCHELASTIC_ERROR_FILE" not in os.environ:
        return
    from torch.distributed.elastic.multiprocessing.errors import ErrorHandler

    ErrorHandler().record_exception(error)
