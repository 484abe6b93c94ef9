"""Trained weights into a module: the run's own built-in model, or the user's module."""

from __future__ import annotations

from pathlib import Path

from torch import nn

from scaletrain.checkpoint import CheckpointStore
from scaletrain.checkpoint.formats import read_metadata
from scaletrain.checkpoint.state_dict import load_model_state, model_state
from scaletrain.config import Config, UserModelConfig
from scaletrain.data import DataSpec
from scaletrain.errors import UserError
from scaletrain.models import build_model
from scaletrain.parallel import SingleStrategy, build_strategy
from scaletrain.rundir import RunDir

_SHOWN_KEYS = 3  # names listed in a mismatch message


def build_run_model(cfg: Config, spec: DataSpec) -> nn.Module:
    """The config's registry model for this data (untrained)."""
    return build_model(
        cfg.model,
        input_shape=spec.input_shape,
        num_outputs=spec.num_outputs,
        vocab_size=spec.vocab_size,
        task=spec.task,
    )


def inference_strategy(cfg: Config) -> SingleStrategy:
    """One process on the run's device (`train.device`), whatever strategy trained it."""
    return build_strategy(
        cfg.parallel.model_copy(update={"strategy": "single"}), device_name=cfg.train.device
    )


def load_trained_model(
    run: RunDir, cfg: Config, spec: DataSpec, *, checkpoint: str, model: nn.Module | None
) -> tuple[nn.Module, Path]:
    """`model` (or the run's built-in model) on the run's device with a checkpoint's weights,
    in eval mode, and the checkpoint folder read. A run trained with a user module needs that module passed as `model`."""
    if model is None and isinstance(cfg.model, UserModelConfig):
        raise UserError(
            f"{run.root} was trained with a user module ({cfg.model.class_name}); pass a "
            f"fresh instance to load its weights into: "
            f"scaletrain.load_run({str(run.root)!r}, model={cfg.model.class_name}(...))"
        )
    if model is not None and not isinstance(model, nn.Module):
        raise UserError(f"model: expected a torch nn.Module, got {type(model).__name__}")
    device = inference_strategy(cfg).device
    model = (model if model is not None else build_run_model(cfg, spec)).to(device)
    path = CheckpointStore(run.checkpoints).find(checkpoint)
    load_weights(model, path, rank=0)
    return model.eval(), path


def load_weights(model: nn.Module, path: Path, *, rank: int) -> None:
    """Fill `model` in place from a verified checkpoint folder (safetensors + JSON, no pickle);
    a module whose parameter names differ from the saved ones is refused, not half-loaded."""
    store = CheckpointStore(path.parent)
    tensors = {"model": model_state(model)}
    _check_names(model, set(tensors["model"]), path, store)
    store.load(path, tensors=tensors, rank=rank)
    load_model_state(model, tensors["model"])


def _check_names(model: nn.Module, names: set[str], path: Path, store: CheckpointStore) -> None:
    saved_keys = read_metadata(path, store.verify(path)).state_dict_metadata
    saved = {key.removeprefix("model.") for key in saved_keys if key.startswith("model.")}
    missing, unexpected = sorted(saved - names), sorted(names - saved)
    if not (missing or unexpected):
        return
    parts = []
    if unexpected:
        parts.append(f"the module has {_names(unexpected)} that the checkpoint lacks")
    if missing:
        parts.append(f"the checkpoint has {_names(missing)} that the module lacks")
    raise UserError(
        f"model: a {type(model).__name__} does not fit the weights in {path}: "
        f"{'; '.join(parts)}; pass the module the run was trained with"
    )


def _names(keys: list[str]) -> str:
    shown = ", ".join(keys[:_SHOWN_KEYS])
    return shown + (f" (+{len(keys) - _SHOWN_KEYS} more)" if len(keys) > _SHOWN_KEYS else "")
