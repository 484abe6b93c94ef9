"""`parallel.strategy: async_ps` end to end: real torchrun processes talking over
torch.distributed.rpc, checked against one process and against a plain-PyTorch replay of
the order in which the server applied the workers' gradients."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from distributed_helpers import child_env, descendants, kill_tree, run, wait_finished
from safetensors.torch import load_file

from scaletrain import api
from scaletrain.config import load_config
from scaletrain.data import BatchLoader
from scaletrain.parallel.ps.store import StalenessGate
from scaletrain.parallel.ps.worker import parameter_name

pytestmark = pytest.mark.slow

CONFIG = {
    "run": {"name": "ps", "seed": 0},
    "data": {"source": "builtin", "name": "digits"},
    "model": {"name": "mlp", "hidden": [16]},
    "optim": {"name": "sgd", "lr": 0.05, "momentum": 0.9, "schedule": {"name": "cosine"}},
    "train": {
        "max_steps": 12,
        "batch_size": 32,
        "precision": "32",
        "device": "cpu",
        "num_threads": 1,
    },  # one thread everywhere: the reference and the workers sum in the same order
    "checkpoint": {"every_epochs": 0, "save_best": False},
    "log": {"progress": False, "tensorboard": False, "report": False},
}


def write_config(tmp_path: Path, **sections) -> Path:
    config = {**CONFIG, **sections}
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def train_ps(config: Path, out: Path, *, nproc: int, overrides=(), timeout: float = 90):
    command = [sys.executable, "-m", "scaletrain", "train", str(config), "--out", str(out)]
    command += ["--nproc", str(nproc), "parallel.strategy=async_ps", *overrides]
    finished = run(command, timeout=timeout, env=child_env())
    assert finished.returncode == 0, finished.output
    return out / "ps", finished.output


def server_params(run_dir: Path, servers: int = 1) -> dict[str, torch.Tensor]:
    params = {}
    for index in range(servers):
        params.update(load_file(str(run_dir / "ps" / f"server_{index}.safetensors")))
    return params


def applied_log(run_dir: Path, server: int = 0) -> list[dict]:
    lines = (run_dir / "ps" / f"server_{server}.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines]


@pytest.mark.parametrize("transport", ["auto", "tcp"])  # tcp: no same-host shortcut
def test_one_worker_with_tau_0_equals_one_process_bit_for_bit(tmp_path, transport):
    config = write_config(tmp_path)
    single = api.train(config, overrides=[f"run.out_dir={tmp_path / 'single'}"])
    overrides = [f"parallel.ps.transport={transport}"]
    run_dir, _ = train_ps(config, tmp_path / "async", nproc=2, overrides=overrides)
    expected = {parameter_name(n): p for n, p in single.model.named_parameters()}
    served = server_params(run_dir)
    assert served.keys() == expected.keys()
    for name, value in expected.items():
        assert torch.equal(served[name], value.detach()), name
    records = applied_log(run_dir)
    assert [r["step"] for r in records] == list(range(1, 13))
    assert all(r["applied"] and r["staleness"] == 0 for r in records)
    # the worker's own final checkpoint holds the parameters it took back from its last push
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "finished"


def test_two_workers_with_tau_0_equal_a_replay_of_the_applied_order(tmp_path):
    config = write_config(tmp_path)
    run_dir, _ = train_ps(config, tmp_path / "async", nproc=3)
    records = applied_log(run_dir)
    assert len(records) == 2 * 12  # every push of both workers, applied or dropped
    applied = [r for r in records if r["applied"]]
    assert all(r["staleness"] == 0 for r in applied)
    assert [r["version"] for r in applied] == list(range(1, len(applied) + 1))
    dropped = [r for r in records if not r["applied"]]
    assert all(r["staleness"] > 0 for r in dropped)

    cfg = load_config(config, [])
    bundle, model = api._data_and_model(cfg, None, None)
    batches = {worker: worker_batches(bundle, cfg, worker=worker, workers=2) for worker in (0, 1)}
    optimizer = torch.optim.SGD(model.parameters(), lr=cfg.optim.lr, momentum=0.9, foreach=False)
    for record in applied:
        inputs, targets = batches[record["worker"]][record["step"] - 1]
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(model(inputs), targets).backward()
        for group in optimizer.param_groups:
            group["lr"] = record["lr"]
        optimizer.step()
    served = server_params(run_dir)
    for name, value in model.named_parameters():
        torch.testing.assert_close(
            served[parameter_name(name)], value.detach(), rtol=1e-5, atol=1e-6
        )


def worker_batches(bundle, cfg, *, worker: int, workers: int) -> list:
    """Worker `worker`'s slice of each global batch, step after step, as its loader reads it."""
    loader = BatchLoader(
        bundle.train,
        global_batch_size=cfg.train.batch_size,
        micro_batch_size=cfg.train.batch_size // workers,
        shuffle=True,
        seed=cfg.run.seed,
        drop_last=cfg.data.drop_last,
        rank=worker,
        world_size=workers,
        num_workers=0,
    )
    steps = []
    while len(steps) < cfg.train.max_steps:
        for batch in loader:
            (inputs, targets), *_ = batch.micro_batches
            steps.append((inputs, targets))
    return steps[: cfg.train.max_steps]


