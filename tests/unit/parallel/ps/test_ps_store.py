"""ShardStore against a plain torch optimizer: in RAM, memory-mapped, windowed, resumed."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from scaletrain.errors import UserError
from scaletrain.parallel.ps import ShardStore

OPTIMIZERS = {
    "sgd": lambda params: torch.optim.SGD(params, lr=0.1),
    "momentum": lambda params: torch.optim.SGD(params, lr=0.1, momentum=0.9, nesterov=True),
    "adam": lambda params: torch.optim.Adam(params, lr=0.01),
    "adamw_fused": lambda params: torch.optim.AdamW(params, lr=0.01, weight_decay=0.1, fused=True),
}


def _params(seed: int = 0) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return {
        "encoder.weight": torch.randn(30, 17, generator=generator),  # 8 windows of 64
        "encoder.bias": torch.randn(30, generator=generator),
        "scale": torch.randn((), generator=generator),
        "head.weight": torch.randn(3, 30, generator=generator),
    }


def _grads(params, steps: int, seed: int = 1) -> list[dict[str, torch.Tensor]]:
    generator = torch.Generator().manual_seed(seed)
    return [
        {name: torch.randn(p.shape, generator=generator) for name, p in params.items()}
        for _ in range(steps)
    ]


def _reference(make_optimizer, params, grads, scales=None) -> dict[str, torch.Tensor]:
    """The same updates by one torch optimizer over the whole list: the ground truth."""
    tensors = {name: p.clone() for name, p in params.items()}
    optimizer = make_optimizer(list(tensors.values()))
    for step, grad in enumerate(grads):
        scale = 1.0 if scales is None else scales[step]
        for name, tensor in tensors.items():
            tensor.grad = grad[name] * scale if scale != 1.0 else grad[name]
        optimizer.step()
    return tensors


def _assert_equal(got: dict, want: dict) -> None:
    assert list(got) == list(want)
    for name in want:
        assert torch.equal(got[name], want[name]), name


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
@pytest.mark.parametrize("where", ["ram", "mapped", "windowed"])
def test_updates_equal_a_torch_optimizer_bit_for_bit(tmp_path, name, where):
    make = OPTIMIZERS[name]
    params, grads = _params(), _grads(_params(), 6)
    store = ShardStore(
        params,
        make_optimizer=make,
        shards_dir=None if where == "ram" else tmp_path,
        server=0,
        flush_every=4,
        window_mb=(256 / 2**20) if where == "windowed" else None,  # 64 floats
    )
    versions = [store.apply(grad) for grad in grads]
    assert versions == [1, 2, 3, 4, 5, 6]
    _assert_equal(store.read(), _reference(make, params, grads))
    assert store.read(["scale"])["scale"].shape == ()
    store.close()


def test_scale_and_lr_override_act_like_a_scaled_gradient_and_a_set_lr(tmp_path):
    make = OPTIMIZERS["momentum"]
    params, grads = _params(), _grads(_params(), 4)
    store = ShardStore(params, make_optimizer=make, shards_dir=tmp_path, server=0)
    scales = [1.0, 0.5, 0.25, 1.0]
    for grad, scale in zip(grads, scales, strict=True):
        store.apply(grad, scale=scale)
    _assert_equal(store.read(), _reference(make, params, grads, scales))
    store.apply(grads[0], lr=0.0)  # lr 0: momentum still moves, but the weights do not
    _assert_equal(store.read(), _reference(make, params, grads, scales))


def test_a_subset_of_gradients_steps_only_those_parameters():
    params = _params()
    store = ShardStore(params, make_optimizer=OPTIMIZERS["adam"], shards_dir=None, server=0)
    grad = _grads(params, 1)[0]
    store.apply({"scale": grad["scale"]})
    after = store.read()
    assert torch.equal(after["encoder.weight"], params["encoder.weight"])
    assert not torch.equal(after["scale"], params["scale"])
    assert store.version == 1


def test_bad_gradients_are_refused_before_anything_is_written(tmp_path):
    params = _params()
    store = ShardStore(params, make_optimizer=OPTIMIZERS["sgd"], shards_dir=tmp_path, server=0)
    grad = _grads(params, 1)[0]
    with pytest.raises(ValueError, match=r"gradient of head\.weight has shape \[30, 3\]"):
        store.apply({**grad, "head.weight": torch.zeros(30, 3)})
    with pytest.raises(ValueError, match="no parameters named \\['nope'\\]"):
        store.apply({**grad, "nope": torch.zeros(1)})
    _assert_equal(store.read(), params)
    assert store.version == 0


@pytest.mark.parametrize("window_mb", [None, 256 / 2**20])
def test_close_then_resume_continues_exactly(tmp_path, window_mb):
    make = OPTIMIZERS["adam"]
    params, grads = _params(), _grads(_params(), 7)
    store = ShardStore(params, make_optimizer=make, shards_dir=tmp_path, server=2, flush_every=50)
    for grad in grads[:4]:
        store.apply(grad)
    store.close()
    meta = {name: torch.empty(p.shape, dtype=p.dtype, device="meta") for name, p in params.items()}
    resumed = ShardStore(
        meta, make_optimizer=make, shards_dir=tmp_path, server=2, resume=True, window_mb=window_mb
    )
    assert resumed.version == 4
    for grad in grads[4:]:
        resumed.apply(grad)
    _assert_equal(resumed.read(), _reference(make, params, grads))
    resumed.close()


def test_files_are_numpy_memmaps_beside_a_json_manifest(tmp_path):
    params = _params()
    store = ShardStore(params, make_optimizer=OPTIMIZERS["adam"], shards_dir=tmp_path, server=1)
    store.apply(_grads(params, 1)[0])
    store.flush()
    root = tmp_path / "server_1"
    manifest = json.loads((root / "manifest.json").read_text())
    assert manifest["version"] == 1
    assert manifest["optimizer"]["class"] == "torch.optim.adam.Adam"
    assert manifest["optimizer"]["groups"][0]["lr"] == 0.01
    entry = manifest["params"][0]
    assert (entry["name"], entry["shape"], entry["dtype"]) == (
        "encoder.weight",
        [30, 17],
        "float32",
    )
    assert entry["scalars"]["step"] == {"dtype": "float32", "value": 1.0}
    slot = root / f"slot_{manifest['slot']}"
    data = (slot / "00000.param.bin").read_bytes()
    assert torch.equal(
        torch.frombuffer(bytearray(data), dtype=torch.float32).view(30, 17),
        store.read(["encoder.weight"])["encoder.weight"],
    )
    assert sorted(p.name for p in slot.glob("00000.*")) == [
        "00000.exp_avg.bin",
        "00000.exp_avg_sq.bin",
        "00000.param.bin",
    ]


def test_state_dict_round_trips_through_safetensors(tmp_path):
    make = OPTIMIZERS["momentum"]
    params, grads = _params(), _grads(_params(), 5)
    store = ShardStore(params, make_optimizer=make, shards_dir=None, server=0)
    for grad in grads[:3]:
        store.apply(grad)
    save_file(store.state_dict(), tmp_path / "ps.safetensors")
    other = ShardStore(_params(seed=9), make_optimizer=make, shards_dir=tmp_path / "s", server=0)
    other.load_state_dict(load_file(tmp_path / "ps.safetensors"))
    assert other.version == 3
    for grad in grads[3:]:
        other.apply(grad)
    _assert_equal(other.read(), _reference(make, params, grads))


def test_a_fresh_store_refuses_a_folder_that_holds_shards(tmp_path):
    ShardStore(_params(), make_optimizer=OPTIMIZERS["sgd"], shards_dir=tmp_path, server=0).close()
    with pytest.raises(UserError, match=r"server_0/manifest\.json: this folder already holds"):
        ShardStore(_params(), make_optimizer=OPTIMIZERS["sgd"], shards_dir=tmp_path, server=0)


@pytest.mark.parametrize("where", ["ram", "mapped"])
def test_gradients_in_another_dtype_or_layout_are_converted_per_parameter(tmp_path, where):
    make = OPTIMIZERS["adamw_fused"]
    params, grads = _params(), _grads(_params(), 3)
    odd = [
        {
            name: (g.to(torch.bfloat16) if g.dim() == 1 else g.t().contiguous().t())
            for name, g in grad.items()
        }
        for grad in grads
    ]
    assert not odd[0]["encoder.weight"].is_contiguous()
    converted = [{name: g.float().contiguous() for name, g in grad.items()} for grad in odd]
    store = ShardStore(
        params, make_optimizer=make, shards_dir=None if where == "ram" else tmp_path, server=0
    )
    for grad in odd:
        store.apply(grad)
    _assert_equal(store.read(), _reference(make, params, converted))
