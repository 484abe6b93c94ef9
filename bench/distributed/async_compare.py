"""Time-to-accuracy and bytes communicated: ddp vs async_ps vs local_sgd vs diloco (issue 15).

Each run is a real `scaletrain train --nproc P` job (3 workers; async_ps adds its servers),
on one machine over loopback (`--link local`), or over a slow link (`--link slow`): one
network namespace per process, each joined to a bridge by a veth pair whose egress is shaped
with `tc netem delay 20ms rate 100mbit` (or, where the kernel has no netem, `tbf` at
100 Mbit/s without the delay; each record says which), the processes joined as `--nnodes P` nodes of one
process each. `--stall` stops one non-zero worker with SIGSTOP for 5 s mid-run and reports
the longest pause between rank 0's consecutive steps: a synchronous strategy waits for the
stopped rank, an asynchronous one does not.

    python -m bench.distributed.async_compare [--link local|slow] [--stall]
        [--workloads digits,synthetic] [--strategies ddp,async_ps,local_sgd,diloco]

Time-to-accuracy reads rank 0's `metrics.jsonl` (each validation line's `time_s` and
accuracy); bytes come from the run's own counters (`comm_*` keys in summary.json).
Writes bench/results/async_compare_<link>.json; needs root for `--link slow`.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import yaml

ROOT = Path(__file__).parents[2]
RESULTS = ROOT / "bench" / "results"
WORKERS = 3
STALL_S = 5.0
NETEM = "netem delay 20ms rate 100mbit"
TBF = "tbf rate 100mbit burst 32kbit latency 400ms"

# strategy -> the overrides that select it; async_ps also starts `servers` more processes
STRATEGIES = {
    "ddp": ["parallel.strategy=ddp"],
    "async_ps": ["parallel.strategy=async_ps", "parallel.ps.servers=1"],
    "async_ps_tau4": [
        "parallel.strategy=async_ps",
        "parallel.ps.servers=1",
        "parallel.ps.staleness=4",
    ],
    "local_sgd": ["parallel.strategy=local_sgd", "parallel.local.steps=8"],
    "diloco": ["parallel.strategy=diloco", "parallel.local.steps=8"],
    "diloco_h32": ["parallel.strategy=diloco", "parallel.local.steps=32"],
}
EXTRA_PROCESSES = {"async_ps": 1, "async_ps_tau4": 1}


def workload_config(name: str, data_dir: Path) -> tuple[dict, float]:
    """(config, target validation accuracy) of a workload."""
    base = {
        "run": {"name": name, "seed": 0},
        "optim": {"name": "adamw", "lr": 1e-3},
        "train": {"precision": "32", "device": "cpu"},
        "checkpoint": {"every_epochs": 0, "save_best": False},
        "log": {"every_steps": 1, "progress": False, "tensorboard": False, "report": False},
        "parallel": {"timeout_s": 120},
    }
    if name == "digits":
        return base | {
            "data": {"source": "builtin", "name": "digits"},
            "model": {"name": "mlp", "hidden": [256, 256]},
            "train": base["train"] | {"max_epochs": 30, "batch_size": 96},
        }, 0.95
    path = write_synthetic(data_dir / "synthetic.npz")
    return base | {
        "data": {"source": "npz", "path": str(path)},
        "model": {"name": "mlp", "hidden": [1024, 1024]},
        "train": base["train"] | {"max_epochs": 4, "batch_size": 240},
    }, 0.55


def write_synthetic(path: Path, num: int = 12000, dim: int = 784) -> Path:
    """10 Gaussian classes in 784-D (bench/stock.py's set): learnable, not trivially."""
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(10, dim)).astype(np.float32)
    labels = rng.integers(0, 10, num).astype(np.int64)
    inputs = centres[labels] * 0.08 + rng.normal(size=(num, dim)).astype(np.float32)
    np.savez(path, x=inputs, label=labels)
    return path


class SlowLink:
    """One namespace per process, all on a bridge in a hub namespace; each process's egress
    delayed 20 ms at 100 Mbit/s, so every message between two processes pays it once."""

    def __init__(self, count: int):
        tag = os.getpid() % 10000
        self.hub = f"stb{tag}h"
        self.names = [f"stb{tag}n{i}" for i in range(count)]
        self.addresses = [f"10.232.{os.getpid() % 250 + 1}.{i + 1}" for i in range(count)]

    def __enter__(self) -> SlowLink:
        ip("netns", "add", self.hub)
        ip("-n", self.hub, "link", "add", "br0", "type", "bridge")
        ip("-n", self.hub, "link", "set", "br0", "up")
        for index, (name, address) in enumerate(zip(self.names, self.addresses, strict=True)):
            ip("netns", "add", name)
            ip("-n", name, "link", "set", "lo", "up")
            ip("-n", self.hub, "link", "add", f"h{index}", "type", "veth", "peer", "name", "eth0")
            ip("-n", self.hub, "link", "set", "eth0", "netns", name)
            ip("-n", self.hub, "link", "set", f"h{index}", "master", "br0", "up")
            ip("-n", name, "addr", "add", f"{address}/24", "dev", "eth0")
            ip("-n", name, "link", "set", "eth0", "up")
            self.shaping = shape(name)
        return self

    def __exit__(self, *exc) -> None:
        for name in [*self.names, self.hub]:
            subprocess.run(["ip", "netns", "del", name], capture_output=True)


