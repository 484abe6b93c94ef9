"""The restricted pickle interpreter for DCP's `.metadata` (see `legacy.py`).

`pickletools.genops` only parses; this runs just the opcodes a DCP metadata pickle uses.
A global must be one of an exact list of `(module, name)` pairs, looked up in a dict: no
import and no dotted names, so nothing walks from an allowed module to `os.system`. Only
DCP's own dataclasses are instantiated (`NEWOBJ` with no arguments, then `BUILD` with a dict
of their own field names), only four constructors are called (ours, checking their
arguments), lists and dicts are only filled if they are exactly lists and dicts, and
nothing is ever called on or set on a class object. Every other opcode (`INST`, `OBJ`,
`NEWOBJ_EX`, `EXT*`, persistent ids, buffers, `POP`, `DUP` ...) is refused.
"""

from __future__ import annotations

import dataclasses
import pickletools
from pathlib import PurePosixPath
from typing import Any

import torch
from torch.distributed.checkpoint.filesystem import _StorageInfo
from torch.distributed.checkpoint.metadata import (
    _MEM_FORMAT_ENCODING,
    BytesStorageMetadata,
    ChunkStorageMetadata,
    Metadata,
    MetadataIndex,
    StorageMeta,
    TensorProperties,
    TensorStorageMetadata,
)

from scaletrain.checkpoint.metadata_json import DTYPES, Invalid, dims, require
from scaletrain.checkpoint.values import shown

_DCP = "torch.distributed.checkpoint.metadata"
_CLASSES = {
    cls: (_DCP, cls.__name__)
    for cls in (
        Metadata,
        TensorStorageMetadata,
        BytesStorageMetadata,
        ChunkStorageMetadata,
        TensorProperties,
        MetadataIndex,
        StorageMeta,
    )
}
_CLASSES[_StorageInfo] = ("torch.distributed.checkpoint.filesystem", "_StorageInfo")


def _size(*args: Any) -> torch.Size:
    require(len(args) == 1 and type(args[0]) is tuple, "torch.Size takes one tuple")
    return dims(args[0], "torch.Size")


def _layout(*args: Any) -> torch.layout:
    if args != ("torch.strided",):
        raise Invalid(f"unknown layout {shown(args)}")
    return torch.strided


def _memory_format(*args: Any) -> _MEM_FORMAT_ENCODING:
    require(len(args) == 1 and type(args[0]) is int, "bad memory format")
    try:
        return _MEM_FORMAT_ENCODING(args[0])
    except ValueError:
        raise Invalid(f"unknown memory format {args[0]}") from None


def _path(*args: Any) -> str:
    require(all(type(part) is str for part in args), "a path of non-strings")
    return str(PurePosixPath(*args))


_CONSTRUCTORS = {
    ("torch", "Size"): _size,
    ("torch.serialization", "_get_layout"): _layout,
    (_DCP, "_MEM_FORMAT_ENCODING"): _memory_format,
    ("pathlib", "PosixPath"): _path,
    ("pathlib", "PurePosixPath"): _path,
}
# the exact globals a DCP metadata pickle names: dtypes are pickled by name (`torch.float32`)
GLOBALS: dict[tuple[str, str], Any] = {
    **{place: cls for cls, place in _CLASSES.items()},
    **_CONSTRUCTORS,
    **{("torch", name): dtype for name, dtype in DTYPES.items()},
}


