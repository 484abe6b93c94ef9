"""`gpt` through scaletrain vs a hand-written nanoGPT-style loop: tokens/s and MFU.

Both sides train the same model code (`models/gpt.py`, built from the same `GPTConfig`) on
the same data (configs/gpt-stdlib.yaml's standard-library windows, in scaletrain's epoch
order), with fused AdamW and bf16 autocast; each side runs in a fresh process, alternating
A B B A ..., and reports its median step time after warm-up. The ratio is scaletrain's time per
token over the hand-written loop's (goal <= 1.02). Run:
`python -m bench.lm_loop [--repeats 3 --steps 40 --threads 1]`.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F

from bench.parity import StepTimer
from bench.results import save_results

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "configs/gpt-stdlib.yaml"
# Far smaller than the config's ~10M GPT (seconds a step on 2 cores shared with others), so
# each side gets its steps in ~15 s; byte tokens: no BPE fit in each of the six processes.
MODEL = ["model.n_layer=2", "model.d_model=128", "model.n_head=4", "data.text.vectorizer=byte"]
BATCH, CONTEXT, LR = 16, 64, 1e-3


def _overrides(steps: int, out_dir: str, threads: int) -> list[str]:
    """scaletrain doing the raw loop's work: no clipping, constant lr, no decay, no
    validation or checkpoints, no per-step finite check (the raw loop checks nothing)."""
    return [
        *MODEL,
        f"data.context_length={CONTEXT}",
        "data.val_fraction=0",
        "data.test_fraction=0",
        f"run.out_dir={out_dir}",
        f"train.max_steps={steps}",
        "train.max_epochs=null",
        f"train.batch_size={BATCH}",
        "train.precision=bf16-mixed",
        "train.device=cpu",
        f"train.num_threads={threads}",
        "train.eval_every_steps=null",
        "train.guard.nonfinite=off",
        "train.monitor.metric=val.loss",
        f"optim.lr={LR}",
        "optim.weight_decay=0",
        "optim.implementation=fused",
        "optim.clip.mode=none",
        "optim.schedule.name=constant",
        "checkpoint.every_epochs=0",
        "checkpoint.save_best=false",
        "log.every_steps=50",
        "log.progress=false",
        "log.tensorboard=false",
        "log.report=false",
    ]


def _raw_side(cfg, steps: int) -> dict:
    """The nanoGPT loop: x, y = batch; autocast forward; cross-entropy; backward; step."""
    from scaletrain.data import build_data, epoch_order
    from scaletrain.metrics.mfu import peak_flops
    from scaletrain.models import build_model

    bundle = build_data(cfg.data, seed=cfg.run.seed)
    inputs, targets = bundle.train.inputs, bundle.train.targets
    torch.manual_seed(0)
    model = build_model(
        cfg.model,
        input_shape=bundle.spec.input_shape,
        num_outputs=bundle.spec.num_outputs,
        vocab_size=bundle.spec.vocab_size,
        task="language_model",
    )
    optimizer = torch.optim.AdamW(model.parameters(), lr=LR, weight_decay=0.0, fused=True)
    order = epoch_order(len(inputs), seed=cfg.run.seed, epoch=0, shuffle=True)
    seconds = []
    for step in range(steps):
        started = time.perf_counter()
        index = order[(step * BATCH) % len(order) :][:BATCH]
        x, y = inputs[index], targets[index]
        with torch.autocast("cpu", dtype=torch.bfloat16):
            logits = model(x)
            loss = F.cross_entropy(logits.flatten(0, 1).float(), y.flatten())
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        seconds.append(time.perf_counter() - started)
    flops = model.train_flops_per_sample(tuple(bundle.spec.input_shape))
    peak = peak_flops(torch.device("cpu"), torch.bfloat16)
    median = statistics.median(seconds[len(seconds) // 4 :])
    return {"seconds": seconds, "mfu": flops * BATCH / median / peak if peak else None}


def _scaletrain_side(cfg) -> dict:
    import scaletrain

    timer = StepTimer("cpu")
    run = scaletrain.train(cfg, callbacks=[timer])
    summary = json.loads((run.run_dir / "summary.json").read_text())
    # on_step_end deltas start at step 2: pad so warm-up trims the same steps on both sides
    return {"seconds": [float("nan"), *timer.seconds], "mfu": summary["mfu"]}


def _run_side(args) -> None:
    from scaletrain.config import load_config

    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as out:
        with warnings.catch_warnings():  # the schedule switch drops cosine's options: a note
            warnings.simplefilter("ignore")
            cfg = load_config(CONFIG, _overrides(args.steps, out, args.threads))
        result = _raw_side(cfg, args.steps) if args.side == "raw" else _scaletrain_side(cfg)
    print(json.dumps(result))


def _one(side: str, args) -> dict:
    command = [sys.executable, "-m", "bench.lm_loop", "--side", side]
    command += ["--steps", str(args.steps), "--threads", str(args.threads)]
    output = subprocess.run(command, capture_output=True, text=True, cwd=ROOT)
    if output.returncode:
        raise RuntimeError(f"{side} failed:\n{output.stderr[-3000:]}")
    return json.loads(output.stdout.strip().splitlines()[-1])


def run_pairs(args) -> dict:
    """A B B A over fresh processes; medians of the pooled post-warm-up step times."""
    warmup = max(3, args.steps // 4)
    times: dict[str, list[float]] = {"raw": [], "scaletrain": []}
    mfus: dict[str, list[float]] = {"raw": [], "scaletrain": []}
    per_repeat = []
    loads = [os.getloadavg()[0]]
    for repeat in range(args.repeats):
        medians = {}
        # A B, then B A: a load that drifts during a repeat favours neither side
        for side in ("raw", "scaletrain")[:: 1 if repeat % 2 == 0 else -1]:
            result = _one(side, args)
            times[side] += result["seconds"][warmup:]
            medians[side] = statistics.median(result["seconds"][warmup:])
            if result["mfu"] is not None:
                mfus[side].append(result["mfu"])
        per_repeat.append(medians["scaletrain"] / medians["raw"])
        loads.append(os.getloadavg()[0])
    raw, ours = (statistics.median(times[side]) for side in ("raw", "scaletrain"))
    tokens = BATCH * CONTEXT
    return {
        "model": " ".join(MODEL) + f", context {CONTEXT}, batch {BATCH}",
        "precision": "bf16-mixed",
        "threads": args.threads,
        "steps_per_run": args.steps,
        "warmup_steps": warmup,
        "repeats": args.repeats,
        "raw_step_ms": raw * 1e3,
        "scaletrain_step_ms": ours * 1e3,
        "raw_tokens_per_s": tokens / raw,
        "scaletrain_tokens_per_s": tokens / ours,
        "ratio": ours / raw,
        "ratio_per_repeat": per_repeat,
        "raw_mfu": statistics.median(mfus["raw"]) if mfus["raw"] else None,
        "scaletrain_mfu": statistics.median(mfus["scaletrain"]) if mfus["scaletrain"] else None,
        "load_average_1min": loads,
    }


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument(
        "--threads", type=int, default=1
    )  # 2 threads on 2 shared cores: OMP spin-waits
    parser.add_argument("--side", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.side:
        _run_side(args)
        return {}
    row = run_pairs(args)
    print(
        f"raw {row['raw_step_ms']:.1f} ms/step ({row['raw_tokens_per_s']:,.0f} tokens/s)  "
        f"scaletrain {row['scaletrain_step_ms']:.1f} ms/step "
        f"({row['scaletrain_tokens_per_s']:,.0f} tokens/s)  ratio {row['ratio']:.3f}  "
        f"MFU raw {row['raw_mfu']}  scaletrain {row['scaletrain_mfu']}"
    )
    save_results("lm_loop", [row])
    return row


if __name__ == "__main__":
    main()
