"""Checkpoint save/load speed and training stall, sync vs async, against the raw disk.

    python -m bench.checkpoint.run [--params-m 100] [--repeats 3] [--dir DIR] [--device cpu]

One model of ~N million fp32 parameters (a stack of square Linear layers) with its AdamW
state (so ~3 x 4 bytes per parameter) is saved through `CheckpointStore` exactly as the
training loop saves it (DCP, safetensors files, fsync, SHA-256 manifest, rename), then
loaded back and verified. The physical limit is measured in the same script on the same folder: the same
number of bytes written with plain `write` calls and one `fsync` (what `dd conv=fsync`
does). Each side runs `--repeats` times, alternating, and the median is reported.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn
from torch.distributed.checkpoint.state_dict import get_state_dict

from scaletrain.checkpoint import CheckpointStore
from scaletrain.parallel import SingleStrategy

RESULTS = Path(__file__).resolve().parents[1] / "results" / "checkpoint.json"


@dataclass
class Figures:
    """Medians over the repeats; MB = 10^6 bytes."""

    device: str
    num_params: int
    checkpoint_mb: float
    train_step_s: float
    raw_write_s: float
    raw_write_mb_s: float
    sync_save_s: float
    sync_save_mb_s: float
    sync_share_of_raw: float
    async_stall_s: float
    async_total_s: float
    async_stall_in_steps: float
    load_s: float
    load_mb_s: float
    verify_s: float


def build(num_params_m: float, device: torch.device):
    """Square Linear layers of width 4096 until ~num_params_m million parameters."""
    width = 4096
    num_layers = max(1, round(num_params_m * 1e6 / (width * width + width)))
    model = nn.Sequential(*[nn.Linear(width, width) for _ in range(num_layers)]).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    return model, optimizer, width


def train_step(model, optimizer, width: int, device: torch.device) -> float:
    """Seconds for one forward/backward/AdamW step on a batch of 64 (the stall's yardstick)."""
    inputs = torch.randn(64, width, device=device)
    started = time.perf_counter()
    model(inputs).square().mean().backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - started


def tensor_bytes(state: dict) -> int:
    """Bytes of every tensor in a nested state dict (what the checkpoint must hold)."""
    total = 0
    for value in state.values():
        if isinstance(value, dict):
            total += tensor_bytes(value)
        elif isinstance(value, torch.Tensor):
            total += value.numel() * value.element_size()
    return total


def raw_write(directory: Path, num_bytes: int) -> float:
    """Seconds to write `num_bytes` in 64 MiB blocks and fsync them: the disk's limit."""
    block = os.urandom(1 << 20) * 64
    path = directory / "raw.bin"
    started = time.perf_counter()
    with open(path, "wb", buffering=0) as handle:
        written = 0
        while written < num_bytes:
            written += handle.write(memoryview(block)[: num_bytes - written])
        os.fsync(handle.fileno())
    seconds = time.perf_counter() - started
    path.unlink()
    return seconds


def sync_save(store: CheckpointStore, tensors: dict, step: int, strategy) -> float:
    started = time.perf_counter()
    store.save(step=step, tensors=tensors, side_state={"step": step}, strategy=strategy)
    return time.perf_counter() - started


def async_save(store: CheckpointStore, tensors: dict, step: int, strategy) -> tuple[float, float]:
    """(stall: seconds until training may go on, total: until the checkpoint is committed)."""
    started = time.perf_counter()
    result = store.save_async(
        step=step, tensors=tensors, side_state={"step": step}, strategy=strategy
    )
    store.wait(strategy)
    return result.stall_s, time.perf_counter() - started


def load(store: CheckpointStore, path: Path, tensors: dict) -> tuple[float, float]:
    """(seconds to verify the manifest's hashes, seconds for verify + load)."""
    started = time.perf_counter()
    store.verify(path)
    verified = time.perf_counter() - started
    store.load(path, tensors=tensors, rank=0)
    return verified, time.perf_counter() - started


def measure(num_params_m: float, repeats: int, directory: Path, device: torch.device) -> Figures:
    """Alternate raw / sync / async / load `repeats` times; medians of each."""
    model, optimizer, width = build(num_params_m, device)
    steps = [train_step(model, optimizer, width, device) for _ in range(3)]  # optimizer state
    model_state, optim_state = get_state_dict(model, optimizer)
    tensors = {"model": model_state, "optim": optim_state}
    num_bytes = tensor_bytes(tensors)
    strategy = SingleStrategy(device)
    store = CheckpointStore(directory / "checkpoints", keep_last=1)
    raw, sync, stall, total, verify, loaded = [], [], [], [], [], []
    for repeat in range(repeats):
        raw.append(raw_write(directory, num_bytes))
        sync.append(sync_save(store, tensors, 2 * repeat + 1, strategy))
        stall_s, total_s = async_save(store, tensors, 2 * repeat + 2, strategy)
        stall.append(stall_s)
        total.append(total_s)
        verify_s, load_s = load(store, store.committed()[-1], tensors)
        verify.append(verify_s)
        loaded.append(load_s)
        steps.append(train_step(model, optimizer, width, device))
    mb = num_bytes / 1e6
    med = statistics.median
    return Figures(
        device=_describe(device),
        num_params=sum(p.numel() for p in model.parameters()),
        checkpoint_mb=round(mb, 1),
        train_step_s=round(med(steps[1:]), 4),
        raw_write_s=round(med(raw), 3),
        raw_write_mb_s=round(mb / med(raw), 1),
        sync_save_s=round(med(sync), 3),
        sync_save_mb_s=round(mb / med(sync), 1),
        sync_share_of_raw=round(med(raw) / med(sync), 3),
        async_stall_s=round(med(stall), 4),
        async_total_s=round(med(total), 3),
        async_stall_in_steps=round(med(stall) / med(steps[1:]), 2),
        load_s=round(med(loaded), 3),
        load_mb_s=round(mb / med(loaded), 1),
        verify_s=round(med(verify), 3),
    )


def _describe(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({torch.get_num_threads()} threads, {os.cpu_count()} cores)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params-m", type=float, default=100.0, help="Millions of parameters.")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--dir", default=None, help="Folder on the disk to measure (a temp one).")
    parser.add_argument("--device", default="cpu", help="cpu or cuda (the model's device).")
    parser.add_argument("--out", default=str(RESULTS), help="JSON results file (appended).")
    args = parser.parse_args()
    directory = Path(tempfile.mkdtemp(prefix="scaletrain-ckpt-bench-", dir=args.dir))
    try:
        figures = measure(args.params_m, args.repeats, directory, torch.device(args.device))
    finally:
        shutil.rmtree(directory, ignore_errors=True)
    print(json.dumps(asdict(figures), indent=1))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    previous = json.loads(out.read_text()) if out.is_file() else []
    out.write_text(json.dumps([*previous, asdict(figures)], indent=1) + "\n")


if __name__ == "__main__":
    main()
