"""The learning-rate range test: the suggestion rule on a known curve, and on digits a
suggestion that trains."""

from __future__ import annotations

import json

import numpy as np
import pytest

import scaletrain
from scaletrain.cli import main
from scaletrain.errors import UserError
from scaletrain.tune.lr_find import suggest


def test_the_suggestion_is_the_steepest_descent_before_the_minimum():
    lrs = np.geomspace(1e-6, 1.0, 200)
    x = np.log10(lrs)
    # a falling sigmoid steepest at 1e-3, a minimum near 3e-2, then divergence
    curve = 2.3 - 2.0 / (1 + np.exp(-(x + 3) * 3)) + np.where(x > -1.5, (x + 1.5) ** 2 * 4, 0)
    assert suggest(lrs, list(curve)) == pytest.approx(1e-3, rel=0.1)


def test_a_curve_that_diverges_at_once_is_one_line():
    with pytest.raises(UserError, match="diverged after 5 steps"):
        suggest(np.geomspace(1e-6, 1.0, 5), [1.0, 2.0, 3.0, 4.0, 5.0])


@pytest.mark.slow
def test_on_digits_the_suggestion_trains(tiny_config, tmp_path, capsys):
    page = tmp_path / "lr.html"
    tiny_config["train"]["num_threads"] = 1  # 2 threads on 2 shared cores: ~10x slower
    config = tmp_path / "tiny.json"
    config.write_text(json.dumps(tiny_config))  # JSON is YAML
    assert main(["lr-find", str(config), "--out", str(page), "--steps", "120"]) == 0
    printed = capsys.readouterr().out
    suggestion = float(printed.split("suggested lr:")[1].split()[0])
    assert "data:image/png;base64," in page.read_text()
    assert 1e-4 < suggestion < 0.5  # the test swept 1e-6 .. 1
    # training at the suggestion converges: far below chance (2.30) and accurate
    run = scaletrain.train(
        tiny_config, overrides=[f"optim.lr={suggestion}", "train.max_epochs=3", "run.name=at"]
    )
    assert run.metrics["val"]["accuracy"] >= 0.9
    assert run.metrics["val"]["loss"] < 0.5
