"""train.guard on real runs: a poisoned sample is skipped, rolled back over, or stops the run."""

import json

import pytest
import torch
import torch.nn.functional as F

import scaletrain
from scaletrain.data import epoch_order
from scaletrain.train.guards import DivergedError
from scaletrain.train.ledger import LEDGER, expand_ledger, read_ledger

NUM_SAMPLES, BATCH, SEED = 256, 32, 0
STEPS_PER_EPOCH = NUM_SAMPLES // BATCH
MARKER = 12345.0  # a finite feature value (the data checks refuse NaN/Inf inputs)


class Poisonable(torch.nn.Module):
    """The test hook: outputs NaN for a sample whose last feature is MARKER, else the net's
    output unchanged (torch.where passes values and gradients through bit for bit)."""

    def __init__(self, net):
        super().__init__()
        self.net = net

    def forward(self, inputs):
        outputs = self.net(inputs)
        poisoned = (inputs[:, -1] == MARKER).unsqueeze(1)
        return torch.where(poisoned, torch.full_like(outputs, float("nan")), outputs)


class OverflowingGradients(Poisonable):
    """Outputs unchanged (a finite loss), but the marked sample's output gradient becomes
    infinite in backward: the gradients overflow, the loss does not."""

    def forward(self, inputs):
        outputs = self.net(inputs)
        poisoned = (inputs[:, -1] == MARKER).unsqueeze(1)
        if outputs.requires_grad and bool(poisoned.any()):
            outputs.register_hook(lambda grad: torch.where(poisoned, float("inf"), grad))
        return outputs


def _data(*, poison_at_step: int, factor: float = 1.0, num_samples: int = NUM_SAMPLES):
    """Random features; one sample of step `poison_at_step` (epoch 0) gets the marker (or is
    multiplied by `factor`)."""
    generator = torch.Generator().manual_seed(1)
    inputs = torch.randn(num_samples, 10, generator=generator)
    targets = torch.randint(0, 3, (num_samples,), generator=generator)
    order = epoch_order(num_samples, seed=SEED, epoch=0, shuffle=True)
    victim = int(order[(poison_at_step - 1) * BATCH + 5])
    if factor != 1.0:
        inputs[victim] *= factor
    else:
        inputs[victim, -1] = MARKER
    return inputs, targets, victim


def _net():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(10, 16), torch.nn.ReLU(), torch.nn.Linear(16, 3))


def _model():
    return Poisonable(_net())


def _config(tmp_path, name, *, steps, guard=None, every_steps=None, log_every=1):
    return {
        "run": {"name": name, "seed": SEED, "out_dir": str(tmp_path)},
        "data": {"val_fraction": 0.0, "test_fraction": 0.0, "normalize": "none"},
        "optim": {"name": "adamw", "lr": 0.01, "weight_decay": 0.0, "implementation": "fused"},
        "train": {"max_steps": steps, "batch_size": BATCH, "precision": "32", "guard": guard or {}},
        "checkpoint": {"every_steps": every_steps, "every_epochs": 0, "save_best": False},
        "log": {"every_steps": log_every, "progress": False, "tensorboard": False, "report": False},
    }


def _records(run_dir):
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def _reference(inputs, targets, *, steps, skip_steps):
    """A hand-written loop over the same batches that leaves out the optimizer steps listed."""
    model = _net()
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.01, weight_decay=0.0, fused=True)
    order = epoch_order(NUM_SAMPLES, seed=SEED, epoch=0, shuffle=True)
    for step in range(1, steps + 1):
        if step in skip_steps:
            continue
        index = order[(step - 1) * BATCH : step * BATCH]
        F.cross_entropy(model(inputs[index]), targets[index]).backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    return model


