"""Host syncs (reading a tensor's value on the host) happen only at log steps.

On CUDA each such read stalls the CPU until the GPU catches up, so the loop reads values only
every `log.every_steps`. This CPU test counts every Python-level read of a tensor's value
(`item`, `tolist`, `bool`, `float`, `int`, `numpy`, formatting) between step ends.
"""

from __future__ import annotations

import torch
from torch.overrides import TorchFunctionMode

import scaletrain

READS = {"item", "tolist", "__bool__", "__float__", "__int__", "__index__", "numpy", "__format__"}
LOG_EVERY = 5
NUM_STEPS = 20


class CountReads(TorchFunctionMode):
    """Counts tensor value reads; `per_step` holds the count of each step, 1-based."""

    def __init__(self):
        super().__init__()
        self.count = 0
        self.per_step: dict[int, int] = {}

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if getattr(func, "__name__", "") in READS:
            self.count += 1
        return func(*args, **(kwargs or {}))

    def on_train_start(self, state) -> None:
        self.count = 0  # set-up reads (FLOP counting, the MFU peak) are not a step's

    def on_step_end(self, state) -> None:
        self.per_step[state.step] = self.count
        self.count = 0


def _train(tmp_path, counter: CountReads, guard: str) -> None:
    generator = torch.Generator().manual_seed(0)
    inputs = torch.randn(512, 12, generator=generator)
    targets = torch.randint(0, 3, (512,), generator=generator)
    model = torch.nn.Sequential(torch.nn.Linear(12, 16), torch.nn.ReLU(), torch.nn.Linear(16, 3))
    config = {
        "run": {"name": f"sync-{guard}", "out_dir": str(tmp_path)},
        "data": {"val_fraction": 0.0, "test_fraction": 0.0},
        "train": {"max_steps": NUM_STEPS, "batch_size": 16, "precision": "32"},
        "train.guard.nonfinite": guard,
        "checkpoint": {"every_epochs": 0, "save_best": False},
        "log": {"every_steps": LOG_EVERY, "progress": False, "tensorboard": False},
        "log.report": False,
    }
    config = _nest(config)
    with counter:
        scaletrain.train(
            config, model=model, data={"train": (inputs, targets)}, callbacks=[counter]
        )


def _nest(config: dict) -> dict:
    """Expand the dotted keys above into sections."""
    nested: dict = {}
    for key, value in config.items():
        *parents, leaf = key.split(".")
        section = nested
        for parent in parents:
            section = section.setdefault(parent, {})
        if isinstance(value, dict):
            section.setdefault(leaf, {}).update(value)
        else:
            section[leaf] = value
    return nested


def test_no_host_sync_between_log_steps(tmp_path):
    counter = CountReads()
    _train(tmp_path, counter, guard="off")
    assert sorted(counter.per_step) == list(range(1, NUM_STEPS + 1))
    between = {step: n for step, n in counter.per_step.items() if step % LOG_EVERY}
    at_log = [counter.per_step[step] for step in range(LOG_EVERY, NUM_STEPS + 1, LOG_EVERY)]
    assert all(n == 0 for n in between.values()), between
    assert all(n > 0 for n in at_log), at_log  # the counter does see the log step's reads


def test_guard_costs_exactly_one_read_per_step(tmp_path):
    """The non-finite guard (the default) reads one fused flag vector per step, no more."""
    counter = CountReads()
    _train(tmp_path, counter, guard="skip")
    between = {step: n for step, n in counter.per_step.items() if step % LOG_EVERY}
    assert set(between.values()) == {1}, between
