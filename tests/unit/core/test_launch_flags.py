"""Launch flags without processes: `--nnodes MIN:MAX` parsing, what torchrun receives, and
one clear line (exit 2) for each flag that cannot work."""

from __future__ import annotations

import pytest

from scaletrain.launch import LaunchError, LaunchOptions, parse_nnodes, parse_nproc, torchrun_args


def run_cli(capsys, *args: str) -> tuple[int, str]:
    from scaletrain.cli import main

    capsys.readouterr()
    code = main(list(args))
    return code, capsys.readouterr().err


@pytest.mark.parametrize(
    ("text", "parsed"), [("1", (None, 1)), ("4", (None, 4)), ("1:4", (1, 4)), (" 2:2 ", (2, 2))]
)
def test_nnodes_is_a_count_or_a_range(text, parsed):
    assert parse_nnodes(text) == parsed


@pytest.mark.parametrize("text", ["", "a", "1:", ":4", "1:2:3", "1.5"])
def test_malformed_nnodes_is_named(text):
    with pytest.raises(LaunchError, match="--nnodes: expected N or MIN:MAX") as caught:
        parse_nnodes(text)
    assert caught.value.exit_code == 2


def test_nproc_range_is_refused_with_a_pointer_to_nnodes(capsys):
    assert parse_nproc("3") == 3
    code, err = run_cli(capsys, "train", "unused.yaml", "--nproc", "1:4")
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1, err
    assert "elastic range applies to nodes" in lines[0] and "--nnodes MIN:MAX" in lines[0]


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--nnodes", "3:2", "--rdzv-endpoint", "h:1"], "--nnodes 3:2: expected MIN:MAX"),
        (["--nnodes", "0:2", "--rdzv-endpoint", "h:1"], "--nnodes 0:2: expected MIN:MAX"),
        (["--nnodes", "2:1"], "--nnodes 2:1: expected MIN:MAX"),  # must not train alone
        (["--nnodes", "1:2", "--rdzv-endpoint", "h:1", "--node-rank", "2"], "--node-rank"),
        (["--nnodes", "1:2"], "--rdzv-endpoint"),
        (["--nnodes", "x"], "--nnodes: expected N or MIN:MAX"),
        (["--nproc", "two"], "--nproc: expected a whole number"),
        (["--nproc", "0"], "--nproc and --nnodes must be >= 1"),
    ],
)
def test_bad_launch_flags_exit_2_with_one_line(capsys, flags, message):
    for command in (["train", "unused.yaml"], ["resume", "unused_run"]):
        code, err = run_cli(capsys, *command, *flags)
        lines = err.strip().splitlines()
        assert code == 2 and len(lines) == 1 and message in lines[0], (command, err)


def test_cli_hands_the_range_to_the_launcher(capsys, monkeypatch, tmp_path):
    import scaletrain.launch

    launched = []
    monkeypatch.setattr(scaletrain.launch, "launch", lambda *args: launched.append(args))
    config = tmp_path / "c.yaml"
    config.write_text("run: {name: c}\n")  # checked before the launch
    flags = ["--nnodes", "1:3", "--node-rank", "2", "--rdzv-endpoint", "h:29400"]
    code, err = run_cli(capsys, "train", str(config), *flags, "--rdzv-last-call", "7")
    assert code == 0, err
    [(options, command)] = launched
    assert (options.min_nnodes, options.nnodes, options.node_rank) == (1, 3, 2)
    assert options.is_elastic and options.rdzv_last_call_s == 7 and options.nproc == 1
    assert command == ["train", str(config), *flags, "--rdzv-last-call", "7"]  # workers rerun it


def test_torchrun_reads_the_range_and_the_rendezvous_timings(monkeypatch):
    from torch.distributed.run import config_from_args, get_args_parser

    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # else torchrun's own parsing sets it here
    options = LaunchOptions(nproc=2, nnodes=4, min_nnodes=2, rdzv_endpoint="h:29400")
    args = get_args_parser().parse_args(torchrun_args(options, []))
    config, _, _ = config_from_args(args)
    assert (config.min_nodes, config.max_nodes, config.nproc_per_node) == (2, 4, 2)
    rdzv = config.rdzv_configs
    assert rdzv["last_call_timeout"] == "5" and rdzv["join_timeout"] == "600", rdzv
    assert rdzv["keep_alive_interval"] == "2" and rdzv["keep_alive_max_attempt"] == "3", rdzv
    # a fixed size keeps torchrun's defaults: nothing to re-form, no faster heartbeats
    fixed = torchrun_args(LaunchOptions(nnodes=2, rdzv_endpoint="h:1"), [])
    assert fixed[fixed.index("--nnodes") + 1] == "2"
    assert fixed[fixed.index("--rdzv-conf") + 1] == "join_timeout=600,is_host=1"
    same = LaunchOptions(nnodes=2, min_nnodes=2, rdzv_endpoint="h:1")
    assert not same.is_elastic and torchrun_args(same, []) == fixed


@pytest.mark.parametrize(("min_nnodes", "shared"), [(1, "1"), (None, None)])
def test_elastic_launch_gives_each_round_its_own_store(monkeypatch, min_nnodes, shared):
    # torch 2.13's shared agent store breaks a node joining a later round (pytorch#135712)
    import os

    import torch.distributed.run

    from scaletrain.launch import launch

    monkeypatch.delenv("TORCH_DISABLE_SHARE_RDZV_TCP_STORE", raising=False)
    seen = []
    monkeypatch.setattr(
        torch.distributed.run,
        "run",
        lambda args: seen.append((args, os.environ.get("TORCH_DISABLE_SHARE_RDZV_TCP_STORE"))),
    )
    options = LaunchOptions(nnodes=2, min_nnodes=min_nnodes, node_rank=1, rdzv_endpoint="h:1")
    assert launch(options, ["train", "c.yaml"]) == 0
    [(args, value)] = seen
    assert value == shared and args.nnodes == options.nnodes_spec
    assert args.training_script_args == ["train", "c.yaml"]
    assert "TORCH_DISABLE_SHARE_RDZV_TCP_STORE" not in os.environ  # restored afterwards


def test_a_bad_config_is_refused_before_any_worker_starts(tmp_path, capsys):
    """One line from the launcher, not one per worker plus torchrun's failure report."""
    config = tmp_path / "bad.yaml"
    config.write_text(f"run: {{name: bad, out_dir: {tmp_path / 'runs'}}}\noptim: {{lr: -1}}\n")
    code, err = run_cli(capsys, "train", str(config), "--nproc", "2")
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1, err
    assert lines[0].startswith("error: optim.lr") and "worker" not in lines[0]
    assert not (tmp_path / "runs").exists()
    code, err = run_cli(capsys, "train", str(tmp_path / "missing.yaml"), "--nproc", "2")
    assert code == 2 and err.strip().splitlines() == [
        f"error: config file not found: {tmp_path / 'missing.yaml'}"
    ], err


def test_a_bad_resume_is_refused_before_any_worker_starts(tmp_path, capsys):
    missing = tmp_path / "no_run"
    code, err = run_cli(capsys, "resume", str(missing), "--nproc", "2")
    assert code == 2 and err.strip().splitlines() == [f"error: run directory not found: {missing}"]
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text("run: {name: run}\n")
    code, err = run_cli(capsys, "resume", str(run), "optim.lr=1", "--nproc", "2")
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error: optim.lr: a resume cannot")
