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


def test_scaletrain_plan_splits_the_batch_over_the_workers_only():
    from scaletrain.launch.planning import plan_for_config

    cfg = load_config(
        {"data": {"source": "builtin", "name": "digits"}, "model": {"name": "mlp"}},
        [*ASYNC, "train.batch_size=32"],
    )
    _, batch_plan = plan_for_config(cfg, nproc=3)  # 2 workers + 1 server: 16 samples each
    assert (batch_plan.world_size, batch_plan.micro_batch_size) == (2, 16)
