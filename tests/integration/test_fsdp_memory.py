"""What 2 gloo ranks hold and send: FSDP stores half of DDP's parameter and optimizer-state
bytes; DDP's bucket settings and no_sync take effect; FSDP's mixed-precision policy and
gradient-sync switch do what the config asks."""

from __future__ import annotations

import json

import pytest
from distributed_helpers import WORKERS, torchrun

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def measured(tmp_path_factory) -> list[dict]:
    out = tmp_path_factory.mktemp("shards") / "bytes.json"
    finished = torchrun([str(WORKERS / "shard_bytes.py"), str(out)], timeout=120)
    assert finished.returncode == 0, finished.output
    return [json.loads(out.with_name(f"bytes.json.rank{rank}").read_text()) for rank in (0, 1)]


@pytest.mark.parametrize("flavour", ["fsdp_zero3", "fsdp_zero2"])
def test_fsdp_rank_holds_half_of_ddp(measured, flavour):
    for per_rank in measured:
        ddp = per_rank["ddp"]["params"] + per_rank["ddp"]["optimizer"]
        fsdp = per_rank[flavour]["params"] + per_rank[flavour]["optimizer"]
        assert fsdp / ddp == pytest.approx(0.5, rel=0.10)
        # Adam: two moments per parameter, sharded alike
        assert per_rank[flavour]["optimizer"] == 2 * per_rank[flavour]["params"]


def test_shards_cover_the_model_once(measured):
    whole = measured[0]["ddp"]["params"]
    assert measured[1]["ddp"]["params"] == whole  # ddp replicates
    assert sum(per_rank["fsdp_zero3"]["params"] for per_rank in measured) == pytest.approx(
        whole, rel=0.01
    )


def test_ddp_receives_the_bucket_settings(measured):
    for per_rank in measured:
        default, small = per_rank["ddp_default_buckets"], per_rank["ddp_small_buckets"]
        assert default["bucket_bytes_cap"] == 25 * 2**20
        assert (default["static_graph"], default["gradient_as_bucket_view"]) == (False, True)
        assert small["bucket_bytes_cap"] == int(0.1 * 2**20)
        assert (small["static_graph"], small["gradient_as_bucket_view"]) == (True, False)
        # buckets are rebuilt by size after step 1: 3 all-reduces (~0.6 MB of gradients) vs 1
        assert default["allreduces_per_micro_batch"][1] == [0, 1]
        assert small["allreduces_per_micro_batch"][1] == [0, 3]


def test_ddp_accumulation_all_reduces_only_the_last_micro_batch(measured):
    for per_rank in measured:
        assert per_rank["ddp_default_buckets"]["allreduces_per_micro_batch"] == [[0, 1], [0, 1]]
        # static_graph: step 1 must sync every micro batch (torch 2.13 asserts otherwise)
        assert per_rank["ddp_small_buckets"]["allreduces_per_micro_batch"][0] == [1, 1]


def test_fsdp_mixed_precision_and_gradient_sync(measured):
    for per_rank in measured:
        mixed = per_rank["fsdp_bf16"]
        # bf16-mixed -> MixedPrecisionPolicy: gathered and computed in bf16, stored in fp32,
        # gradients reduced (and kept) in fp32
        assert mixed["compute_weight_dtype"] == "torch.bfloat16"
        assert mixed["stored_dtypes"] == ["torch.float32"]
        assert mixed["grad_dtypes"] == ["torch.float32"]
        # fully_shard per registry block (3 MLPBlocks), then the root (which owns the head)
        assert mixed["fsdp_units"] == ["FSDPMLP", "FSDPMLPBlock", "FSDPMLPBlock", "FSDPMLPBlock"]
        # no sharded gradient after the no-sync micro batch; all after the last one
        assert mixed["sharded_grads_per_micro_batch"] == [0, mixed["num_params"]]


def test_auto_takes_the_first_strategy_that_fits(measured):
    for per_rank in measured:
        # DDP does not fit, FSDP ZeRO-2 (next in the order: less traffic than ZeRO-3) does
        assert per_rank["auto_tight"] == {"chosen": "fsdp-zero2", "type": "FSDPMLP"}
        error = per_rank["auto_too_small"]["error"]
        assert "`auto` found nothing that fits" in error and "needs" in error
