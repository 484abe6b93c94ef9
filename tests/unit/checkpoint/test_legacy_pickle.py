"""Old checkpoints' pickled `.metadata`: read by an interpreter with an exact allow-list,
never by `pickle`. Every payload shape is built by hand from opcodes; those that would run
`os.system` are first shown to be live (plain `pickle.loads` runs them and creates the marker
file), then refused by our reader with one CheckpointError line and no marker."""

from __future__ import annotations

import pickle
import struct
from pathlib import Path

import pytest
import torch.distributed.checkpoint.metadata as dcp_metadata
from torch.distributed.checkpoint.metadata import StorageMeta

from scaletrain.checkpoint.legacy import load_legacy_metadata
from scaletrain.errors import CheckpointError

FS = "torch.distributed.checkpoint.filesystem"
MD = "torch.distributed.checkpoint.metadata"
PROTO = b"\x80\x04"
MARK, STOP, REDUCE, BUILD, OBJ = b"(", b".", b"R", b"b", b"o"
EMPTY_TUPLE, EMPTY_DICT, NONE, SETITEM = b")", b"}", b"N", b"s"
TUPLE1, TUPLE2, NEWOBJ, NEWOBJ_EX = b"\x85", b"\x86", b"\x81", b"\x92"


def text(value: str) -> bytes:
    """SHORT_BINUNICODE / BINUNICODE: push a string."""
    data = value.encode()
    if len(data) < 256:
        return b"\x8c" + bytes([len(data)]) + data
    return b"X" + struct.pack("<I", len(data)) + data


def stack_global(module: str, name: str) -> bytes:
    return text(module) + text(name) + b"\x93"


def global_(module: str, name: str) -> bytes:
    return b"c" + f"{module}\n{name}\n".encode()


def touch(marker: Path) -> bytes:
    return text(f"touch {marker}")


# payloads that run `touch MARKER` under plain pickle.loads
LIVE = {
    "GLOBAL os.system": lambda m: PROTO + global_("os", "system") + touch(m) + TUPLE1 + REDUCE,
    "GLOBAL dotted metadata.os.system": lambda m: (
        PROTO + global_(MD, "os.system") + touch(m) + TUPLE1 + REDUCE
    ),
    "STACK_GLOBAL posix.system": lambda m: (
        PROTO + stack_global("posix", "system") + touch(m) + TUPLE1 + REDUCE
    ),
    "STACK_GLOBAL dotted filesystem.os.system": lambda m: (
        PROTO + stack_global(FS, "os.system") + touch(m) + TUPLE1 + REDUCE
    ),
    "STACK_GLOBAL dotted metadata.os.system": lambda m: (
        PROTO + stack_global(MD, "os.system") + touch(m) + TUPLE1 + REDUCE
    ),
    "INST os.system": lambda m: PROTO + MARK + touch(m) + b"ios\nsystem\n",
    "OBJ os.system": lambda m: PROTO + MARK + global_("os", "system") + touch(m) + OBJ,
    "pickle.dumps of a __reduce__ payload": lambda m: pickle.dumps(_Payload(m))[:-1],
}


class _Payload:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        import os

        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("shape", sorted(LIVE))
def test_live_code_execution_payloads_are_refused(tmp_path, shape):
    control, marker = tmp_path / "control", tmp_path / "pwned"
    pickle.loads(LIVE[shape](control) + STOP)  # the payload is real: pickle runs it
    assert control.exists(), "the payload is not live; the test would prove nothing"
    with pytest.raises(CheckpointError) as caught:
        load_legacy_metadata(LIVE[shape](marker) + STOP, files={}, source=tmp_path / ".metadata")
    message = str(caught.value)
    assert "\n" not in message and str(tmp_path / ".metadata") in message, message
    assert not marker.exists(), "the payload ran"


def _metadata_class(name: str) -> bytes:
    return stack_global(MD, name)


