"""Pipeline refusals (`parallel.strategy: pp`, and `fsdp` with `parallel.dims.pp > 1`): one
line naming the key, exit 2, no run directory."""

from __future__ import annotations

from pathlib import Path

import pytest

from scaletrain.cli import main
from scaletrain.config import load_config
from scaletrain.errors import ConfigError

DEFAULT = Path(__file__).parents[3] / "configs" / "default.yaml"
GPT = ["model.name=gpt", "model.n_layer=4", "model.tie_weights=false", "train.batch_size=16"]
PP = ["parallel.strategy=pp", *GPT]
MESH = ["parallel.strategy=fsdp", "parallel.dims.pp=2", *GPT]

REFUSALS = {
    "microbatches-not-dividing": (
        [*PP, "parallel.pp.microbatches=3"],
        "parallel.pp.microbatches: 3 does not divide the micro batch of 16",
    ),
    "microbatches-not-dividing-micro-batch": (
        [*PP, "train.micro_batch_size=8", "parallel.pp.microbatches=3"],
        "parallel.pp.microbatches: 3 does not divide the micro batch of 8",
    ),
    "interleaved-one-stage-per-rank": (
        [*PP, "parallel.pp.schedule=interleaved_1f1b"],
        "parallel.pp.stages_per_rank: `interleaved_1f1b` needs at least 2 stages per rank",
    ),
    "1f1b-two-stages-per-rank": (
        [*PP, "parallel.pp.stages_per_rank=2"],
        "parallel.pp.stages_per_rank: `1f1b` runs one stage per rank",
    ),
    "1f1b-fewer-pieces-than-stages": (
        [*PP, "parallel.pp.size=4", "parallel.pp.microbatches=2"],
        "parallel.pp.microbatches: `1f1b` needs at least one piece per stage",
    ),
    "interleaved-pieces-not-in-rounds": (
        [
            *PP,
            "train.batch_size=20",
            "parallel.pp.microbatches=5",
            "parallel.pp.schedule=interleaved_1f1b",
            "parallel.pp.stages_per_rank=2",
        ],
        "parallel.pp.microbatches: `interleaved_1f1b` runs rounds of parallel.pp.size=2",
    ),
    "fewer-layers-than-stages": (
        [*PP, "model.n_layer=3", "parallel.pp.size=4", "parallel.pp.schedule=gpipe"],
        "model.n_layer: 3 layers cannot fill 4 pipeline stages",
    ),
    "fewer-layers-than-interleaved-stages": (
        [
            *PP,
            "parallel.pp.schedule=interleaved_1f1b",
            "parallel.pp.stages_per_rank=3",
        ],
        "model.n_layer: 4 layers cannot fill 6 pipeline stages",
    ),
    "tied-head": (
        [*PP, "model.tie_weights=true"],
        "model.tie_weights: the head would share the embedding's weight across pipeline",
    ),
    "regression": (
        [*PP, "data.task=regression"],
        "data.task: pipeline stages (parallel.pp.size=2) train language models and classifiers "
        "only, got 'regression'",
    ),
    "pp-keys-without-pp": (
        [*GPT, "parallel.pp.microbatches=2"],
        "parallel.pp.microbatches: only used by pipeline stages (parallel.strategy=pp, or "
        "fsdp with parallel.dims.pp > 1), got 'auto'",
    ),
    "pp-keys-with-fsdp-without-pp": (
        ["parallel.strategy=fsdp", *GPT, "parallel.pp.schedule=gpipe"],
        "parallel.pp.schedule: only used by pipeline stages",
    ),
    "one-rank-pipeline": ([*PP, "parallel.pp.size=1"], "parallel.pp.size:"),
    # the pipeline on the device mesh: its size is parallel.dims.pp
    "mesh-pp-size-given-twice": (
        [*MESH, "parallel.pp.size=4"],
        "parallel.pp.size: the pipeline's size is parallel.dims.pp=2 under "
        "parallel.strategy=fsdp; remove parallel.pp.size",
    ),
    "mesh-1f1b-fewer-pieces-than-stages": (
        [*MESH, "parallel.dims.pp=4", "parallel.pp.microbatches=2"],
        "parallel.pp.microbatches: `1f1b` needs at least one piece per stage "
        "(parallel.dims.pp=4), got 2",
    ),
    "mesh-microbatches-not-dividing-the-data-parallel-share": (
        [*MESH, "parallel.dims.dp_shard=2", "parallel.pp.microbatches=3"],
        "parallel.pp.microbatches: 3 does not divide the micro batch of 8",
    ),
    "mesh-fewer-layers-than-stages": (
        [*MESH, "model.n_layer=3", "parallel.dims.pp=4", "parallel.pp.schedule=gpipe"],
        "model.n_layer: 3 layers cannot fill 4 pipeline stages (parallel.dims.pp x",
    ),
    "mesh-tied-head": (
        [*MESH, "model.tie_weights=true"],
        "model.tie_weights: the head would share the embedding's weight across pipeline",
    ),
    "mesh-regression": (
        [*MESH, "data.task=regression"],
        "data.task: pipeline stages (parallel.dims.pp=2) train language models and "
        "classifiers only",
    ),
    "mesh-under-auto": (
        ["parallel.strategy=auto", "parallel.dims.pp=2", *GPT],
        "parallel.dims.pp: a mesh of dims is built by parallel.strategy=fsdp, got 'auto'",
    ),
}


