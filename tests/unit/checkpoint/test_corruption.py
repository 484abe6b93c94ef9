"""A damaged newest checkpoint is reported (naming the file) and the previous one is used."""

import warnings

import pytest
import torch
from torch import nn
from torch.distributed.checkpoint.state_dict import get_state_dict

from scaletrain.checkpoint import CheckpointStore
from scaletrain.errors import CheckpointError
from scaletrain.parallel import SingleStrategy


def _two_checkpoints(tmp_path):
    torch.manual_seed(0)
    model = nn.Linear(40, 30)
    optimizer = torch.optim.AdamW(model.parameters())
    store = CheckpointStore(tmp_path / "checkpoints", keep_last=3)
    paths = []
    for step in (10, 20):
        model(torch.randn(4, 40)).sum().backward()
        optimizer.step()
        model_state, optim_state = get_state_dict(model, optimizer)
        paths.append(
            store.save(
                step=step,
                tensors={"model": model_state, "optim": optim_state},
                side_state={"step": step},
                strategy=SingleStrategy(torch.device("cpu")),
            )
        )
    return store, paths[0], paths[1]


def _shard(path):
    return next(path.glob("*.safetensors"))


def _truncate(path):
    shard = _shard(path)
    shard.write_bytes(shard.read_bytes()[: shard.stat().st_size // 2])
    return shard


def _flip_one_byte(path):
    shard = _shard(path)
    data = bytearray(shard.read_bytes())
    data[len(data) // 3] ^= 0x01
    shard.write_bytes(bytes(data))
    return shard


def _delete_manifest(path):
    manifest = path / "manifest.json"
    manifest.unlink()
    return manifest


def _empty_side_state(path):
    side = path / "rank_00000.json"
    side.write_text("")
    return side


@pytest.mark.parametrize("damage", [_truncate, _flip_one_byte, _delete_manifest, _empty_side_state])
def test_damaged_latest_falls_back_to_previous_with_one_warning(tmp_path, damage):
    store, previous, latest = _two_checkpoints(tmp_path)
    culprit = damage(latest)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert store.latest_valid() == previous
    messages = [str(w.message) for w in caught]
    assert len(messages) == 1 and str(culprit) in messages[0], messages
    assert "\n" not in messages[0]
    with pytest.raises(CheckpointError, match=str(culprit.name)):
        store.find(latest.name)  # asking for the damaged one by name is an error


def test_all_damaged_is_one_error_naming_the_newest_culprit(tmp_path):
    """Nothing is fallen back to, so no warnings: the command's one line names the file."""
    store, previous, latest = _two_checkpoints(tmp_path)
    _truncate(previous)
    culprit = _delete_manifest(latest)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for find in (store.latest_valid, lambda: store.find("last")):
            with pytest.raises(CheckpointError) as refused:
                find()
            assert str(refused.value).startswith(f"{culprit}: missing"), refused.value
            assert f"(no valid checkpoint in {store.root})" in str(refused.value)
    assert caught == []


def test_no_checkpoint_at_all_is_none(tmp_path):
    store = CheckpointStore(tmp_path / "checkpoints")
    assert store.latest_valid() is None
    with pytest.raises(CheckpointError, match="no checkpoint `last`"):
        store.find("last")
