"""Command line: argv -> Config -> one API call. UserError -> one line on stderr, exit 2."""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

from rich.console import Console

from scaletrain.cli_parser import build_parser
from scaletrain.errors import UserError

EXIT_USER_ERROR = 2
EXIT_INTERRUPTED = 130
console = Console(stderr=True)


def main(argv: list[str] | None = None) -> int:
    warnings.formatwarning = _format_warning
    parser = build_parser(HANDLERS)
    args, extra = parser.parse_known_args(argv)
    # KEY=VALUE overrides may come after options (`train c.yaml --out d optim.lr=1`).
    if extra and hasattr(args, "overrides") and all("=" in item for item in extra):
        args.overrides = [*args.overrides, *extra]
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    if not getattr(args, "handler", None):
        parser.print_help()
        return EXIT_USER_ERROR
    args.argv = list(sys.argv[1:] if argv is None else argv)  # what launched workers rerun
    from scaletrain.launch import quiet_unless_rank_zero, record_worker_error

    if quiet_unless_rank_zero():  # a torchrun worker of rank > 0: rank 0 speaks for the job
        console.quiet = True
    try:
        return args.handler(args) or 0
    except UserError as exc:
        record_worker_error(exc)
        if args.debug:
            raise
        if not console.quiet:
            print(f"error: {_one_line(str(exc))}", file=sys.stderr)
        return getattr(exc, "exit_code", EXIT_USER_ERROR)
    except KeyboardInterrupt:  # a second Ctrl-C: no final checkpoint was waited for
        if not console.quiet:
            print(_interrupted_line(args), file=sys.stderr)
        return EXIT_INTERRUPTED


# --- commands -----------------------------------------------------------------------------
def _launched(args) -> bool:
    """With --nproc/--nnodes and outside torchrun: rerun this command in torchrun workers."""
    from scaletrain.launch import LaunchOptions, launch, needs_launch, parse_nnodes, parse_nproc

    min_nnodes, nnodes = parse_nnodes(args.nnodes)
    options = LaunchOptions(
        nproc=parse_nproc(args.nproc),
        nnodes=nnodes,
        min_nnodes=min_nnodes,
        node_rank=args.node_rank,
        rdzv_endpoint=args.rdzv_endpoint,
        max_restarts=args.max_restarts,
        rdzv_timeout_s=args.rdzv_timeout,
        rdzv_last_call_s=args.rdzv_last_call,
        local_addr=args.local_addr,
    )
    if not needs_launch(options):
        return False
    ps = _async_ps_section(_launch_config(args))
    if ps is not None:  # our own supervisor on each node: a lost worker must not stop the job
        from scaletrain.launch.ps_supervisor import supervise

        supervise(options, args.argv, servers=ps.servers, spares=ps.spare_workers)
    else:
        launch(options, args.argv)
    return True


def _launch_config(args):
    """The config the launched processes will train, checked here before any process
    starts, so a bad config, run directory or override gives one line instead of one per
    worker."""
    from scaletrain.config import load_config
    from scaletrain.rundir import open_run_dir
    from scaletrain.train.extend import resume_config

    if getattr(args, "config", None):
        out = getattr(args, "out", None)
        overrides = [*args.overrides, *([f"run.out_dir={out}"] if out else [])]
        return load_config(args.config, overrides)
    run = open_run_dir(args.run_dir)
    return resume_config(run.config, list(args.overrides), has_model=False)


def _async_ps_section(cfg):
    """`parallel.ps` where the config trains with `parallel.strategy: async_ps`."""
    if cfg is None or cfg.parallel.strategy != "async_ps":
        return None
    return cfg.parallel.ps


def _train(args) -> int:
    from scaletrain.ensemble.commands import train_command, wants_ensemble

    if wants_ensemble(args):  # members on --nproc processes of their own, no torchrun
        return train_command(args)
    if _launched(args):  # before importing the trainer: the launcher only waits on workers
        return 0
    from scaletrain.rundir import CLI_REUSE_HINT, RunDirExistsError

    try:
        run = _train_run(args)
    except RunDirExistsError as exc:  # the API names overwrite=True; here the flags apply
        raise RunDirExistsError(exc.root, hint=CLI_REUSE_HINT) from None
    _print_run(run)
    return run.exit_code


