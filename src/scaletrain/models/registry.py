"""Plain-dict model registry, filled by ``@register_model`` where each model is defined.

``build_model(cfg.model, ...)`` is the only reader of the model section: it looks the
name up, builds the module from the data's shapes, then applies ``cfg.model.init``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from torch import nn

from scaletrain.errors import ConfigError
from scaletrain.models.init import apply_init

ModelBuilder = Callable[..., nn.Module]


@dataclass(frozen=True)
class ModelEntry:
    """One registered model: how to build it and what its repeated blocks are."""

    name: str
    # builder(cfg, *, input_shape, num_outputs, vocab_size, task) -> nn.Module; `task` tells a
    # sequence model whether it predicts each next token (language_model) or one label.
    builder: ModelBuilder
    config_class: type  # the pydantic section: `scaletrain list models` prints its fields
    block_types: tuple[type[nn.Module], ...]  # units for FSDP per-block sharding / checkpointing


MODELS: dict[str, ModelEntry] = {}

# Containers without a forward of their own: their children are the real blocks.
_CONTAINERS = (nn.ModuleList, nn.ModuleDict)


def register_model(
    name: str, *, config_class: type, block_types: tuple[type[nn.Module], ...] = ()
) -> Callable[[ModelBuilder], ModelBuilder]:
    """Add a builder under ``model.name: name`` (its docstring is its one-line description)."""

    def decorator(builder: ModelBuilder) -> ModelBuilder:
        assert name not in MODELS, f"model {name!r} registered twice"
        MODELS[name] = ModelEntry(name, builder, config_class, tuple(block_types))
        return builder

    return decorator


def build_model(
    cfg: Any,
    *,
    input_shape: tuple[int, ...],
    num_outputs: int,
    vocab_size: int | None = None,
    task: str = "classification",
) -> nn.Module:
    """Build the registered model named by ``cfg.name`` and initialize it from ``cfg.init``.

    Args:
        cfg: the ``model`` config section (``MLPConfig``, ``CNNConfig`` …).
        input_shape: shape of one sample, without the batch dimension.
        num_outputs: classes (classification) or target width (regression).
        vocab_size: vocabulary size known from token-id data, if any.
        task: the data's task (`classification`, `regression` or `language_model`).
    """
    entry = MODELS.get(cfg.name)
    if entry is None:
        if cfg.name == "user":
            raise ConfigError(
                "model.name: `user` marks a module passed to the Python API and cannot be "
                f"built from config; choose one of {', '.join(sorted(MODELS))}"
            )
        raise ConfigError(
            f"model.name: unknown model {cfg.name!r}; expected one of {', '.join(sorted(MODELS))}"
        )
    model = entry.builder(
        cfg,
        input_shape=tuple(input_shape),
        num_outputs=num_outputs,
        vocab_size=vocab_size,
        task=task,
    )
    apply_init(model, cfg.init)
    return model


def token_vocab_size(name: str, cfg: Any, *, input_shape: tuple[int, ...], vocab_size) -> int:
    """The vocabulary of a model over token-id sequences (T,), the config's where set;
    refuses other inputs, an unknown vocabulary and a padding id outside it, naming the key."""
    if len(input_shape) != 1:
        raise ConfigError(
            f"model.name: `{name}` needs token-id sequences shaped (T,), got samples shaped "
            f"{tuple(input_shape)}; use a text dataset or model.name: mlp / cnn"
        )
    vocab_size = cfg.vocab_size or vocab_size
    if vocab_size is None:
        raise ConfigError(
            f"model.vocab_size: `{name}` needs a vocabulary size and the data gave none; "
            "set model.vocab_size=N (largest token id + 1)"
        )
    padding_idx = getattr(cfg, "padding_idx", None)
    if padding_idx is not None and not -vocab_size <= padding_idx < vocab_size:
        raise ConfigError(
            f"model.padding_idx: must be a token id below model.vocab_size ({vocab_size}), "
            f"got {padding_idx}; set it to an id in range or null"
        )
    return vocab_size


def block_types_of(model_cfg, model: nn.Module) -> tuple[type[nn.Module], ...]:
    """The registry's block types for a built-in model, else the user module's children."""
    entry = MODELS.get(getattr(model_cfg, "name", ""))
    return entry.block_types if entry and entry.block_types else default_block_types(model)


def default_block_types(model: nn.Module) -> tuple[type[nn.Module], ...]:
    """Blocks of a user module: classes of its direct children that own parameters.

    Entries of a ModuleList / ModuleDict child count as direct children (``self.layers[i]``).
    """
    found: dict[type[nn.Module], None] = {}  # a dict keeps first-seen order, without repeats
    for child in _direct_children(model):
        if any(True for _ in child.parameters()):
            found[type(child)] = None
    return tuple(found)


def _direct_children(model: nn.Module) -> list[nn.Module]:
    children = []
    for child in model.children():
        if isinstance(child, _CONTAINERS):
            children.extend(_direct_children(child))
        else:
            children.append(child)
    return children
