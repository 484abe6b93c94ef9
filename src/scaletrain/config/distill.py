"""The `distill` section (absent: no teacher) and what distillation cannot combine with,
refused at config time with the keys named (docs/compress.md, Distillation)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field

from scaletrain.config.base import Float, PositiveFloat, Section

# The teacher is replicated on every rank (no wrapper): it needs each rank's whole inputs and
# the student's whole outputs, which these strategies do not hand the loss.
REFUSED_STRATEGIES = {
    "pp": "pipeline stages: only the last stage sees the student's outputs",
    "async_ps": "the parameter-server workers were not tested with a teacher",
    "local_sgd": "ranks training alone were not tested with a teacher",
    "diloco": "ranks training alone were not tested with a teacher",
}


class DistillConfig(Section):
    teacher: str = Field(
        description="Run directory of the trained teacher (same data and preprocessing, "
        "classification or language model); its best weights are used, in eval mode."
    )
    temperature: PositiveFloat = Field(
        2.0, description="T: both logits are divided by T before the softmax; the KL is × T²."
    )
    alpha: Annotated[Float, Field(ge=0, le=1)] = Field(
        0.5, description="Weight of the teacher's KL term; (1 - alpha) weighs the task loss."
    )
    precompute: bool = Field(
        False,
        description="Run the teacher once over the train split into a memory-mapped "
        "`teacher_logits.npy` (float32, by sample index) instead of every step; refused "
        "with data augmentation (the logits would be of other inputs).",
    )
    logits_dir: str | None = Field(
        None, description="precompute: folder for `teacher_logits.npy`; default the run directory."
    )
    logits_dtype: Literal["float32", "float16"] = Field(
        "float32",
        description="precompute: the file's number type; float16 halves it (a language model's "
        "logits are samples × context × vocabulary), rounding each logit to ~3 digits.",
    )


def check_distill(cfg: Any) -> None:
    """Raise ValueError (one line, the key path first) for a distillation that cannot run."""
    distill = cfg.distill
    if distill is None:
        return
    strategy = cfg.parallel.strategy
    if strategy in REFUSED_STRATEGIES:
        raise ValueError(
            f"distill.teacher: not with parallel.strategy={strategy} "
            f"({REFUSED_STRATEGIES[strategy]}); use single, ddp or fsdp"
        )
    dims = cfg.parallel.dims
    if dims.tp > 1 or dims.pp > 1:
        key = "tp" if dims.tp > 1 else "pp"
        raise ValueError(
            f"distill.teacher: not with parallel.dims.{key}={getattr(dims, key)} (the student's "
            "outputs are split over ranks); use parallel.dims.tp=1 and parallel.dims.pp=1"
        )
    if cfg.data.task == "regression":
        raise ValueError(
            "distill.teacher: distillation matches class probabilities, and data.task is "
            "regression; remove the distill section or train a classifier"
        )
    augmented = [key for key, value in cfg.data.augment.model_dump().items() if value]
    if distill.precompute and augmented:
        raise ValueError(
            f"distill.precompute: precomputed teacher logits are of the unaugmented inputs, "
            f"and data.augment.{augmented[0]} changes them every step; set "
            "distill.precompute=false (the teacher then sees the augmented batch)"
        )
    for key, default in (("logits_dir", None), ("logits_dtype", "float32")):
        if getattr(distill, key) != default and not distill.precompute:
            raise ValueError(
                f"distill.{key}: only used with distill.precompute=true; remove it or set "
                "distill.precompute=true"
            )
