"""Two torchrun agents (`--nnodes 2`) rendezvous over c10d and train one job together.

First on one host over loopback; then as two "hosts": network namespaces joined by a veth
pair, each with its own address (skipped, with the reason, where namespaces cannot be made).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from distributed_helpers import child_env, free_port, kill_tree, load_weights

from scaletrain import api

pytestmark = pytest.mark.slow

CONFIG = {
    "run": {"name": "two-nodes", "seed": 0},
    "data": {"source": "builtin", "name": "digits"},
    "model": {"name": "mlp", "hidden": [16]},
    "train": {"max_steps": 3, "batch_size": 32, "precision": "32", "device": "cpu"},
    "parallel": {"strategy": "ddp"},
    "checkpoint": {"every_epochs": 0, "save_best": False},
    "log": {"progress": False, "tensorboard": False, "report": False},
}


def start_node(
    config: Path,
    out: Path,
    *,
    node_rank: int,
    endpoint: str,
    prefix=(),
    env=None,
    local_addr: str | None = None,
) -> subprocess.Popen:
    """One node through our CLI: `scaletrain train ... --nnodes 2 --node-rank R`."""
    command = [
        *prefix,
        sys.executable,
        "-m",
        "scaletrain",
        "train",
        str(config),
        "--out",
        str(out),
        "--nproc",
        "1",
        "--nnodes",
        "2",
        "--node-rank",
        str(node_rank),
        "--rdzv-endpoint",
        endpoint,
        "--rdzv-timeout",
        "60",
        *(["--local-addr", local_addr] if local_addr else []),
    ]
    return subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env or child_env()
    )


def start_torchrun_agent(
    config: Path, out: Path, *, node_rank: int, endpoint: str, overrides=()
) -> subprocess.Popen:
    """One node as a plain torchrun agent running `-m scaletrain train` in its worker."""
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nnodes",
        "2",
        "--nproc-per-node",
        "1",
        "--rdzv-backend",
        "c10d",
        "--rdzv-endpoint",
        endpoint,
        "--rdzv-conf",
        f"join_timeout=60,is_host={int(node_rank == 0)}",
        "-m",
        "scaletrain",
        "train",
        str(config),
        "--out",
        str(out),
        *overrides,
    ]
    return subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=child_env()
    )


def wait_all(nodes: list[subprocess.Popen], timeout: float = 150) -> list[tuple[int, str]]:
    results = []
    try:
        for node in nodes:
            output, _ = node.communicate(timeout=timeout)
            results.append((node.returncode, output))
    finally:
        for node in nodes:
            if node.poll() is None:
                kill_tree(node.pid)
                node.communicate()
    return results


def check_trained_together(out: Path, results: list[tuple[int, str]]) -> None:
    for code, output in results:
        assert code == 0, output
    summary = json.loads((out / "two-nodes" / "summary.json").read_text())
    assert summary["world_size"] == 2 and summary["status"] == "finished"


@pytest.fixture
def config_file(tmp_path) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(CONFIG))
    return path


def test_two_torchrun_agents_on_one_host(config_file, tmp_path):
    # hybrid FSDP on 2 nodes x 1 process: a (replicate 2, shard 1) mesh, so the gradients
    # travel over the replicate (inter-node) dimension; the result must equal 1 process
    hybrid = ["parallel.strategy=fsdp", "parallel.fsdp.hybrid=true"]
    endpoint = f"127.0.0.1:{free_port()}"
    nodes = [
        start_torchrun_agent(
            config_file, tmp_path, node_rank=rank, endpoint=endpoint, overrides=hybrid
        )
        for rank in (1, 0)  # the non-host node first: it waits for the store to appear
    ]
    check_trained_together(tmp_path, wait_all(nodes))
    single = {**CONFIG, "run": {"name": "single", "seed": 0, "out_dir": str(tmp_path)}}
    api.train({**single, "parallel": {"strategy": "single"}})
    reference, together = load_weights(tmp_path / "single"), load_weights(tmp_path / "two-nodes")
    for key in reference:
        torch.testing.assert_close(together[key], reference[key], rtol=1e-5, atol=1e-6, msg=key)


class Namespaces:
    """Two network namespaces joined by a veth pair: 10.231.<n>.1 and 10.231.<n>.2."""

    def __init__(self):
        tag = os.getpid() % 10000
        self.names = (f"st{tag}a", f"st{tag}b")
        self.links = (f"st{tag}va", f"st{tag}vb")
        subnet = os.getpid() % 250 + 1
        self.addresses = (f"10.231.{subnet}.1", f"10.231.{subnet}.2")

    def create(self) -> None:
        for name in self.names:
            _ip("netns", "add", name)
        _ip("link", "add", self.links[0], "type", "veth", "peer", "name", self.links[1])
        for name, link, address in zip(self.names, self.links, self.addresses, strict=True):
            _ip("link", "set", link, "netns", name)
            _ip("-n", name, "addr", "add", f"{address}/24", "dev", link)
            _ip("-n", name, "link", "set", link, "up")
            _ip("-n", name, "link", "set", "lo", "up")

    def delete(self) -> None:
        for name in self.names:  # deleting a namespace deletes its end of the veth pair
            subprocess.run(["ip", "netns", "del", name], capture_output=True)


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, text=True)


@pytest.fixture
def namespaces():
    if shutil.which("ip") is None:
        pytest.skip("network namespaces: the `ip` command (iproute2) is not installed")
    spaces = Namespaces()
    try:
        spaces.create()
    except subprocess.CalledProcessError as error:
        spaces.delete()
        pytest.skip(
            f"network namespaces cannot be created here (needs root): {error.stderr.strip()}"
        )
    yield spaces
    spaces.delete()


def test_two_hosts_in_network_namespaces(config_file, tmp_path, namespaces):
    endpoint = f"{namespaces.addresses[0]}:29431"
    nodes = []
    for rank, (name, link, address) in enumerate(
        zip(namespaces.names, namespaces.links, namespaces.addresses, strict=True)
    ):
        # gloo must use the veth, not the interface the (shared) hostname resolves to
        env = child_env(GLOO_SOCKET_IFNAME=link)
        nodes.append(
            start_node(
                config_file,
                tmp_path,
                node_rank=rank,
                endpoint=endpoint,
                env=env,
                prefix=("ip", "netns", "exec", name),
                local_addr=address,
            )
        )
    check_trained_together(tmp_path, wait_all(nodes))
