"""local_sgd and diloco on 2 gloo processes: with H = 1 they are DDP; a resume between two
syncs continues bit for bit; another world size is refused between syncs; bf16-mixed trains;
the bytes they report are DDP's over H."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
import yaml
from distributed_helpers import load_weights, torchrun, train_variants
from safetensors import safe_open

pytestmark = pytest.mark.slow

MAX_STEPS, SAVED_AT, PERIOD = 12, 6, 4  # the step-6 checkpoint lies 2 updates into a period
CONFIG = {
    "run": {"seed": 3},
    "data": {"source": "builtin", "name": "digits"},
    "model": {"name": "mlp", "hidden": [48, 32]},
    "optim": {"name": "sgd", "lr": 0.05},
    # 48 divides by 1, 2 and 3 ranks: the refusal on another world size is the only one
    "train": {"max_steps": MAX_STEPS, "batch_size": 48, "precision": "32", "device": "cpu"},
    "checkpoint": {"every_steps": SAVED_AT, "every_epochs": 0, "save_best": False},
    "log": {"progress": False, "tensorboard": False, "report": False, "every_steps": 1},
}
DILOCO_H1 = (
    "parallel.strategy=diloco,parallel.local.steps=1,parallel.local.outer_lr=1.0,"
    "parallel.local.outer_momentum=0,parallel.local.outer_nesterov=false"
)
VARIANTS = {
    "ddp": "parallel.strategy=ddp",
    "local_h1": "parallel.strategy=local_sgd,parallel.local.steps=1",
    "diloco_h1": DILOCO_H1,
    "local_h4": f"parallel.strategy=local_sgd,parallel.local.steps={PERIOD}",
    # adamw inside: the resume must bring back each rank's own moments, and the outer momentum
    "diloco_h4": f"parallel.strategy=diloco,parallel.local.steps={PERIOD},optim.name=adamw,"
    "optim.lr=0.003",
    "diloco_bf16": f"parallel.strategy=diloco,parallel.local.steps={PERIOD},"
    "train.precision=bf16-mixed",
}


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("local_sgd")
    specs = [f"{name}={overrides}" for name, overrides in VARIANTS.items()]
    train_variants(out, CONFIG, specs, timeout=300)
    return out


def _records(run_dir: Path, split: str = "train") -> dict[int, dict]:
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return {r["step"]: r for r in map(json.loads, lines) if r.get("split") == split}


def _losses(run_dir: Path) -> dict[int, float]:
    return {step: record["loss"] for step, record in _records(run_dir).items()}


@pytest.mark.parametrize("name", ["local_h1", "diloco_h1"])
def test_one_step_periods_equal_ddp(runs, name):
    reference, candidate = load_weights(runs / "ddp"), load_weights(runs / name)
    assert reference.keys() == candidate.keys()
    for key in reference:  # averaged parameters vs averaged gradients: fp32 rounding only
        torch.testing.assert_close(candidate[key], reference[key], rtol=1e-5, atol=1e-6, msg=key)
    expected = _losses(runs / "ddp")
    assert _losses(runs / name) == pytest.approx(expected, rel=1e-5, abs=1e-6)
    assert not torch.equal(
        reference["output.weight"], load_weights(runs / "local_h4")["output.weight"]
    )


def _cut_back(run_dir: Path, to: Path) -> Path:
    """The run as a crash after the step-SAVED_AT checkpoint would leave it."""
    shutil.copytree(run_dir, to)
    for late in (to / "checkpoints").glob("step_*"):
        if int(late.name.removeprefix("step_")) > SAVED_AT:
            shutil.rmtree(late)
    return to


@pytest.mark.parametrize("name", ["local_h4", "diloco_h4"])
def test_resume_between_syncs_equals_uninterrupted(runs, tmp_path, name):
    saved = runs / name / "checkpoints" / f"step_{SAVED_AT:08d}"
    for rank in (0, 1):  # the checkpoint really lies inside a period
        side = json.loads((saved / f"rank_{rank:05d}.json").read_text())
        assert side["replicas"]["since_sync"] == SAVED_AT % PERIOD
    resumed = _cut_back(runs / name, tmp_path / name)
    finished = torchrun(["-m", "scaletrain", "resume", str(resumed)], nproc=2, timeout=180)
    assert finished.returncode == 0, finished.output
    reference = load_weights(runs / name)
    for key, value in load_weights(resumed).items():
        assert torch.equal(value, reference[key]), key
    assert _losses(resumed) == _losses(runs / name)  # steps 7-12: the ranks' own weights
    summary = json.loads((resumed / "summary.json").read_text())
    assert (
        summary["metrics"]["test"]
        == json.loads((runs / name / "summary.json").read_text())["metrics"]["test"]
    )


def test_each_rank_keeps_its_own_weights_between_syncs(runs):
    """The two ranks' replicas differ mid-period; the checkpoint's model is neither."""
    saved = runs / "local_h4" / "checkpoints" / f"step_{SAVED_AT:08d}"
    tensors = {}
    for file in saved.glob("*.safetensors"):
        with safe_open(file, "pt") as handle:
            names = handle.keys()  # DCP's key, then `@` and the chunk's offsets
            tensors.update({name.split("@")[0]: handle.get_tensor(name) for name in names})
    key = "output.weight"
    rank0, rank1 = (tensors[f"replicas.rank_{r:05d}.model.{key}"] for r in (0, 1))
    assert not torch.equal(rank0, rank1)
    assert not torch.equal(tensors[f"model.{key}"], rank0)


@pytest.mark.parametrize("nproc", [1, 3])
def test_resume_between_syncs_on_another_world_size_is_refused(runs, tmp_path, nproc):
    resumed = _cut_back(runs / "diloco_h4", tmp_path / f"on_{nproc}")
    finished = torchrun(["-m", "scaletrain", "resume", str(resumed)], nproc=nproc, timeout=180)
    assert finished.returncode != 0
    # the worker's one line (what follows is torchrun's agent reporting the exit code 2)
    expected = (
        f"error: {resumed / 'checkpoints' / 'step_00000006'}: saved by 2 diloco ranks between "
        "two syncs, each with weights of its own; resume it with --nproc 2 and "
        "parallel.strategy=diloco"
    )
    assert expected in finished.output.splitlines(), finished.output
    assert "exitcode  : 2" in finished.output


def test_a_ddp_checkpoint_resumes_as_diloco_on_three_ranks(runs, tmp_path):
    """No ranks' own weights to lose: every rank starts from the checkpoint's model."""
    resumed = _cut_back(runs / "ddp", tmp_path / "ddp_as_diloco")
    config = yaml.safe_load((resumed / "config.yaml").read_text())
    config["parallel"]["strategy"] = "diloco"
    (resumed / "config.yaml").write_text(yaml.safe_dump(config))
    finished = torchrun(["-m", "scaletrain", "resume", str(resumed)], nproc=3, timeout=180)
    assert finished.returncode == 0, finished.output
    summary = json.loads((resumed / "summary.json").read_text())
    assert (summary["status"], summary["world_size"], summary["steps"]) == ("finished", 3, 12)
    # step 7's loss is that of the step-6 model on step 7's batch: DDP's, in fp32 rounding
    expected = _losses(runs / "ddp")[SAVED_AT + 1]
    assert _losses(resumed)[SAVED_AT + 1] == pytest.approx(expected, rel=1e-5, abs=1e-6)


def test_bytes_per_step_are_ddps_over_the_period(runs):
    ddp = json.loads((runs / "ddp" / "summary.json").read_text())["comm_bytes_per_step"]
    parameters = (64 * 48 + 48) + (48 * 32 + 32) + (32 * 10 + 10)  # fp32, no buffers
    assert ddp == 4 * parameters
    for name, period in (("local_h1", 1), ("local_h4", PERIOD), ("diloco_h4", PERIOD)):
        summary = json.loads((runs / name / "summary.json").read_text())
        assert summary["comm_bytes_per_step"] == ddp / period, name
        assert _records(runs / name)[MAX_STEPS]["comm_bytes_per_step"] == ddp / period


def test_diloco_trains_under_bf16_mixed(runs):
    summary = json.loads((runs / "diloco_bf16" / "summary.json").read_text())
    assert summary["status"] == "finished" and summary["precision"] == "bf16-mixed"
    losses = _losses(runs / "diloco_bf16")
    assert losses[MAX_STEPS] < losses[1]  # it learns
    weights = load_weights(runs / "diloco_bf16")
    assert all(tensor.dtype == torch.float32 for tensor in weights.values())


def test_diloco_reaches_ddp_accuracy_with_8x_fewer_bytes(tmp_path):
    """Digits to convergence: DiLoCo with H = 8 within 1 point of DDP's test accuracy."""
    config = {
        "run": {"seed": 0},
        "data": {"source": "builtin", "name": "digits"},
        "model": {"name": "mlp", "hidden": [64]},
        "optim": {"name": "adamw", "lr": 0.003},
        "train": {"max_epochs": 30, "batch_size": 64, "precision": "32", "device": "cpu"},
        "checkpoint": {"every_epochs": 0, "save_best": False, "every_minutes": None},
        "log": {"progress": False, "tensorboard": False, "report": False, "every_steps": 50},
    }
    specs = ["ddp=parallel.strategy=ddp", "diloco=parallel.strategy=diloco,parallel.local.steps=8"]
    train_variants(tmp_path, config, specs, timeout=240)
    ddp, diloco = (
        json.loads((tmp_path / n / "summary.json").read_text()) for n in ("ddp", "diloco")
    )
    assert ddp["metrics"]["test"]["accuracy"] > 0.95  # both converged
    assert diloco["metrics"]["test"]["accuracy"] >= ddp["metrics"]["test"]["accuracy"] - 0.01
    assert ddp["comm_bytes_per_step"] >= 4 * diloco["comm_bytes_per_step"]
