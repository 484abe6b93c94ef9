"""A worker process of a parallel ensemble: trains its round-robin share of the members.

Started by `ensemble/parallel.py` as `python -m scaletrain.ensemble.worker ROOT RANK NPROC`.
Members never communicate: no process group is created; each member is a one-process run.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

EXIT_USER_ERROR = 2


def run_worker(root: Path, *, rank: int, nproc: int) -> int:
    """Train members rank, rank + nproc, ...; print one JSON line per member on stdout."""
    import torch

    from scaletrain.config import load_config, member_configs
    from scaletrain.ensemble.members import assigned, train_member

    cfg = load_config(root / "config.yaml")
    # the cores are shared by nproc workers: oversubscribed threads wait on each other
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // nproc))
    for index, member_cfg in enumerate(member_configs(cfg)):
        if not assigned(index, rank=rank, nproc=nproc):
            continue
        outcome = train_member(member_cfg, index)
        print(json.dumps(outcome.__dict__), flush=True)
        if outcome.exit_code:
            return outcome.exit_code  # stopped by a signal: the ensemble resumes later
    return 0


def main(argv: list[str]) -> int:
    from scaletrain.errors import UserError

    root, rank, nproc = Path(argv[0]), int(argv[1]), int(argv[2])
    try:
        return run_worker(root, rank=rank, nproc=nproc)
    except UserError as exc:
        print(f"error: member worker {rank}: {str(exc).splitlines()[0]}", file=sys.stderr)
        return EXIT_USER_ERROR


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
