"""MFU arithmetic: hand-counted training FLOPs, the formula, and the cached peak."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

import scaletrain.metrics.mfu as mfu_module
from scaletrain.metrics.mfu import mfu, peak_flops
from scaletrain.models.flops import train_flops_per_sample


def test_mlp_training_flops_equal_a_hand_count():
    model = nn.Sequential(nn.Linear(784, 1024), nn.ReLU(), nn.Linear(1024, 10))
    forward = 2 * (784 * 1024 + 1024 * 10)  # one multiply-add = 2 FLOPs
    assert train_flops_per_sample(model, (784,), torch.float32) == 3 * forward


def test_cnn_training_flops_equal_a_hand_count():
    # 3x3 same-padding conv on 1x8x8 -> 4 channels (8x8 outputs), 2x2 pool, linear 64 -> 10
    model = nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(64, 10)
    )
    conv = 2 * (3 * 3 * 1) * 4 * (8 * 8)
    linear = 2 * 64 * 10
    assert train_flops_per_sample(model, (1, 8, 8), torch.float32) == 3 * (conv + linear)


def test_mfu_formula():
    # 1,000 samples/s of 6 MFLOP each = 6 GFLOP/s on a 12 GFLOP/s device: half the peak
    assert mfu(1000.0, 6_000_000, 12e9) == pytest.approx(0.5)
    assert mfu(1000.0, None, 12e9) is None  # an uncountable model reports no MFU
    assert mfu(1000.0, 6_000_000, None) is None


def test_model_without_matmuls_reports_no_mfu():
    assert train_flops_per_sample(nn.ReLU(), (4,), torch.float32) is None


def test_peak_is_measured_once_then_read_from_the_cache(tmp_path, monkeypatch):
    monkeypatch.setattr(mfu_module, "CACHE", tmp_path)
    monkeypatch.setattr(mfu_module, "CACHE_FILE", tmp_path / "peak_flops.json")
    monkeypatch.setattr(mfu_module, "_cpu_oversubscribed", lambda: False)  # the load probe
    monkeypatch.setattr(mfu_module, "_MEASURED", {})  # a fresh process
    first = peak_flops(torch.device("cpu"), torch.float32)
    assert first > 1e8  # any CPU multiplies faster than 0.1 GFLOP/s
    cached = json.loads((tmp_path / "peak_flops.json").read_text())
    assert list(cached.values()) == [first]
    key = next(iter(cached))
    (tmp_path / "peak_flops.json").write_text(json.dumps({key: 123.0}))
    monkeypatch.setattr(mfu_module, "_MEASURED", {})  # the next process reads the file
    assert peak_flops(torch.device("cpu"), torch.float32) == 123.0  # no second measurement


def test_a_peak_measured_on_an_oversubscribed_cpu_is_not_cached(tmp_path, monkeypatch):
    """Measured while other work shares the cores, the peak is too low: MFU would read > 1
    on every later run. It serves this run only."""
    monkeypatch.setattr(mfu_module, "CACHE", tmp_path)
    monkeypatch.setattr(mfu_module, "CACHE_FILE", tmp_path / "peak_flops.json")
    monkeypatch.setattr(mfu_module, "_cpu_oversubscribed", lambda: True)
    monkeypatch.setattr(mfu_module, "_MEASURED", {})
    first = peak_flops(torch.device("cpu"), torch.float32)
    assert first > 1e8
    assert not (tmp_path / "peak_flops.json").exists()


def test_a_second_run_in_the_same_process_does_not_probe_again(tmp_path, monkeypatch):
    """Even where the disk cache was skipped (a busy CPU), the next run of the process
    reuses the peak: the probe costs about two seconds each time."""
    monkeypatch.setattr(mfu_module, "CACHE", tmp_path)
    monkeypatch.setattr(mfu_module, "CACHE_FILE", tmp_path / "peak_flops.json")
    monkeypatch.setattr(mfu_module, "_cpu_oversubscribed", lambda: True)
    monkeypatch.setattr(mfu_module, "_MEASURED", {})
    first = peak_flops(torch.device("cpu"), torch.float32)

    def probe(*args):
        raise AssertionError("measured a second time")

    monkeypatch.setattr(mfu_module, "measure_peak_flops", probe)
    assert peak_flops(torch.device("cpu"), torch.float32) == first
