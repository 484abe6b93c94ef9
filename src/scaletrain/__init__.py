"""scaletrain: one config and one command, from a laptop CPU to many GPUs.

The API is imported on first use, so `scaletrain --help` and `scaletrain list` start in
about the time torch takes to import instead of also paying for scikit-learn, torchmetrics
and torch.distributed.checkpoint.
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

_LAZY = {
    "Config": "scaletrain.config",
    "load_config": "scaletrain.config",
    "UserError": "scaletrain.errors",
    "Run": "scaletrain.api",
    "evaluate": "scaletrain.api",
    "export": "scaletrain.api",
    "export_onnx": "scaletrain.trained.onnx_export",
    "load_exported": "scaletrain.api",
    "generate": "scaletrain.api",
    "load_run": "scaletrain.api",
    "predict": "scaletrain.api",
    "resume": "scaletrain.ensemble.dispatch",  # one run, or an ensemble (above api)
    "train": "scaletrain.ensemble.dispatch",
    "tune": "scaletrain.tune.tuner",
    "lr_find": "scaletrain.tune.lr_find",
}
__all__ = sorted(_LAZY)

# The `scaletrain.train` subpackage and the `train` function share a name. Import the
# package now, then drop the attribute its import binds: later `scaletrain.train.*` imports
# find it in sys.modules and leave this module alone, and `scaletrain.train` goes through
# __getattr__ below to the function.
importlib.import_module("scaletrain.train")
del train  # noqa: F821  (bound by the import above)
# The same for the `scaletrain.tune` package and the `tune` function (the package imports
# nothing on import).
importlib.import_module("scaletrain.tune")
globals().pop("tune")


def __getattr__(name: str):
    if name not in _LAZY:
        raise AttributeError(f"module 'scaletrain' has no attribute {name!r}")
    value = getattr(importlib.import_module(_LAZY[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_LAZY])
