"""TensorBoard: scalars for every metrics.jsonl line, histograms on request, hparams at the end."""

import json

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

import scaletrain


def test_tensorboard_mirrors_metrics_jsonl(tmp_path):
    cfg = {
        "run": {"name": "tb", "out_dir": str(tmp_path)},
        "data": {"source": "builtin", "name": "iris"},
        "model": {"name": "mlp", "hidden": [8]},
        "train": {"max_steps": 12, "batch_size": 16, "precision": "32", "eval_every_steps": 6},
        "log": {"every_steps": 3, "histograms_every": 6, "progress": False, "report": False},
    }
    run = scaletrain.train(cfg)
    events = EventAccumulator(
        str(run.run_dir / "tb"), size_guidance={"scalars": 0, "histograms": 0}
    )
    events.Reload()
    scalars = set(events.Tags()["scalars"])
    records = [
        json.loads(line) for line in (run.run_dir / "metrics.jsonl").read_text().splitlines()
    ]
    train_steps = [r["step"] for r in records if r.get("split") == "train"]
    assert [e.step for e in events.Scalars("train/loss")] == train_steps
    logged = [r["loss"] for r in records if r.get("split") == "train"]
    tb_values = [e.value for e in events.Scalars("train/loss")]
    assert all(
        abs(a - b) <= 1e-6 * max(1.0, abs(b)) for a, b in zip(tb_values, logged, strict=True)
    )
    assert {"val/loss", "val/accuracy", "train/lr", "train/grad_norm"} <= scalars
    histograms = events.Tags()["histograms"]
    assert any(tag.startswith("weights/") for tag in histograms)
    assert any(tag.startswith("grads/") for tag in histograms)
    assert any(tag.startswith("hparams/test") for tag in scalars)
