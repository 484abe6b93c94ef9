"""Worker: train on a dataset whose sample BAD_INDEX fails; print the error as one line.

Usage: loader_fault.py OUT_DIR MODE NUM_WORKERS
  MODE raise: __getitem__(BAD_INDEX) raises ValueError (a file that cannot be decoded);
              found when scaletrain first reads every sample for the class counts
  MODE raise_in_loader: the same, but the Dataset has `targets`, so the error comes from
              the training loader (in a worker process when NUM_WORKERS > 0)
  MODE kill:  the loader worker process reading BAD_INDEX SIGKILLs itself
"""

import os
import signal
import sys

import torch
from torch.utils.data import Dataset, get_worker_info

from scaletrain import api

BAD_INDEX = 77


class Fragile(Dataset):
    def __init__(self, mode: str):
        self.mode = mode
        if mode == "raise_in_loader":
            self.targets = [index % 2 for index in range(256)]

    def __len__(self) -> int:
        return 256

    def __getitem__(self, index: int):
        if index == BAD_INDEX and self.mode.startswith("raise"):
            raise ValueError(f"cannot decode images/{index:05d}.png")
        if index == BAD_INDEX and self.mode == "kill" and get_worker_info() is not None:
            os.kill(os.getpid(), signal.SIGKILL)
        features = torch.randn(8, generator=torch.Generator().manual_seed(index))
        return features, index % 2


def main() -> None:
    out_dir, mode, num_workers = sys.argv[1], sys.argv[2], int(sys.argv[3])
    config = {
        "run": {"name": f"{mode}_{num_workers}", "out_dir": out_dir},
        "data": {"val_fraction": 0.0, "test_fraction": 0.0, "num_workers": num_workers},
        "train": {"max_epochs": 1, "batch_size": 32, "precision": "32"},
        "checkpoint": {"every_epochs": 0, "save_best": False},
        "log": {"every_steps": 1, "progress": False, "tensorboard": False, "report": False},
    }
    try:
        api.train(config, model=torch.nn.Linear(8, 2), data={"train": Fragile(mode)})
    except Exception as error:  # the message a user would see, as one line
        print(f"FAILED {type(error).__name__}: {' | '.join(str(error).splitlines())}")
        sys.exit(1)


if __name__ == "__main__":
    main()
