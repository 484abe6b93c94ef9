"""Distillation end to end on digits: a small teacher trained once for the module, students
distilled from it live or from precomputed logits, resume, and each bad teacher refused."""

import json
import os
import shutil

import numpy as np
import pytest
import torch

import scaletrain
from scaletrain.api import resume
from scaletrain.config import DataConfig
from scaletrain.data import build_data
from scaletrain.errors import ConfigError

LOG = {"every_steps": 2, "progress": False, "tensorboard": False, "report": False}
DATA = {"source": "builtin", "name": "digits", "layout": "flat", "split_seed": 0}


def _config(out, name, **distill) -> dict:
    config = {
        "run": {"name": name, "seed": 1, "out_dir": str(out)},
        "data": DATA,
        "model": {"name": "mlp", "hidden": [16]},
        "optim": {"name": "adamw", "lr": 0.01, "schedule": {"name": "cosine"}},
        "train": {"max_steps": 12, "batch_size": 64, "micro_batch_size": 32, "precision": "32"},
        "checkpoint": {"every_steps": 4, "every_epochs": 0, "save_best": False},
        "log": LOG,
    }
    if distill:
        config["distill"] = {"temperature": 3.0, "alpha": 0.7, **distill}
    return config


@pytest.fixture(scope="module")
def teacher(tmp_path_factory):
    out = tmp_path_factory.mktemp("teacher")
    config = _config(out, "teacher")
    config["model"] = {"name": "mlp", "hidden": [64]}
    config["train"] = {"max_steps": 30, "batch_size": 64, "precision": "32"}
    config["checkpoint"] = {"every_epochs": 0, "save_best": False}
    return scaletrain.train(config)


@pytest.fixture(scope="module")
def live(teacher, tmp_path_factory):
    """A student distilled from the live teacher, checkpointed every 4 of its 12 steps."""
    out = tmp_path_factory.mktemp("live")
    return scaletrain.train(_config(out, "live", teacher=str(teacher.run_dir)))


@pytest.fixture(scope="module")
def precomputed(teacher, tmp_path_factory):
    """The same student from precomputed logits (in a folder of their own)."""
    out = tmp_path_factory.mktemp("precomputed")
    distill = {"precompute": True, "logits_dir": str(out / "cache")}
    return scaletrain.train(_config(out, "pre", teacher=str(teacher.run_dir), **distill))


def _train_losses(run_dir) -> dict:
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return {r["step"]: r["loss"] for r in map(json.loads, lines) if r.get("split") == "train"}


def _weights(run) -> dict:
    return {key: value.clone() for key, value in run.model.state_dict().items()}


def test_precomputed_logits_are_the_teachers_and_give_the_live_losses(teacher, live, precomputed):
    pre, cache = precomputed, precomputed.run_dir.parent / "cache"
    # the file holds the teacher's logits of every train sample, in train-split order
    logits = np.load(cache / "teacher_logits.npy", mmap_mode="r")
    train = build_data(DataConfig(**DATA), seed=1).train
    with torch.no_grad():
        expected = teacher.model(train.inputs).numpy()
    assert logits.dtype == np.float32 and logits.shape == (len(train), 10)
    np.testing.assert_allclose(logits, expected, rtol=1e-5, atol=1e-6)
    # same losses as the live teacher (only the batch shapes of the teacher's matmuls differ)
    live_losses, pre_losses = _train_losses(live.run_dir), _train_losses(pre.run_dir)
    assert list(pre_losses) == list(live_losses) and len(live_losses) >= 6
    for step, loss in live_losses.items():
        assert pre_losses[step] == pytest.approx(loss, rel=1e-5), step
    # the teacher is no part of the student: its checkpoint reloads into the student alone
    reloaded = scaletrain.load_run(pre.run_dir, checkpoint="last").model
    assert set(reloaded.state_dict()) == set(live.model.state_dict())


def test_float16_logits_halve_the_file_and_keep_the_losses(teacher, precomputed, tmp_path):
    distill = {"precompute": True, "logits_dir": str(tmp_path / "half"), "logits_dtype": "float16"}
    half = scaletrain.train(_config(tmp_path, "half", teacher=str(teacher.run_dir), **distill))
    full_file = precomputed.run_dir.parent / "cache" / "teacher_logits.npy"
    half_file = tmp_path / "half" / "teacher_logits.npy"
    rows = np.load(half_file, mmap_mode="r")
    assert rows.dtype == np.float16
    np.testing.assert_allclose(rows, np.load(full_file), rtol=1e-3, atol=1e-3)
    assert half_file.stat().st_size < 0.6 * full_file.stat().st_size
    full_losses, half_losses = _train_losses(precomputed.run_dir), _train_losses(half.run_dir)
    assert list(half_losses) == list(full_losses)
    for step, loss in full_losses.items():
        assert half_losses[step] == pytest.approx(loss, rel=1e-3), step


