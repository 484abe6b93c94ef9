"""`train.num_threads` holds for the run only: the caller's process gets its own back."""

from __future__ import annotations

import torch

from scaletrain import api


class ThreadsDuringTraining:
    def __init__(self):
        self.seen: list[int] = []

    def on_train_start(self, state) -> None:
        self.seen.append(torch.get_num_threads())


def test_a_runs_thread_count_is_put_back_when_it_returns(tmp_path):
    before = torch.get_num_threads()
    wanted = 1 if before != 1 else 2
    probe = ThreadsDuringTraining()
    config = {
        "run": {"name": "threads", "out_dir": str(tmp_path)},
        "data": {"source": "builtin", "name": "iris"},
        "model": {"name": "mlp", "hidden": [8]},
        "train": {"max_steps": 2, "precision": "32", "device": "cpu", "num_threads": wanted},
        "log": {"progress": False, "tensorboard": False, "report": False},
    }
    try:
        api.train(config, callbacks=[probe])
        assert probe.seen == [wanted]  # the run's own setting, while it trained
        assert torch.get_num_threads() == before  # seen failing: the run's count stayed
    finally:
        torch.set_num_threads(before)