def start_ps(config: Path, out: Path, *, nproc: int, overrides=()) -> subprocess.Popen:
    command = [sys.executable, "-m", "scaletrain", "train", str(config), "--out", str(out)]
    command += ["--nproc", str(nproc), "parallel.strategy=async_ps", *overrides]
    return subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=child_env()
    )


def heartbeat(run_dir: Path, rank: int) -> dict | None:
    try:
        return json.loads((run_dir / "heartbeat" / f"rank_{rank:05d}.json").read_text())
    except (OSError, ValueError):
        return None


def wait_for_step(run_dir: Path, rank: int, step: int, *, timeout: float = 60) -> dict:
    """Worker `rank`'s heartbeat (pid, step) once it finished `step`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        beat = heartbeat(run_dir, rank)
        if beat and beat["step"] >= step:
            return beat
        time.sleep(0.02)
    raise AssertionError(f"worker {rank} never reached step {step}")


def finish(process: subprocess.Popen, *, timeout: float = 90) -> str:
    finished = wait_finished(process, timeout=timeout)
    assert finished.returncode == 0, finished.output
    return finished.output


@pytest.mark.parametrize("stale", ["drop", "scale"])
def test_a_stopped_worker_never_gets_an_update_older_than_tau_applied(tmp_path, stale):
    tau = 2
    # wider layers: slower steps, so both workers are still training when one is stopped
    train = {**CONFIG["train"], "max_steps": 300}
    config = write_config(tmp_path, train=train, model={"name": "mlp", "hidden": [256, 256]})
    out = tmp_path / "async"
    process = start_ps(
        config,
        out,
        nproc=3,
        overrides=[f"parallel.ps.staleness={tau}", f"parallel.ps.stale={stale}"],
    )
    try:
        slow = wait_for_step(out / "ps", rank=1, step=5)["pid"]
        os.kill(slow, signal.SIGSTOP)
        fast = heartbeat(out / "ps", 0)
        assert fast["step"] < 300, "worker 0 finished before worker 1 was stopped"
        wait_for_step(out / "ps", rank=0, step=fast["step"] + 4 * tau)  # pushing meanwhile
        os.kill(slow, signal.SIGCONT)
    except BaseException:
        kill_tree(process.pid)
        raise
    finish(process)
    run_dir = out / "ps"
    records = applied_log(run_dir)
    gate = StalenessGate(tau, stale)
    late = [r for r in records if r["staleness"] > tau]
    assert late, "the stopped worker's first push after SIGCONT is stale"
    assert any(r["worker"] == 1 for r in late)
    for record in records:
        base = record["base_version"]
        expected = gate.decide(base_version=base, current_version=base + record["staleness"])
        assert (record["applied"], record["scale"]) == expected[:2], record
    if stale == "drop":
        assert not any(r["applied"] for r in late)
    else:
        assert all(r["applied"] and r["scale"] < 1 for r in late)
    summary = json.loads((run_dir / "ps" / "server_0.json").read_text())
    assert summary["dropped"] == sum(not r["applied"] for r in records)
    assert summary["scaled"] == sum(r["applied"] and r["scale"] != 1.0 for r in records)
    assert summary["applied"] == summary["version"] == sum(r["applied"] for r in records)
    histogram = {}
    for record in records:
        histogram[str(record["staleness"])] = histogram.get(str(record["staleness"]), 0) + 1
    assert summary["staleness_histogram"] == histogram
    assert summary["workers"]["1"]["pushes"] == summary["workers"]["0"]["pushes"] == 300
    # worker 0 waited for worker 1, then logged the servers' counts
    (record,) = [r["ps"] for r in map(json.loads, (run_dir / "metrics.jsonl").open()) if "ps" in r]
    assert record["dropped"] == summary["dropped"] and record["updates"] == summary["applied"]
    assert record["staleness_histogram"] == histogram
    assert record["bytes_pushed"] == summary["bytes_pushed"] > 0
    assert all(worker["samples_per_s"] > 0 for worker in record["workers"].values())


def test_a_killed_worker_is_logged_and_the_others_finish_the_run(tmp_path):
    # validation every 50 steps with best checkpoints: workers 1 and 2 validate, never save
    train = {**CONFIG["train"], "max_steps": 300, "batch_size": 48, "eval_every_steps": 50}
    config = write_config(
        tmp_path,
        train=train,
        model={"name": "mlp", "hidden": [256, 256]},
        checkpoint={"every_epochs": 0, "save_best": True},
    )
    out = tmp_path / "async"
    process = start_ps(config, out, nproc=4)  # 3 workers, 1 server
    try:
        victim = wait_for_step(out / "ps", rank=2, step=5)["pid"]
        os.kill(victim, signal.SIGKILL)
    except BaseException:
        kill_tree(process.pid)
        raise
    output = finish(process)
    assert f"worker rank 2 (pid {victim}) exited with code -9" in output
    assert "worker rank 1" not in output  # it trained to the end
    run_dir = out / "ps"
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "finished" and summary["steps"] == 300
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").open()]
    (lost,) = [r for r in records if r.get("event") == "worker_lost"]
    assert "worker rank 2 died" in lost["detail"]
    (ps,) = [r["ps"] for r in records if "ps" in r]
    assert ps["lost_workers"] == [2]
    assert ps["workers"]["0"]["pushes"] == ps["workers"]["1"]["pushes"] == 300
    assert 5 <= ps["workers"]["2"]["pushes"] < 300
    server_log = (run_dir / "ps" / "server_0.jsonl").read_text()
    assert '"event": "worker_lost", "worker": 2' in server_log


def process_of_rank(parent: int, rank: int, *, timeout: float = 30) -> int:
    """The pid of the launched process with RANK=`rank` (servers write no heartbeat)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for pid in descendants(parent):
            try:
                environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
            except OSError:
                continue
            if f"RANK={rank}".encode() in environ:
                return pid
        time.sleep(0.1)
    raise AssertionError(f"no process of rank {rank}")


