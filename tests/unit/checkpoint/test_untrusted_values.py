"""Non-tensor values (the optimizer's lr, betas ...): JSON in metadata.json, never pickles.
Old checkpoints stored them as torch.save pickles inside the data files; a crafted one there
is refused by weights_only loading, never executed."""

import dataclasses
import io
import json
import os
import pickle

import pytest
import torch

from scaletrain.checkpoint.legacy import load_legacy_metadata
from scaletrain.checkpoint.values import decode_value, encode_value
from scaletrain.errors import CheckpointError


class _Payload:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize(
    "value",
    [None, True, 0, -3, 2**70, 1e-8, float("inf"), float("-inf"), "adamw", (0.9, 0.999), [1, "a"]],
)
def test_plain_values_round_trip_exactly(value):
    back = decode_value(json.loads(json.dumps(encode_value(value, name="x"))), name="x")
    assert back == value and type(back) is type(value)


def test_nan_round_trips():
    data = json.loads(json.dumps(encode_value(float("nan"), name="x"), allow_nan=False))
    assert decode_value(data, name="x") != decode_value(data, name="x")  # nan


@pytest.mark.parametrize("value", [torch.tensor(1.0), {"a": 1}, {1, 2}, b"raw", object()])
def test_other_values_cannot_be_saved(value):
    with pytest.raises(TypeError, match="`x` is a"):
        encode_value(value, name="x")


@pytest.mark.parametrize(
    "data",
    [{"pickle": "gASV"}, {"tuple": 1}, {"float": "1e999"}, {"tuple": [], "x": 1}, float("nan")],
)
def test_values_scaletrain_never_writes_are_refused(data):
    with pytest.raises(CheckpointError, match="`x` is not one scaletrain writes"):
        decode_value(data, name="x")


def test_a_tampered_value_in_metadata_json_is_refused(saved):
    metadata = json.loads((saved.path / "metadata.json").read_text())
    metadata["values"]["optim.param_groups.0.lr"] = {"pickle": "gASVIQAAAAAAAACMBXBvc2l4"}
    (saved.path / "metadata.json").write_text(json.dumps(metadata))
    saved.reseal()
    with pytest.raises(CheckpointError, match="optim.param_groups.0.lr.*not one scaletrain writes"):
        saved.store.load(saved.path, tensors=saved.fresh_tensors(), rank=0)


def test_values_load_back_with_their_types(saved):
    tensors = saved.fresh_tensors()
    saved.store.load(saved.path, tensors=tensors, rank=0)
    group = tensors["optim"]["param_groups"][0]
    assert group["lr"] == 1e-3 and group["betas"] == (0.9, 0.999) and group["foreach"] is None


def test_malicious_value_inside_a_legacy_data_file_is_refused(legacy, tmp_path):
    marker = tmp_path / "pwned"
    payload = io.BytesIO()
    torch.save({"lr": _Payload(marker)}, payload)

    # An attacker appends the pickle to a data file and points the lr entry at it: the
    # metadata stays made of DCP's own classes, so it passes the restricted interpreter.
    source = legacy.path / ".metadata"
    files = {p.name: p.stat().st_size for p in legacy.path.iterdir()}
    metadata = load_legacy_metadata(source.read_bytes(), files=files, source=source)
    key = next(k for k in metadata.storage_data if k.fqn == "optim.param_groups.0.lr")
    info = metadata.storage_data[key]
    data_file = legacy.path / info.relative_path
    offset = data_file.stat().st_size
    with open(data_file, "ab") as handle:
        handle.write(payload.getvalue())
    metadata.storage_data[key] = dataclasses.replace(
        info, offset=offset, length=len(payload.getvalue())
    )
    metadata.storage_meta = None
    source.write_bytes(pickle.dumps(metadata))
    legacy.reseal()  # resealed: the checksums cannot catch it

    with pytest.raises(CheckpointError, match="optim.param_groups.0.lr.*not plain data"):
        legacy.store.load(legacy.path, tensors=legacy.fresh_tensors(), rank=0)
    assert not marker.exists(), "the pickle payload ran"
