"""scaletrain: one config and one command, from a laptop CPU to many GPUs."""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

# Imported on first use, so `scaletrain --help` and config tools start without torch.
_PUBLIC = {
    "train": "scaletrain.api",
    "resume": "scaletrain.api",
    "evaluate": "scaletrain.api",
    "predict": "scaletrain.api",
    "load_run": "scaletrain.api",
    "Run": "scaletrain.api",
    "Config": "scaletrain.config",
    "load_config": "scaletrain.config",
    "UserError": "scaletrain.errors",
}
__all__ = sorted(_PUBLIC)


def __getattr__(name: str):
    if name not in _PUBLIC:
        raise AttributeError(f"module 'scaletrain' has no attribute {name!r}")
    return getattr(importlib.import_module(_PUBLIC[name]), name)
