"""`parallel.dims`: resolution against the world size, each rank's coordinates against the
mesh torch builds, and the one-line refusals (config, strategy, CLI)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.distributed as dist

from scaletrain.cli import main
from scaletrain.config import load_config
from scaletrain.config.dims import DimsConfig
from scaletrain.errors import ConfigError
from scaletrain.parallel import MESH_DIMS, build_device_mesh, build_strategy, resolve_dims
from scaletrain.parallel.tensor_parallel import tp_plan_for

DEFAULT = Path(__file__).parents[3] / "configs" / "default.yaml"
GPT = Path(__file__).parents[3] / "configs" / "gpt-stdlib.yaml"


def test_auto_fills_dp_shard_and_the_product_is_the_world():
    dims = resolve_dims(DimsConfig(tp=2, pp=2), world_size=8)
    assert (dims.pp, dims.dp_replicate, dims.dp_shard, dims.tp) == (2, 1, 2, 2)
    assert dims.dp_size == 2 and dims.world_size == 8
    default = resolve_dims(DimsConfig(), world_size=4)
    assert default.sizes == (1, 1, 4, 1) and default.dp_size == 4  # today's FSDP mesh
    hybrid = resolve_dims(DimsConfig(), world_size=8, nodes=2)  # parallel.fsdp.hybrid
    assert hybrid.sizes == (1, 2, 4, 1) and hybrid.dp_size == 8
    # with pipeline stages: 2 nodes of 2 give pp 2 x dp_replicate 2, the layout
    # test_pipeline_mesh.py trains (pp2_hsdp_offload)
    staged = resolve_dims(DimsConfig(pp=2), world_size=4, nodes=2)
    assert staged.sizes == (2, 2, 1, 1) and staged.dp_size == 2


@pytest.mark.parametrize(
    ("dims", "world", "expected"),
    [
        (DimsConfig(tp=2, dp_shard=2), 2, "= 4 processes, but 2 were launched"),
        (DimsConfig(tp=3), 4, "tp 3 x pp 1 = 3 does not divide the world size 4"),
        (DimsConfig(dp_replicate=2, dp_shard=1), 4, "= 2 processes, but 4 were launched"),
    ],
)
def test_a_product_that_is_not_the_world_size_is_refused(dims, world, expected):
    with pytest.raises(ConfigError, match="parallel.dims: ") as info:
        resolve_dims(dims, world_size=world)
    assert expected in str(info.value) and "\n" not in str(info.value)


def test_coordinates_follow_torchs_row_major_layout():
    """dp_rank / tp_rank computed from the rank alone equal the mesh's own coordinates."""
    sizes = DimsConfig(dp_replicate=2, dp_shard=3, tp=2, pp=2)
    layout = torch.arange(24).view(2, 2, 3, 2)  # init_device_mesh's (pp, rep, shard, tp)
    for rank in range(24):
        dims = resolve_dims(sizes, world_size=24, rank=rank)
        pp, rep, shard, tp = (int(i) for i in (layout == rank).nonzero()[0])
        assert dims.coordinates == dict(zip(MESH_DIMS, (pp, rep, shard, tp), strict=True))
        assert (dims.dp_rank, dims.tp_rank, dims.pp_rank) == (rep * 3 + shard, tp, pp)
    # the ranks of one TP group are neighbours and read the same samples
    first, second = (resolve_dims(sizes, world_size=24, rank=r) for r in (6, 7))
    assert first.dp_rank == second.dp_rank and first.tp_rank != second.tp_rank


def test_the_mesh_has_every_named_dim(monkeypatch):
    """One process: the four dims exist (size 1 too), so `mesh[name]` works for each."""
    store = dist.HashStore()
    dist.init_process_group("gloo", store=store, rank=0, world_size=1)
    try:
        mesh = build_device_mesh(resolve_dims(DimsConfig(), world_size=1), "cpu")
        assert mesh.mesh_dim_names == MESH_DIMS
        assert all(mesh[name].size() == 1 for name in MESH_DIMS)
        assert mesh["dp_replicate", "dp_shard"].mesh_dim_names == ("dp_replicate", "dp_shard")
    finally:
        dist.destroy_process_group()


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        (["parallel.strategy=ddp", "parallel.dims.tp=2"], "parallel.dims.tp: a mesh of dims is"),
        (["parallel.strategy=auto", "parallel.dims.dp_shard=2"], "parallel.dims.dp_shard: a"),
        (["parallel.strategy=single", "parallel.dims.pp=2"], "parallel.dims.pp: a mesh"),
        (["parallel.strategy=diloco", "parallel.dims.dp_replicate=2"], "dims.dp_replicate"),
        (
            ["parallel.strategy=fsdp", "parallel.fsdp.hybrid=true", "parallel.dims.dp_replicate=2"],
            "parallel.fsdp.hybrid: it sets parallel.dims.dp_replicate",
        ),
        (
            ["parallel.strategy=fsdp", "parallel.dims.tp=2", "loss.label_smoothing=0.1"],
            "loss.label_smoothing: the loss from vocabulary-split logits",
        ),
        (["parallel.dims.tp=0"], "parallel.dims.tp"),
        (["parallel.dims.dp_shard=many"], "parallel.dims.dp_shard"),
    ],
)
def test_config_refusals_name_the_key(overrides, expected):
    with pytest.raises(ConfigError) as info:
        load_config(DEFAULT, overrides)
    assert expected in str(info.value) and "\n" not in str(info.value).strip()


