"""The memory planner: closed-form parts, and estimates within 25 % of measured peaks.

Measurement method (also in docs/distributed.md): each grid point trains 3 AdamW steps on
2 gloo ranks; the peak is the process's peak RSS (VmHWM, reset through
/proc/self/clear_refs when the model is wrapped) minus the RSS at that moment, plus the
model's own bytes (resident before wrapping and counted by the estimate). The workers run
with MALLOC_MMAP_THRESHOLD_=65536, so every tensor of 64 KiB or more is its own mapping and
returns to the OS when freed: RSS then follows live tensor memory within small-object noise.
"""

from __future__ import annotations

import json

import pytest
import torch
from distributed_helpers import WORKERS, torchrun

from scaletrain.config import MLPConfig, ParallelConfig
from scaletrain.models import MLPBlock, build_model
from scaletrain.parallel.blocks import find_blocks
from scaletrain.parallel.memory_plan import Candidate, estimate, plan_memory
from scaletrain.parallel.memory_probe import measure_model

TOLERANCE = 0.25


def mlp_facts(hidden: list[int], batch_size: int, in_features: int = 32, batch_norm=False):
    config = MLPConfig(hidden=hidden, batch_norm=batch_norm)
    model = build_model(config, input_shape=(in_features,), num_outputs=10)
    blocks = find_blocks(model, block_types=(MLPBlock,))
    return measure_model(model, blocks=blocks, example_input=torch.empty(batch_size, in_features))


def test_saved_activations_match_closed_form():
    # Linear saves its input, ReLU its output (the next Linear's input, counted once)
    facts = mlp_facts([64, 48], batch_size=16)
    assert facts.saved_bytes == 4 * 16 * (32 + 64 + 48)
    assert facts.block_saved_bytes == (4 * 16 * (32 + 64), 4 * 16 * 48)
    assert facts.block_input_bytes == (4 * 16 * 32, 4 * 16 * 64)
    # block 0 first saves its own input; block 1's input was saved (as ReLU output) in block 0
    assert facts.block_recompute_bytes == (4 * 16 * 64, 4 * 16 * 48)
    params = (32 * 64 + 64) + (64 * 48 + 48) + (48 * 10 + 10)
    assert facts.param_bytes == 4 * params


def test_measuring_leaves_the_model_untouched():
    model = build_model(MLPConfig(hidden=[8]), input_shape=(4,), num_outputs=2)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    rng = torch.get_rng_state()
    measure_model(model, blocks=[], example_input=torch.empty(3, 4))
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert torch.equal(rng, torch.get_rng_state())
    assert all(p.grad is None and p.device.type == "cpu" for p in model.parameters())


def test_fsdp_shards_state_and_checkpointing_drops_activations():
    # with BatchNorm a block saves 3 tensors but keeps 1 (its input) when checkpointed
    facts = mlp_facts([256, 256, 256], batch_size=64, batch_norm=True)
    cfg = ParallelConfig()
    ddp = estimate(facts, Candidate("ddp"), cfg, world_size=4)
    zero3 = estimate(facts, Candidate("fsdp"), cfg, world_size=4)
    checkpointed = estimate(
        facts, Candidate("fsdp", activation_checkpointing="full"), cfg, world_size=4
    )
    assert zero3.optimizer_bytes == pytest.approx(ddp.optimizer_bytes / 4, rel=1e-3)
    assert zero3.grads_bytes == pytest.approx(ddp.grads_bytes / 4, rel=1e-3)
    largest_saved = facts.largest_saved_bytes
    kept = facts.saved_bytes - sum(facts.block_saved_bytes) + sum(facts.block_input_bytes)
    recompute = max(facts.block_recompute_bytes)
    assert checkpointed.activations_bytes == kept + recompute + largest_saved
    assert checkpointed.activations_bytes < zero3.activations_bytes


def test_recommends_the_first_candidate_that_fits():
    facts = mlp_facts([512, 512], batch_size=32)
    cfg = ParallelConfig()
    roomy = plan_memory(
        facts,
        cfg,
        world_size=2,
        local_world_size=2,
        device_type="cpu",
        optimizer_states=2,
        device_memory_bytes=2**40,
    )
    assert roomy.recommended.strategy == "ddp"
    ddp, zero2 = roomy.estimates[0], roomy.estimates[1]
    between = (ddp.total_bytes + zero2.total_bytes) // 2
    tight = plan_memory(
        facts,
        cfg,
        world_size=2,
        local_world_size=2,
        device_type="cpu",
        optimizer_states=2,
        device_memory_bytes=between,
    )
    assert tight.recommended.strategy == "fsdp-zero2"
    nothing = plan_memory(
        facts,
        cfg,
        world_size=2,
        local_world_size=2,
        device_type="cpu",
        optimizer_states=2,
        device_memory_bytes=1,
    )
    assert nothing.recommended is None


@pytest.mark.slow
def test_estimates_are_within_25_percent_of_measured_peaks(tmp_path):
    out = tmp_path / "grid.json"
    finished = torchrun(
        [str(WORKERS / "memory_grid.py"), str(out), "ddp,fsdp"],
        timeout=240,
        MALLOC_MMAP_THRESHOLD_="65536",
    )
    assert finished.returncode == 0, finished.output
    points = [
        p for rank in (0, 1) for p in json.loads(out.with_name(f"grid.json.rank{rank}").read_text())
    ]
    assert len(points) == 2 * 2 * 2 * 2  # ranks x strategies x models x batch sizes
    for point in points:
        error = (point["estimate_mb"] - point["measured_peak_mb"]) / point["measured_peak_mb"]
        assert abs(error) <= TOLERANCE, point