@pytest.mark.parametrize("damage", ["truncate", "not_numpy"])
def test_a_damaged_logits_file_is_written_again(teacher, precomputed, tmp_path, damage):
    cache = tmp_path / "cache"
    shutil.copytree(precomputed.run_dir.parent / "cache", cache)
    path = cache / "teacher_logits.npy"
    expected = np.load(path).copy()
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2] if damage == "truncate" else b"{'rows': 1}\n")
    distill = {"precompute": True, "logits_dir": str(cache)}
    run = scaletrain.train(_config(tmp_path, "again", teacher=str(teacher.run_dir), **distill))
    assert run.status == "finished"
    np.testing.assert_array_equal(np.load(path), expected)


@pytest.mark.parametrize("precompute", [False, True])
def test_interrupt_then_resume_matches_uninterrupted(
    teacher, live, precomputed, tmp_path, interrupt_at, precompute
):
    reference = precomputed if precompute else live
    config = _config(tmp_path, "cut", teacher=str(teacher.run_dir), precompute=precompute)
    if precompute:  # the reference's logits, reused as they are (not written again)
        cache = precomputed.run_dir.parent / "cache"
        config["distill"]["logits_dir"] = str(cache)
        written = os.stat(cache / "teacher_logits.npy").st_mtime_ns
    cut = scaletrain.train(config, callbacks=[interrupt_at(6)])
    assert cut.status == "interrupted"
    shutil.rmtree(cut.run_dir / "checkpoints" / "step_00000007")  # replay from step 4
    resumed = resume(cut.run_dir)
    assert resumed.status == "finished"
    reference_weights = _weights(reference)
    for key, value in _weights(resumed).items():
        assert torch.equal(value, reference_weights[key]), key
    assert _train_losses(cut.run_dir) == _train_losses(reference.run_dir)
    if precompute:
        assert os.stat(cache / "teacher_logits.npy").st_mtime_ns == written


def test_distillation_changes_training_and_the_task_loss_alone_is_alpha_zero(teacher, tmp_path):
    plain = scaletrain.train(_config(tmp_path, "plain"))
    alpha0 = scaletrain.train(_config(tmp_path, "alpha0", teacher=str(teacher.run_dir), alpha=0))
    config = _config(tmp_path, "distilled", teacher=str(teacher.run_dir))
    config["train"]["precision"] = "bf16-mixed"  # teacher and student under the same autocast
    distilled = scaletrain.train(config)
    assert distilled.status == "finished" and distilled.metrics["test"]["accuracy"] > 0.5
    plain_weights = _weights(plain)
    for key, value in _weights(alpha0).items():  # alpha 0: the task loss, bit for bit
        assert torch.equal(value, plain_weights[key]), key
    first = next(iter(plain_weights))
    assert not torch.equal(_weights(distilled)[first], plain_weights[first])


def _unfinished(teacher, tmp_path):
    copy = shutil.copytree(teacher.run_dir, tmp_path / "unfinished")
    summary = json.loads((copy / "summary.json").read_text())
    (copy / "summary.json").write_text(json.dumps({**summary, "status": "interrupted"}))
    return copy


def _other_run(tmp_path, name, data):
    config = _config(tmp_path / "others", name)
    config["data"] = data
    config["train"] = {"max_steps": 1, "batch_size": 32, "precision": "32"}
    return scaletrain.train(config).run_dir


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda teacher, tmp: tmp / "nowhere", "run directory not found"),
        (_unfinished, r"is not a finished run \(status interrupted\)"),
        (
            lambda teacher, tmp: _other_run(tmp, "split", {**DATA, "split_seed": 5}),
            r"its preprocessing \(preprocess\.json\) differs",
        ),
        (
            lambda teacher, tmp: _other_run(tmp, "iris", {"source": "builtin", "name": "iris"}),
            r"its data has input_shape \(4,\), this run's \(64,\)",
        ),
    ],
    ids=["missing", "unfinished", "other-split", "other-data"],
)
def test_bad_teacher_is_one_line_before_the_run_directory(teacher, tmp_path, make, message):
    teacher_dir = make(teacher, tmp_path)
    with pytest.raises(ConfigError, match=rf"^distill\.teacher: {teacher_dir}: {message}") as bad:
        scaletrain.train(_config(tmp_path, "student", teacher=str(teacher_dir)))
    assert "\n" not in str(bad.value)
    assert not (tmp_path / "student").exists()


def test_regression_teacher_is_refused(tmp_path):
    data = {"source": "builtin", "name": "diabetes", "layout": "flat"}
    teacher_dir = _other_run(tmp_path, "diabetes", data)
    config = {**_config(tmp_path, "student", teacher=str(teacher_dir)), "data": data}
    with pytest.raises(ConfigError, match=r"^distill\.teacher: .*: is a regression run"):
        scaletrain.train(config)
    assert not (tmp_path / "student").exists()