def shape(namespace: str) -> str:
    """netem's 20 ms delay at 100 Mbit/s where the kernel has it, else tbf's 100 Mbit/s alone
    (this project's VMs lack sch_netem: "Specified qdisc kind is unknown")."""
    for qdisc in (NETEM, TBF):
        try:
            run_in(namespace, "tc", "qdisc", "add", "dev", "eth0", "root", *qdisc.split())
            return qdisc
        except subprocess.CalledProcessError:
            continue
    raise RuntimeError(f"{namespace}: neither netem nor tbf can shape eth0")


def ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, text=True)


def run_in(namespace: str, *command: str) -> None:
    subprocess.run(["ip", "netns", "exec", namespace, *command], check=True, capture_output=True)


def start_job(config: Path, out: Path, strategy: str, link: SlowLink | None, log: Path) -> list:
    """The job's node processes: one `--nproc P` launch, or P one-process nodes."""
    overrides = STRATEGIES[strategy]
    processes = WORKERS + EXTRA_PROCESSES.get(strategy, 0)
    command = [sys.executable, "-m", "scaletrain", "train", str(config), "--out", str(out)]
    env = os.environ | {"PYTHONPATH": str(ROOT / "src"), "OMP_NUM_THREADS": "1"}
    if link is None:
        return [start([*command, "--nproc", str(processes), *overrides], env, log)]
    if "parallel.strategy=async_ps" in overrides:  # RPC would take a same-host shortcut
        overrides = [*overrides, "parallel.ps.transport=tcp"]
    endpoint = f"{link.addresses[0]}:29500"
    nodes = []
    for rank in reversed(range(processes)):  # the host node last: the others wait for it
        multi = ["--nproc", "1", "--nnodes", str(processes), "--node-rank", str(rank),
                 "--rdzv-endpoint", endpoint, "--local-addr", link.addresses[rank]]  # fmt: skip
        in_namespace = ["ip", "netns", "exec", link.names[rank], *command, *multi, *overrides]
        # gloo must use eth0, not the interface the (shared) hostname resolves to
        node_env = env | {"GLOO_SOCKET_IFNAME": "eth0", "TP_SOCKET_IFNAME": "eth0"}
        nodes.append(start(in_namespace, node_env, log.with_suffix(f".node{rank}.log")))
    return nodes


def start(command: list[str], env: dict, log: Path) -> subprocess.Popen:
    """A node in its own session (killed as a group), its output in `log`."""
    with log.open("w") as output:
        return subprocess.Popen(
            command, env=env, stdout=output, stderr=subprocess.STDOUT, start_new_session=True
        )


def wait_nodes(nodes: list[subprocess.Popen], timeout: float) -> None:
    """Wait for every node; on the first failure or the timeout, stop them all."""
    deadline = time.monotonic() + timeout
    while any(node.poll() is None for node in nodes):
        failed = any(node.returncode for node in nodes if node.returncode is not None)
        if failed or time.monotonic() > deadline:
            for node in nodes:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(node.pid, signal.SIGKILL)
            for node in nodes:
                node.wait()
            return
        time.sleep(0.2)


def process_of_rank(rank: int) -> int | None:
    """The pid of the training process with RANK=`rank` (one job runs at a time)."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            environ = (entry / "environ").read_bytes().split(b"\0")
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        # a training process (torchrun set its RANK), not a launcher
        if f"RANK={rank}".encode() in environ and b"scaletrain" in cmdline:
            return int(entry.name)
    return None


def stall_one_worker(rank: int, run_dir: Path, record: dict) -> None:
    """Once training runs, SIGSTOP rank `rank` for STALL_S seconds, then SIGCONT it."""
    metrics = run_dir / "metrics.jsonl"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if metrics.exists() and metrics.stat().st_size > 4000:  # some steps logged
            pid = process_of_rank(rank)
            if pid is None:
                break
            os.kill(pid, signal.SIGSTOP)
            time.sleep(STALL_S)
            os.kill(pid, signal.SIGCONT)
            record["stalled_rank"] = rank
            return
        time.sleep(0.05)
    record["stalled_rank"] = None


def read_run(run_dir: Path, target: float) -> dict:
    """Rank 0's view of a finished run: accuracy over time, pauses, bytes."""
    lines = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    vals = [r for r in lines if r.get("split") == "val" and "metrics" in r]
    curve = [(r["time_s"], r["metrics"].get("accuracy", 0.0)) for r in vals]
    times = [r["time_s"] for r in lines if r.get("split") == "train" and "time_s" in r]
    gaps = np.diff(times) if len(times) > 1 else np.array([0.0])
    summary = json.loads((run_dir / "summary.json").read_text())
    per_step = summary.get("comm_bytes_per_step")
    return {
        "time_to_target_s": time_to(curve, target),
        "val_curve": curve,
        "best_val_accuracy": max((acc for _, acc in curve), default=None),
        "test_accuracy": summary["metrics"].get("test", {}).get("accuracy"),
        "wall_s": summary["wall_s"],
        "steps": summary["steps"],
        "longest_step_gap_s": float(gaps.max()),
        "comm_bytes_per_step": per_step,
        "comm_mb_per_rank": per_step * summary["steps"] / 1e6 if per_step else None,
    }


