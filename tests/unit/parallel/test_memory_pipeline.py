"""The planner under pipeline parallelism: which pieces each rank holds at its peak, each
stage's state as `pipeline_split` cuts it, one row per rank in `scaletrain plan`."""

from __future__ import annotations

import pytest
import torch
import yaml

from scaletrain.cli import main as scaletrain_main
from scaletrain.config import FSDPConfig, GPTConfig, ParallelConfig, PipelineConfig
from scaletrain.config.dims import DimsConfig
from scaletrain.models import build_model
from scaletrain.parallel.memory_pipeline import (
    PipelineLayout,
    estimate_rank,
    measure_stages,
    pieces_in_flight,
    pipeline_layout,
    plan_pipeline_memory,
)
from scaletrain.parallel.memory_plan import (
    backward_bytes,
    kept_activation_bytes,
    split_by_tensor_parallel,
)
from scaletrain.parallel.pipeline_split import layer_split

VOCAB, CONTEXT = 512, 32


def pp_config(schedule="1f1b", microbatches=4, stages_per_rank=1) -> ParallelConfig:
    pp = PipelineConfig(
        size=2, schedule=schedule, microbatches=microbatches, stages_per_rank=stages_per_rank
    )
    return ParallelConfig(strategy="pp", pp=pp)


def tiny_gpt(n_layer=4):
    config = GPTConfig(n_layer=n_layer, n_head=4, d_model=64, tie_weights=False)
    return build_model(
        config, input_shape=(CONTEXT,), num_outputs=VOCAB, vocab_size=VOCAB, task="language_model"
    )


def test_layout_from_the_strategy_or_the_mesh_dims():
    assert pipeline_layout(pp_config("gpipe", 2)) == PipelineLayout(2, "gpipe", 2, 1)
    dims = ParallelConfig(strategy="fsdp", dims=DimsConfig(pp=4))
    assert pipeline_layout(dims) == PipelineLayout(4, "1f1b", 4, 1)  # schedule: parallel.pp
    assert pipeline_layout(ParallelConfig(strategy="fsdp")) is None


@pytest.mark.parametrize(
    ("schedule", "microbatches", "stages_per_rank", "expected"),
    [
        ("gpipe", 4, 1, {0: [0] * 4, 1: [1] * 4}),  # every forward before any backward
        ("1f1b", 4, 1, {0: [0, 0], 1: [1]}),  # stage s: min(pieces, stages - s)
        ("1f1b", 1, 1, {0: [0], 1: [1]}),
        # torch's interleaved warm-up: (local - 1) x round + 2 x (size - 1 - rank), then one
        # steady forward; local stages in rounds of `pieces // rounds`
        ("interleaved_1f1b", 4, 2, {0: [0, 0, 2, 2, 0], 1: [1, 1, 3]}),
        ("gpipe", 2, 2, {0: [0, 0, 2, 2], 1: [1, 1, 3, 3]}),
    ],
)
def test_pieces_in_flight_follow_the_schedule(schedule, microbatches, stages_per_rank, expected):
    layout = PipelineLayout(2, schedule, microbatches, stages_per_rank)
    assert {rank: pieces_in_flight(layout, rank) for rank in (0, 1)} == expected


def test_stages_hold_the_split_parameters_and_the_head_holds_the_logits():
    model = tiny_gpt()
    layout = pipeline_layout(pp_config("gpipe", 2))
    example = torch.empty(8, CONTEXT, dtype=torch.int64, device="meta")
    stages = measure_stages(model, layout, example_input=example, compute_dtype=None)
    whole = sum(p.numel() * 4 for p in model.parameters())
    assert sum(stage.facts.param_bytes for stage in stages) == whole
    embedding = model.tok_emb.weight.numel() * 4
    head = (model.head.weight.numel() + model.norm.weight.numel()) * 4
    halves = layer_split(4, 2)
    for stage, layers, extra in zip(stages, halves, (embedding, head), strict=True):
        blocks = sum(p.numel() * 4 for i in layers for p in model.blocks[i].parameters())
        assert stage.facts.param_bytes == blocks + extra
    piece = 8 // 2
    assert stages[0].input_bytes == 0 and stages[1].input_bytes == piece * CONTEXT * 64 * 4
    assert stages[1].output_bytes == stages[1].loss_bytes == piece * CONTEXT * VOCAB * 4
    assert stages[0].facts.micro_batch_size == piece


