"""`scaletrain train|resume` for an ensemble: `--nproc K` places members on K processes of
this machine (no torchrun: members share no gradients), then the members and the ensemble
are printed side by side."""

from __future__ import annotations

import sys
from pathlib import Path

from rich.console import Console
from rich.table import Table

from scaletrain.config import load_config
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

    nproc = _nproc(args)
    overrides = [*args.overrides, *([f"run.out_dir={args.out}"] if args.out else [])]
    cfg = load_config(args.config, overrides)
    root = Path(cfg.run.out_dir) / cfg.run.name
    args.run_dir = str(root)  # what Ctrl-C's line tells to resume
    if args.resume and is_ensemble_dir(root):
        run = resume_ensemble(root, nproc=nproc)
    else:
        run = train_ensemble(cfg, overwrite=args.overwrite, nproc=nproc, reuse_hint=CLI_REUSE_HINT)
    print_ensemble(run.run_dir, run.status)
    return run.exit_code


def resume_command(args) -> int:
    from scaletrain.ensemble.runner import resume_ensemble

    if args.overrides:
        raise UserError(f"{args.run_dir}: an ensemble resumes as it was configured (no overrides)")
    run = resume_ensemble(args.run_dir, nproc=_nproc(args))
    print_ensemble(run.run_dir, run.status)
    return run.exit_code


def _nproc(args) -> int:
    """`--nproc K`: worker processes for the members (torchrun's flags do not apply)."""
    if str(args.nnodes) != "1":
        raise UserError(
            f"--nnodes {args.nnodes}: an ensemble's members run on this machine's processes "
            "(--nproc K); several nodes are not supported for ensembles yet"
        )
    try:
        nproc = int(args.nproc)
    except ValueError:
        raise UserError(f"--nproc: expected a whole number, got {args.nproc!r}") from None
    if nproc < 1:
        raise UserError(f"--nproc: expected at least 1, got {nproc}")
    return nproc


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
