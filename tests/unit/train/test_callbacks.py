"""User callbacks: each epoch's training loss reaches `on_log` (split `train_epoch`) before
`on_epoch_end`, with the figures metrics.jsonl holds."""

from __future__ import annotations

import json

from scaletrain import api


class Recorder:
    def __init__(self):
        self.events: list[tuple] = []

    def on_log(self, state, record):
        self.events.append(("log", record["split"], record["epoch"], record["loss"]))

    def on_epoch_end(self, state):
        self.events.append(("epoch_end", state.epoch))


def test_each_epochs_training_record_reaches_on_log(tiny_config):
    tiny_config["log"]["every_steps"] = 1000  # no step-window record before the last step
    recorder = Recorder()
    run = api.train(tiny_config, callbacks=[recorder])
    epoch_events = [event for event in recorder.events if event[:2] != ("log", "train")]
    assert [event[:3] for event in epoch_events] == [
        ("log", "train_epoch", 1),
        ("epoch_end", 1),
        ("log", "train_epoch", 2),
        ("epoch_end", 2),
    ]
    written = [json.loads(line) for line in (run.run_dir / "metrics.jsonl").open()]
    losses = [record["loss"] for record in written if record.get("split") == "train_epoch"]
    assert losses == [event[3] for event in epoch_events if event[0] == "log"]
