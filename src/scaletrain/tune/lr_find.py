"""`scaletrain lr-find`: the learning-rate range test (Smith 2015, fastai's `lr_find`):
train from the config's fresh model while the lr grows exponentially, smooth the loss, and
suggest the lr where it falls fastest."""

from __future__ import annotations

import base64
import html
import io
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from scaletrain.config import Config, load_config
from scaletrain.errors import UserError
from scaletrain.fileio import atomic_write_text

SMOOTHING = 0.98  # exponential moving average of the loss, bias-corrected (fastai's)
DIVERGED = 4.0  # stop once the smoothed loss exceeds 4x its minimum
SKIP_START = 0.1  # the first tenth of the curve is warm-up noise, never the suggestion


@dataclass(frozen=True)
class LrFindResult:
    suggestion: float
    lrs: list[float]
    losses: list[float]
    smoothed: list[float]
    diverged: bool  # stopped before max_lr because the loss blew up
    page: Path | None


def lr_find(
    config: str | Path | dict | Config,
    *,
    overrides: list[str] = (),
    min_lr: float = 1e-6,
    max_lr: float = 1.0,
    num_steps: int = 200,
    out: str | Path | None = None,
) -> LrFindResult:
    """The range test on the config's model, data, optimizer and loss (fp32, no schedule).

    Args:
        config: the run's configuration (YAML path, dict or Config).
        overrides: dotted ``KEY=VALUE`` strings applied on top.
        min_lr, max_lr: the lr of the first and the last step.
        num_steps: optimizer steps from min_lr to max_lr (a few hundred).
        out: write the loss curve as a small HTML page here.
    """
    if not 0 < min_lr < max_lr or num_steps < 20:
        raise UserError(
            f"lr-find: expected 0 < --min-lr < --max-lr and --steps >= 20, got "
            f"{min_lr}, {max_lr}, {num_steps}"
        )
    cfg = load_config(config, list(overrides))
    from scaletrain.train.process_settings import apply_process_settings, restored_process_settings

    lrs = np.geomspace(min_lr, max_lr, num_steps)
    with restored_process_settings():  # train.num_threads: a shared core costs 10x here
        apply_process_settings(cfg.train)
        losses = _range_test(cfg, lrs)
    smoothed = _smooth(losses)
    suggestion = suggest(lrs[: len(smoothed)], smoothed)
    page = Path(out) if out else None
    result = LrFindResult(
        suggestion=suggestion,
        lrs=[float(lr) for lr in lrs[: len(losses)]],
        losses=losses,
        smoothed=smoothed,
        diverged=len(losses) < num_steps,
        page=page,
    )
    if page is not None:
        write_page(result, page, name=cfg.run.name)
    return result


def write_page(result: LrFindResult, path: str | Path, *, name: str) -> None:
    """The loss curve and the suggestion as a small self-contained HTML page."""
    atomic_write_text(Path(path), _page(result, name))


def _range_test(cfg: Config, lrs: np.ndarray) -> list[float]:
    """Raw training losses, one per lr, until the end or divergence."""
    from scaletrain.data import build_data
    from scaletrain.optim import build_loss, build_optimizer
    from scaletrain.train.rng import seed_everything
    from scaletrain.trained.weights import build_run_model

    seed_everything(cfg.run.seed)
    bundle = build_data(cfg.data, seed=cfg.run.seed)
    split, spec = bundle.train, bundle.spec
    if split.inputs is None:
        raise UserError("lr-find: needs an in-memory train split (data.source builtin, csv, npy …)")
    model = build_run_model(cfg, spec)
    optimizer = build_optimizer(cfg.optim, model)
    loss_fn = build_loss(
        cfg.loss, task=spec.task, num_outputs=spec.num_outputs, class_counts=spec.class_counts
    )
    model.train()
    losses: list[float] = []
    best, average = math.inf, 0.0
    for step, (inputs, targets) in enumerate(_batches(split, cfg.train.batch_size, len(lrs))):
        for group in optimizer.param_groups:
            group["lr"] = float(lrs[step])
        optimizer.zero_grad(set_to_none=True)
        loss = loss_fn(model(inputs), targets)
        loss.backward()
        optimizer.step()
        value = loss.item()  # a host sync per step: a few hundred steps, once
        losses.append(value)
        average = SMOOTHING * average + (1 - SMOOTHING) * value
        smooth = average / (1 - SMOOTHING ** (step + 1))
        if not math.isfinite(value) or smooth > DIVERGED * best:
            break
        best = min(best, smooth)
    return losses


def _batches(split, batch_size: int, num_steps: int):
    """Shuffled training batches, epoch after epoch (the split's own transform applied)."""
    generator = torch.Generator().manual_seed(0)
    count = len(split.inputs)
    batch_size = min(batch_size, count)
    produced = 0
    while produced < num_steps:
        order = torch.randperm(count, generator=generator)
        for start in range(0, count - batch_size + 1, batch_size):
            index = order[start : start + batch_size]
            inputs = split.inputs[index]
            if split.transform is not None:
                inputs = split.transform(inputs)
            yield inputs, split.targets[index]
            produced += 1
            if produced == num_steps:
                return


def _smooth(losses: list[float]) -> list[float]:
    average, out = 0.0, []
    for step, value in enumerate(losses):
        if not math.isfinite(value):
            break
        average = SMOOTHING * average + (1 - SMOOTHING) * value
        out.append(average / (1 - SMOOTHING ** (step + 1)))
    return out


def suggest(lrs, smoothed: list[float]) -> float:
    """The lr of the steepest descent of the smoothed loss over log(lr), before its minimum."""
    values = np.asarray(smoothed, dtype=np.float64)
    if len(values) < 10:
        raise UserError(f"lr-find: the loss diverged after {len(values)} steps; lower --min-lr")
    end = int(np.argmin(values)) + 1
    start = min(int(len(values) * SKIP_START), max(end - 2, 0))
    if end - start < 3:
        return float(lrs[end - 1])
    logs = np.log(np.asarray(lrs[start:end], dtype=np.float64))
    slope = np.gradient(values[start:end], logs)
    return float(lrs[start + int(np.argmin(slope))])


def _page(result: LrFindResult, name: str) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(7, 4))
    axes.plot(result.lrs, result.losses, alpha=0.3, label="loss")
    axes.plot(result.lrs[: len(result.smoothed)], result.smoothed, label="smoothed")
    axes.axvline(result.suggestion, color="red", linestyle="--", label="suggestion")
    axes.set_xscale("log")
    axes.set_xlabel("learning rate")
    axes.set_ylabel("training loss")
    top = max(result.smoothed[0] * 1.5, min(result.smoothed) * DIVERGED)
    axes.set_ylim(min(result.smoothed) * 0.9, top)
    axes.legend()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=90, bbox_inches="tight")
    plt.close(figure)
    image = base64.b64encode(buffer.getvalue()).decode("ascii")
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>lr-find: "
        f"{html.escape(name)}</title></head><body style='font-family:sans-serif'>"
        f"<h1>Learning-rate range test: {html.escape(name)}</h1>"
        f"<p>suggested lr: <b>{result.suggestion:.3g}</b> (steepest descent of the smoothed "
        f"loss; {len(result.losses)} steps from {result.lrs[0]:.1g} to {result.lrs[-1]:.3g}"
        f"{', stopped: the loss diverged' if result.diverged else ''})</p>"
        f"<img alt='loss vs lr' src='data:image/png;base64,{image}'></body></html>\n"
    )
