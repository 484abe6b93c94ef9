"""Members on several processes at once: `--nproc K` starts K worker processes on this
machine, each training its round-robin share, with no gradient communication at all."""

from __future__ import annotations

import contextlib
import json
import signal
import subprocess
import sys
from pathlib import Path

from scaletrain.ensemble.members import MemberOutcome
from scaletrain.errors import UserError


def train_in_parallel(root: Path, *, nproc: int) -> list[MemberOutcome]:
    """Start `nproc` workers on the ensemble directory and wait for them; a SIGTERM or Ctrl-C
    here reaches every worker, which saves its member's checkpoint and stops."""
    command = [sys.executable, "-m", "scaletrain.ensemble.worker", str(root)]
    workers = [
        subprocess.Popen([*command, str(rank), str(nproc)], stdout=subprocess.PIPE, text=True)
        for rank in range(nproc)
    ]
    with _forwarded_signals(workers):
        outputs = [worker.communicate()[0] for worker in workers]
    outcomes = [
        MemberOutcome(**json.loads(line))
        for output in outputs
        for line in output.splitlines()
        if line.startswith("{")
    ]
    codes = [worker.returncode for worker in workers]
    failed = [(rank, code) for rank, code in enumerate(codes) if code not in (0, 130, 143)]
    if failed:
        rank, code = failed[0]
        raise UserError(
            f"ensemble worker {rank} of {nproc} failed (exit {code}; its error is above); "
            f"resume the ensemble to retrain only its unfinished members: scaletrain resume {root}"
        )
    return sorted(outcomes, key=lambda outcome: outcome.index)


@contextlib.contextmanager
def _forwarded_signals(workers: list[subprocess.Popen]):
    """SIGTERM to this process goes on to the workers (Ctrl-C reaches them by itself: they
    share the terminal's process group)."""

    def forward(signum, _frame):
        for worker in workers:
            if worker.poll() is None:
                worker.send_signal(signum)

    previous = signal.signal(signal.SIGTERM, forward)
    try:
        yield
    except KeyboardInterrupt:
        for worker in workers:
            worker.wait()  # each saves a checkpoint of its member first
        raise
    finally:
        signal.signal(signal.SIGTERM, previous)
