"""The default checkpoint policy: no checkpoint per epoch; the best state kept as a CPU copy and
written once, as a real checkpoint of its step; the final one always; the report after return."""

import copy
import threading
import time
from pathlib import Path

import torch

from scaletrain import api
from scaletrain.checkpoint import CheckpointStore
from scaletrain.checkpoint.state_dict import model_state
from scaletrain.fileio import read_jsonl
from scaletrain.finish import wait_for_reports


class WeightsAtEpochEnd:
    """Callback: a copy of the weights after each epoch (its validation ran just before)."""

    def __init__(self):
        self.by_step: dict[int, dict] = {}

    def on_epoch_end(self, state):
        self.by_step[state.step] = {k: v.clone() for k, v in state.model.state_dict().items()}


def _train(tiny_config, callback, **train):
    cfg = {**tiny_config, "train": {**tiny_config["train"], **train}}
    return api.train(cfg, callbacks=[callback])


def test_the_best_is_written_once_from_memory_and_holds_that_steps_weights(tiny_config):
    # val.loss monitored for its maximum: the best is an early epoch, not the last one
    callback = WeightsAtEpochEnd()
    run = _train(tiny_config, callback, max_epochs=4, monitor={"metric": "val.loss", "mode": "max"})
    store = CheckpointStore(run.run_dir / "checkpoints")
    best, last = store.best_step(), run.steps
    assert best is not None and best < last  # older than the last weights
    assert [p.name for p in store.committed()] == [f"step_{best:08d}", f"step_{last:08d}"]
    events = [r for r in read_jsonl(run.run_dir / "metrics.jsonl") if r.get("event")]
    details = [r["detail"] for r in events if r["event"] == "checkpoint"]
    assert details == [f"best: step_{best:08d}", f"final: step_{last:08d}"]  # none per epoch
    model = copy.deepcopy(run.model)  # the same layout, loaded from the file below
    tensors = {"model": model_state(model)}
    store.load(store.find("best"), tensors=tensors, rank=0)
    for name, value in callback.by_step[best].items():
        assert torch.equal(tensors["model"][name], value), name  # a copy, not the live weights
    assert run.weights == {"name": "best", "step": best}


def test_a_best_at_the_last_step_marks_the_final_checkpoint(tiny_config):
    callback = WeightsAtEpochEnd()
    run = _train(tiny_config, callback, max_epochs=2, monitor={"metric": "val.loss", "mode": "min"})
    store = CheckpointStore(run.run_dir / "checkpoints")
    assert store.best_step() == run.steps  # val loss still falls in epoch 2 on digits
    assert [p.name for p in store.committed()] == [f"step_{run.steps:08d}"]  # one save
    assert run.weights == {"name": "last", "step": run.steps}


def test_every_epochs_still_saves_each_epoch_when_asked(tiny_config):
    cfg = {**tiny_config, "checkpoint": {"every_epochs": 1}}
    cfg["train"] = {**tiny_config["train"], "max_epochs": 3}
    run = api.train(cfg)
    events = [r for r in read_jsonl(run.run_dir / "metrics.jsonl") if r.get("event")]
    reasons = [r["detail"].split(":")[0] for r in events if r["event"] == "checkpoint"]
    assert reasons == ["every_epochs", "every_epochs", "final"]  # epochs 1 and 2, then the end


def test_the_report_is_written_after_train_returns_and_waited_for(tiny_config):
    cfg = {**tiny_config, "log": {"progress": False, "tensorboard": False, "report": True}}
    run = api.train(cfg)
    writers = [t for t in threading.enumerate() if t.name == "scaletrain-report"]
    assert all(not t.daemon for t in writers)  # the interpreter waits for it at exit
    assert run.wait() is run
    assert (run.run_dir / "report.html").stat().st_size > 1000
    assert not [t for t in threading.enumerate() if t.name == "scaletrain-report"]
    wait_for_reports()  # nothing pending: returns at once


class SpoilTheBestOnDisk(WeightsAtEpochEnd):
    """Also flips a byte of the best checkpoint's data once training ended (before the final
    evaluation; the best is written in the background then: this waits for its commit): only
    weights taken from memory survive that."""

    def __init__(self, run_dir):
        super().__init__()
        self.checkpoints = run_dir / "checkpoints"

    def on_train_end(self, state):
        best = CheckpointStore(self.checkpoints).best_step()
        folder, deadline = self.checkpoints / f"step_{best:08d}", time.monotonic() + 30
        while not folder.is_dir() and time.monotonic() < deadline:  # renamed once committed
            time.sleep(0.01)
        data = sorted(folder.glob("*.safetensors"))[0]
        raw = bytearray(data.read_bytes())
        raw[-1] ^= 0xFF
        data.write_bytes(bytes(raw))


def test_the_final_evaluation_takes_the_best_from_memory_not_from_disk(tiny_config):
    run_dir = Path(tiny_config["run"]["out_dir"]) / tiny_config["run"]["name"]
    callback = SpoilTheBestOnDisk(run_dir)
    run = _train(tiny_config, callback, max_epochs=4, monitor={"metric": "val.loss", "mode": "max"})
    best = CheckpointStore(run.run_dir / "checkpoints").best_step()
    assert run.weights == {"name": "best", "step": best} and best < run.steps
    weights = run.model.state_dict()
    for name, value in callback.by_step[best].items():
        assert torch.equal(weights[name], value), name  # the best step's exact weights


def test_the_final_evaluation_reuses_the_validations_and_evaluates_test_once(
    tiny_config, monkeypatch
):
    """Before: val and test for the last weights, then val and test again for the best (four
    passes); now the per-epoch validations of both are reused and test runs once."""
    from scaletrain.train import final

    passes = []

    def counted(model, split, **options):  # the real evaluation, counted
        passes.append(options["keep_predictions"])
        return evaluate_split(model, split, **options)

    evaluate_split = final.evaluate_split
    monkeypatch.setattr(final, "evaluate_split", counted)
    run = _train(
        tiny_config,
        WeightsAtEpochEnd(),
        max_epochs=3,
        monitor={"metric": "val.loss", "mode": "max"},
    )
    best, last = run.weights["step"], run.steps
    assert run.weights["name"] == "best" and best < last
    assert passes == [True]  # test, for the returned weights, predictions kept for the report
    validations = {
        r["step"]: r for r in read_jsonl(run.run_dir / "metrics.jsonl") if r.get("split") == "val"
    }
    assert run.metrics["val"]["loss"] == validations[best]["loss"]  # the same pass, reused
    assert run.metrics["val"]["accuracy"] == validations[best]["metrics"]["accuracy"]
    assert run.metrics_last == {
        "val": {"loss": validations[last]["loss"], **validations[last]["metrics"]}
    }
    assert "test" in run.metrics
    assert sorted(p.name for p in (run.run_dir / "predictions").iterdir()) == ["test.npz"]
