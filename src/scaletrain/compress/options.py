"""What `scaletrain compress` is asked to do, checked before anything is read or written."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from scaletrain.compress.prune import TARGETS, parse_targets
from scaletrain.compress.quantize import MODES
from scaletrain.errors import UserError

SCOPES = ("global", "layer")
SCHEDULES = ("oneshot", "gradual")


@dataclass(frozen=True)
class CompressOptions:
    """Args of `scaletrain.compress` (and the CLI flags of the same names)."""

    prune: float = 0.0  # fraction of weights (unstructured) or neurons/filters (structured)
    structured: bool = False  # remove whole neurons/filters: a smaller model
    scope: str = "global"  # unstructured: rank weights across all layers, or per layer
    targets: str = ",".join(TARGETS)  # unstructured: the weight families pruned
    schedule: str = "oneshot"  # gradual: `steps` prune + fine-tune rounds (cubic schedule)
    steps: int = 3
    quantize: str | None = None  # one of MODES
    finetune_epochs: int = 0  # per pruning step; QAT's fake-quantized epochs
    checkpoint: str = "best"  # the source run's weights
    latency_repeats: int = 20  # timed batches per latency (median)
    overrides: list[str] = field(default_factory=list)  # dotted KEY=VALUE for fine-tuning
    overwrite: bool = False  # replace an existing output directory


def check_options(options: CompressOptions) -> None:
    """One line naming the flag for each impossible request."""
    if not 0 <= options.prune < 1:
        raise UserError(f"--prune: expected a fraction in [0, 1), got {options.prune}")
    if options.quantize is not None and options.quantize not in MODES:
        raise UserError(f"--quantize: expected one of {', '.join(MODES)}, got {options.quantize!r}")
    if options.prune == 0 and options.quantize is None:
        raise UserError("nothing to do: pass --prune FRACTION and/or --quantize MODE")
    if options.scope not in SCOPES:
        raise UserError(f"--scope: expected global or layer, got {options.scope!r}")
    parse_targets(options.targets)
    if options.schedule not in SCHEDULES:
        raise UserError(f"--schedule: expected oneshot or gradual, got {options.schedule!r}")
    if options.finetune_epochs < 0:
        raise UserError(f"--finetune-epochs: expected >= 0, got {options.finetune_epochs}")
    if options.latency_repeats < 1:
        raise UserError(f"--repeats: expected >= 1, got {options.latency_repeats}")
    _check_combinations(options)


def _check_combinations(options: CompressOptions) -> None:
    if options.structured and options.prune == 0:
        raise UserError("--structured: needs --prune FRACTION (the share of neurons to remove)")
    if options.structured and parse_targets(options.targets) != TARGETS:
        raise UserError("--targets: applies to unstructured pruning; drop it or --structured")
    if options.schedule == "gradual":
        if options.prune == 0 or options.finetune_epochs == 0:
            raise UserError(
                "--schedule gradual: needs --prune FRACTION and --finetune-epochs N "
                "(fine-tuning between the pruning steps)"
            )
        if options.steps < 2:
            raise UserError(f"--steps: gradual pruning needs >= 2 steps, got {options.steps}")
    if options.quantize == "qat" and options.finetune_epochs == 0:
        raise UserError(
            "--quantize qat: needs --finetune-epochs N (epochs of fake-quantized training)"
        )


def default_out(run_dir: Path) -> Path:
    """`runs/x` -> `runs/x-compressed` beside the source run."""
    return run_dir.parent / f"{run_dir.name}-compressed"
