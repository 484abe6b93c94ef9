"""FSDP on 2 ranks stores half of DDP's parameter and optimizer-state bytes per rank."""

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
