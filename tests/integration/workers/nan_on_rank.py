"""Worker: 2-rank DDP runs in which one sample, read by rank 1 only, makes the loss NaN.

Usage (under torchrun): nan_on_rank.py OUT_DIR POISON_STEP NAME=GUARD_JSON ...
The model and data are test_fault_guards.py's (a NaN for the marked sample); the victim is
position 20 of step POISON_STEP's global batch of 32, which rank 1 reads (positions 16-31).
"""

import json
import sys
from pathlib import Path

import torch

from scaletrain import api
from scaletrain.data import epoch_order

sys.path.insert(0, str(Path(__file__).parents[1]))  # tests/integration
from test_fault_guards import (  # noqa: E402
    BATCH,
    MARKER,
    NUM_SAMPLES,
    SEED,
    Poisonable,
    _config,
    _net,
)

POSITION_ON_RANK_1 = 20


def poisoned_data(poison_step: int):
    generator = torch.Generator().manual_seed(1)
    inputs = torch.randn(NUM_SAMPLES, 10, generator=generator)
    targets = torch.randint(0, 3, (NUM_SAMPLES,), generator=generator)
    order = epoch_order(NUM_SAMPLES, seed=SEED, epoch=0, shuffle=True)
    inputs[int(order[(poison_step - 1) * BATCH + POSITION_ON_RANK_1]), -1] = MARKER
    return inputs, targets


def main() -> None:
    out_dir, poison_step = Path(sys.argv[1]), int(sys.argv[2])
    for spec in sys.argv[3:]:
        name, _, guard = spec.partition("=")
        config = _config(out_dir, name, steps=NUM_SAMPLES // BATCH, guard=json.loads(guard),
                         every_steps=2)  # fmt: skip
        config["parallel"] = {"strategy": "ddp"}
        api.train(config, model=Poisonable(_net()), data={"train": poisoned_data(poison_step)})


if __name__ == "__main__":
    main()
