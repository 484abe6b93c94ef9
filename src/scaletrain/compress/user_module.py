"""A user module's run compressed through the Python API: the caller hands a fresh instance
of the module (the run directory names its class, not its code), and only what needs no
training runs, since fine-tuning would need the module and data the CLI cannot rebuild."""

from __future__ import annotations

from torch import nn

from scaletrain.compress.options import CompressOptions
from scaletrain.config import Config, UserModelConfig
from scaletrain.errors import UserError


def check_user_module(
    cfg: Config, model: nn.Module | None, options: CompressOptions, *, where: str
) -> None:
    """One line for a user module's run without `model=` or asking for training, and for
    `model=` given with a built-in model's run."""
    if not isinstance(cfg.model, UserModelConfig):
        if model is not None:
            raise UserError(
                f"model: only for a run trained with a user module; {where} has the built-in "
                f"model.name={cfg.model.name} (rebuilt from its config): leave model out"
            )
        return
    name = cfg.model.class_name
    if model is None:
        raise UserError(
            f"{where} was trained with a user module ({name}); pass a fresh instance of it: "
            f"scaletrain.compress.compress(run_dir, model={name}(...), quantize=...)"
        )
    if options.finetune_epochs or options.quantize == "qat" or options.structured:
        raise UserError(
            f"{where}: a user module ({name}) is quantized or pruned as it is; fine-tuning "
            "(finetune_epochs, qat) and structured pruning need a built-in model"
        )
