"""A worker process of a parallel ensemble: trains its round-robin share of the members.

Started by `ensemble/parallel.py` through multiprocessing's `spawn` (a fresh interpreter that
gets the parent's `sys.path`). Members never communicate: no process group is created; each
member is a one-process run.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

EXIT_USER_ERROR = 2


def run_worker(root: Path, *, rank: int, nproc: int, report, share: list[int] | None) -> int:
    """Train members `share` (None: rank, rank + nproc, ...); `report(outcome_dict)` after
    each."""
    import torch

    from scaletrain.config import load_run_config, member_configs
    from scaletrain.ensemble.members import assigned, train_member

    cfg = load_run_config(root / "config.yaml")
    # the cores are shared by nproc workers: oversubscribed threads wait on each other
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // nproc))
    members = member_configs(cfg)
    if share is None:
        share = [i for i in range(len(members)) if assigned(i, rank=rank, nproc=nproc)]
    for index in share:
        outcome = train_member(members[index], index)
        report(outcome.__dict__)
        if outcome.exit_code:
            return outcome.exit_code  # stopped by a signal: the ensemble resumes later
    return 0


def worker_main(root: str, rank: int, nproc: int, queue, share: list[int] | None = None) -> None:
    """The spawned process's target: its exit code says how it ended."""
    from scaletrain.errors import UserError

    try:
        code = run_worker(Path(root), rank=rank, nproc=nproc, report=queue.put, share=share)
    except UserError as exc:
        print(f"error: ensemble worker {rank}: {str(exc).splitlines()[0]}", file=sys.stderr)
        code = EXIT_USER_ERROR
    except KeyboardInterrupt:
        code = 130
    sys.exit(code)
