"""train.channels_last: when `auto` turns it on, and that it changes speed, not the math."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import scaletrain
from scaletrain.train.setup import wants_channels_last

CPU = torch.device("cpu")
CNN = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(144, 2))
MLP = nn.Sequential(nn.Linear(4, 2))


@pytest.mark.parametrize(
    ("setting", "model", "device", "world_size", "expected"),
    [
        ("auto", CNN, CPU, 1, True),  # measured to help: bench/README.md
        ("auto", MLP, CPU, 1, False),  # nothing to convert
        ("auto", CNN, CPU, 2, False),  # not measured with DDP/FSDP shards
        ("auto", CNN, torch.device("cuda"), 1, False),  # not measured on GPUs yet
        (True, CNN, CPU, 2, True),
        (False, CNN, CPU, 1, False),
    ],
)
def test_auto_is_on_only_where_it_was_measured(setting, model, device, world_size, expected):
    assert wants_channels_last(setting, model, device=device, world_size=world_size) is expected


def _train(tmp_path, channels_last: bool):
    config = {
        "run": {"name": f"cl-{channels_last}", "seed": 0, "out_dir": str(tmp_path)},
        "data": {"source": "builtin", "name": "digits", "layout": "image", "val_fraction": 0.0},
        "model": {"name": "cnn", "channels": [8, 16], "head": [32], "dropout": 0.0},
        "train": {"max_steps": 15, "batch_size": 32, "precision": "32",
                  "channels_last": channels_last},
        "checkpoint": {"every_epochs": 0, "save_best": False},
        "log": {"progress": False, "tensorboard": False, "report": False},
    }  # fmt: skip
    return scaletrain.train(config).model


def test_channels_last_trains_the_same_weights(tmp_path):
    plain, last = _train(tmp_path, False), _train(tmp_path, True)
    convs = [m for m in last.modules() if isinstance(m, nn.Conv2d)]
    assert convs and all(m.weight.is_contiguous(memory_format=torch.channels_last) for m in convs)
    assert not convs[-1].weight.is_contiguous()  # (a 1-channel kernel is both layouts at once)
    reference = dict(plain.named_parameters())
    for name, value in last.named_parameters():
        # other kernels, other summation order: equal up to float32 rounding
        torch.testing.assert_close(value, reference[name], rtol=1e-4, atol=1e-5)