def _train_run(args):
    from scaletrain import api
    from scaletrain.config import load_config

    overrides = list(args.overrides)
    if args.out:
        overrides.append(f"run.out_dir={args.out}")
    cfg = load_config(args.config, overrides)
    run_dir = Path(cfg.run.out_dir) / cfg.run.name
    args.run_dir = str(run_dir)  # what Ctrl-C's line tells to resume
    if args.resume:
        # a run that failed (or lost a node) before its first checkpoint starts over
        committed = any((run_dir / "checkpoints").glob("step_*/manifest.json"))
        return api.resume(run_dir) if committed else api.train(cfg, overwrite=run_dir.exists())
    return api.train(cfg, overwrite=args.overwrite, callbacks=_tune_callbacks(args))


def _tune_callbacks(args) -> list:
    """`--tune-trial STUDY_DIR:NUMBER` (set by `scaletrain tune --trial-nproc`): report each
    validation to that trial of the study."""
    if not getattr(args, "tune_trial", None):
        return []
    from scaletrain.tune.reporter import remote_reporter

    return [remote_reporter(args.tune_trial)]


def _resume(args) -> int:
    from scaletrain.ensemble.commands import resume_command, wants_ensemble

    if wants_ensemble(args):
        return resume_command(args)
    if _launched(args):
        return 0
    from scaletrain import api

    run = api.resume(args.run_dir, overrides=list(args.overrides))
    _print_run(run)
    return run.exit_code


def _plan(args) -> int:
    from scaletrain.config import load_config
    from scaletrain.launch.planning import plan_for_config, plan_table, recommendation_line

    cfg = load_config(args.config, list(args.overrides))
    plan, batch_plan = plan_for_config(
        cfg, nproc=args.nproc, nnodes=args.nnodes, device_memory_gb=args.device_memory
    )
    Console().print(plan_table(plan, batch_plan))
    Console().print(recommendation_line(plan))
    return 0


def _summary(args) -> int:
    from scaletrain import api
    from scaletrain.models import summary_table

    Console().print(summary_table(api.summarize(args.config, overrides=args.overrides)))
    return 0


def _note_quantized(args) -> None:
    """Which weights eval/predict/export used on a quantized run: its quantized model, unless
    --checkpoint asks for float weights. Said after they loaded: a refusal stays one line."""
    from scaletrain.trained.quantized import quantization_of, weights_name

    mode = quantization_of(Path(args.run_dir)) if args.checkpoint is None else None
    if mode:
        console.print(f"weights: {weights_name(mode)}; --checkpoint best for the float ones")


def _eval(args) -> int:
    from scaletrain import api

    metrics = api.evaluate(
        args.run_dir, data=args.data, split=args.split, checkpoint=args.checkpoint
    )
    _note_quantized(args)
    title = Path(args.data).name if args.data else args.split
    _print_result(Path(args.run_dir), {title: metrics}, None, report=False)  # none written
    return 0


def _predict(args) -> int:
    import numpy as np

    from scaletrain import api

    result = api.predict(args.run_dir, args.input_file, checkpoint=args.checkpoint)
    _note_quantized(args)
    lines = _prediction_lines(result)
    if args.out:
        Path(args.out).write_text("\n".join(lines) + "\n")
        console.print(f"wrote {len(lines) - 1} predictions to {args.out}")
    else:
        np.set_printoptions(precision=6)
        print("\n".join(lines))
    return 0


def _generate(args) -> int:
    from scaletrain import api

    text = api.generate(
        args.run_dir,
        args.prompt,
        max_new_tokens=args.max_new_tokens,
        temperature=args.temperature,
        top_k=args.top_k,
        top_p=args.top_p,
        seed=args.seed,
        checkpoint=args.checkpoint,
    )
    _note_quantized(args)
    print(text)
    return 0