def test_gpipe_holds_more_than_1f1b_and_the_peak_rank_decides():
    model = tiny_gpt()
    example = torch.empty(16, CONTEXT, dtype=torch.int64, device="meta")
    rows = {}
    for schedule in ("gpipe", "1f1b"):
        cfg = pp_config(schedule, 4)
        layout = pipeline_layout(cfg)
        stages = measure_stages(model, layout, example_input=example, compute_dtype=None)
        rows[schedule] = [
            estimate_rank(stages, layout, cfg, rank=rank, optimizer_states=2) for rank in (0, 1)
        ]
        for row in rows[schedule]:
            assert row.optimizer_bytes == 2 * row.grads_bytes
    # rank 0 holds 4 pieces under gpipe, 2 under 1f1b, each its saved tensors and its output
    first = stages[0]
    piece = kept_activation_bytes(first.facts, "none", 2) + first.output_bytes
    transient = backward_bytes(first.facts, "none", 2)
    gpipe, one_f = rows["gpipe"][0], rows["1f1b"][0]
    assert gpipe.params_bytes == one_f.params_bytes
    assert gpipe.activations_bytes == 4 * piece + transient
    assert one_f.activations_bytes == 2 * piece + transient
    # a receive buffer per piece for the gradients coming back from stage 1
    assert gpipe.communication_bytes == 4 * first.output_bytes


def test_plan_fits_only_when_every_rank_fits():
    model = tiny_gpt()
    cfg = pp_config("gpipe", 2)
    layout = pipeline_layout(cfg)
    example = torch.empty(8, CONTEXT, dtype=torch.int64, device="meta")
    stages = measure_stages(model, layout, example_input=example, compute_dtype=None)
    roomy = plan_pipeline_memory(stages, layout, cfg, optimizer_states=2, device_memory_bytes=2**40)
    peak = max(roomy.estimates, key=lambda each: each.total_bytes)
    assert roomy.recommended is peak and len(roomy.estimates) == 2
    smaller = min(each.total_bytes for each in roomy.estimates)
    tight = plan_pipeline_memory(
        stages, layout, cfg, optimizer_states=2, device_memory_bytes=smaller
    )
    assert tight.recommended is None  # one rank fits, the peak rank does not
    assert sorted(each.fits for each in tight.estimates) == [False, True]


def write_config(tmp_path, parallel: dict):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for index in range(4):
        (corpus / f"part{index}.txt").write_text(f"def add_{index}(a, b):\n    return a + b\n" * 50)
    config = {
        "data": {
            "source": "text_corpus",
            "path": str(corpus),
            "task": "language_model",
            "context_length": CONTEXT,
            "text": {"vectorizer": "byte"},
        },
        "model": {"name": "gpt", "n_layer": 4, "n_head": 4, "d_model": 64, "tie_weights": False},
        "train": {"batch_size": 8, "device": "cpu", "precision": "32"},
        "parallel": parallel,
    }
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def table_names(output: str) -> list[str]:
    cells = [[cell.strip() for cell in line.split("│")[1:-1]] for line in output.splitlines()]
    return [row[0] for row in cells if row and row[0].startswith("pp-")]


def test_plan_command_prints_a_row_per_pipeline_rank(tmp_path, capsys):
    parallel = {"strategy": "pp", "pp": {"size": 2, "schedule": "gpipe", "microbatches": 2}}
    path = write_config(tmp_path, parallel)
    assert scaletrain_main(["plan", str(path), "--nproc", "2"]) == 0
    output = capsys.readouterr().out
    text = " ".join(output.split())
    assert "global batch 8 = micro 8 x accumulation 1 x world 1" in text
    names = table_names(output)
    assert [name.rstrip("*") for name in names] == [
        "pp-gpipe rank 0",
        "pp-gpipe rank 1",
    ]
    assert sum(name.endswith("*") for name in names) == 1  # the peak rank
    assert "parallel.strategy=pp" in text
    # too little memory for the peak rank: the line names it and what lowers it
    assert scaletrain_main(["plan", str(path), "--nproc", "2", "--device-memory", "0.001"]) == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "nothing fits: pp-gpipe rank " in text and "parallel.pp.microbatches" in text


def mesh_config(**dims) -> ParallelConfig:
    pp = PipelineConfig(schedule="1f1b", microbatches=4)
    return ParallelConfig(strategy="fsdp", dims=DimsConfig(pp=2, **dims), pp=pp)


def test_layout_on_the_mesh_resolves_dp_shard_and_tp():
    assert pipeline_layout(mesh_config(), world_size=4) == PipelineLayout(2, "1f1b", 4, 1, 2, 1)
    found = pipeline_layout(mesh_config(tp=2), world_size=8)
    assert (found.dp_shard, found.tp) == (2, 2)
    assert pipeline_layout(mesh_config(dp_shard=2, tp=2), world_size=8).dp_shard == 2
    hybrid = mesh_config().model_copy(update={"fsdp": FSDPConfig(hybrid=True)})
    assert pipeline_layout(hybrid, world_size=8, nodes=2).dp_shard == 2  # 8 / (pp 2 x nodes 2)


