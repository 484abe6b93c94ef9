"""`skip_to`: a fresh state moved to step s reads the same next batches, with the same lr,
as one that trained s steps (a spare worker taking over a lost async_ps worker)."""

import pytest
import torch

from scaletrain.config import ScheduleConfig
from scaletrain.data import BatchLoader
from scaletrain.data.bundle import Split
from scaletrain.optim.schedules import build_schedule
from scaletrain.train.state import TrainState
from scaletrain.train.takeover import skip_to

# the loop steps the schedule without an optimizer step here, as an async_ps worker does
pytestmark = pytest.mark.filterwarnings("ignore:Detected call of `lr_scheduler.step")

NUM_SAMPLES, BATCH, WORLD, TOTAL = 103, 16, 2, 40  # 7 steps an epoch, the last one short


def fresh_state(rank: int) -> TrainState:
    values = torch.arange(NUM_SAMPLES, dtype=torch.float32).reshape(-1, 1)
    split = Split(inputs=values, targets=torch.arange(NUM_SAMPLES))
    loader = BatchLoader(
        split,
        global_batch_size=BATCH,
        micro_batch_size=BATCH // WORLD,
        shuffle=True,
        seed=3,
        drop_last=False,
        rank=rank,
        world_size=WORLD,
        num_workers=0,
    )
    model = torch.nn.Linear(1, 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    schedule = build_schedule(
        ScheduleConfig(name="cosine", warmup_steps=3), optimizer, total_steps=TOTAL
    )
    return TrainState(model, optimizer, schedule, loader)


def batches(state: TrainState, count: int) -> list[tuple[list[int], float, bool]]:
    """The next `count` steps' sample values and lrs, stepping the schedule as the loop does."""
    taken = []
    while len(taken) < count:
        for batch in state.loader:
            (inputs, _), *_ = batch.micro_batches
            lr = state.optimizer.param_groups[0]["lr"]
            taken.append((inputs.flatten().tolist(), lr, batch.ends_epoch))
            state.schedule.step()
            state.step += 1
            state.epoch += batch.ends_epoch
            if len(taken) == count:
                break
    return taken


@pytest.mark.parametrize("step", [0, 1, 6, 7, 8, 20, 21, 33])
@pytest.mark.parametrize("rank", [0, 1])
def test_a_state_moved_to_step_s_goes_on_as_one_that_trained_s_steps(step, rank):
    trained = fresh_state(rank)
    batches(trained, step)
    moved = fresh_state(rank)
    skip_to(moved, step)
    assert (moved.step, moved.epoch) == (trained.step, trained.epoch)
    assert moved.loader.state_dict() == trained.loader.state_dict()
    assert batches(moved, TOTAL - step) == batches(trained, TOTAL - step)
