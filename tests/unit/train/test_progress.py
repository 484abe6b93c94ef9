"""Console progress: plain lines off a terminal, the rich bar on one, one line per validation."""

from __future__ import annotations

import io
import re

from scaletrain.train.progress import Progress

RECORD = {"loss": 0.25, "lr": 1e-3, "samples_per_s": 1234.0, "mfu": 0.012}


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def _feed(progress: Progress, steps: range, *, every: int = 10) -> None:
    for step in steps:
        if step % every == 0:
            progress.observe_window(every, 0.5)
            progress.update(step, RECORD)


def test_plain_lines_carry_step_epoch_elapsed_and_eta_once_per_tenth():
    stream = io.StringIO()
    progress = Progress(100, steps_per_epoch=20, enabled=True, stream=stream)
    _feed(progress, range(1, 101), every=5)
    lines = stream.getvalue().splitlines()
    assert len(lines) == 10  # every 5 steps logged, one line per tenth of the run
    assert lines[2].startswith("step 30/100  epoch 2/5  loss 0.2500  lr 1.00e-03")
    assert "1,234 samples/s  MFU 1.2%" in lines[2]
    assert re.search(r"elapsed \d+:\d\d  eta 0:07$", lines[2]), lines[2]  # 70 steps x 0.1 s
    assert lines[-1].startswith("step 100/100  epoch 5/5") and lines[-1].endswith("eta 0:00")


def test_language_model_lines_carry_tokens_per_second():
    stream = io.StringIO()
    progress = Progress(10, steps_per_epoch=10, enabled=True, stream=stream)
    progress.observe_window(10, 0.5)
    progress.update(10, {**RECORD, "tokens_per_s": 1234.0 * 256})
    assert "1,234 samples/s  315,904 tokens/s  MFU 1.2%" in stream.getvalue()


def test_the_epoch_of_a_step_counts_its_last_step_in():
    progress = Progress(90, steps_per_epoch=30, enabled=False)
    labels = [progress.epoch_label(step) for step in (0, 1, 30, 31, 90)]
    assert labels == ["epoch 1/3", "epoch 1/3", "epoch 1/3", "epoch 2/3", "epoch 3/3"]


def test_validation_line_shows_loss_the_monitored_metric_and_best():
    stream = io.StringIO()
    progress = Progress(60, steps_per_epoch=20, monitor="val.f1_macro", enabled=True, stream=stream)
    metrics = {"accuracy": 0.989, "f1_macro": 0.95, "per_class": {"f1": [1.0]}, "num_samples": 9}
    progress.validation(60, loss=0.041, metrics=metrics, improved=True)
    progress.validation(60, loss=0.05, metrics={"accuracy": 0.9}, improved=False)
    first, second = stream.getvalue().splitlines()
    assert first == "epoch 3/3  val.loss 0.0410  val.f1_macro 0.9500  val.accuracy 0.9890  best"
    assert second == "epoch 3/3  val.loss 0.0500  val.accuracy 0.9000"


def test_disabled_progress_prints_nothing():
    stream = io.StringIO()
    progress = Progress(10, steps_per_epoch=5, enabled=False, stream=stream)
    _feed(progress, range(1, 11), every=1)
    progress.validation(10, loss=0.1, metrics={}, improved=True)
    assert stream.getvalue() == ""


def test_the_terminal_bar_shows_epoch_latest_validation_elapsed_and_eta():
    stream = _Terminal()
    progress = Progress(100, steps_per_epoch=20, enabled=True, stream=stream)
    progress._bar.console.width = 220  # the whole bar on one line
    _feed(progress, range(1, 41))
    progress.validation(40, loss=0.2, metrics={"accuracy": 0.9}, improved=True)
    progress._bar.refresh()
    progress.close()
    text = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", stream.getvalue())  # no colour codes
    assert "epoch 2/5  val.loss 0.2000  val.accuracy 0.9000  best" in text  # above the bar
    bar = text.splitlines()[-1]
    assert "40/100" in bar and "epoch 2/5" in bar and "loss 0.2500" in bar
    assert "val.loss 0.2000" in bar  # the monitored metric (val.loss by default)
    assert re.search(r"elapsed \d+:\d\d  eta 0:0\d", bar), bar
