"""A parameter server's request handling on a real ShardStore (RAM) and StalenessGate, without
RPC: staleness decisions, the applied log, counts, done/left/lost workers; and the shard
optimizer against `build_optimizer` on the whole model."""

import json

import pytest
import torch
from torch import nn

from scaletrain.config import OptimConfig
from scaletrain.optim import build_optimizer
from scaletrain.parallel.ps.account import ps_record
from scaletrain.parallel.ps.service import ParameterServer
from scaletrain.parallel.ps.store import ShardStore, StalenessGate
from scaletrain.train.ps_serve import ShardOptimizer, exempt_names


def make_server(tmp_path, *, tau=0, stale="drop", workers=2):
    params = {"w": torch.arange(4.0), "b": torch.zeros(2)}
    store = ShardStore(
        params,
        make_optimizer=ShardOptimizer(
            OptimConfig(name="sgd", lr=0.1), names=["w", "b"], exempt=set()
        ),
        shards_dir=None,
        server=0,
    )
    log = tmp_path / "server_0.jsonl"
    server = ParameterServer(
        0, store=store, gate=StalenessGate(tau, stale), log_path=log, num_workers=workers
    )
    return server, log


def grads(value: float) -> dict:
    return {"w": torch.full((4,), value), "b": torch.full((2,), value)}


def test_a_fresh_push_is_applied_at_its_lr_and_a_stale_one_dropped(tmp_path):
    server, log = make_server(tmp_path)
    applied, staleness, version, params = server.push(0, 1, 0, grads(1.0), 0.5)
    assert (applied, staleness, version) == (True, 0, 1)
    torch.testing.assert_close(params["w"], torch.arange(4.0) - 0.5)  # lr of the push
    applied, staleness, version, params = server.push(1, 1, 0, grads(1.0), 0.5)
    assert (applied, staleness, version) == (False, 1, 1)
    assert params is not None  # the worker is behind: it gets version 1 back
    assert server.pull(1) == (1, None)  # nothing changed since version 1
    records = [json.loads(line) for line in log.read_text().splitlines()]
    assert [(r["worker"], r["applied"], r["staleness"]) for r in records] == [
        (0, True, 0),
        (1, False, 1),
    ]
    summary = server.summary()
    assert (summary["applied"], summary["dropped"], summary["version"]) == (1, 1, 1)
    assert summary["staleness_histogram"] == {"0": 1, "1": 1}
    assert summary["bytes_pushed"] == 2 * 6 * 4


def test_scale_mode_applies_a_stale_push_down_weighted(tmp_path):
    server, _ = make_server(tmp_path, tau=0, stale="scale")
    server.push(0, 1, 0, grads(1.0), 0.1)
    before = server.store.read()["w"]
    applied, staleness, _, _ = server.push(1, 1, 0, grads(1.0), 0.1)
    assert applied and staleness == 1
    torch.testing.assert_close(server.store.read()["w"], before - 0.1 * 0.5)  # (0+1)/(1+1)
    assert server.summary()["scaled"] == 1


def test_the_server_closes_only_when_every_worker_left_or_was_lost(tmp_path):
    server, log = make_server(tmp_path, workers=3)
    server.worker_done(0)
    server.worker_lost(2)
    assert not server.trained.is_set()
    server.worker_done(1)
    assert server.trained.is_set() and not server.finished.is_set()
    server.worker_left(0)
    server.worker_left(1)
    assert server.finished.is_set()
    assert server.summary()["lost_workers"] == [2]
    assert '"event": "worker_lost", "worker": 2' in log.read_text()


def test_the_job_record_adds_up_the_servers():
    summaries = [
        {
            "applied": 5,
            "dropped": 1,
            "scaled": 0,
            "bytes_pushed": 100,
            "bytes_pulled": 80,
            "staleness_histogram": {"0": 5, "3": 1},
            "workers": {"0": {"pushes": 6, "dropped": 1, "seconds": 2.5}},
            "lost_workers": [],
        },
        {
            "applied": 6,
            "dropped": 0,
            "scaled": 0,
            "bytes_pushed": 50,
            "bytes_pulled": 40,
            "staleness_histogram": {"0": 6, "10": 0},
            "workers": {"0": {"pushes": 6, "dropped": 0, "seconds": 2.4}},
            "lost_workers": [],
        },
    ]
    record = ps_record(summaries, samples_per_step=16)
    assert (record["updates"], record["dropped"], record["bytes_pushed"]) == (11, 1, 150)
    assert list(record["staleness_histogram"]) == ["0", "3", "10"]  # numeric order
    assert record["workers"]["0"]["samples_per_s"] == pytest.approx(5 * 16 / 2.5)


def test_the_shard_optimizer_steps_as_build_optimizer_does_with_decay_groups():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.LayerNorm(4), nn.Linear(4, 2))
    cfg = OptimConfig(name="adamw", lr=0.01, weight_decay=0.1)
    names = [name for name, _ in model.named_parameters()]
    store = ShardStore(
        {name: p.detach().clone() for name, p in model.named_parameters()},
        make_optimizer=ShardOptimizer(cfg, names=names, exempt=exempt_names(model)),
        shards_dir=None,
        server=0,
    )
    reference = build_optimizer(cfg, model)
    for _ in range(3):
        gradients = {name: torch.randn_like(p) for name, p in model.named_parameters()}
        for name, p in model.named_parameters():
            p.grad = gradients[name].clone()
        reference.step()
        store.apply(gradients, lr=0.01)
    served = store.read()
    for name, p in model.named_parameters():
        assert torch.equal(served[name], p.detach()), name
