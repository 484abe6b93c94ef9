"""`parallel.dims`: how the processes form one device mesh (data, tensor, pipeline)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from scaletrain.config.base import PositiveInt, Section


class DimsConfig(Section):
    dp_replicate: PositiveInt = Field(
        1, description="Replicas of the (sharded) model: HSDP's replicate dimension."
    )
    dp_shard: PositiveInt | Literal["auto"] = Field(
        "auto",
        description="Ranks one FSDP shard group spans; `auto`: world size / (the other dims).",
    )
    tp: PositiveInt = Field(
        1, description="Tensor parallel ranks (innermost dim): each holds 1/tp of every block."
    )
    pp: PositiveInt = Field(
        1,
        description="Pipeline ranks (outermost dim); > 1 runs `parallel.pp` stages, each "
        "split by the other dims.",
    )

    def is_default(self) -> bool:
        """Today's meshes: every rank a data-parallel rank, nothing split inside the model."""
        return (self.dp_replicate, self.dp_shard, self.tp, self.pp) == (1, "auto", 1, 1)

    def first_changed(self) -> str:
        """The first key that differs from its default, for messages."""
        for key, default in (("dp_replicate", 1), ("dp_shard", "auto"), ("tp", 1), ("pp", 1)):
            if getattr(self, key) != default:
                return key
        return ""
