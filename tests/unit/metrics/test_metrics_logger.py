"""MetricsLogger: JSONL records, TensorBoard events read back, crash-truncated files."""

from __future__ import annotations

import json

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from scaletrain.errors import CheckpointError, UserError
from scaletrain.metrics import MetricsLogger, build_metrics, read_metrics

TRAIN = {
    "split": "train", "step": 10, "epoch": 0, "time_s": 1.5, "loss": 2.25, "lr": 1e-3,
    "grad_norm": 0.75, "samples_per_s": 1200.0, "mfu": 0.0, "rss_mb": 512.0,
}  # fmt: skip
EVENT = {"event": "checkpoint", "step": 20, "time_s": 3.0, "detail": "saved step-20"}


def _eval_record(step: int) -> dict:
    metric_set = build_metrics("classification", num_classes=3)
    metric_set.update(torch.eye(3).repeat(3, 1), torch.tensor([0, 1, 2, 0, 1, 1, 2, 2, 2]))
    return {"split": "val", "step": step, "epoch": 0, "time_s": 2.0, "loss": 0.5,
            "metrics": metric_set.compute()}  # fmt: skip


def _events(run_dir) -> EventAccumulator:
    accumulator = EventAccumulator(str(run_dir / "tb"), size_guidance={"histograms": 0})
    accumulator.Reload()
    return accumulator


def test_records_become_json_lines_and_tensorboard_scalars(tmp_path):
    evaluation = _eval_record(20)
    with MetricsLogger(tmp_path, tensorboard=True) as logger:
        logger.log(TRAIN)
        logger.log({**TRAIN, "step": 15, "loss": 1.75})
        logger.log(evaluation)
        logger.log(EVENT)
    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line) for line in lines] == [
        TRAIN,
        {**TRAIN, "step": 15, "loss": 1.75},
        evaluation,
        EVENT,
    ]
    assert read_metrics(tmp_path) == [json.loads(line) for line in lines]

    events = _events(tmp_path)
    scalars = events.Tags()["scalars"]
    losses = events.Scalars("train/loss")
    assert [(point.step, point.value) for point in losses] == [(10, 2.25), (15, 1.75)]
    assert events.Scalars("train/lr")[0].value == pytest.approx(1e-3)
    accuracy = events.Scalars("val/accuracy")  # the nested metrics dict adds no level
    assert accuracy[0].step == 20
    assert accuracy[0].value == pytest.approx(evaluation["metrics"]["accuracy"])
    assert events.Scalars("val/num_samples")[0].value == 9
    assert not any("confusion_matrix" in tag or "per_class" in tag for tag in scalars)
    assert "train/step" not in scalars and "val/loss" in scalars
    assert any(tag.startswith("events/checkpoint") for tag in events.Tags()["tensors"])


def test_each_line_reaches_disk_before_close(tmp_path):
    logger = MetricsLogger(tmp_path, tensorboard=False)
    logger.log(TRAIN)
    assert read_metrics(tmp_path) == [TRAIN]  # a crash now would keep the line
    logger.close()
    assert not (tmp_path / "tb").exists()


def test_hparams_and_histograms_reach_tensorboard(tmp_path):
    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.ReLU(), torch.nn.Linear(3, 2))
    model(torch.randn(5, 4)).sum().backward()
    model[2].bias.grad = None  # a parameter without a gradient gets a weight histogram only
    with MetricsLogger(tmp_path, tensorboard=True) as logger:
        logger.log_histograms(model, step=7)
        hparams = {"optim": {"lr": 0.01, "name": "adamw", "betas": [0.9, 0.99]}, "run": {"seed": 3}}
        logger.log_hparams(hparams, {"val": {"loss": 0.25, "metrics": {"accuracy": 0.875}}})
    events = _events(tmp_path)
    histograms = events.Tags()["histograms"]
    assert {"weights/0.weight", "weights/2.bias", "grads/0.weight"} <= set(histograms)
    assert "grads/2.bias" not in histograms
    weight_histogram = events.Histograms("weights/0.weight")[0]
    assert weight_histogram.step == 7 and weight_histogram.histogram_value.num == 12
    assert events.Scalars("hparams/val/accuracy")[0].value == pytest.approx(0.875)
    plugin_data = events.PluginTagToContent("hparams")
    session_start = next(content for tag, content in plugin_data.items() if "session_start" in tag)
    assert b"optim.lr" in session_start and b"adamw" in session_start
    assert b"optim.betas" not in session_start  # lists are not scalar hparams


def test_truncated_last_line_is_dropped_and_repaired_on_resume(tmp_path):
    with MetricsLogger(tmp_path, tensorboard=False) as logger:
        logger.log(TRAIN)
        logger.log(EVENT)
    path = tmp_path / "metrics.jsonl"
    with path.open("a") as file:
        file.write('{"split": "train", "step": 30, "lo')  # the process died mid-write
    assert read_metrics(tmp_path) == [TRAIN, EVENT]
    with MetricsLogger(tmp_path, tensorboard=False) as logger:  # a resumed run appends
        logger.log({**TRAIN, "step": 30})
    assert read_metrics(tmp_path) == [TRAIN, EVENT, {**TRAIN, "step": 30}]
    assert len(path.read_text().splitlines()) == 3


def test_complete_last_line_without_newline_is_kept_on_resume(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text(json.dumps(TRAIN) + "\n" + json.dumps(EVENT))
    with MetricsLogger(tmp_path, tensorboard=False) as logger:
        logger.log({**TRAIN, "step": 30})
    assert read_metrics(tmp_path) == [TRAIN, EVENT, {**TRAIN, "step": 30}]


def test_corrupt_middle_line_and_missing_file_name_the_file(tmp_path):
    with pytest.raises(CheckpointError, match="metrics.jsonl: not found"):
        read_metrics(tmp_path)
    (tmp_path / "metrics.jsonl").write_text(json.dumps(TRAIN) + "\n{oops\n" + json.dumps(EVENT))
    with pytest.raises(UserError, match=r"metrics.jsonl:2: not a JSON record"):
        read_metrics(tmp_path)


def test_nan_loss_and_numpy_scalars_round_trip(tmp_path):
    import numpy as np

    with MetricsLogger(tmp_path, tensorboard=False) as logger:
        logger.log({"split": "train", "step": 1, "loss": float("nan"), "lr": np.float32(0.5)})
    (record,) = read_metrics(tmp_path)
    assert record["loss"] != record["loss"] and record["lr"] == 0.5
