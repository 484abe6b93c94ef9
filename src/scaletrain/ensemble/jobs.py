"""Members that are multi-process jobs (`ensemble.member_nproc: M` > 1): member i is
`scaletrain train RUN/jobs/m{i}.yaml --nproc M --resume`, a normal DDP/FSDP run started by
scaletrain's own launcher (torchrun's agent), up to `slots` jobs at once.

Jobs never communicate: each agent's rendezvous binds a free local port of its own (the
launcher's default endpoint, port 0), so concurrent jobs cannot collide. `--resume` makes a
job continue from its member's newest checkpoint (or start over where it has none), exactly
as for a single run; finished members are never started.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from scaletrain.config import Config
from scaletrain.ensemble.members import MemberOutcome, has_checkpoint, is_finished, member_dir
from scaletrain.errors import UserError
from scaletrain.fileio import atomic_write_text
from scaletrain.rundir import read_json

STOPPED = (130, 143)  # a job stopped by Ctrl-C / SIGTERM after its member saved a checkpoint
POLL_S = 0.2


def member_slots(nproc: int, member_nproc: int) -> int:
    """Member jobs at once on `nproc` processes; UserError unless nproc is a multiple of M."""
    if nproc < member_nproc or nproc % member_nproc:
        raise UserError(
            f"--nproc {nproc}: each member is a {member_nproc}-process job "
            f"(ensemble.member_nproc); give a multiple of {member_nproc}, e.g. --nproc "
            f"{member_nproc} (one member at a time) or {2 * member_nproc} (two at once)"
        )
    return nproc // member_nproc


@dataclass(frozen=True)
class MemberJobs:
    root: Path  # the ensemble's directory: job configs and logs go to RUN/jobs/
    member_nproc: int
    slots: int  # jobs at once on this machine

    @property
    def threads(self) -> int:
        """Intra-op threads per process: this machine's cores shared by every job's ranks."""
        return max(1, (os.cpu_count() or 1) // (self.slots * self.member_nproc))


def run_member_jobs(
    jobs: MemberJobs, members: list[Config], indices: list[int]
) -> list[MemberOutcome]:
    """Bring members `indices` to their end as jobs; a SIGTERM here reaches every running job
    (each member saves a checkpoint and stops) and no further job starts."""
    pool = _JobPool(jobs, members, list(indices))
    with _forwarded_sigterm(pool):
        pool.run()
    pool.raise_failure()
    return sorted(pool.outcomes, key=lambda outcome: outcome.index)


@dataclass
class _Job:
    index: int
    action: str  # trained | resumed
    process: subprocess.Popen
    log: Path


@dataclass
class _JobPool:
    jobs: MemberJobs
    members: list[Config]
    pending: list[int]
    running: list[_Job] = field(default_factory=list)
    outcomes: list[MemberOutcome] = field(default_factory=list)
    failures: list[tuple[_Job, int]] = field(default_factory=list)
    stopping: bool = False

    def run(self) -> None:
        interrupted = False
        while self.running or (self.pending and not self.stopping):
            try:
                self._start_due()
                self._reap()
                time.sleep(POLL_S)
            except KeyboardInterrupt:  # Ctrl-C reached the jobs too (one process group)
                if interrupted:  # a second one: stop waiting for their checkpoints
                    raise
                interrupted, self.stopping = True, True

    def stop(self) -> None:
        self.stopping = True
        for job in self.running:
            if job.process.poll() is None:
                job.process.terminate()  # SIGTERM: the agent stops its workers, who save

    def _start_due(self) -> None:
        while self.pending and len(self.running) < self.jobs.slots and not self.stopping:
            index = self.pending.pop(0)
            member = self.members[index]
            if is_finished(member_dir(member)):
                status = read_json(member_dir(member).summary)["status"]
                self.outcomes.append(MemberOutcome(index, "kept", status))
            else:
                self.running.append(self._start(index, member))

    def _start(self, index: int, member: Config) -> _Job:
        folder = self.jobs.root / "jobs"
        folder.mkdir(exist_ok=True)
        config, log = folder / f"m{index}.yaml", folder / f"m{index}.log"
        atomic_write_text(config, member.to_yaml())
        action = "resumed" if has_checkpoint(member_dir(member)) else "trained"
        command = [
            sys.executable, "-m", "scaletrain", "train", str(config),
            "--nproc", str(self.jobs.member_nproc), "--resume",
        ]  # fmt: skip
        env = dict(os.environ)
        env.setdefault("OMP_NUM_THREADS", str(self.jobs.threads))  # the user's value wins
        print(f"m{index}: {self.jobs.member_nproc}-process job, log {log}", file=sys.stderr)
        with open(log, "a") as out:  # the child holds its own descriptor
            process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env)
        return _Job(index, action, process, log)

    def _reap(self) -> None:
        for job in list(self.running):
            code = job.process.poll()
            if code is None:
                continue
            self.running.remove(job)
            status = _member_status(self.members[job.index])
            if code == 0 and status in ("finished", "stopped_early"):
                self.outcomes.append(MemberOutcome(job.index, job.action, status))
            elif code in STOPPED:
                self.outcomes.append(MemberOutcome(job.index, job.action, status, code))
                self.stopping = True
            else:  # the others go on to their end; nothing new starts
                self.failures.append((job, code))
                self.stopping = True

    def raise_failure(self) -> None:
        if not self.failures:
            return
        job, code = self.failures[0]
        lines = job.log.read_text(errors="replace").strip().splitlines()
        errors = [line.removeprefix("error: ") for line in lines if line.startswith("error: ")]
        cause = errors[0] if errors else lines[-1] if lines else "(no output)"  # a worker's own
        raise UserError(
            f"ensemble member m{job.index} failed (exit {code}): {cause} (log: {job.log}); "
            f"resume to retrain only unfinished members: scaletrain resume {self.jobs.root}"
        )


def _member_status(member: Config) -> str:
    summary = member_dir(member).summary
    record = read_json(summary) if summary.is_file() else {}
    return record.get("status", "failed") if isinstance(record, dict) else "failed"


@contextlib.contextmanager
def _forwarded_sigterm(pool: _JobPool):
    """SIGTERM to this process goes on to the running jobs (Ctrl-C reaches them by itself:
    they share the terminal's process group); only the main thread may set a handler."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, lambda _signum, _frame: pool.stop())
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
