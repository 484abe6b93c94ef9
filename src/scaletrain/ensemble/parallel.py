"""Members on several processes at once: `--nproc K` starts K worker processes on this
machine, each training its round-robin share, with no gradient communication at all."""

from __future__ import annotations

import contextlib
import multiprocessing
import queue as queues
import signal
import threading
from pathlib import Path

from scaletrain.ensemble.members import MemberOutcome
from scaletrain.ensemble.worker import worker_main
from scaletrain.errors import UserError

STOPPED = (130, 143)  # a worker stopped by Ctrl-C / SIGTERM after saving its member


def train_in_parallel(
    root: Path, *, nproc: int, indices: list[int] | None = None
) -> list[MemberOutcome]:
    """Start `nproc` workers on the ensemble directory (worker r trains members
    indices[r::nproc], all by default) and wait for them; a SIGTERM here reaches every
    worker, which checkpoints its member and stops."""
    context = multiprocessing.get_context("spawn")  # fork would copy torch's thread pools
    results = context.Queue()
    shares = [None if indices is None else list(indices[rank::nproc]) for rank in range(nproc)]
    workers = [
        context.Process(target=worker_main, args=(str(root), rank, nproc, results, shares[rank]))
        for rank in range(nproc)
    ]
    for worker in workers:
        worker.start()
    outcomes = []
    with _forwarded_sigterm(workers):
        while any(worker.is_alive() for worker in workers) or not results.empty():
            with contextlib.suppress(queues.Empty):
                outcomes.append(MemberOutcome(**results.get(timeout=0.2)))
    for worker in workers:
        worker.join()
    _check_exit_codes(root, [worker.exitcode for worker in workers])
    return sorted(outcomes, key=lambda outcome: outcome.index)


def _check_exit_codes(root: Path, codes: list[int]) -> None:
    for rank, code in enumerate(codes):
        if code not in (0, *STOPPED):
            raise UserError(
                f"ensemble worker {rank} of {len(codes)} failed (exit {code}; its error is "
                f"above); resume to retrain only unfinished members: scaletrain resume {root}"
            )


@contextlib.contextmanager
def _forwarded_sigterm(workers):
    """SIGTERM to this process goes on to the workers (Ctrl-C reaches them by itself: they
    share the terminal's process group); only the main thread may set a handler."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def forward(signum, _frame):
        for worker in workers:
            if worker.is_alive():
                worker.terminate()  # SIGTERM: the member saves a checkpoint and stops

    previous = signal.signal(signal.SIGTERM, forward)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
