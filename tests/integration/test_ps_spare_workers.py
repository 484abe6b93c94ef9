"""`parallel.ps.spare_workers`: a spare worker process, launched with the job, takes over a
SIGKILLed async_ps worker and trains its data shard on from the step after its last push;
with no death the spare leaves cleanly and the run is what it is without spares."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytest
from distributed_helpers import kill_tree
from test_async_ps import (
    CONFIG,
    applied_log,
    finish,
    start_ps,
    train_ps,
    wait_for_step,
    worker_batches,
    write_config,
)

from scaletrain import api
from scaletrain.config import load_config

pytestmark = pytest.mark.slow

STEPS = 150
SPARE = ["parallel.ps.spare_workers=1"]


def metrics(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").open()]


def test_a_spare_takes_over_a_killed_worker_and_its_shard_sees_every_step_once(tmp_path):
    train = {**CONFIG["train"], "max_steps": STEPS}
    config = write_config(tmp_path, train=train, model={"name": "mlp", "hidden": [256, 256]})
    out = tmp_path / "async"
    process = start_ps(config, out, nproc=4, overrides=SPARE)  # workers 0, 1; spare; server
    try:
        victim = wait_for_step(out / "ps", rank=1, step=10)["pid"]
        os.kill(victim, signal.SIGKILL)
    except BaseException:
        kill_tree(process.pid)
        raise
    output = finish(process, timeout=300)  # 4 processes on 2 shared cores
    assert f"worker rank 1 (pid {victim}) exited with code -9" in output
    run_dir = out / "ps"
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "finished" and summary["steps"] == STEPS
    beat = json.loads((run_dir / "heartbeat" / "rank_00001.json").read_text().strip())
    assert beat["pid"] != victim and beat["step"] == STEPS  # the spare finished as rank 1

    log = applied_log(run_dir)
    (lost,) = [i for i, r in enumerate(log) if r.get("event") == "worker_lost"]
    (rejoined,) = [r for r in log if r.get("event") == "worker_rejoined"]
    assert rejoined["worker"] == 1 and rejoined["spare"] == "spare0"
    pushes = [r for r in log if "event" not in r and r["worker"] == 1]
    before = [r["step"] for r in pushes if log.index(r) < lost]
    after = [r["step"] for r in pushes if log.index(r) > lost]
    # the spare went on from the step after the last push server 0 saw from worker 1
    assert before == list(range(1, rejoined["step"] + 1)) and rejoined["step"] >= 10
    assert after == list(range(rejoined["step"] + 1, STEPS + 1))
    # so worker 1's shard trained on exactly the samples of an uninterrupted worker 1: with
    # one server the bound is 0 steps; what the kill costs is the step in flight, computed
    # by the dead process and redone by the spare (never pushed twice: incarnation fence)
    cfg = load_config(config, [])
    bundle, _ = api._data_and_model(cfg, None, None)
    batches = worker_batches(bundle, cfg, worker=1, workers=2)
    seen = sum(len(batches[step - 1][1]) for step in before + after)
    assert seen == sum(len(targets) for _, targets in batches)  # 16 a step, less at epoch ends

    events = metrics(run_dir)
    (lost_event,) = [r for r in events if r.get("event") == "worker_lost"]
    assert "worker rank 1 died; a spare took its place" in lost_event["detail"]
    (rejoin_event,) = [r for r in events if r.get("event") == "worker_rejoined"]
    assert rejoin_event["worker"] == 1 and rejoin_event["from_step"] == rejoined["step"] + 1
    (ps,) = [r["ps"] for r in events if "ps" in r]
    assert ps["lost_workers"] == [1] and len(ps["rejoined"]) == 1
    assert ps["workers"]["0"]["pushes"] == ps["workers"]["1"]["pushes"] == STEPS


def test_an_unused_spare_leaves_cleanly_and_changes_nothing(tmp_path):
    config = write_config(tmp_path)  # 12 steps
    plain, _ = train_ps(config, tmp_path / "plain", nproc=3, timeout=300)
    spared, output = train_ps(config, tmp_path / "spared", nproc=4, overrides=SPARE, timeout=300)
    assert "spare worker" not in output  # it exited 0: the supervisor had nothing to say
    for run_dir in (plain, spared):
        summary = json.loads((run_dir / "summary.json").read_text())
        assert summary["status"] == "finished" and summary["steps"] == 12
    servers = [json.loads((d / "ps" / "server_0.json").read_text()) for d in (plain, spared)]
    # pushes per worker and their total are fixed; which are dropped depends on timing
    for server in servers:
        assert server["applied"] + server["dropped"] == 24 and server["rejoined"] == []
        assert {w: s["pushes"] for w, s in server["workers"].items()} == {"0": 12, "1": 12}
    shapes = [sorted({tuple(sorted(r)) for r in metrics(d)}) for d in (plain, spared)]
    assert shapes[0] == shapes[1]