@pytest.mark.parametrize("name", REFUSALS)
def test_load_config_refuses_in_one_line(name):
    overrides, message = REFUSALS[name]
    with pytest.raises(ConfigError) as caught:
        load_config({}, overrides)
    text = str(caught.value)
    assert text.startswith(message), text
    assert "\n" not in text


def test_a_valid_pipeline_config_loads():
    cfg = load_config(
        {}, [*PP, "parallel.pp.schedule=interleaved_1f1b", "parallel.pp.stages_per_rank=2"]
    )
    assert (cfg.parallel.pp.size, cfg.parallel.pp.microbatches) == (2, 4)
    assert cfg.parallel.pp.stages_per_rank == 2


def test_a_valid_pipeline_on_the_mesh_loads():
    cfg = load_config({}, [*MESH, "parallel.dims.tp=2", "parallel.pp.microbatches=2"])
    assert (cfg.parallel.dims.pp, cfg.parallel.dims.tp, cfg.parallel.pp.microbatches) == (2, 2, 2)


@pytest.mark.parametrize("name", ["microbatches-not-dividing", "tied-head", "mesh-tied-head"])
def test_cli_refuses_with_exit_2_and_no_run_directory(name, tmp_path, capsys):
    overrides, message = REFUSALS[name]
    runs = tmp_path / "runs"
    code = main(["train", str(DEFAULT), f"run.out_dir={runs}", "train.device=cpu", *overrides])
    out, err = capsys.readouterr()
    assert code == 2
    lines = err.splitlines()
    assert len(lines) == 1 and message in lines[0], err
    assert "Traceback" not in out + err
    assert not runs.exists() or not any(runs.iterdir())


def test_a_pipeline_in_one_process_is_refused_before_the_run_directory(tmp_path, capsys):
    runs = tmp_path / "runs"
    code = main(["train", str(DEFAULT), f"run.out_dir={runs}", "train.device=cpu", *PP])
    err = capsys.readouterr().err
    assert code == 2 and len(err.splitlines()) == 1, err
    assert "parallel.pp.size: 2 pipeline ranks, but 1 process(es) were launched" in err
    assert not runs.exists() or not any(runs.iterdir())


def test_a_mesh_pipeline_of_the_wrong_world_size_is_refused_before_the_run_directory(
    tmp_path, capsys
):
    runs = tmp_path / "runs"
    overrides = [*MESH, "parallel.dims.dp_shard=2"]
    code = main(["train", str(DEFAULT), f"run.out_dir={runs}", "train.device=cpu", *overrides])
    err = capsys.readouterr().err
    assert code == 2 and len(err.splitlines()) == 1, err
    assert "parallel.dims: pp 2 x dp_replicate 1 x dp_shard 2 x tp 1 = 4 processes, but 1" in err
    assert not runs.exists() or not any(runs.iterdir())