def _config_show(args) -> int:
    from scaletrain.config import load_config

    print(load_config(args.config, list(args.overrides)).to_yaml(), end="")
    return 0


def _config_check(args) -> int:
    """Every invalid key on its own line (where `train` stops at the first)."""
    from scaletrain.config import load_config
    from scaletrain.errors import ConfigError

    try:
        load_config(args.config, list(args.overrides))
    except ConfigError as exc:
        if args.debug:
            raise
        for problem in exc.problems:
            print(f"error: {_one_line(problem)}", file=sys.stderr)
        return EXIT_USER_ERROR
    console.print(f"{args.config}: ok")
    return 0


def _list(args) -> int:
    from scaletrain.catalog import catalog_table

    Console().print(catalog_table(args.kind))
    return 0


def _report(args) -> int:
    from scaletrain.report import write_report

    path = write_report(Path(args.run_dir))
    console.print(f"report: {path}")
    if args.open:
        import webbrowser

        webbrowser.open(path.resolve().as_uri())
    return 0


def _compare(args) -> int:
    from scaletrain.report import write_compare

    out = Path(args.out) if args.out else None
    path = write_compare([Path(p) for p in args.run_dirs], out=out, align=args.align)
    console.print(f"comparison: {path}")
    return 0


def _export(args) -> int:
    from scaletrain import api
    from scaletrain.ensemble.export import export_ensemble
    from scaletrain.rundir import is_ensemble_dir

    if args.format == "onnx":
        from scaletrain.trained.onnx_run import export_run_onnx, figures_table

        result = export_run_onnx(
            args.run_dir, out=args.out, checkpoint=args.checkpoint, opset=args.opset
        )
        _note_quantized(args)
        Console().print(figures_table(result))
        console.print(f"exported {result['path']} (figures in export.json beside it)")
        return 0
    if is_ensemble_dir(args.run_dir):
        path = export_ensemble(args.run_dir, out=args.out, checkpoint=args.checkpoint or "best")
    else:
        path = api.export(args.run_dir, out=args.out, checkpoint=args.checkpoint)
    _note_quantized(args)
    console.print(f"exported {path}")
    return 0


def _compress(args) -> int:
    from scaletrain.compress import CompressOptions, compress
    from scaletrain.compress.table import result_table

    options = CompressOptions(
        prune=args.prune,
        structured=args.structured,
        scope=args.scope,
        targets=args.targets,
        schedule=args.schedule,
        steps=args.steps,
        quantize=args.quantize,
        finetune_epochs=args.finetune_epochs,
        checkpoint=args.checkpoint or "best",
        latency_repeats=args.repeats,
        overrides=list(args.overrides),
        overwrite=args.overwrite,
    )
    result = compress(args.run_dir, options, out=args.out)
    Console().print(result_table(result))
    console.print(f"compressed run: {result.run_dir}")
    return 0


def _prepare(args) -> int:
    from scaletrain.config import load_config
    from scaletrain.data.shards import parse_size, prepare_shards

    cfg = load_config(args.config, list(args.overrides))
    manifest = prepare_shards(
        cfg.data,
        Path(args.out),
        seed=cfg.run.seed,
        shard_bytes=parse_size(args.shard_size),
        overwrite=args.overwrite,
    )
    splits = manifest["splits"]
    counts = ", ".join(f"{name} {split['num_samples']}" for name, split in splits.items())
    num_shards = sum(len(split["shards"]) for split in splits.values())
    console.print(f"prepared {args.out}: {num_shards} shards; samples: {counts}")
    return 0


# --- output -------------------------------------------------------------------------------
MAX_ERROR_CHARS = 1000
_CONTROL = {code: repr(chr(code))[1:-1] for code in (*range(32), 127)}


def _one_line(message: str) -> str:
    """An error as one terminal line: control characters (a newline in a key or file name)
    escaped, and cut after MAX_ERROR_CHARS (a message may quote a whole value)."""
    text = message.translate(_CONTROL)
    if len(text) <= MAX_ERROR_CHARS:
        return text
    return f"{text[:MAX_ERROR_CHARS]}... ({len(text)} characters in all)"


