"""scaletrain's loop == a hand-written PyTorch loop, bit for bit (fp32, CPU)."""

import copy

import torch
from bench.raw_loop import raw_train, scaletrain_config

import scaletrain


def test_loop_matches_hand_written_loop_bitwise(tmp_path):
    generator = torch.Generator().manual_seed(0)
    inputs = torch.randn(300, 20, generator=generator)
    targets = torch.randint(0, 4, (300,), generator=generator)
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(20, 32), torch.nn.ReLU(), torch.nn.Linear(32, 4))
    raw = raw_train(copy.deepcopy(model), inputs, targets, steps=25, batch_size=32, lr=1e-2)
    run = scaletrain.train(
        scaletrain_config(name="parity", out_dir=str(tmp_path), steps=25, batch_size=32, lr=1e-2),
        model=copy.deepcopy(model),
        data={"train": (inputs, targets)},
    )
    trained = dict(run.model.named_parameters())
    for name, parameter in raw.model.named_parameters():
        assert torch.equal(parameter, trained[name]), name
    # and the weights did move: the comparison is not between two untouched models
    assert not torch.equal(raw.model[0].weight, model[0].weight)
