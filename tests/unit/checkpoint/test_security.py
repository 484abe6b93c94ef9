"""Untrusted checkpoint files are refused, never executed."""

import json
import os
import pickle
import warnings

import pytest
import torch
from torch import nn
from torch.distributed.checkpoint.state_dict import get_state_dict

from scaletrain.checkpoint import CheckpointStore, write_manifest
from scaletrain.errors import CheckpointError
from scaletrain.parallel import SingleStrategy
from scaletrain.rundir import validate_name


class _Payload:
    """Unpickling this runs os.system: the attack a pickle-based loader would execute."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _saved_checkpoint(tmp_path):
    model = nn.Linear(3, 2)
    optimizer = torch.optim.AdamW(model.parameters())
    model(torch.randn(4, 3)).sum().backward()
    optimizer.step()
    model_state, optim_state = get_state_dict(model, optimizer)
    store = CheckpointStore(tmp_path / "checkpoints")
    path = store.save(
        step=5,
        tensors={"model": model_state, "optim": optim_state},
        side_state={"step": 5},
        strategy=SingleStrategy(torch.device("cpu")),
    )
    return store, path, model, optimizer


def _reseal(path):
    """An attacker who can write the folder can also rewrite its manifest."""
    (path / "manifest.json").unlink()
    write_manifest(path, step=5)


def _fresh_tensors(model, optimizer):
    model_state, optim_state = get_state_dict(model, optimizer)
    return {"model": model_state, "optim": optim_state}


def test_malicious_dcp_metadata_is_refused(tmp_path):
    store, path, model, optimizer = _saved_checkpoint(tmp_path)
    marker = tmp_path / "pwned"
    (path / ".metadata").write_bytes(pickle.dumps(_Payload(marker)))
    _reseal(path)
    with pytest.raises(Exception, match="not DCP metadata|refusing"):
        store.load(path, tensors=_fresh_tensors(model, optimizer), rank=0)
    assert not marker.exists(), "the pickle payload ran"


def test_malicious_side_state_is_refused(tmp_path):
    store, path, model, optimizer = _saved_checkpoint(tmp_path)
    marker = tmp_path / "pwned"
    (path / "rank_00000.json").write_bytes(pickle.dumps(_Payload(marker)))
    _reseal(path)
    with pytest.raises(CheckpointError, match="not JSON"):
        store.load(path, tensors=_fresh_tensors(model, optimizer), rank=0)
    assert not marker.exists()


def test_pickle_checkpoint_file_is_not_a_checkpoint(tmp_path):
    store, good, model, optimizer = _saved_checkpoint(tmp_path)
    marker = tmp_path / "pwned"
    evil = store.root / "step_00000009"
    evil.mkdir()
    torch.save({"x": _Payload(marker)}, evil / "model.pt")
    write_manifest(evil, step=9)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert store.latest_valid() == good  # the planted folder is skipped, with a warning
    assert any("step_00000009" in str(w.message) for w in caught)
    with pytest.raises(CheckpointError, match="not a scaletrain checkpoint"):
        store.find("step_00000009")
    assert not marker.exists()


def test_tampered_tensor_file_fails_its_checksum(tmp_path):
    store, path, model, optimizer = _saved_checkpoint(tmp_path)
    data_file = next(p for p in path.iterdir() if p.suffix == ".distcp")
    raw = bytearray(data_file.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    data_file.write_bytes(bytes(raw))
    with pytest.raises(CheckpointError, match="checksum"):
        store.load(path, tensors=_fresh_tensors(model, optimizer), rank=0)


def test_checkpoint_round_trip_restores_exact_state(tmp_path):
    store, path, model, optimizer = _saved_checkpoint(tmp_path)
    other = nn.Linear(3, 2)
    other_optimizer = torch.optim.AdamW(other.parameters())
    tensors = _fresh_tensors(other, other_optimizer)
    side = store.load(path, tensors=tensors, rank=0)
    assert side == {"step": 5}
    assert torch.equal(tensors["model"]["weight"], model.weight)
    assert json.loads((path / "manifest.json").read_text())["step"] == 5


@pytest.mark.parametrize("name", ["../escape", "/abs", "a/b", "..", ".hidden", ""])
def test_unsafe_names_are_rejected(name):
    with pytest.raises(Exception, match="not a safe name"):
        validate_name(name)


@pytest.mark.parametrize("which", ["../../etc", "/etc/passwd", "step_1/../../x"])
def test_checkpoint_selector_cannot_escape(tmp_path, which):
    store, *_ = _saved_checkpoint(tmp_path)
    with pytest.raises(CheckpointError, match="expected best, last or step_"):
        store.find(which)
