"""A store built from meta tensors (names, shapes, dtypes) takes its values from `initial`,
one parameter per call, and then behaves exactly as one built from the real tensors."""

from __future__ import annotations

import pytest
import torch

from scaletrain.parallel.ps import ShardStore


def adam(params):
    return torch.optim.Adam(params, lr=1e-2, foreach=False)


@pytest.mark.parametrize("where", ["ram", "mapped", "windowed"])
def test_meta_params_with_initial_values_equal_real_params(tmp_path, where):
    torch.manual_seed(0)
    real = {"w": torch.randn(300, 70), "b": torch.randn(70)}
    meta = {name: torch.empty_like(t, device="meta") for name, t in real.items()}
    asked = []

    def initial(name):
        asked.append(name)
        return real[name].clone()

    kwargs = {"make_optimizer": adam, "server": 0, "flush_every": 2}
    if where != "ram":
        kwargs["window_mb"] = 0.01 if where == "windowed" else None
    stores = [
        ShardStore(meta, initial=initial, shards_dir=_dir(tmp_path / "a", where), **kwargs),
        ShardStore(real, shards_dir=_dir(tmp_path / "b", where), **kwargs),
    ]
    assert asked == ["w", "b"]  # each once, in order
    for step in range(3):
        grads = {name: torch.full_like(t, 0.1 * (step + 1)) for name, t in real.items()}
        for store in stores:
            store.apply(grads)
    got, want = (store.read() for store in stores)
    for name in real:
        assert torch.equal(got[name], want[name]), name
    assert not torch.equal(want["w"], real["w"])  # it trained


def _dir(path, where):
    return None if where == "ram" else path
