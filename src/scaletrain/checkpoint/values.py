"""DCP's non-tensor values (an optimizer's lr, betas, flags ...) as JSON instead of pickles.

DCP flattens dicts, so what reaches here is plain data, lists and tuples. JSON has no
tuples and no infinities, so those two are tagged: a JSON object in the encoded form is
always a tag. Anything else cannot be saved: a clear error at save time beats a pickle
that would run code at load time.
"""

from __future__ import annotations

import json
import math
import reprlib
from typing import Any

from scaletrain.errors import CheckpointError

_PLAIN = (type(None), bool, int, float, str)
_NON_FINITE = ("nan", "inf", "-inf")


def encode_value(value: Any, *, name: str) -> Any:
    """`value` as JSON data; TypeError naming `name` for anything but plain Python data."""
    if isinstance(value, float) and not math.isfinite(value):
        return {"float": repr(value)}
    if isinstance(value, _PLAIN):
        return value
    if isinstance(value, list):
        return [encode_value(item, name=name) for item in value]
    if isinstance(value, tuple):
        return {"tuple": [encode_value(item, name=name) for item in value]}
    raise TypeError(
        f"checkpoint value `{name}` is a {type(value).__name__}; only None, bool, int, "
        "float, str, list and tuple can be saved beside the tensors"
    )


def decode_value(data: Any, *, name: str) -> Any:
    """The inverse of `encode_value`; CheckpointError on anything it cannot have written."""
    if isinstance(data, _PLAIN) and not (isinstance(data, float) and not math.isfinite(data)):
        return data
    if isinstance(data, list):
        return [decode_value(item, name=name) for item in data]
    if isinstance(data, dict) and len(data) == 1:
        ((tag, body),) = data.items()
        if tag == "tuple" and isinstance(body, list):
            return tuple(decode_value(item, name=name) for item in body)
        if tag == "float" and body in _NON_FINITE:
            return float(body)
    raise CheckpointError(f"checkpoint value `{name}` is not one scaletrain writes: {shown(data)}")


def dumps_value(value: Any, *, name: str) -> bytes:
    return json.dumps(encode_value(value, name=name), allow_nan=False).encode()


class _Short(reprlib.Repr):
    """Bounded repr of untrusted data: a few levels and items of containers, and only the
    type of anything else (whose own repr could be huge, or fail on unset fields)."""

    def __init__(self):  # keyword arguments only from Python 3.12
        super().__init__()
        self.maxlevel, self.maxtuple, self.maxlist, self.maxdict, self.maxstring = 3, 4, 4, 4, 50

    def repr_instance(self, x: Any, level: int) -> str:
        return f"<{type(x).__name__}>"

    def repr_float(self, x: float, level: int) -> str:
        return repr(x)

    repr_bool = repr_NoneType = repr_float


_SHORT = _Short()


def shown(data: Any, limit: int = 60) -> str:
    """A short one-line repr: error lines quote untrusted data."""
    text = _SHORT.repr(data)
    return text if len(text) <= limit else text[:limit] + "..."
