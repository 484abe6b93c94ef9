"""Resuming from shards that are missing, damaged or another run's: one UserError line
naming the file (and the parameter or setting), never a traceback, never pickle."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from scaletrain.errors import UserError
from scaletrain.parallel.ps import ShardStore


def _params(width: int = 6) -> dict[str, torch.Tensor]:
    return {"fc.weight": torch.ones(width, 4), "fc.bias": torch.zeros(width)}


def _adam(lr: float = 0.01):
    return lambda params: torch.optim.Adam(params, lr=lr)


@pytest.fixture
def shards(tmp_path):
    """A server's shards after two updates, one commit."""
    store = ShardStore(_params(), make_optimizer=_adam(), shards_dir=tmp_path, server=0)
    for _ in range(2):
        store.apply({name: torch.full_like(p, 0.5) for name, p in _params().items()})
    store.close()
    return tmp_path


def _resume(root, params=None, make_optimizer=None, server=0):
    return ShardStore(
        params or _params(),
        make_optimizer=make_optimizer or _adam(),
        shards_dir=root,
        server=server,
        resume=True,
    )


def _error(root, **kwargs) -> str:
    with pytest.raises(UserError) as caught:
        _resume(root, **kwargs)
    message = str(caught.value)
    assert "\n" not in message
    return message


def _manifest(root):
    return root / "server_0" / "manifest.json"


def _slot(root):
    return root / "server_0" / f"slot_{json.loads(_manifest(root).read_text())['slot']}"


def test_the_fixture_resumes_cleanly(shards):
    store = _resume(shards)
    assert store.version == 2
    assert not torch.equal(store.read(["fc.bias"])["fc.bias"], torch.zeros(6))


def test_no_manifest(tmp_path):
    message = _error(tmp_path)
    assert message.startswith(f"{tmp_path}/server_0/manifest.json: no shard manifest")


@pytest.mark.parametrize(
    "text",
    [
        "{not json",
        '{"format": "other"}',
        "[1, 2]",
        "",
    ],
)
def test_unreadable_manifest(shards, text):
    _manifest(shards).write_text(text)
    assert _error(shards).startswith(f"{_manifest(shards)}: not a readable shard manifest")


def test_manifest_with_a_bad_dtype_or_slot(shards):
    data = json.loads(_manifest(shards).read_text())
    data["params"][0]["dtype"] = "float99"
    _manifest(shards).write_text(json.dumps(data))
    assert "unknown dtype 'float99'" in _error(shards)
    data["params"][0]["dtype"] = "float32"
    data["slot"] = 7
    _manifest(shards).write_text(json.dumps(data))
    assert "not a readable shard manifest (slot 7" in _error(shards)


def test_missing_data_file(shards):
    victim = _slot(shards) / "00001.exp_avg.bin"
    victim.unlink()
    message = _error(shards)
    assert message.startswith(f"{victim}: shard file of fc.bias (exp_avg) is missing")


def test_truncated_data_file(shards):
    victim = _slot(shards) / "00000.param.bin"
    victim.write_bytes(victim.read_bytes()[:-4])
    message = _error(shards)
    assert message.startswith(f"{victim}: shard file of fc.weight (param) is 92 bytes")
    assert "expected 96 bytes" in message


def test_another_models_shapes(shards):
    message = _error(shards, params=_params(width=5))
    assert message.startswith(f"{_manifest(shards)}: parameter fc.weight is 6x4 float32")
    assert "the model's is 5x4 float32" in message


def test_another_models_names(shards):
    params = {"head.weight": torch.ones(6, 4), "fc.bias": torch.zeros(6)}
    message = _error(shards, params=params)
    assert "hold other parameters than the model's (differing: fc.weight, head.weight)" in message


def test_another_optimizer_or_learning_rate(shards):
    sgd = _error(shards, make_optimizer=lambda params: torch.optim.SGD(params, lr=0.01))
    assert "stepped by torch.optim.adam.Adam, but the run asks for torch.optim.sgd.SGD" in sgd
    lr = _error(shards, make_optimizer=_adam(lr=0.1))
    assert "optimizer has lr=0.01 in group 0, the run asks for lr=0.1" in lr


def test_another_servers_folder(shards):
    shutil.copytree(shards / "server_0", shards / "server_1")
    message = _error(shards, server=1)
    assert message.startswith(f"{shards}/server_1/manifest.json: shards of server 0, not of 1;")
