"""Worker: a 2-rank DDP run in which one rank stops making progress before a collective.

Usage (under torchrun): stall_rank.py OUT_DIR STALL_RANK STALL_AFTER_STEP TIMEOUT_S
The stalled rank sleeps (in Python, as a deadlocked data loader or a stuck filesystem call
would) at the end of step STALL_AFTER_STEP; the other rank then waits in the next step's
first collective until `parallel.timeout_s` runs out.
"""

import os
import sys
import time

import torch

from scaletrain import api


class SleepForever:
    def __init__(self, rank: int, step: int):
        self.rank, self.step = rank, step

    def on_step_end(self, state) -> None:
        if int(os.environ["RANK"]) == self.rank and state.step == self.step:
            while True:
                time.sleep(1)


def main() -> None:
    out_dir, stall_rank, stall_step, timeout_s = sys.argv[1], *map(int, sys.argv[2:5])
    generator = torch.Generator().manual_seed(0)
    inputs = torch.randn(256, 8, generator=generator)
    targets = torch.randint(0, 2, (256,), generator=generator)
    model = torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))
    config = {
        "run": {"name": "stall", "out_dir": out_dir},
        "data": {"val_fraction": 0.0, "test_fraction": 0.0},
        "train": {"max_steps": 50, "batch_size": 16, "precision": "32"},
        "parallel": {"strategy": "ddp", "timeout_s": timeout_s},
        "checkpoint": {"every_epochs": 0, "save_best": False},
        "log": {"every_steps": 1, "progress": False, "tensorboard": False, "report": False},
    }
    api.train(
        config,
        model=model,
        data={"train": (inputs, targets)},
        callbacks=[SleepForever(stall_rank, stall_step)],
    )


if __name__ == "__main__":
    main()