_python_format_warning = warnings.formatwarning


def _format_warning(message, category, filename, lineno, line=None) -> str:
    """scaletrain's own warnings (a skipped checkpoint ...) and notes (options a model switch
    dropped) are one line for the user; rank 0 alone gives the notes of a torchrun job."""
    if category.__name__ == "CheckpointWarning":
        return f"warning: {message}\n"
    if category.__name__ in ("ConfigNote", "GenerationNote"):
        return "" if console.quiet else f"note: {message}\n"
    return _python_format_warning(message, category, filename, lineno, line)


def _print_run(run) -> None:
    """The final metrics, titled with the weights they are of; the last weights' too where
    the returned (best) weights are older."""
    from scaletrain.metrics import format_table

    weights = run.weights
    if run.metrics and weights:
        title = f"Results: {weights['name']} weights (step {weights['step']})"
        Console().print(format_table(run.metrics, title=title))
    if run.metrics_last:
        title = f"Results: last weights (step {run.steps})"
        Console().print(format_table(run.metrics_last, title=title))
    _print_result(run.run_dir, {} if weights else run.metrics, run.status)


def _print_result(run_dir: Path, metrics: dict, status: str | None, *, report: bool = True) -> None:
    """The metrics table, the run directory and (`report`: a command that wrote one) the
    report's path."""
    from scaletrain.metrics import format_table

    if metrics:
        Console().print(format_table(metrics))
    if status == "interrupted":
        hint = _resume_hint(run_dir, "this checkpoint")
        if not console.quiet:  # print, not rich: a wrapped path would not paste
            print(f"interrupted: a final checkpoint was written; {hint}", file=sys.stderr)
    elif status and status != "finished":
        console.print(f"status: {status}")
    from scaletrain.finish import wait_for_reports

    wait_for_reports()  # train() returns before its report is written
    console.print(f"run directory: {run_dir}")
    report = Path(run_dir) / "report.html" if report else None
    if report is not None and report.is_file():
        console.print(f"report: {report}")


def _interrupted_line(args) -> str:
    if args.handler not in (_train, _resume):
        return "interrupted"
    return "interrupted: " + _resume_hint(getattr(args, "run_dir", None), "the newest checkpoint")


def _resume_hint(run_dir: str | Path | None, where: str) -> str:
    """`scaletrain resume RUN_DIR` for the run a command trained, copyable as it stands."""
    import shlex

    if run_dir is None:  # a job launched through torchrun: the config names the run
        return f"continue from {where} with `scaletrain resume RUN_DIR`"
    return f"continue from {where} with `scaletrain resume {shlex.quote(str(run_dir))}`"


def _prediction_lines(result: dict) -> list[str]:
    pred = result["pred"]
    if "prob" in result:
        names = result["class_names"] or [str(i) for i in range(result["prob"].shape[1])]
        header = "prediction," + ",".join(f"p_{name}" for name in names)
        rows = [
            f"{names[int(p)]}," + ",".join(f"{v:.6f}" for v in prob)
            for p, prob in zip(pred, result["prob"], strict=True)
        ]
        return [header, *rows]
    header = ",".join(f"prediction_{i}" for i in range(pred.shape[1]))
    return [header, *(",".join(f"{v:.6g}" for v in row) for row in pred)]


def _tune(args) -> int:
    from scaletrain.tune.commands import tune_command

    return tune_command(args)


def _lr_find(args) -> int:
    from scaletrain.tune.commands import lr_find_command

    return lr_find_command(args)


HANDLERS = {
    "train": _train,
    "resume": _resume,
    "plan": _plan,
    "summary": _summary,
    "eval": _eval,
    "predict": _predict,
    "generate": _generate,
    "config_show": _config_show,
    "config_check": _config_check,
    "list": _list,
    "report": _report,
    "compare": _compare,
    "export": _export,
    "prepare": _prepare,
    "tune": _tune,
    "lr_find": _lr_find,
    "compress": _compress,
}


if __name__ == "__main__":
    sys.exit(main())

__all__ = ["main"]