# log every step: the guard reads the gradient norm; every 3 steps: step 4 is checked by
# the cheaper gradient sum (loop.py computes the norm only where it is logged or clipped)
@pytest.mark.parametrize("log_every", [1, 3])
def test_skip_equals_a_clean_run_without_that_step(tmp_path, log_every):
    inputs, targets, _ = _data(poison_at_step=4)
    run = scaletrain.train(
        _config(tmp_path, "skip", steps=STEPS_PER_EPOCH, log_every=log_every),
        model=_model(),
        data={"train": (inputs, targets)},
    )
    reference = _reference(inputs, targets, steps=STEPS_PER_EPOCH, skip_steps={4})
    trained = run.model.net.state_dict()
    for name, expected in reference.state_dict().items():
        assert torch.equal(expected, trained[name]), name
    assert not torch.equal(trained["0.weight"], _net().state_dict()["0.weight"])  # it trained
    events = [r for r in _records(run.run_dir) if r.get("event") == "skip"]
    assert [e["step"] for e in events] == [4] and "non-finite" in events[0]["detail"]
    summary = json.loads((run.run_dir / "summary.json").read_text())
    assert summary["counters"]["skipped_steps"] == 1
    ledger = expand_ledger(read_ledger(run.run_dir / LEDGER))
    assert [row[4] for row in ledger] == [None] * 3 + ["nonfinite"] + [None] * 4


def test_rollback_reloads_lowers_lr_and_passes_over_the_batch(tmp_path):
    inputs, targets, _ = _data(poison_at_step=5)
    guard = {"nonfinite": "rollback", "max_consecutive_bad": 1, "lr_backoff": 0.25}
    steps = STEPS_PER_EPOCH - 1  # one batch is passed over: the run ends with epoch 0
    run = scaletrain.train(
        _config(tmp_path, "rollback", steps=steps, guard=guard, every_steps=2),
        model=_model(),
        data={"train": (inputs, targets)},
    )
    assert run.status == "finished"
    assert all(torch.isfinite(p).all() for p in run.model.parameters())
    records = _records(run.run_dir)
    rollbacks = [r for r in records if r.get("event") == "rollback"]
    assert len(rollbacks) == 1 and "step_00000004" in rollbacks[0]["detail"]
    train = [r for r in records if r.get("split") == "train"]
    assert [r["lr"] for r in train if r["step"] <= 4][-1] == 0.01
    assert {r["lr"] for r in train if r["step"] >= 5} == {0.0025}  # after the rollback
    summary = json.loads((run.run_dir / "summary.json").read_text())
    counters = summary["counters"]
    assert (counters["rollbacks"], counters["skipped_steps"], counters["skipped_batches"]) == (
        1,
        1,
        1,
    )
    # the ledger: steps 1-4, the offending batch passed over, then the rest of the epoch
    ledger = expand_ledger(read_ledger(run.run_dir / LEDGER))
    assert [row[0] for row in ledger if row[4] is None] == list(range(1, steps + 1))
    assert [row[1:] for row in ledger if row[4] == "offending"] == [(0, 128, 160, "offending")]
    assert ledger[-1][1:4] == (0, 224, 256)
    final = run.run_dir / "checkpoints" / f"step_{steps:08d}"
    side = json.loads((final / "rank_00000.json").read_text())
    assert side["lr_scale"] == 0.25 and side["skip_spans"] == [[0, 128, 160]]


def test_rollback_passes_over_a_batch_whose_gradients_overflow(tmp_path):
    """Before: the rollback left the bad step's gradients in place, so the next attempt
    accumulated onto infinities: 3 rollbacks at the same step, then a stop."""
    inputs, targets, _ = _data(poison_at_step=3)
    guard = {"nonfinite": "rollback", "max_consecutive_bad": 1}
    steps = STEPS_PER_EPOCH - 1
    run = scaletrain.train(
        _config(tmp_path, "overflow", steps=steps, guard=guard, every_steps=2),
        model=OverflowingGradients(_net()),
        data={"train": (inputs, targets)},
    )
    assert run.status == "finished"
    assert all(torch.isfinite(p).all() for p in run.model.parameters())
    counters = json.loads((run.run_dir / "summary.json").read_text())["counters"]
    assert (counters["rollbacks"], counters["skipped_batches"]) == (1, 1)
    ledger = expand_ledger(read_ledger(run.run_dir / LEDGER))
    assert [row[1:] for row in ledger if row[4] == "offending"] == [(0, 64, 96, "offending")]