def mesh_rows(layout: PipelineLayout, cfg: ParallelConfig):
    example = torch.empty(16, CONTEXT, dtype=torch.int64, device="meta")
    stages = measure_stages(tiny_gpt(), layout, example_input=example, compute_dtype=None)
    rows = [estimate_rank(stages, layout, cfg, rank=rank, optimizer_states=2) for rank in (0, 1)]
    return stages, rows


def test_fsdp_on_the_mesh_shards_each_stage_state_over_dp_shard():
    cfg = mesh_config()
    alone = PipelineLayout(2, "1f1b", 4)
    stages, pure = mesh_rows(alone, cfg)
    _, sharded = mesh_rows(PipelineLayout(2, "1f1b", 4, dp_shard=2), cfg)
    for stage, whole, half in zip(stages, pure, sharded, strict=True):
        assert half.grads_bytes == -(-whole.grads_bytes // 2)
        assert half.optimizer_bytes == 2 * half.grads_bytes
        assert half.params_bytes == half.grads_bytes + stage.facts.buffer_bytes
        # same pieces of the same size: activations as in the pure pipeline
        assert half.activations_bytes == whole.activations_bytes
        # ZeRO-3: the two largest blocks and the stage's root gathered, one block's gradient
        blocks = sorted(stage.facts.block_param_bytes, reverse=True)
        working = stage.facts.root_param_bytes + 2 * blocks[0] + blocks[1]
        assert half.communication_bytes == whole.communication_bytes + working
        assert half.strategy.endswith("dp2 tp1")


def test_offload_on_the_mesh_moves_each_stage_sharded_state_to_the_host():
    layout = PipelineLayout(2, "1f1b", 4, dp_shard=2)
    _, on_device = mesh_rows(layout, mesh_config())
    stages, offloaded = mesh_rows(layout, mesh_config().model_copy(update={"offload": "cpu"}))
    for stage, kept, moved in zip(stages, on_device, offloaded, strict=True):
        state = kept.grads_bytes + kept.grads_bytes + kept.optimizer_bytes
        assert moved.host_bytes == state  # sharded params, grads, optimizer state
        assert (moved.grads_bytes, moved.optimizer_bytes) == (0, 0)
        assert moved.params_bytes == stage.facts.buffer_bytes
        assert moved.activations_bytes == kept.activations_bytes
        assert moved.communication_bytes == kept.communication_bytes  # FSDP's gathered units
        assert moved.strategy == kept.strategy + " offload"


def test_tensor_parallel_on_the_mesh_splits_state_and_activations():
    cfg = mesh_config(tp=2)
    stages, pure = mesh_rows(PipelineLayout(2, "1f1b", 4), cfg)
    _, split = mesh_rows(PipelineLayout(2, "1f1b", 4, tp=2), cfg)
    for rank, (whole, half) in enumerate(zip(pure, split, strict=True)):
        # the non-pipeline plan's tp split, reused (norms counted split too)
        share = split_by_tensor_parallel(stages[rank].facts, 2)
        assert half.grads_bytes == share.param_bytes < whole.grads_bytes
        assert half.activations_bytes < whole.activations_bytes
    # stage 0 keeps 2 pieces under 1f1b: its kept share, its sequence-split output
    first = split_by_tensor_parallel(stages[0].facts, 2)
    piece = kept_activation_bytes(first, "none", 2) + stages[0].output_bytes // 2
    assert split[0].activations_bytes == 2 * piece + backward_bytes(first, "none", 2)
    # the receive buffers carry half the hidden states (sequence parallel between stages)
    assert split[0].communication_bytes == pure[0].communication_bytes // 2


def test_plan_command_on_the_mesh_divides_stages_and_recommends_fsdp(tmp_path, capsys):
    parallel = {"strategy": "fsdp", "dims": {"pp": 2}, "pp": {"microbatches": 2}}
    path = write_config(tmp_path, parallel)
    assert scaletrain_main(["plan", str(path), "--nproc", "4"]) == 0
    output = capsys.readouterr().out
    text = " ".join(output.split())
    # two data-parallel ranks (dp_shard 2) each read half the batch
    assert "global batch 8 = micro 4 x accumulation 1 x world 2" in text
    assert [name.rstrip("*") for name in table_names(output)] == [
        "pp-1f1b rank 0 dp2 tp1",
        "pp-1f1b rank 1 dp2 tp1",
    ]
    assert "parallel.strategy=fsdp parallel.fsdp.reshard_after_forward=true" in text
