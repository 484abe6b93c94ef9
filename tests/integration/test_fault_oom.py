"""train.micro_batch_size: auto. An out-of-memory error in the first steps halves the micro
batch and raises the accumulation, so the global batch and the training math stay the
same: the weights equal those of a run configured with the smaller micro batch. The OOM is
injected on CPU by a forward hook that raises torch.OutOfMemoryError above a batch size."""

import json

import pytest
import torch

import scaletrain

NUM_SAMPLES, BATCH, FITS = 256, 32, 8  # micro batches above FITS samples "run out of memory"


class RaiseOutOfMemory:
    """Forward pre-hook: training forwards of more than `fits` samples fail, from update
    `from_step` on (counted by the callback protocol's on_step_end)."""

    def __init__(self, fits: int, *, from_step: int = 0):
        self.fits, self.from_step, self.step = fits, from_step, 0

    def __call__(self, module, args) -> None:
        if module.training and self.step >= self.from_step and args[0].shape[0] > self.fits:
            raise torch.OutOfMemoryError(f"injected: {args[0].shape[0]} samples > {self.fits}")

    def on_step_end(self, state) -> None:
        self.step = state.step


def _data():
    generator = torch.Generator().manual_seed(1)
    inputs = torch.randn(NUM_SAMPLES, 10, generator=generator)
    return inputs, torch.randint(0, 3, (NUM_SAMPLES,), generator=generator)


def _model(hook=None):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(10, 16), torch.nn.ReLU(), torch.nn.Linear(16, 3))
    if hook is not None:
        model.register_forward_pre_hook(hook)
    return model


def _config(tmp_path, name, micro_batch_size):
    return {
        "run": {"name": name, "seed": 0, "out_dir": str(tmp_path)},
        "data": {"val_fraction": 0.0, "test_fraction": 0.0, "normalize": "none"},
        "optim": {"name": "adamw", "lr": 0.01},
        "train": {
            "max_steps": 10,
            "batch_size": BATCH,
            "micro_batch_size": micro_batch_size,
            "precision": "32",
        },
        "checkpoint": {"every_epochs": 0, "save_best": False},
        "log": {"every_steps": 1, "progress": False, "tensorboard": False, "report": False},
    }


def _train_records(run_dir):
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines]


def test_auto_micro_batch_backs_off_and_keeps_the_math(tmp_path):
    hook = RaiseOutOfMemory(FITS, from_step=2)  # mid-epoch: the loader must rewind
    auto = scaletrain.train(
        _config(tmp_path, "auto", "auto"), model=_model(hook), data={"train": _data()},
        callbacks=[hook],
    )  # fmt: skip
    fixed = scaletrain.train(
        _config(tmp_path, "fixed", FITS), model=_model(), data={"train": _data()}
    )
    assert auto.status == "finished"
    trained, expected = auto.model.state_dict(), fixed.model.state_dict()
    for name, value in expected.items():
        torch.testing.assert_close(trained[name], value, rtol=1e-5, atol=1e-6, msg=name)
    assert not torch.equal(trained["0.weight"], _model().state_dict()["0.weight"])  # it trained
    records = _train_records(auto.run_dir)
    events = [r for r in records if r.get("event") == "oom_backoff"]
    assert [(e["step"], e["detail"].split(":")[1].strip()) for e in events] == [
        (3, "micro batch 16 x 2 accumulation steps from now on"),
        (3, "micro batch 8 x 4 accumulation steps from now on"),
    ]
    plan = json.loads((auto.run_dir / "plan.json").read_text())
    assert (plan["micro_batch_size"], plan["grad_accum_steps"], plan["global_batch_size"]) == (
        FITS, BATCH // FITS, BATCH,
    )  # fmt: skip
    losses = [r["loss"] for r in records if r.get("split") == "train"]
    assert len(losses) == 10  # every step trained once, none lost to the retries


def test_out_of_memory_after_the_first_steps_is_raised(tmp_path):
    hook = RaiseOutOfMemory(FITS, from_step=5)  # the micro batch of 32 fit for 3+ steps
    with pytest.raises(torch.OutOfMemoryError, match="injected"):
        scaletrain.train(
            _config(tmp_path, "late", "auto"), model=_model(hook), data={"train": _data()},
            callbacks=[hook],
        )  # fmt: skip
