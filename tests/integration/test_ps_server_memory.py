"""A parameter server whose address space cannot hold its shard's parameters and optimizer
state still trains, with `parallel.ps.shards_dir` and `window_mb` set.

Why the limit is "baseline + headroom" and not below the shard's size outright: a torch
process with RPC up reserves over a gigabyte of address space before it holds any parameter
(measured here with `MALLOC_ARENA_MAX=2`: a server of a 16-unit MLP peaks at ~1.38 GB of
VmPeak, 17 threads; without the variable ~2.3 GB, glibc's per-thread arenas). So the test
measures that baseline in a tiny run, then caps the real run's server at
baseline + 85 % of (parameters + Adam's two moments) of its shard.

Figures (this 2-core VM): MLP 64-4000-4000-10, 16.3 M parameters = 65 MB; with Adam's
moments 196 MB; files 261 MB after 6 updates (392 MB once both slots hold moments). Uncapped, the server's VmPeak rose ~133 MB
over the baseline (a pushed gradient and the pulled copy of the parameters, each 65 MB, both
whole per RPC, plus a few 4 MiB windows); the cap gives 167 MB. An unwindowed store maps
every file (261-392 MB), and a server that built the whole model before taking its shard
held 130 MB more (the model and the shard's copy): neither fits.
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from distributed_helpers import child_env, kill_tree
from test_async_ps import CONFIG, process_of_rank

pytestmark = pytest.mark.slow

HIDDEN = 4000
PARAMS = 64 * HIDDEN + HIDDEN + HIDDEN * HIDDEN + HIDDEN + HIDDEN * 10 + 10
ADAM_BYTES = 3 * 4 * PARAMS  # fp32 parameters + exp_avg + exp_avg_sq
ENV = {"MALLOC_ARENA_MAX": "2"}  # bounds glibc's address-space reservations per thread


def start(tmp_path: Path, name: str, *, hidden: list[int], steps: int) -> subprocess.Popen:
    folder = tmp_path / name
    folder.mkdir()
    config = {
        **CONFIG,
        "model": {"name": "mlp", "hidden": hidden},
        "optim": {"name": "adam", "lr": 1e-3},
        "train": {**CONFIG["train"], "max_steps": steps},
        "log": {**CONFIG["log"], "every_steps": 1},
        "parallel": {
            "ps": {"shards_dir": str(folder / "shards"), "window_mb": 4, "flush_every": 1000}
        },
    }
    (folder / "config.yaml").write_text(yaml.safe_dump(config))
    command = [sys.executable, "-m", "scaletrain", "train", str(folder / "config.yaml")]
    command += ["--out", str(folder / "out"), "--nproc", "2", "parallel.strategy=async_ps"]
    return subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=child_env(**ENV)
    )


def vm_peak_kb(pid: int) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmPeak:"):
                return int(line.split()[1])
    except OSError:
        pass
    return None


def finish(process: subprocess.Popen, server: int, *, timeout: float) -> tuple[str, int]:
    """The job's output and the server's last VmPeak (KiB) seen while it ran."""
    peak, deadline = 0, time.monotonic() + timeout
    try:
        while process.poll() is None:
            assert time.monotonic() < deadline, "the job did not finish in time"
            peak = max(peak, vm_peak_kb(server) or 0)
            time.sleep(0.02)
    except BaseException:
        kill_tree(process.pid)
        raise
    return process.stdout.read(), peak


def test_a_server_capped_below_its_shard_and_optimizer_state_trains(tmp_path):
    tiny = start(tmp_path, "tiny", hidden=[16], steps=2)
    output, baseline_kb = finish(tiny, process_of_rank(tiny.pid, 1), timeout=60)
    assert tiny.returncode == 0, output
    cap = baseline_kb * 1024 + int(0.85 * ADAM_BYTES)
    assert cap - baseline_kb * 1024 < ADAM_BYTES  # less room than the shard and its state

    big = start(tmp_path, "big", hidden=[HIDDEN, HIDDEN], steps=6)
    server = process_of_rank(big.pid, 1)  # caught within its first second, long before a store
    resource.prlimit(server, resource.RLIMIT_AS, (cap, cap))
    output, peak_kb = finish(big, server, timeout=90)
    assert big.returncode == 0, output
    assert peak_kb * 1024 <= cap

    run_dir = tmp_path / "big" / "out" / "ps"
    served = json.loads((run_dir / "ps" / "server_0.json").read_text())
    assert served["applied"] == 6
    files = sum(f.stat().st_size for f in (tmp_path / "big" / "shards").rglob("*.bin"))
    # the committed slot holds parameters and both moments: more than the cap leaves room for
    assert files == ADAM_BYTES + 4 * PARAMS  # (the other slot: the first commit, parameters)
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").open()]
    losses = [r["loss"] for r in records if r.get("split") == "train"]
    assert len(losses) == 6 and losses[-1] < losses[0] - 0.3, losses