def test_loss_spike_is_caught_by_the_z_score(tmp_path):
    # 16 steps per epoch: 11 good steps fill the window of 8, then a sample 100x too large
    inputs, targets, _ = _data(poison_at_step=12, factor=100.0, num_samples=2 * NUM_SAMPLES)
    guard = {"spike": {"threshold": 6.0, "window": 8}}
    run = scaletrain.train(
        _config(tmp_path, "spike", steps=14, guard=guard),
        model=_model(),
        data={"train": (inputs, targets)},
    )
    events = [r for r in _records(run.run_dir) if r.get("event") == "skip"]
    assert [e["step"] for e in events] == [12], events
    assert "loss spike" in events[0]["detail"]


def test_stop_saves_and_raises_one_clear_error(tmp_path):
    inputs, targets, _ = _data(poison_at_step=3)
    with pytest.raises(DivergedError, match="step 3: a non-finite loss") as caught:
        scaletrain.train(
            _config(tmp_path, "stop", steps=STEPS_PER_EPOCH, guard={"nonfinite": "stop"}),
            model=_model(),
            data={"train": (inputs, targets)},
        )
    assert "\n" not in str(caught.value) and "step_00000002" in str(caught.value)
    side = json.loads(
        (tmp_path / "stop" / "checkpoints" / "step_00000002" / "rank_00000.json").read_text()
    )
    assert side["skip_spans"] == [[0, 64, 96]] and side["loader"]["samples_consumed"] == 96
    summary = json.loads((tmp_path / "stop" / "summary.json").read_text())
    assert summary["status"] == "failed"
    # the summary carries where the run stopped (before: steps 0, counters {})
    assert summary["steps"] == 2 and summary["counters"]["skipped_steps"] == 1


def test_loss_spike_under_rollback_reloads_at_once(tmp_path):
    # one spike is enough (max_consecutive_bad counts non-finite steps): back to step 8
    inputs, targets, _ = _data(poison_at_step=12, factor=100.0, num_samples=2 * NUM_SAMPLES)
    guard = {"nonfinite": "rollback", "lr_backoff": 0.5, "spike": {"threshold": 6.0, "window": 8}}
    run = scaletrain.train(
        _config(tmp_path, "spike_rollback", steps=14, guard=guard, every_steps=4),
        model=_model(),
        data={"train": (inputs, targets)},
    )
    assert run.status == "finished"
    records = _records(run.run_dir)
    rollbacks = [r for r in records if r.get("event") == "rollback"]
    assert len(rollbacks) == 1 and "loss spike" in rollbacks[0]["detail"], rollbacks
    assert "step_00000008" in rollbacks[0]["detail"] and rollbacks[0]["step"] == 8
    assert not [r for r in records if r.get("event") == "skip"]
    # metrics.jsonl keeps the undone steps 9-11 (they happened); then 9-14 again, lr halved
    cut = records.index(rollbacks[0])
    before = [(r["step"], r["lr"]) for r in records[:cut] if r.get("split") == "train"]
    after = [(r["step"], r["lr"]) for r in records[cut:] if r.get("split") == "train"]
    assert before == [(step, 0.01) for step in range(1, 12)]
    assert after == [(step, 0.005) for step in range(9, 15)]
    counters = json.loads((run.run_dir / "summary.json").read_text())["counters"]
    assert (counters["rollbacks"], counters["skipped_batches"]) == (1, 1)
    ledger = expand_ledger(read_ledger(run.run_dir / LEDGER))
    assert [row[1:] for row in ledger if row[4] == "offending"] == [(0, 352, 384, "offending")]
    assert [row[0] for row in ledger if row[4] is None] == list(range(1, 15))
