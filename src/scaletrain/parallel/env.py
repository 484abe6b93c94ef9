"""The only reader of torchrun's environment variables."""

from __future__ import annotations

import os
from dataclasses import dataclass


@dataclass(frozen=True)
class LaunchEnv:
    rank: int
    local_rank: int
    world_size: int
    local_world_size: int
    run_id: str | None = None  # TORCHELASTIC_RUN_ID: set by torchrun's agent in every worker
    restart_count: int = 0  # TORCHELASTIC_RESTART_COUNT: workers restarted by the agent so far

    @property
    def launched_by_torchrun(self) -> bool:
        return self.run_id is not None

    @property
    def is_distributed(self) -> bool:
        return self.world_size > 1 or self.launched_by_torchrun


def read_launch_env() -> LaunchEnv:
    return LaunchEnv(
        rank=int(os.environ.get("RANK", 0)),
        local_rank=int(os.environ.get("LOCAL_RANK", 0)),
        world_size=int(os.environ.get("WORLD_SIZE", 1)),
        local_world_size=int(os.environ.get("LOCAL_WORLD_SIZE", 1)),
        run_id=os.environ.get("TORCHELASTIC_RUN_ID"),
        restart_count=int(os.environ.get("TORCHELASTIC_RESTART_COUNT", 0)),
    )
