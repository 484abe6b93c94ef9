"""Untrusted checkpoint files are refused, never executed, and every file read is one the
manifest lists (by plain name, with its hash): metadata cannot point a read anywhere else."""

import dataclasses
import json
import os
import pickle
import warnings

import pytest
import torch
from safetensors.torch import save_file

from scaletrain.checkpoint import write_manifest
from scaletrain.checkpoint.legacy import load_legacy_metadata
from scaletrain.errors import CheckpointError
from scaletrain.rundir import validate_name


class _Payload:
    """Unpickling this runs os.system: the attack a pickle-based loader would execute."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _load_fails(saved, match):
    with pytest.raises(CheckpointError, match=match) as caught:
        saved.store.load(saved.path, tensors=saved.fresh_tensors(), rank=0)
    assert "\n" not in str(caught.value)
    return str(caught.value)


def test_a_checkpoint_holds_no_pickle(saved):
    names = sorted(p.name for p in saved.path.iterdir())
    assert names == ["__0_0.safetensors", "manifest.json", "metadata.json", "rank_00000.json"]
    for name in names:
        assert not (saved.path / name).read_bytes().startswith(b"\x80"), name  # pickle PROTO
    assert json.loads((saved.path / "manifest.json").read_text())["version"] == 2


def test_a_pickle_as_metadata_is_refused(saved, tmp_path):
    marker = tmp_path / "pwned"
    (saved.path / "metadata.json").write_bytes(pickle.dumps(_Payload(marker)))
    saved.reseal()
    _load_fails(saved, "metadata.json: not valid JSON")
    assert not marker.exists()


def test_malicious_side_state_is_refused(saved, tmp_path):
    marker = tmp_path / "pwned"
    (saved.path / "rank_00000.json").write_bytes(pickle.dumps(_Payload(marker)))
    saved.reseal()
    _load_fails(saved, "not JSON")
    assert not marker.exists()


def test_pickle_checkpoint_file_is_not_a_checkpoint(saved, tmp_path):
    marker = tmp_path / "pwned"
    evil = saved.store.root / "step_00000009"
    evil.mkdir()
    torch.save({"x": _Payload(marker)}, evil / "model.pt")
    write_manifest(evil, step=9)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert saved.store.latest_valid() == saved.path  # the planted folder is skipped
    assert any("step_00000009" in str(w.message) for w in caught)
    with pytest.raises(CheckpointError, match="not a scaletrain checkpoint"):
        saved.store.find("step_00000009")
    assert not marker.exists()


def test_tampered_tensor_file_fails_its_checksum(saved):
    data_file = saved.path / "__0_0.safetensors"
    raw = bytearray(data_file.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    data_file.write_bytes(bytes(raw))
    _load_fails(saved, "__0_0.safetensors: checksum does not match the manifest")


def test_checkpoint_round_trip_restores_exact_state(saved):
    tensors = saved.fresh_tensors()
    assert saved.store.load(saved.path, tensors=tensors, rank=0) == {"step": 5}
    assert torch.equal(tensors["model"]["weight"], saved.model.weight)
    assert json.loads((saved.path / "manifest.json").read_text())["step"] == 5


# --- every read inside the folder and in the manifest ---------------------------------------
def _point_chunks_at(saved, name):
    metadata = json.loads((saved.path / "metadata.json").read_text())
    for entry in metadata["tensors"].values():
        for chunk in entry["chunks"]:
            chunk["file"] = name
    (saved.path / "metadata.json").write_text(json.dumps(metadata))


def _planted_weights(path, saved):
    """A well-formed safetensors file with the same keys and other values."""
    metadata = json.loads((saved.path / "metadata.json").read_text())
    tensors = {}
    for entry in metadata["tensors"].values():
        for chunk in entry["chunks"]:
            tensors[chunk["key"]] = torch.full(chunk["sizes"], 7.0)
    save_file(tensors, str(path))


@pytest.mark.parametrize("where", ["outside", "absolute", "unlisted", "not data"])
def test_metadata_cannot_point_a_read_elsewhere(saved, tmp_path, where):
    outside = tmp_path / "outside.safetensors"
    _planted_weights(outside, saved)
    names = {
        "outside": "../../outside.safetensors",
        "absolute": str(outside),
        "unlisted": "planted.safetensors",  # inside the folder, added after the manifest
        "not data": "rank_00000.json",
    }
    _point_chunks_at(saved, names[where])
    saved.reseal()
    if where == "unlisted":
        _planted_weights(saved.path / "planted.safetensors", saved)
    message = _load_fails(saved, "which is not a data file the manifest lists")
    assert "metadata.json" in message


def test_a_chunk_past_the_end_of_its_file_is_refused(saved):
    metadata = json.loads((saved.path / "metadata.json").read_text())
    metadata["tensors"]["model.weight"] = {
        "dtype": "float32",
        "size": [10**6, 10**6],
        "chunks": [
            {"offsets": [0, 0], "sizes": [10**6, 10**6], "file": "__0_0.safetensors", "key": "k"}
        ],
    }
    (saved.path / "metadata.json").write_text(json.dumps(metadata))
    saved.reseal()
    _load_fails(saved, r"chunks need 4000000000\d+ bytes of __0_0.safetensors, which has \d+")


def test_legacy_metadata_cannot_point_a_read_elsewhere(legacy, tmp_path):
    outside = tmp_path / "outside.distcp"
    outside.write_bytes((legacy.path / "__0_0.distcp").read_bytes())
    source = legacy.path / ".metadata"
    files = {p.name: p.stat().st_size for p in legacy.path.iterdir()}
    metadata = load_legacy_metadata(source.read_bytes(), files=files, source=source)
    metadata.storage_data = {
        key: dataclasses.replace(info, relative_path="../../outside.distcp")
        for key, info in metadata.storage_data.items()
    }
    metadata.storage_meta = None
    source.write_bytes(pickle.dumps(metadata))  # our own objects: the test writes the pickle
    legacy.reseal()
    _load_fails(legacy, r"\.metadata: reads '\.\./\.\./outside\.distcp', which is not a data file")


def test_a_linked_data_file_is_refused(saved, tmp_path):
    data_file = saved.path / "__0_0.safetensors"
    moved = tmp_path / "moved.safetensors"
    data_file.rename(moved)
    data_file.symlink_to(moved)
    _load_fails(saved, "__0_0.safetensors: not a plain file")


@pytest.mark.parametrize("name", ["../escape", "/abs", "a/b", "..", ".hidden", ""])
def test_unsafe_names_are_rejected(name):
    with pytest.raises(Exception, match="not a safe name"):
        validate_name(name)


@pytest.mark.parametrize("which", ["../../etc", "/etc/passwd", "step_1/../../x"])
def test_checkpoint_selector_cannot_escape(saved, which):
    with pytest.raises(CheckpointError, match="expected best, last or step_"):
        saved.store.find(which)
