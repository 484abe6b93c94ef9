"""OptimizerTemplate: the run's optimizer learned from stand-ins, stepped on given tensors."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from scaletrain.parallel.ps import ShardStore
from scaletrain.parallel.ps.layout import TensorSpec
from scaletrain.parallel.ps.param_step import OptimizerTemplate


def _decay_groups(params):
    """Like optim.build_optimizer: matrices decay, vectors (biases) do not."""
    decay = [p for p in params if p.dim() > 1]
    rest = [p for p in params if p.dim() <= 1]
    return torch.optim.AdamW(
        [{"params": decay, "weight_decay": 0.1}, {"params": rest, "weight_decay": 0.0}],
        lr=0.05,
    )


def test_stand_ins_cost_no_memory_and_look_like_parameters():
    seen = []

    def make(params):
        seen.extend(params)
        return torch.optim.SGD(params, lr=0.1)

    OptimizerTemplate(
        make, [TensorSpec(torch.bfloat16, (4096, 4096)), TensorSpec(torch.float32, ())]
    )
    assert [tuple(p.shape) for p in seen] == [(4096, 4096), ()]
    assert seen[0].dtype == torch.bfloat16
    assert all(isinstance(p, nn.Parameter) and p.requires_grad for p in seen)
    assert seen[0].untyped_storage().nbytes() == 2  # one element behind a 32 MiB shape


def test_groups_keep_their_hyper_parameters_bit_for_bit(tmp_path):
    generator = torch.Generator().manual_seed(0)
    params = {
        "w": torch.randn(40, 9, generator=generator),
        "b": torch.randn(40, generator=generator),
        "v": torch.randn(9, 3, generator=generator),
    }
    grads = [
        {n: torch.randn(p.shape, generator=generator) for n, p in params.items()} for _ in range(4)
    ]
    reference = {n: p.clone() for n, p in params.items()}
    optimizer = _decay_groups(list(reference.values()))
    for grad in grads:
        for name, tensor in reference.items():
            tensor.grad = grad[name]
        optimizer.step()
    for window_mb in (None, 256 / 2**20):
        store = ShardStore(
            params,
            make_optimizer=_decay_groups,
            shards_dir=tmp_path / str(window_mb),
            server=0,
            window_mb=window_mb,
        )
        for grad in grads:
            store.apply(grad)
        after = store.read()
        assert all(torch.equal(after[n], reference[n]) for n in params), window_mb


def test_bf16_parameters_in_mapped_files(tmp_path):
    params = {"w": torch.randn(300, dtype=torch.bfloat16)}
    grad = {"w": torch.randn(300, dtype=torch.bfloat16)}
    make = lambda ps: torch.optim.SGD(ps, lr=0.5, momentum=0.9)  # noqa: E731
    reference = params["w"].clone()
    optimizer = make([reference])
    store = ShardStore(params, make_optimizer=make, shards_dir=tmp_path, server=0, window_mb=1e-4)
    for _ in range(3):
        reference.grad = grad["w"]
        optimizer.step()
        store.apply(grad)
    store.close()
    reopened = ShardStore(params, make_optimizer=make, shards_dir=tmp_path, server=0, resume=True)
    assert torch.equal(reopened.read()["w"], reference)
    assert reopened.state_dict()["state/w/momentum_buffer"].dtype == torch.bfloat16


def test_an_optimizer_that_is_not_elementwise_steps_whole_parameters(tmp_path):
    make = lambda ps: torch.optim.Adafactor(ps, lr=0.01)  # noqa: E731  row/column statistics
    params = {"w": torch.randn(64, 48)}
    grads = [{"w": torch.randn(64, 48)} for _ in range(3)]
    reference = params["w"].clone()
    optimizer = make([reference])
    for grad in grads:
        reference.grad = grad["w"]
        optimizer.step()
    store = ShardStore(params, make_optimizer=make, shards_dir=tmp_path, server=0, window_mb=1e-3)
    for grad in grads:
        store.apply(grad)
    assert torch.equal(store.read()["w"], reference)
    store.close()
    resumed = ShardStore(params, make_optimizer=make, shards_dir=tmp_path, server=0, resume=True)
    assert resumed.version == 3
    state = resumed.state_dict()
    assert state["state/w/row_var"].shape == (64, 1)  # its own shape, not the parameter's


def test_make_optimizer_must_take_every_parameter():
    with pytest.raises(ValueError, match=r"left out the parameters at positions \[1\]"):
        ShardStore(
            {"a": torch.zeros(2), "b": torch.zeros(3)},
            make_optimizer=lambda params: torch.optim.SGD(params[:1], lr=0.1),
            shards_dir=None,
            server=0,
        )