# payloads built only from allowed globals: what stdlib pickle would let them do is build
# objects with attacker-chosen contents, call allowed classes, or rewrite allowed classes
ALLOWED_GLOBALS = {
    "INST of an allowed class": (PROTO + MARK + b"i" + f"{MD}\nMetadata\n".encode(), "INST"),
    "OBJ of an allowed class": (PROTO + MARK + _metadata_class("Metadata") + OBJ, "OBJ"),
    "NEWOBJ_EX of an allowed class": (
        PROTO + _metadata_class("Metadata") + EMPTY_TUPLE + EMPTY_DICT + NEWOBJ_EX,
        "NEWOBJ_EX",
    ),
    "NEWOBJ with arguments": (
        PROTO + _metadata_class("Metadata") + EMPTY_DICT + TUPLE1 + NEWOBJ,
        "NEWOBJ",
    ),
    "REDUCE on an allowed class": (
        PROTO + _metadata_class("Metadata") + EMPTY_DICT + TUPLE1 + REDUCE,
        "REDUCE calls the class Metadata",
    ),
    "REDUCE on torch.Size with a string": (
        PROTO + stack_global("torch", "Size") + text("x") + TUPLE1 + REDUCE,
        "torch.Size takes one tuple",
    ),
    "REDUCE on the layout helper with another name": (
        PROTO + stack_global("torch.serialization", "_get_layout") + text("os") + TUPLE1 + REDUCE,
        "unknown layout",
    ),
    "BUILD on an allowed class (slot state)": (
        PROTO
        + _metadata_class("StorageMeta")
        + NONE
        + EMPTY_DICT
        + text("modules")
        + text("poisoned")
        + SETITEM
        + TUPLE2
        + BUILD,
        "BUILD of the class StorageMeta",
    ),
    "BUILD on an allowed class (dict state)": (
        PROTO
        + _metadata_class("StorageMeta")
        + EMPTY_DICT
        + text("x")
        + text("y")
        + SETITEM
        + BUILD,
        "BUILD of the class StorageMeta",
    ),
    "BUILD of an instance with a dunder": (
        PROTO
        + _metadata_class("StorageMeta")
        + EMPTY_TUPLE
        + NEWOBJ
        + EMPTY_DICT
        + text("__class__")
        + _metadata_class("Metadata")
        + SETITEM
        + BUILD,
        "fields it does not have",
    ),
    "BUILD of an instance with slot state": (
        PROTO
        + _metadata_class("StorageMeta")
        + EMPTY_TUPLE
        + NEWOBJ
        + NONE
        + EMPTY_DICT
        + TUPLE2
        + BUILD,
        "fields it does not have",
    ),
    "an allowed module, another name": (PROTO + stack_global(FS, "FileSystemReader"), "not DCP"),
    "torch, not a dtype": (PROTO + stack_global("torch", "load"), "refers to 'torch.load'"),
    "EXT1": (PROTO + b"\x82\x01", "EXT1"),
    "PERSID": (PROTO + b"P0\n", "PERSID"),
    "a plain list, not Metadata": (PROTO + b"]", "not a DCP Metadata object"),
}


@pytest.mark.parametrize("shape", sorted(ALLOWED_GLOBALS))
def test_payloads_from_allowed_globals_are_refused(tmp_path, shape):
    payload, expected = ALLOWED_GLOBALS[shape]
    with pytest.raises(CheckpointError) as caught:
        load_legacy_metadata(payload + STOP, files={}, source=tmp_path / ".metadata")
    message = str(caught.value)
    assert "\n" not in message and expected in message, message
    assert "modules" not in vars(StorageMeta) and "x" not in vars(StorageMeta)  # not poisoned
    assert "__class__" not in vars(dcp_metadata.Metadata)


def test_a_real_dcp_metadata_pickle_reads_exactly_as_pickle_would(legacy):
    data = (legacy.path / ".metadata").read_bytes()
    files = {p.name: p.stat().st_size for p in legacy.path.iterdir()}
    ours = load_legacy_metadata(data, files=files, source=legacy.path / ".metadata")
    reference = pickle.loads(data)  # our own file, written by this test: safe to unpickle
    assert ours.state_dict_metadata == reference.state_dict_metadata
    assert ours.storage_data == reference.storage_data
    assert ours.planner_data == reference.planner_data


def test_a_legacy_checkpoint_still_loads(legacy):
    tensors = legacy.fresh_tensors()
    assert legacy.store.load(legacy.path, tensors=tensors, rank=0) == {"step": 5}
    assert (tensors["model"]["weight"] == legacy.model.weight).all()
    assert tensors["optim"]["param_groups"][0]["lr"] == 1e-3  # a value, read weights_only


def test_a_code_running_legacy_metadata_in_a_resealed_checkpoint_is_refused(legacy, tmp_path):
    marker = tmp_path / "pwned"
    payload = PROTO + stack_global(MD, "os.system") + touch(marker) + TUPLE1 + REDUCE + STOP
    (legacy.path / ".metadata").write_bytes(payload)
    legacy.reseal()
    with pytest.raises(CheckpointError, match="refers to .*os.system.*not DCP metadata") as caught:
        legacy.store.load(legacy.path, tensors=legacy.fresh_tensors(), rank=0)
    assert "\n" not in str(caught.value) and ".metadata" in str(caught.value)
    assert not marker.exists()
