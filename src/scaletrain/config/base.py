"""Scalar types and the frozen ``Section`` base every config section derives from."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field
from pydantic_core import PydanticCustomError

# Counts fit in int32, so no number reaches torch or numpy as an overflow; the batch sizes
# have a bound of their own (they size tensors), as does the seed (numpy takes 32 bits).
MAX_COUNT = 2**31 - 1
MAX_BATCH = 2**24
MAX_SEED = 2**32 - 1


def _not_bool(value: Any) -> Any:
    """YAML's `true` is not the number 1: pydantic's lax mode would take it as one."""
    if isinstance(value, bool):
        raise PydanticCustomError("bool_not_number", "expected a number, not a boolean")
    return value


_NOT_BOOL = BeforeValidator(_not_bool)
# One upper bound per type: of two `le` constraints pydantic reports the first.
Int = Annotated[int, _NOT_BOOL, Field(le=MAX_COUNT)]
PositiveInt = Annotated[int, _NOT_BOOL, Field(gt=0, le=MAX_COUNT)]
NonNegInt = Annotated[int, _NOT_BOOL, Field(ge=0, le=MAX_COUNT)]
BatchSize = Annotated[int, _NOT_BOOL, Field(gt=0, le=MAX_BATCH)]
Seed = Annotated[int, _NOT_BOOL, Field(ge=0, le=MAX_SEED)]
Float = Annotated[float, _NOT_BOOL]  # finite: Section's allow_inf_nan=False
PositiveFloat = Annotated[Float, Field(gt=0)]
NonNegFloat = Annotated[Float, Field(ge=0)]
Fraction = Annotated[Float, Field(ge=0, lt=1)]


class Section(BaseModel):
    model_config = ConfigDict(
        extra="forbid", frozen=True, validate_default=True, allow_inf_nan=False
    )