def kill_server_after(process: subprocess.Popen, ready, *, server_rank: int = 2) -> str:
    """Once `ready()` returns, SIGKILL the server; the run's output (it exited 1)."""
    try:
        ready()
        os.kill(process_of_rank(process.pid, server_rank), signal.SIGKILL)
        output, _ = process.communicate(timeout=60)
    except BaseException:
        kill_tree(process.pid)
        raise
    assert process.returncode == 1, output
    return output


def test_a_killed_server_stops_the_run_in_one_line_and_resume_continues_from_its_shards(
    tmp_path,
):
    shards = tmp_path / "shards"
    train = {**CONFIG["train"], "max_steps": 200}
    config = write_config(
        tmp_path,
        train=train,
        model={"name": "mlp", "hidden": [256, 256]},
        checkpoint={"every_steps": 20, "every_epochs": 0, "save_best": False},
        parallel={"ps": {"shards_dir": str(shards), "flush_every": 5}},
    )
    out = tmp_path / "async"
    process = start_ps(config, out, nproc=3)  # workers 0 and 1, server 0 (rank 2)
    output = kill_server_after(process, lambda: wait_for_step(out / "ps", rank=0, step=50))
    errors = [line for line in output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, output  # worker 0 names the server; the launcher adds nothing
    assert errors[0].startswith("error: parameter server 0 (rank 2) stopped answering")
    assert "scaletrain resume RUN_DIR" in errors[0]
    flushed = json.loads((shards / "server_0" / "manifest.json").read_text())["version"]
    assert flushed >= 50  # two workers pushed: 50+ updates, committed every 5

    run_dir = out / "ps"
    before = len(applied_log(run_dir))  # line-buffered: what the killed server applied
    assert applied_log(run_dir)[-1]["version"] >= flushed
    command = [sys.executable, "-m", "scaletrain", "resume", str(run_dir), "--nproc", "3"]
    finished = run(command, timeout=90, env=child_env())
    assert finished.returncode == 0, finished.output
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "finished" and summary["steps"] == 200
    resumed = [r for r in applied_log(run_dir)[before:] if r.get("applied")]
    assert resumed[0]["version"] == flushed + 1  # the restarted server went on from its files
    events = [json.loads(line) for line in (run_dir / "metrics.jsonl").open()]
    assert any(r.get("event") == "resume" for r in events)

    # resumed again at its end: the one line saying so (the servers and workers all stop)
    again = run(command, timeout=90, env=child_env())
    assert again.returncode == 2, again.output
    errors = [line for line in again.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "finished" in errors[0], again.output
    assert json.loads((run_dir / "summary.json").read_text()) == summary  # left as it was


def test_a_server_lost_while_worker_0_waits_at_the_end_fails_the_run(tmp_path):
    """Worker 0 took its last step and waits for worker 1 (stopped) when the server dies:
    one line, and the summary says failed, not finished (the servers' last updates are lost)."""
    config = write_config(tmp_path, train={**CONFIG["train"], "max_steps": 30})
    out = tmp_path / "async"
    process = start_ps(config, out, nproc=3)  # workers 0 and 1, server 0 (rank 2)

    def worker_0_waits_at_the_end():
        os.kill(wait_for_step(out / "ps", rank=1, step=2)["pid"], signal.SIGSTOP)
        wait_for_step(out / "ps", rank=0, step=30)
        time.sleep(0.5)  # into its wait for the other workers

    output = kill_server_after(process, worker_0_waits_at_the_end)
    errors = [line for line in output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "parameter server 0 (rank 2) stopped answering" in errors[0]
    summary = json.loads((out / "ps" / "summary.json").read_text())
    assert (summary["status"], summary["steps"]) == ("failed", 30)


def test_a_server_that_refuses_to_start_says_why_and_the_job_exits_2(tmp_path):
    shards = tmp_path / "shards"
    (shards / "server_0").mkdir(parents=True)
    (shards / "server_0" / "manifest.json").write_text("{}")  # another run's shards
    config = write_config(tmp_path, parallel={"ps": {"shards_dir": str(shards)}})
    command = [sys.executable, "-m", "scaletrain", "train", str(config), "--out", str(tmp_path)]
    command += ["--nproc", "2", "parallel.strategy=async_ps"]
    finished = run(command, timeout=90, env=child_env())
    assert finished.returncode == 2, finished.output
    errors = [line for line in finished.output.splitlines() if line.startswith("error:")]
    assert errors[0].startswith("error: parameter server 0: ")
    assert "server_0/manifest.json: this folder already holds a server's shards" in errors[0]
    assert len(errors) <= 2, finished.output  # + worker 0: the server stopped answering
