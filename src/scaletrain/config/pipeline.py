"""What pipeline stages cannot honour (`parallel.strategy: pp`, or `fsdp` with
`parallel.dims.pp > 1`), refused at config time with the keys named.

Kept out of `config/__init__.py` (already large) and given the whole `Config` because the
checks cross sections: the micro batch (`train`), the model's layers (`model`), the task.
"""

from __future__ import annotations

from typing import Any


def check_pipeline(cfg: Any) -> None:
    """Raise ValueError (one line, the key path first) for a pipeline that cannot run."""
    parallel = cfg.parallel
    composed = parallel.strategy == "fsdp" and parallel.dims.pp > 1
    if parallel.strategy != "pp" and not composed:
        _unused_keys(parallel)
        return
    pp = parallel.pp
    # the pipeline's size: parallel.pp.size (pure pipeline) or parallel.dims.pp (on a mesh)
    size_key, size = (
        ("parallel.dims.pp", parallel.dims.pp) if composed else ("parallel.pp.size", pp.size)
    )
    if composed:
        _check_composed(parallel)
    _check_schedule(pp, size_key=size_key, size=size)
    micro = _micro_batch(cfg, composed=composed)
    if micro is not None and micro % pp.microbatches:
        raise ValueError(
            f"parallel.pp.microbatches: {pp.microbatches} does not divide the micro batch of "
            f"{micro} (train.micro_batch_size / train.batch_size per data-parallel rank); "
            f"choose a divisor of {micro}"
        )
    _check_model(cfg, num_stages=size * pp.stages_per_rank, size_key=size_key)
    if cfg.data.task not in ("auto", "language_model", "classification"):
        raise ValueError(
            f"data.task: pipeline stages ({size_key}={size}) train language models and "
            f"classifiers only, got {cfg.data.task!r}; use data.task=language_model or "
            "classification, or another strategy"
        )
    if cfg.train.precision == "16-mixed":
        raise ValueError(
            f"train.precision: `16-mixed` with pipeline stages ({size_key}={size}): each "
            "stage's grad scaler would skip steps on its own; use `bf16-mixed` or `32`"
        )


def _check_schedule(pp: Any, *, size_key: str, size: int) -> None:
    interleaved = pp.schedule == "interleaved_1f1b"
    if interleaved and pp.stages_per_rank < 2:
        raise ValueError(
            "parallel.pp.stages_per_rank: `interleaved_1f1b` needs at least 2 stages per rank, "
            f"got {pp.stages_per_rank}; set parallel.pp.stages_per_rank=2 or use `1f1b`"
        )
    if not interleaved and pp.stages_per_rank != 1:
        raise ValueError(
            f"parallel.pp.stages_per_rank: `{pp.schedule}` runs one stage per rank, got "
            f"{pp.stages_per_rank}; use parallel.pp.schedule=interleaved_1f1b or set it to 1"
        )
    if pp.schedule == "1f1b" and pp.microbatches < size:
        raise ValueError(
            f"parallel.pp.microbatches: `1f1b` needs at least one piece per stage "
            f"({size_key}={size}), got {pp.microbatches}; raise it or use `gpipe`"
        )
    if interleaved and pp.microbatches % max(1, pp.microbatches // size):
        raise ValueError(
            f"parallel.pp.microbatches: `interleaved_1f1b` runs rounds of "
            f"{size_key}={size} pieces, got {pp.microbatches}; use a multiple of {size}"
        )


def _micro_batch(cfg: Any, *, composed: bool) -> int | None:
    """The micro batch one pipeline reads, where the config fixes it."""
    micro = cfg.train.micro_batch_size
    if micro not in ("auto", None):
        return micro
    if not composed:  # one data-parallel rank: every pipeline rank reads the whole batch
        return cfg.train.batch_size
    dims = cfg.parallel.dims
    if dims.dp_shard == "auto":
        return None  # the world size decides; the pipeline takes the largest divisor
    replicas = dims.dp_replicate * dims.dp_shard
    return cfg.train.batch_size // replicas if cfg.train.batch_size % replicas == 0 else None


def _check_composed(parallel: Any) -> None:
    """What the pipeline on the device mesh (`parallel.dims.pp > 1`) does not take."""
    if parallel.pp.size != type(parallel.pp)().size:
        raise ValueError(
            f"parallel.pp.size: the pipeline's size is parallel.dims.pp={parallel.dims.pp} "
            "under parallel.strategy=fsdp; remove parallel.pp.size (it sizes "
            "parallel.strategy=pp only)"
        )


def _check_model(cfg: Any, *, num_stages: int, size_key: str) -> None:
    """What the model section says; the module itself (a user's, too) is checked by
    `parallel/pipeline_split.py: check_layout` before the run directory exists."""
    model = cfg.model
    if model.name not in ("gpt", "user"):  # a user module's layout: check_layout, at build
        raise ValueError(
            f"model.name: pipeline stages ({size_key} > 1) are cut from a GPT's layers, and "
            f"`{model.name}` has none to cut; use model.name=gpt or another strategy"
        )
    if getattr(model, "tie_weights", False):
        raise ValueError(
            "model.tie_weights: the head would share the embedding's weight across pipeline "
            f"stages (first and last rank, {size_key} > 1); set model.tie_weights=false"
        )
    layers = getattr(model, "n_layer", None)
    if layers is not None and layers < num_stages:
        raise ValueError(
            f"model.n_layer: {layers} layers cannot fill {num_stages} pipeline stages "
            f"({size_key} x parallel.pp.stages_per_rank); use at least one layer per stage"
        )


def _unused_keys(parallel: Any) -> None:
    """`parallel.pp.*` set without the pipeline strategy: a changed value counts, not a key
    present (a resolved config.yaml lists every key)."""
    default = type(parallel.pp)()
    for key in type(parallel.pp).model_fields:
        if getattr(parallel.pp, key) != getattr(default, key):
            raise ValueError(
                f"parallel.pp.{key}: only used by pipeline stages (parallel.strategy=pp, "
                f"or fsdp with parallel.dims.pp > 1), got {parallel.strategy!r}; remove it "
                "or set parallel.strategy=pp"
            )
