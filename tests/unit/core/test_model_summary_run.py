"""`scaletrain summary` and the model_summary.json that every run writes as it starts."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import torch
from torch import nn

from scaletrain import api
from scaletrain.cli import main
from scaletrain.config import load_config
from scaletrain.data import build_data
from scaletrain.models import build_model

ROOT = Path(__file__).parents[3]
DEFAULT = ROOT / "configs" / "default.yaml"


def _default_model() -> nn.Module:
    cfg = load_config(DEFAULT)
    spec = build_data(cfg.data, seed=cfg.run.seed).spec
    return build_model(cfg.model, input_shape=spec.input_shape, num_outputs=spec.num_outputs)


def test_summary_command_prints_the_real_parameter_count():
    result = subprocess.run(
        [sys.executable, "-m", "scaletrain", "summary", str(DEFAULT)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    printed = re.search(r"total parameters\s+([\d,]+)", result.stdout)
    assert printed, result.stdout
    expected = sum(p.numel() for p in _default_model().parameters())
    assert int(printed.group(1).replace(",", "")) == expected
    assert "CNN: one sample (1, 8, 8) float32" in result.stdout
    assert "FLOPs per sample" in result.stdout


def test_summary_command_bad_override_is_one_line_and_exit_2(capsys):
    code = main(["summary", str(DEFAULT), "model.chanels=[8]"])
    _, err = capsys.readouterr()
    assert code == 2 and err.strip().splitlines() == [
        "error: unknown key `model.chanels`; did you mean `model.channels`?"
    ], err


def test_train_writes_model_summary_json_and_prints_the_table_on_stderr(tiny_config, capsys):
    tiny_config["log"]["progress"] = True  # the console output of a run (off in tiny_config)
    run = api.train(tiny_config)
    out, err = capsys.readouterr()
    written = json.loads((run.run_dir / "model_summary.json").read_text())
    parameters = list(run.model.parameters())
    assert written["model_type"] == "MLP" and written["shapes_from"] == "meta"
    assert written["num_params"] == sum(p.numel() for p in parameters)
    assert written["num_trainable"] == written["num_params"] and written["num_frozen"] == 0
    assert written["size_mb"] == sum(p.numel() * 4 for p in parameters) / 2**20  # no buffers
    assert written["layers"][-1] == {
        "name": "output",
        "type": "Linear",
        "depth": 1,
        "output_shapes": [[1, 10]],
        "num_params": 32 * 10 + 10,
        "num_trainable": 32 * 10 + 10,
    }
    assert f"total parameters  {written['num_params']:,}" in err  # stderr: stdout is for results
    assert "total parameters" not in out
    tiny_config["log"]["progress"] = False  # quiet runs print no table, and still write it
    run = api.train(tiny_config, overwrite=True)
    assert "total parameters" not in capsys.readouterr().err
    assert (run.run_dir / "model_summary.json").is_file()


def test_a_user_module_gets_a_summary_and_a_model_section(tiny_config):
    tiny_config["log"]["report"] = True
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 16), nn.ReLU(), nn.Linear(16, 10))
    model[1].requires_grad_(False)
    run = api.train(tiny_config, model=model)
    written = json.loads((run.run_dir / "model_summary.json").read_text())
    assert written["model_type"] == "Sequential" and written["input_shape"] == [1, 8, 8]
    assert written["num_frozen"] == 64 * 16 + 16
    assert [layer["output_shapes"] for layer in written["layers"]] == [
        [[1, 64]],
        [[1, 16]],
        [[1, 16]],
        [[1, 10]],
    ]
    assert torch.equal(model[1].weight, run.model[1].weight)  # frozen: untouched by training
    report = (run.wait().run_dir / "report.html").read_text()  # written after train returns
    assert '<section id="model"><h2>Model: Sequential</h2>' in report
