"""`scaletrain train|resume` for an ensemble: `--nproc K` places members on K processes of
this machine (no torchrun for one-process members: they share no gradients), `--nnodes N`
on K processes of each of N nodes; then the members and the ensemble are printed side by
side (by node 0)."""

from __future__ import annotations

import sys
from pathlib import Path

from rich.console import Console
from rich.table import Table

from scaletrain.config import load_config, load_run_config
from scaletrain.errors import UserError
from scaletrain.rundir import CLI_REUSE_HINT, is_ensemble_dir, read_json


def wants_ensemble(args) -> bool:
    """The command trains (or resumes) an ensemble; a config that does not load is left to
    the single-run path to report."""
    if getattr(args, "config", None):
        try:
            return load_config(args.config, list(args.overrides)).ensemble is not None
        except UserError:
            return False
    return is_ensemble_dir(Path(args.run_dir))


def train_command(args) -> int:
    from scaletrain.ensemble.runner import resume_ensemble, train_ensemble

    nproc, nodes = _placement(args)
    overrides = [*args.overrides, *([f"run.out_dir={args.out}"] if args.out else [])]
    cfg = load_config(args.config, overrides)
    root = Path(cfg.run.out_dir) / cfg.run.name
    args.run_dir = str(root)  # what Ctrl-C's line tells to resume
    resume = args.resume and is_ensemble_dir(root)
    if nodes is not None and nodes.node_rank > 0:
        return _join(root, cfg, nodes, nproc=nproc)

    def start(host):
        if resume:
            return resume_ensemble(root, nproc=nproc, host=host)
        return train_ensemble(
            cfg, overwrite=args.overwrite, nproc=nproc, reuse_hint=CLI_REUSE_HINT, host=host
        )

    run = _as_host(cfg, nodes, start)
    print_ensemble(run.run_dir, run.status)
    return run.exit_code


def resume_command(args) -> int:
    from scaletrain.ensemble.runner import resume_ensemble

    if args.overrides:
        raise UserError(f"{args.run_dir}: an ensemble resumes as it was configured (no overrides)")
    nproc, nodes = _placement(args)
    root = Path(args.run_dir)
    cfg = load_run_config(root / "config.yaml")
    if nodes is not None and nodes.node_rank > 0:
        return _join(root, cfg, nodes, nproc=nproc)
    run = _as_host(cfg, nodes, lambda host: resume_ensemble(root, nproc=nproc, host=host))
    print_ensemble(run.run_dir, run.status)
    return run.exit_code


def _join(root: Path, cfg, nodes, *, nproc: int) -> int:
    """Node R > 0: its share of the members; node 0 combines them."""
    from scaletrain.ensemble.nodes import check_nodes_method, join_ensemble

    check_nodes_method(cfg, nodes)
    return join_ensemble(root, nodes, nproc=nproc)


def _as_host(cfg, nodes, start):
    """`start(host)`: on one machine (host None), or as node 0 of several, which tells the
    others when it cannot go on."""
    if nodes is None:
        return start(None)
    from scaletrain.ensemble.nodes import HostNode, check_nodes_method

    check_nodes_method(cfg, nodes)
    host = HostNode(nodes)
    try:
        return start(host)
    except UserError as error:
        host.abort(str(error).splitlines()[0])
        raise


def _placement(args):
    """`--nproc K` (processes per node for the members; torchrun's flags do not apply) and,
    with `--nnodes N` (static), this node's place among N."""
    from scaletrain.ensemble.nodes import Nodes

    nproc = _whole_number("--nproc", args.nproc)
    low, colon, high = str(args.nnodes).partition(":")
    if colon and low != high:
        raise UserError(
            f"--nnodes {args.nnodes}: an ensemble runs on a fixed number of nodes; give N"
        )
    nnodes = _whole_number("--nnodes", high if colon else low)
    if nnodes == 1:
        return nproc, None
    if not args.rdzv_endpoint:
        raise UserError(f"--rdzv-endpoint: --nnodes {nnodes} needs HOST:PORT of node 0")
    if not 0 <= args.node_rank < nnodes:
        raise UserError(f"--node-rank: expected 0..{nnodes - 1}, got {args.node_rank}")
    return nproc, Nodes(nnodes, args.node_rank, args.rdzv_endpoint, args.rdzv_timeout)


def _whole_number(flag: str, text) -> int:
    try:
        number = int(text)
    except ValueError:
        raise UserError(f"{flag}: expected a whole number, got {text!r}") from None
    if number < 1:
        raise UserError(f"{flag}: expected at least 1, got {number}")
    return number


def print_ensemble(root: Path, status: str) -> None:
    """Members and the ensemble on the test split (else val), then the directory."""
    if status != "finished":
        print(
            f"interrupted: finished members are kept; continue with `scaletrain resume {root}`",
            file=sys.stderr,
        )
        return
    Console().print(ensemble_table(read_json(Path(root) / "summary.json")))
    Console(stderr=True).print(f"run directory: {root}")


def ensemble_table(summary: dict) -> Table:
    split = "test" if "test" in summary["ensemble"] else "val"
    metrics = summary["ensemble"][split]
    names = [n for n in ("accuracy", "f1_macro", "loss", "mae", "rmse", "r2") if n in metrics]
    table = Table(title=f"Ensemble ({summary['method']}, {summary['combine']}) on {split}")
    table.add_column("model")
    for name in names:
        table.add_column(name, justify="right")
    rows = [(f"m{i}", member[split]) for i, member in enumerate(summary["members"])]
    rows += [("mean member", summary["mean_member"][split]), ("ensemble", metrics)]
    for label, values in rows:
        table.add_row(label, *(f"{values[name]:.4f}" for name in names))
    diversity = summary["diversity"].get(split, {})
    if "disagreement" in diversity:
        table.caption = f"members disagree on {diversity['disagreement']:.1%} of samples (mean)"
    return table
