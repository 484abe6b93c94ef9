"""A spare worker taking over a lost `async_ps` worker: its fresh TrainState moved to where
that worker stood, as if it had trained there itself.

"As if" means the data and the learning rate: the loader stands at the sampler position of
the worker's shard after `step` steps (epoch order and slice are functions of the seed, the
epoch and the rank, so nothing needs to be read from the lost process), and the schedule at
`step`. Not reproduced: the dropout/augmentation RNG streams (seeded per rank at start, not
advanced), BatchNorm running statistics (pulled parameters only) and the epoch's partial
training-metric sums; worker 0, which logs those, is never taken over.
"""

from __future__ import annotations

from scaletrain.data.loaders.loader import step_bounds
from scaletrain.train.state import TrainState


def skip_to(state: TrainState, step: int) -> None:
    """Put a fresh state at loop step `step` (steps done): loader, epoch, schedule."""
    loader = state.loader
    epoch, within = divmod(step, loader.steps_per_epoch())
    bounds = step_bounds(
        loader.num_samples,
        position=0,
        global_batch_size=loader.global_batch_size,
        world_size=loader.world_size,
        drop_last=loader.drop_last,
    )
    consumed = bounds[within - 1][1] if within else 0
    loader.load_state_dict({"epoch": epoch, "samples_consumed": consumed})
    state.step, state.epoch = step, epoch
    state.schedule.last_epoch = step
    state.schedule.set_backoff(state.schedule.backoff)  # LambdaLR's own step sets the lr