class _Machine:
    """The stack, marks and memo of a pickle, and the opcodes allowed to change them."""

    def __init__(self):
        self.stack: list = []
        self.marks: list[int] = []
        self.memo: dict = {}

    def run(self, data: bytes) -> Any:
        for opcode, arg, _position in pickletools.genops(data):
            if opcode.name == "STOP":
                require(len(self.stack) == 1 and not self.marks, "an unbalanced pickle")
                return self.stack.pop()
            handler = _HANDLERS.get(opcode.name)
            if handler is None:
                raise Invalid(f"pickle opcode {opcode.name} is not allowed")
            handler(self, arg)
        raise Invalid("the pickle has no STOP")

    def pop_mark(self) -> list:
        require(bool(self.marks), "a pickle without its MARK")
        start = self.marks.pop()
        items, self.stack[start:] = self.stack[start:], []
        return items

    def pop(self, count: int = 1) -> list:
        require(len(self.stack) >= count, "a pickle that pops an empty stack")
        items, self.stack[-count:] = self.stack[-count:], []
        return items

    def find(self, module: Any, name: Any) -> None:
        if not (type(module) is str and type(name) is str and (module, name) in GLOBALS):
            named = f"{module}.{name}" if type(module) is type(name) is str else "a non-string"
            raise Invalid(f"refers to {shown(named)}, which is not DCP metadata")
        self.stack.append(GLOBALS[module, name])

    def new(self, _arg: None) -> None:
        cls, args = self.pop(2)
        if not (isinstance(cls, type) and cls in _CLASSES and args == ()):
            raise Invalid(f"NEWOBJ of {shown(cls)} is not allowed")
        self.stack.append(cls.__new__(cls))

    def reduce(self, _arg: None) -> None:
        function, args = self.pop(2)
        allowed = any(function is value for value in _CONSTRUCTORS.values())
        if not (allowed and type(args) is tuple):
            raise Invalid(f"REDUCE calls {_kind(function)}, which is not allowed")
        self.stack.append(function(*args))

    def build(self, _arg: None) -> None:
        (state,) = self.pop()
        require(bool(self.stack), "BUILD of nothing")
        target = self.stack[-1]
        if type(target) not in _CLASSES:
            raise Invalid(f"BUILD of {_kind(target)} is not allowed")
        if type(target) is TensorProperties:  # its own __setstate__: a 5-tuple
            require(type(state) is tuple and len(state) == 5, "bad TensorProperties state")
            require(type(state[3]) is _MEM_FORMAT_ENCODING, "bad TensorProperties state")
            target.__setstate__(state)
            return
        names = {field.name for field in dataclasses.fields(target)}
        require(
            type(state) is dict and all(type(k) is str and k in names for k in state),
            f"BUILD of {type(target).__name__} with fields it does not have",
        )
        target.__dict__.update(state)

    def set_items(self, pairs: list, target: Any) -> None:
        require(type(target) is dict and len(pairs) % 2 == 0, "SETITEMS on a non-dict")
        for key, value in zip(pairs[::2], pairs[1::2], strict=True):
            if type(key) not in (str, int, MetadataIndex):
                raise Invalid(f"a dict key of type {type(key).__name__}")
            target[key] = value

    def extend(self, items: list, target: Any) -> None:
        require(type(target) is list, "APPENDS on a non-list")
        target.extend(items)


def _kind(value: Any) -> str:
    """What an untrusted object is, without calling its repr (its fields may not be set)."""
    return f"the class {value.__qualname__}" if isinstance(value, type) else type(value).__name__


def _push(value: Any):
    return lambda machine, _arg: machine.stack.append(value)


def _push_arg(machine: _Machine, arg: Any) -> None:
    machine.stack.append(arg)


def _memoize(machine: _Machine, arg: int | None) -> None:
    require(bool(machine.stack), "MEMOIZE of nothing")
    machine.memo[len(machine.memo) if arg is None else arg] = machine.stack[-1]


def _get(machine: _Machine, arg: int) -> None:
    require(arg in machine.memo, "a pickle that reads an empty memo slot")
    machine.stack.append(machine.memo[arg])


def _tuple(count: int | None):
    def handler(machine: _Machine, _arg: None) -> None:
        items = machine.pop_mark() if count is None else machine.pop(count)
        machine.stack.append(tuple(items))

    return handler


_HANDLERS = {
    "PROTO": lambda machine, arg: None,
    "FRAME": lambda machine, arg: None,
    "MARK": lambda machine, arg: machine.marks.append(len(machine.stack)),
    "EMPTY_DICT": lambda machine, arg: machine.stack.append({}),
    "EMPTY_LIST": lambda machine, arg: machine.stack.append([]),
    "EMPTY_TUPLE": _push(()),
    "NONE": _push(None),
    "NEWTRUE": _push(True),
    "NEWFALSE": _push(False),
    **dict.fromkeys(("BININT", "BININT1", "BININT2", "LONG1", "BINFLOAT"), _push_arg),
    **dict.fromkeys(("SHORT_BINUNICODE", "BINUNICODE", "BINUNICODE8"), _push_arg),
    "TUPLE": _tuple(None),
    "TUPLE1": _tuple(1),
    "TUPLE2": _tuple(2),
    "TUPLE3": _tuple(3),
    "APPEND": lambda machine, arg: machine.extend(machine.pop(), machine.stack[-1]),
    "APPENDS": lambda machine, arg: machine.extend(machine.pop_mark(), machine.stack[-1]),
    "SETITEM": lambda machine, arg: machine.set_items(machine.pop(2), machine.stack[-1]),
    "SETITEMS": lambda machine, arg: machine.set_items(machine.pop_mark(), machine.stack[-1]),
    "MEMOIZE": _memoize,
    "BINPUT": _memoize,
    "LONG_BINPUT": _memoize,
    "BINGET": _get,
    "LONG_BINGET": _get,
    "GLOBAL": lambda machine, arg: machine.find(*arg.split(" ", 1)),
    "STACK_GLOBAL": lambda machine, arg: machine.find(*machine.pop(2)),
    "NEWOBJ": _Machine.new,
    "REDUCE": _Machine.reduce,
    "BUILD": _Machine.build,
}


def run_pickle(data: bytes) -> Any:
    """The object a DCP metadata pickle describes; Invalid (or ValueError from the parser,
    TypeError/AttributeError/KeyError from a malformed one) for anything else."""
    return _Machine().run(data)
