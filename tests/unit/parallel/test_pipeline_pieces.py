"""Pipeline stages on the mesh, the parts that need no processes: every data-parallel rank
runs the same pieces per step, and a stage's tensor-parallel plan names only its parts."""

from __future__ import annotations

import pytest
import torch
from test_pipeline_split import _gpt

from scaletrain.data import StepBatch
from scaletrain.parallel.pipeline import _even_micro_batches
from scaletrain.parallel.pipeline_split import StageModule
from scaletrain.parallel.tensor_parallel import _top_plan


def _batch(sizes: list[int], *, total: int) -> StepBatch:
    start, micro_batches = 0, []
    for size in sizes:
        ids = torch.arange(start, start + size)
        micro_batches.append((ids[:, None].repeat(1, 3), ids))
        start += size
    return StepBatch(micro_batches, num_samples_global=total, sample_ids=torch.arange(start))


def test_a_full_step_keeps_its_micro_batches_and_pieces():
    batch = _batch([2, 2], total=8)  # 2 data-parallel ranks, 4 samples each
    micro_batches, wanted = _even_micro_batches(batch, replicas=2, wanted=2)
    assert micro_batches is batch.micro_batches and wanted == 2


@pytest.mark.parametrize(
    ("sizes", "total", "replicas", "wanted"),
    [
        ([2, 2, 1], 5, 1, 2),  # one rank: sizes differ, so one micro batch, pieces as wanted
        ([2, 2, 1], 9, 2, 1),  # 9 over 2 ranks: shares 5 and 4 differ, so one piece each
        ([2, 1], 7, 2, 1),  # shares 4 and 3: the other rank runs one micro batch too
    ],
)
def test_a_short_step_runs_as_one_micro_batch_in_order(sizes, total, replicas, wanted):
    batch = _batch(sizes, total=total)
    micro_batches, pieces = _even_micro_batches(batch, replicas=replicas, wanted=2)
    assert len(micro_batches) == 1 and pieces == wanted
    inputs, targets = micro_batches[0]
    assert torch.equal(targets, torch.arange(sum(sizes))) and inputs.shape == (sum(sizes), 3)


@pytest.mark.parametrize("positions", ["rope", "learned"])
def test_a_stage_plan_names_only_the_parts_the_stage_holds(positions):
    model = _gpt(f"model.positions={positions}")
    first = StageModule(model, [0, 1], first=True, last=False)
    middle = StageModule(model, [2], first=False, last=False)
    last = StageModule(model, [3, 4], first=False, last=True)
    embeddings = {"tok_emb", "pos_emb"} if positions == "learned" else {"tok_emb"}
    assert set(_top_plan(first)) == embeddings
    assert set(_top_plan(middle)) == set()
    assert set(_top_plan(last)) == {"norm", "head"}
    assert set(_top_plan(model)) == embeddings | {"norm", "head"}
