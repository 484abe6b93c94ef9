"""scaletrain: one config and one command, from a laptop CPU to many GPUs."""

from __future__ import annotations

__version__ = "0.1.0"

# Bound after the import on purpose: importing api loads the `scaletrain.train` package,
# which would otherwise shadow the `train` function under the same name.
from scaletrain.api import Run, evaluate, load_run, predict, resume, train  # noqa: E402
from scaletrain.config import Config, load_config  # noqa: E402
from scaletrain.errors import UserError  # noqa: E402

__all__ = [
    "Config",
    "Run",
    "UserError",
    "evaluate",
    "load_config",
    "load_run",
    "predict",
    "resume",
    "train",
]
