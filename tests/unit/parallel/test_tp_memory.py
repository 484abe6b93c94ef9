"""The planner under tensor parallelism, in closed form: 1/tp of the state and activations,
the sequence-parallel gathers added back, FSDP's shard over dp_shard on top."""

from __future__ import annotations

from scaletrain.config import ParallelConfig
from scaletrain.config.dims import DimsConfig
from scaletrain.parallel.memory_plan import (
    Candidate,
    candidates,
    estimate,
    split_by_tensor_parallel,
)
from scaletrain.parallel.memory_probe import ModelFacts

FACTS = ModelFacts(
    param_bytes=8000,
    buffer_bytes=0,
    block_param_bytes=(3000, 3000),
    saved_bytes=40_000,
    block_saved_bytes=(16_000, 16_000),
    block_input_bytes=(1000, 1000),
    block_recompute_bytes=(15_000, 15_000),
    largest_saved_bytes=4000,
    micro_batch_size=8,
)


def test_tp_divides_state_and_activations_and_adds_the_gathered_inputs():
    split = split_by_tensor_parallel(FACTS, 2)
    assert split.param_bytes == 4000 and split.block_param_bytes == (1500, 1500)
    # 40_000 / 2, plus per block two inputs gathered whole (2 x 1000) less their shard
    assert split.saved_bytes == 20_000 + 2 * (2000 - 1000)
    assert split.block_saved_bytes == (9000, 9000) and split.largest_saved_bytes == 2000
    assert split_by_tensor_parallel(FACTS, 1) is FACTS


def test_fsdp_over_dp_shard_of_the_tp_shard():
    cfg = ParallelConfig(strategy="fsdp", dims=DimsConfig(tp=2))
    plain = estimate(FACTS, Candidate("fsdp"), cfg, world_size=4)
    split = estimate(FACTS, Candidate("fsdp", tp=2), cfg, world_size=4, shard_size=2)
    assert plain.params_bytes == 8000 // 4 == split.params_bytes  # 1/tp, then 1/dp_shard
    assert split.optimizer_bytes == 2 * split.grads_bytes == 2 * 2000
    assert split.activations_bytes == 22_000 + 2000 < plain.activations_bytes == 44_000
    assert split.strategy == "fsdp-zero3+tp2"


def test_scaletrain_plan_lists_fsdp_with_the_configured_tp():
    cfg = ParallelConfig(strategy="fsdp", dims=DimsConfig(tp=2))
    found = candidates(cfg, world_size=4, device_type="cpu")
    assert [c.label for c in found] == ["fsdp-zero2+tp2", "fsdp-zero3+tp2"]
