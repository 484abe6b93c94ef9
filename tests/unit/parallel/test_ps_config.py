"""`parallel.strategy: async_ps`: its keys, the combinations it refuses (one line naming the
key), and how launched processes split into workers and servers."""

import pytest

from scaletrain.config import load_config
from scaletrain.errors import ConfigError
from scaletrain.parallel.ps.roles import make_roles

ASYNC = ["parallel.strategy=async_ps"]


def test_ps_keys_load_with_their_defaults():
    cfg = load_config({}, [*ASYNC, "parallel.ps.servers=2", "parallel.ps.staleness=3"])
    ps = cfg.parallel.ps
    assert (ps.servers, ps.staleness, ps.stale, ps.update, ps.shards_dir) == (
        2,
        3,
        "drop",
        "optim",
        None,
    )


@pytest.mark.parametrize(
    ("overrides", "key"),
    [
        (["train.precision=bf16-true"], "train.precision"),
        (["checkpoint.async_save=true"], "checkpoint.async_save"),
        (["train.guard.nonfinite=rollback"], "train.guard.nonfinite"),
        (["parallel.offload=cpu"], "parallel.offload"),
        (["parallel.fsdp.hybrid=true"], "parallel.fsdp.hybrid"),
        (["parallel.ps.stale=halve"], "parallel.ps.stale"),
        (["parallel.ps.servers=0"], "parallel.ps.servers"),
        (["parallel.ps.staleness=-1"], "parallel.ps.staleness"),
        (["parallel.ps.spare_workers=-1"], "parallel.ps.spare_workers"),
    ],
)
def test_refused_combinations_name_the_key(overrides, key):
    with pytest.raises(ConfigError) as info:
        load_config({}, [*ASYNC, *overrides])
    message = str(info.value)
    assert key in message and "\n" not in message.strip()


def test_bf16_mixed_is_allowed():
    assert load_config({}, [*ASYNC, "train.precision=bf16-mixed"]).train.precision == "bf16-mixed"


def test_the_first_ranks_train_and_the_last_serve():
    roles = make_roles(5, 2)
    assert (roles.num_workers, roles.num_servers) == (3, 2)
    assert [roles.is_server(rank) for rank in range(5)] == [False, False, False, True, True]
    assert roles.everyone == ["worker0", "worker1", "worker2", "server0", "server1"]


@pytest.mark.parametrize(("world", "servers"), [(1, 1), (2, 2), (3, 5)])
def test_servers_need_at_least_one_worker_beside_them(world, servers):
    with pytest.raises(ConfigError, match=r"parallel\.ps\.servers: .* --nproc"):
        make_roles(world, servers)


def test_spare_workers_sit_between_the_workers_and_the_servers():
    roles = make_roles(5, 1, spares=2)  # --nproc 5 = 2 workers + 2 spares + 1 server
    assert (roles.num_workers, roles.num_spares, roles.num_servers) == (2, 2, 1)
    assert roles.everyone == ["worker0", "worker1", "spare0", "spare1", "server0"]
    assert [roles.is_spare(rank) for rank in range(5)] == [False, False, True, True, False]
    assert roles.is_server(4) and not roles.is_server(3) and roles.server_rank(0) == 4
    assert roles.spares == ["spare0", "spare1"]


@pytest.mark.parametrize(("world", "servers", "spares"), [(2, 1, 1), (3, 1, 2), (4, 2, 5)])
def test_spares_need_at_least_one_worker_beside_them(world, servers, spares):
    with pytest.raises(ConfigError, match=r"^parallel\.ps\.spare_workers: .*\(--nproc counts"):
        make_roles(world, servers, spares)


def test_spare_workers_belong_to_async_ps_only():
    with pytest.raises(ConfigError, match=r"parallel\.ps\.spare_workers: .*async_ps"):
        load_config({}, ["parallel.strategy=ddp", "parallel.ps.spare_workers=1"])


def test_the_supervisor_splits_ranks_as_the_roles_do():
    from scaletrain.launch.ps_supervisor import _role

    roles = make_roles(6, 2, spares=1)
    launched = [_role(rank, 6, servers=2, spares=1) for rank in range(6)]
    expected = [
        "server" if roles.is_server(r) else "spare" if roles.is_spare(r) else "worker"
        for r in range(6)
    ]
    assert launched == expected == ["worker"] * 3 + ["spare"] + ["server"] * 2


def test_scaletrain_plan_splits_the_batch_over_the_workers_only():
    from scaletrain.launch.planning import plan_for_config

    cfg = load_config(
        {"data": {"source": "builtin", "name": "digits"}, "model": {"name": "mlp"}},
        [*ASYNC, "train.batch_size=32"],
    )
    _, batch_plan = plan_for_config(cfg, nproc=3)  # 2 workers + 1 server: 16 samples each
    assert (batch_plan.world_size, batch_plan.micro_batch_size) == (2, 16)