def time_to(curve: list[tuple[float, float]], target: float) -> float | None:
    """When a validation first reached `target` (validation time included)."""
    return next((time_s for time_s, accuracy in curve if accuracy >= target), None)


def relative_targets(records: list[dict], fraction: float = 0.99) -> None:
    """Time to `fraction` x DDP's best validation accuracy of the same workload."""
    best = {r["workload"]: r["best_val_accuracy"] for r in records if r["strategy"] == "ddp"}
    for record in records:
        if record["workload"] in best and "val_curve" in record:
            target = fraction * best[record["workload"]]
            record["time_to_99pct_ddp_s"] = time_to(record["val_curve"], target)


def print_table(records: list[dict]) -> None:
    print("| workload | strategy | link | steps | best val | test | s to target / to 99 % DDP |"
          " bytes/step | MB per rank | longest pause s | wall s |")  # fmt: skip
    print("|---|---|---|---:|---:|---:|---|---:|---:|---:|---:|")
    for r in records:
        if "error" in r:
            print(f"| {r['workload']} | {r['strategy']} | {r['link']} | failed |")
            continue
        reach = " / ".join(
            "-" if r.get(key) is None else f"{r[key]:.1f}"
            for key in ("time_to_target_s", "time_to_99pct_ddp_s")
        )
        per_step, total = r["comm_bytes_per_step"], r["comm_mb_per_rank"]
        print(
            f"| {r['workload']} | {r['strategy']} | {r['link'].split()[0]} | {r['steps']} | "
            f"{r['best_val_accuracy']:.3f} | {r['test_accuracy']:.3f} | {reach} | "
            f"{'-' if per_step is None else f'{per_step:,.0f}'} | "
            f"{'-' if total is None else f'{total:.1f}'} | "
            f"{r['longest_step_gap_s']:.2f} | {r['wall_s']:.1f} |"
        )


def run_one(
    workload: str, strategy: str, link: SlowLink | None, stall: bool, tmp: Path, timeout: float
) -> dict:
    config, target = workload_config(workload, tmp)
    config["run"]["name"] = name = f"{workload}-{strategy}"
    path = tmp / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config))
    started = time.monotonic()
    nodes = start_job(path, tmp, strategy, link, tmp / f"{name}.log")
    record: dict = {"workload": workload, "strategy": strategy, "target": target}
    record["link"] = link.shaping if link is not None else "loopback"
    staller = None
    if stall:
        staller = threading.Thread(target=stall_one_worker, args=(1, tmp / name, record))
        staller.start()
    wait_nodes(nodes, timeout=timeout)
    if staller is not None:
        staller.join()
    record["call_s"] = round(time.monotonic() - started, 2)
    if any(node.returncode for node in nodes):
        record["error"] = "\n".join(
            log.read_text()[-1500:] for log in sorted(tmp.glob(f"{name}*.log"))
        )
        return record
    return record | read_run(tmp / name, target)


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--link", choices=["local", "slow"], default="local")
    parser.add_argument("--stall", action="store_true")
    parser.add_argument("--timeout", type=float, default=1800, help="Seconds per run.")
    parser.add_argument("--workloads", default="digits,synthetic")
    parser.add_argument("--strategies", default=",".join(STRATEGIES))
    args = parser.parse_args(argv)
    records = []
    with tempfile.TemporaryDirectory() as tmp:
        for workload in args.workloads.split(","):
            for strategy in args.strategies.split(","):
                count = WORKERS + EXTRA_PROCESSES.get(strategy, 0)
                if args.link == "slow":
                    with SlowLink(count) as link:
                        record = run_one(
                            workload, strategy, link, args.stall, Path(tmp), args.timeout
                        )
                else:
                    record = run_one(workload, strategy, None, args.stall, Path(tmp), args.timeout)
                print(json.dumps(record), flush=True)
                records.append(record)
    relative_targets(records)
    print_table(records)
    suffix = f"{args.link}{'_stall' if args.stall else ''}"
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"async_compare_{suffix}.json").write_text(json.dumps(records, indent=1) + "\n")
    return records


if __name__ == "__main__":
    main()
