"""`scaletrain tune` and `scaletrain lr-find`: argv options → the tune API, and the lines
printed at the end."""

from __future__ import annotations

import sys

from scaletrain.errors import UserError


def tune_command(args) -> int:
    try:
        result = _tune(args)
    except KeyboardInterrupt:  # trials under way stay `running`: a resume retries them
        where = args.resume or args.out or "STUDY_DIR"
        print(f"interrupted: continue with `scaletrain tune --resume {where}`", file=sys.stderr)
        return 130
    _print_result(result)
    return 0


def _tune(args):
    from scaletrain.tune.tuner import resume_tune, tune

    if args.resume:
        if args.config or args.space:
            raise UserError(
                "--resume STUDY_DIR continues a study as it was set up: give no CONFIG or --space"
            )
        return resume_tune(args.resume)
    missing = [
        name
        for name, value in (
            ("CONFIG", args.config),
            ("--space", args.space),
            ("--trials", args.trials),
        )
        if value is None
    ]
    if missing:
        raise UserError(f"tune: missing {', '.join(missing)} (or --resume STUDY_DIR)")
    return tune(
        args.config,
        space=args.space,
        num_trials=args.trials,
        study_dir=args.out,
        overrides=list(args.overrides),
        metric=args.metric,
        mode=args.mode,
        sampler=args.sampler,
        pruner=args.pruner,
        seed=args.seed,
        parallel=args.parallel,
        trial_nproc=args.trial_nproc,
        timeout_min=args.timeout,
    )


def _print_result(result) -> None:
    print(
        f"trials: {result.num_complete} complete, {result.num_pruned} pruned, "
        f"{result.num_failed} failed ({result.wall_s:.1f} s)"
    )
    if result.retried:
        print(f"retried (left running by a crash): {', '.join(map(str, result.retried))}")
    if result.best_value is not None:
        values = ", ".join(f"{key}={value}" for key, value in result.best_params.items())
        print(f"best value: {result.best_value:.6g} ({values})")
        print(f"best config: {result.study_dir / 'best.yaml'}")
    print(f"report: {result.study_dir / 'report.html'}")


def lr_find_command(args) -> int:
    from pathlib import Path

    from scaletrain.config import load_config
    from scaletrain.tune.lr_find import lr_find

    cfg = load_config(args.config, list(args.overrides))
    out = Path(args.out) if args.out else Path(cfg.run.out_dir) / f"{cfg.run.name}-lr-find.html"
    out.parent.mkdir(parents=True, exist_ok=True)
    result = lr_find(cfg, min_lr=args.min_lr, max_lr=args.max_lr, num_steps=args.steps, out=out)
    print(f"suggested lr: {result.suggestion:.3g}", file=sys.stdout)
    print(f"loss curve: {result.page}")
    return 0
