"""What `parallel.strategy: pp` cannot honour, refused at config time with the keys named.

Kept out of `config/__init__.py` (already large) and given the whole `Config` because the
checks cross sections: the micro batch (`train`), the model's layers (`model`), the task.
"""

from __future__ import annotations

from typing import Any


def check_pipeline(cfg: Any) -> None:
    """Raise ValueError (one line, the key path first) for a pipeline that cannot run."""
    parallel = cfg.parallel
    if parallel.strategy != "pp":
        _unused_keys(parallel)
        return
    pp = parallel.pp
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
    micro = cfg.train.micro_batch_size
    # one data-parallel rank: every pipeline rank reads the whole batch
    micro = cfg.train.batch_size if micro in ("auto", None) else micro
    if micro % pp.microbatches:
        raise ValueError(
            f"parallel.pp.microbatches: {pp.microbatches} does not divide the micro batch of "
            f"{micro} (train.micro_batch_size / train.batch_size); choose a divisor of {micro}"
        )
    if pp.schedule == "1f1b" and pp.microbatches < pp.size:
        raise ValueError(
            f"parallel.pp.microbatches: `1f1b` needs at least one piece per stage "
            f"(parallel.pp.size={pp.size}), got {pp.microbatches}; raise it or use `gpipe`"
        )
    if interleaved and pp.microbatches % max(1, pp.microbatches // pp.size):
        raise ValueError(
            f"parallel.pp.microbatches: `interleaved_1f1b` runs rounds of "
            f"parallel.pp.size={pp.size} pieces, got {pp.microbatches}; use a multiple of "
            f"{pp.size}"
        )
    _check_model(cfg, num_stages=pp.size * pp.stages_per_rank)
    if cfg.data.task not in ("auto", "language_model"):
        raise ValueError(
            f"data.task: parallel.strategy=pp trains language models only, got "
            f"{cfg.data.task!r}; use data.task=language_model or another strategy"
        )
    if cfg.train.precision == "16-mixed":
        raise ValueError(
            "train.precision: `16-mixed` with parallel.strategy=pp: each stage's grad scaler "
            "would skip steps on its own; use `bf16-mixed` or `32`"
        )


def _check_model(cfg: Any, *, num_stages: int) -> None:
    """What the model section says; the module itself (a user's, too) is checked by
    `parallel/pipeline_split.py: check_layout` before the run directory exists."""
    model = cfg.model
    if getattr(model, "tie_weights", False):
        raise ValueError(
            "model.tie_weights: the head would share the embedding's weight across pipeline "
            "stages (first and last rank); set model.tie_weights=false with "
            "parallel.strategy=pp"
        )
    layers = getattr(model, "n_layer", None)
    if layers is not None and layers < num_stages:
        raise ValueError(
            f"model.n_layer: {layers} layers cannot fill {num_stages} pipeline stages "
            "(parallel.pp.size x parallel.pp.stages_per_rank); use at least one layer per stage"
        )


def _unused_keys(parallel: Any) -> None:
    """`parallel.pp.*` set without the pipeline strategy: a changed value counts, not a key
    present (a resolved config.yaml lists every key)."""
    default = type(parallel.pp)()
    for key in type(parallel.pp).model_fields:
        if getattr(parallel.pp, key) != getattr(default, key):
            raise ValueError(
                f"parallel.pp.{key}: only used by parallel.strategy=pp, got "
                f"{parallel.strategy!r}; remove it or set parallel.strategy=pp"
            )
