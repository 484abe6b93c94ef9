"""The `scaletrain` command line's parser: commands, their arguments and help texts.

Kept apart from cli.py, which runs the commands, so each reads in one screen."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Mapping

from rich_argparse import RichHelpFormatter


class HelpFormatter(RichHelpFormatter):
    """Group titles as written, first letter capitalized (rich-argparse's default
    `str.title` made "Through Torchrun'S Elastic Agent")."""

    group_name_formatter = staticmethod(lambda title: title[:1].upper() + title[1:])


class _Version(argparse.Action):
    """`--version`: scaletrain's and torch's versions, read without importing torch."""

    def __init__(self, option_strings, dest, **kwargs):
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, **kwargs)

    def __call__(self, parser, namespace, values, option_string=None):
        from importlib.metadata import PackageNotFoundError, version

        import scaletrain

        try:
            torch_version = version("torch")
        except PackageNotFoundError:
            torch_version = "not installed"
        print(
            f"scaletrain {scaletrain.__version__} (torch {torch_version}, Python "
            f"{sys.version.split()[0]})"
        )
        parser.exit()


def build_parser(handlers: Mapping[str, Callable]) -> argparse.ArgumentParser:
    """The `scaletrain` parser; `handlers` maps each command (`config show` as `config_show`)
    to the function that runs it."""
    common = argparse.ArgumentParser(add_help=False, formatter_class=HelpFormatter)
    common.add_argument("--debug", action="store_true", help="Show tracebacks for user errors.")
    parser = argparse.ArgumentParser(
        prog="scaletrain",
        parents=[common],
        formatter_class=HelpFormatter,
        description="Train neural networks from one config: `scaletrain train configs/default.yaml`.",
    )
    parser.add_argument("--version", action=_Version, help="Print the versions and exit.")
    commands = parser.add_subparsers(title="commands", metavar="COMMAND")

    def command(name: str, handler, help_text: str) -> argparse.ArgumentParser:
        sub = commands.add_parser(
            name,
            parents=[common],
            help=help_text,
            description=help_text,
            formatter_class=HelpFormatter,
        )
        sub.set_defaults(handler=handler)
        return sub

    sub = command("train", handlers["train"], "Train a model from a YAML config.")
    sub.add_argument("config", help="YAML config file, e.g. configs/default.yaml.")
    _add_overrides(sub, "Dotted overrides: optim.lr=3e-4.")
    sub.add_argument("--out", help="Parent folder for the run directory (run.out_dir).")
    sub.add_argument("--overwrite", action="store_true", help="Replace an existing run directory.")
    sub.add_argument(
        "--resume",
        action="store_true",
        help="Continue the run from its newest checkpoint (start over where it has none).",
    )
    sub.add_argument("--tune-trial", help=argparse.SUPPRESS)  # set by `tune --trial-nproc`

    _add_launch_flags(sub)

    sub = command(
        "resume",
        handlers["resume"],
        "Continue an interrupted run from its latest checkpoint, or extend a finished one.",
    )
    sub.add_argument("run_dir", help="Run directory to continue.")
    _add_overrides(
        sub,
        "Keys that leave the steps already taken as they were: train.max_epochs=50, "
        "train.max_steps, train.eval_every_steps, train.early_stopping.*, checkpoint.*, log.*.",
    )
    _add_launch_flags(sub)

    sub = command(
        "plan", handlers["plan"], "Estimate memory per device for each strategy; recommend one."
    )
    sub.add_argument("config", help="YAML config file.")
    _add_overrides(sub)
    sub.add_argument("--nproc", type=int, default=1, help="Processes per node.")
    sub.add_argument("--nnodes", type=int, default=1, help="Nodes.")
    sub.add_argument("--device-memory", type=float, help="GB per device (default: measured).")

    sub = command(
        "summary",
        handlers["summary"],
        "Layers, output shapes, parameters, size and FLOPs of a config's model.",
    )
    sub.add_argument("config", help="YAML config file (its data gives the input shape).")
    _add_overrides(sub)

    sub = command(
        "eval",
        handlers["eval"],
        "Reload a run's model and evaluate it on a split or a new labelled file.",
    )
    sub.add_argument("run_dir", help="Run directory.")
    sub.add_argument("--split", default="test", choices=["train", "val", "test"], help="Split.")
    sub.add_argument(
        "--data",
        metavar="FILE",
        help="A labelled .csv, .parquet, .npy or .npz file to evaluate on instead of a split "
        "(read like the training data, with the run's preprocessing and classes).",
    )
    _add_checkpoint_option(sub)

    sub = command(
        "predict",
        handlers["predict"],
        "Predict for raw inputs (CSV/NPY), with saved preprocessing.",
    )
    sub.add_argument("run_dir", help="Run directory.")
    sub.add_argument("input_file", help="CSV (header, feature columns) or NPY file of inputs.")
    sub.add_argument("--out", help="Write predictions as CSV here instead of stdout.")
    _add_checkpoint_option(sub)

    sub = command(
        "generate",
        handlers["generate"],
        "Continue a prompt with a language-model run (KV cache; greedy or sampled).",
    )
    sub.add_argument("run_dir", help="Run directory of a data.task=language_model run.")
    sub.add_argument("--prompt", required=True, help="Text to continue.")
    sub.add_argument("--max-new-tokens", type=int, default=100, help="Tokens to add.")
    sub.add_argument(
        "--temperature", type=float, default=1.0, help="0 = greedy; higher = more random."
    )
    sub.add_argument("--top-k", type=int, help="Sample among the K most likely tokens only.")
    sub.add_argument(
        "--top-p", type=float, help="Sample among the likeliest tokens reaching this probability."
    )
    sub.add_argument("--seed", type=int, help="The same seed gives the same text.")
    _add_checkpoint_option(sub)

    config = command("config", None, "Show or check a config.")
    config_commands = config.add_subparsers(title="config commands", metavar="ACTION")
    for name, handler, text in (
        ("show", handlers["config_show"], "Print the resolved config with defaults filled in."),
        (
            "check",
            handlers["config_check"],
            "Validate a config; exit 2 with the culprit key if invalid.",
        ),
    ):
        sub = config_commands.add_parser(
            name, parents=[common], help=text, description=text, formatter_class=HelpFormatter
        )
        sub.set_defaults(handler=handler)
        sub.add_argument("config", help="YAML config file.")
        _add_overrides(sub)

    sub = command(
        "list",
        handlers["list"],
        "List registered models, datasets, optimizers, schedules, losses, inits.",
    )
    sub.add_argument(
        "kind",
        choices=["models", "datasets", "optimizers", "schedules", "losses", "inits"],
        help="What to list.",
    )

    sub = command("report", handlers["report"], "Write the self-contained HTML report of a run.")
    sub.add_argument("run_dir", help="Run directory.")
    sub.add_argument("--open", action="store_true", help="Open it in a browser.")

    sub = command(
        "compare", handlers["compare"], "Compare runs: overlaid curves, final metrics, config diff."
    )
    sub.add_argument("run_dirs", nargs="+", help="Run directories.")
    sub.add_argument(
        "--out",
        help="Output HTML file (default: compare-RUN1-vs-RUN2.html beside the first run).",
    )
    sub.add_argument("--align", default="step", choices=["step", "time"], help="X axis.")

    sub = command(
        "export", handlers["export"], "Export a run's weights for use elsewhere (no pickle)."
    )
    sub.add_argument("run_dir", help="Run directory.")
    sub.add_argument(
        "--format",
        default="safetensors",
        choices=["safetensors", "onnx"],
        help="safetensors: weights + config + preprocessing (scaletrain.load_exported); onnx: "
        "the network with its scaling, checked against PyTorch with onnxruntime.",
    )
    _add_checkpoint_option(sub)
    sub.add_argument("--out", help="Output file (default: RUN_DIR/model.safetensors or .onnx).")
    sub.add_argument("--opset", type=int, default=18, help="ONNX opset (17 or higher).")

    sub = command("prepare", handlers["prepare"], "Write a config's data as memory-mapped shards.")
    sub.add_argument("config", help="YAML config whose `data` section names the source.")
    _add_overrides(sub, "Dotted overrides: data.path=x.csv.")
    sub.add_argument("--out", required=True, help="Folder to write (shards + manifest.json).")
    sub.add_argument("--shard-size", default="256MB", help="Bytes per shard: 256MB, 64MiB …")
    sub.add_argument("--overwrite", action="store_true", help="Replace an existing shard folder.")
    _add_tune_commands(command, handlers)
    _add_compress(command("compress", handlers["compress"], "Prune and/or quantize a trained run."))
    return parser


def _add_tune_commands(command, handlers: Mapping[str, Callable]) -> None:
    sub = command(
        "tune",
        handlers["tune"],
        "Search hyperparameters with Optuna: each trial a run, best.yaml and report.html.",
    )
    sub.add_argument("config", nargs="?", help="YAML config every trial starts from.")
    _add_overrides(sub, "Dotted overrides applied to the config first.")
    sub.add_argument("--space", help="SPACE.yaml: config keys and their ranges (docs/tune.md).")
    sub.add_argument("--trials", type=int, help="Trials to complete or prune in all.")
    sub.add_argument("--parallel", type=int, default=1, help="Trials at once (processes).")
    sub.add_argument(
        "--trial-nproc", type=int, default=1, help="Processes per trial (a DDP/FSDP job)."
    )
    sub.add_argument("--sampler", default="tpe", choices=["tpe", "gp", "cmaes", "random", "grid"])
    sub.add_argument("--pruner", default="median", choices=["median", "hyperband", "none"])
    sub.add_argument("--metric", default="val.accuracy", help="val.NAME to optimize.")
    sub.add_argument("--mode", default="max", choices=["max", "min"], help="Maximize or not.")
    sub.add_argument("--timeout", type=float, help="Minutes; no trial starts after.")
    sub.add_argument("--seed", type=int, default=0, help="The sampler's seed.")
    sub.add_argument("--out", help="Study directory (default: RUN.OUT_DIR/RUN.NAME-tune).")
    sub.add_argument("--resume", metavar="STUDY_DIR", help="Continue a study.")

    sub = command(
        "lr-find",
        handlers["lr_find"],
        "Learning-rate range test: a suggested lr and its loss curve.",
    )
    sub.add_argument("config", help="YAML config file.")
    _add_overrides(sub)
    sub.add_argument("--min-lr", type=float, default=1e-6, help="The first step's lr.")
    sub.add_argument("--max-lr", type=float, default=1.0, help="The last step's lr.")
    sub.add_argument("--steps", type=int, default=200, help="Steps from min to max lr.")
    sub.add_argument("--out", help="HTML page (default: RUN.OUT_DIR/RUN.NAME-lr-find.html).")


def _add_compress(sub: argparse.ArgumentParser) -> None:
    sub.add_argument("run_dir", help="Run directory to compress (only read).")
    _add_overrides(sub, "Dotted overrides for fine-tuning: optim.lr=1e-3.")
    sub.add_argument("--prune", type=float, default=0.0, help="Fraction of weights to remove.")
    sub.add_argument(
        "--structured",
        action="store_true",
        help="Remove whole neurons/filters/units (mlp, cnn, textcnn, resnet, gpt MLPs, rnn).",
    )
    sub.add_argument("--scope", default="global", help="Unstructured: `global` or per `layer`.")
    sub.add_argument(
        "--targets",
        default="linear,conv,embedding,recurrent",
        help="Unstructured: weight families pruned (comma-separated subset; default all).",
    )
    sub.add_argument("--schedule", default="oneshot", help="`oneshot` or `gradual` (cubic).")
    sub.add_argument("--steps", type=int, default=3, help="Gradual: prune + fine-tune rounds.")
    sub.add_argument(
        "--quantize", help="int8-dynamic, int8-weight, int4-weight or qat (linear layers)."
    )
    sub.add_argument(
        "--finetune-epochs", type=int, default=0, help="Epochs after each pruning step / of QAT."
    )
    _add_checkpoint_option(sub)
    sub.add_argument("--repeats", type=int, default=20, help="Timed batches per latency.")
    sub.add_argument("--out", help="New run directory (default: RUN_DIR-compressed).")
    sub.add_argument("--overwrite", action="store_true", help="Replace an existing --out.")


def _add_overrides(sub: argparse.ArgumentParser, help_text: str = "Dotted overrides.") -> None:
    sub.add_argument("overrides", nargs="*", default=[], metavar="KEY=VALUE", help=help_text)


def _add_checkpoint_option(sub: argparse.ArgumentParser) -> None:
    sub.add_argument(
        "--checkpoint",
        help="best (default), last, or a step: 80, step_80 or step_00000080. Left out on a "
        "quantized run (compress --quantize): its quantized model.",
    )


def _add_launch_flags(sub: argparse.ArgumentParser) -> None:
    from scaletrain.launch.torchrun import LAST_CALL_S  # no torch import: cheap

    group = sub.add_argument_group("distributed (through torchrun's elastic agent)")
    # strings, parsed in _launched: `--nproc 1:4` gets a clear refusal, not argparse's
    group.add_argument("--nproc", default="1", help="Worker processes on this node.")
    group.add_argument(
        "--nnodes",
        default="1",
        help="Nodes in the job: N, or MIN:MAX for an elastic job that goes on with MIN..MAX.",
    )
    group.add_argument(
        "--node-rank", type=int, default=0, help="This node: 0 hosts the rendezvous."
    )
    group.add_argument("--rdzv-endpoint", help="HOST:PORT of node 0 (c10d rendezvous).")
    group.add_argument(
        "--max-restarts", type=int, default=0, help="Restart failed workers N times."
    )
    group.add_argument(
        "--rdzv-timeout", type=int, default=600, help="Seconds to wait for every node to join."
    )
    group.add_argument(
        "--rdzv-last-call",
        type=int,
        default=LAST_CALL_S,
        help="--nnodes MIN:MAX: seconds to wait for more nodes once MIN joined.",
    )
    group.add_argument("--local-addr", help="This node's address as the others reach it.")