def test_heads_not_divisible_by_tp_are_refused_at_config_time():
    with pytest.raises(ConfigError) as info:
        load_config(GPT, ["parallel.strategy=fsdp", "parallel.dims.tp=2"])  # n_head 5
    assert str(info.value) == (
        "parallel.dims.tp: 2 does not divide model.n_head=5; each rank holds whole attention "
        "heads: pick a tp that divides 5"
    )
    cfg = load_config(GPT, ["parallel.strategy=fsdp", "parallel.dims.tp=5"])
    assert cfg.parallel.dims.tp == 5


def test_defaults_leave_every_strategy_as_it_was():
    for strategy in ("single", "ddp", "fsdp", "auto", "local_sgd", "diloco"):
        cfg = load_config(DEFAULT, [f"parallel.strategy={strategy}"])
        assert cfg.parallel.dims.is_default()


def test_a_model_without_a_plan_refuses_tp():
    with pytest.raises(ConfigError) as info:
        tp_plan_for("mlp", tp=2)
    message = str(info.value)
    assert message.startswith("parallel.dims.tp: 2 needs a tensor-parallel plan")
    assert "model.name=mlp has none (plans: gpt)" in message
    assert tp_plan_for("gpt", tp=2).apply is not None


def test_the_strategy_refuses_dims_that_do_not_fit_the_launch():
    """One process asked for tp 2: refused before any process group or file exists."""
    cfg = load_config(DEFAULT, ["parallel.strategy=fsdp", "parallel.dims.tp=2"]).parallel
    with pytest.raises(ConfigError, match=r"parallel.dims: .* does not divide the world size 1"):
        build_strategy(cfg, device_name="cpu")
    assert not dist.is_initialized()


def test_the_cli_says_it_in_one_line_and_exits_2(tmp_path, capsys):
    code = main(
        ["train", str(DEFAULT), f"run.out_dir={tmp_path}", "train.device=cpu"]
        + ["parallel.strategy=fsdp", "parallel.dims.tp=2", "parallel.dims.dp_shard=2"]
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1, err
    assert "parallel.dims: pp 1 x dp_replicate 1 x dp_shard 2 x tp 2 = 4 processes, but 1" in err[0]
    assert not any(tmp_path.iterdir()), "a refused config left a run directory behind"


def test_a_strategy_without_tp_reads_every_rank_as_data_parallel():
    strategy = build_strategy(load_config(DEFAULT).parallel, device_name="cpu")
    assert strategy.data_shard() == (0, 1) == strategy.eval_shard()


def test_the_gpt_plan_refuses_a_pooled_classifier_and_split_heads():
    from scaletrain.config import GPTConfig
    from scaletrain.models import build_model
    from scaletrain.parallel.tensor_parallel import check_tensor_parallel

    def gpt(task: str, n_head: int):
        cfg = GPTConfig(n_layer=1, n_head=n_head, d_model=24)
        outputs = 11 if task == "language_model" else 3
        return build_model(cfg, input_shape=(8,), num_outputs=outputs, vocab_size=11, task=task)

    with pytest.raises(ConfigError, match=r"splits gpt for data.task=language_model only"):
        check_tensor_parallel(gpt("classification", 4), model_name="gpt", tp=2)
    with pytest.raises(ConfigError, match=r"2 does not divide the model's 3 query heads"):
        check_tensor_parallel(gpt("language_model", 3), model_name="gpt", tp=2)
    check_tensor_parallel(gpt("language_model", 4), model_name="gpt", tp=2)  # fits: no error
