"""Built-in stdlib_text: deterministic files, split by file, LM corpus, and the shipped
TextCNN config beating the majority-class baseline by a wide margin."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch

from scaletrain.config import DataConfig, TextConfig
from scaletrain.data import build_data
from scaletrain.data.sources.stdlib_text import (
    PACKAGES,
    chunk_lines,
    load_stdlib_text,
    stdlib_files,
)
from scaletrain.data.transforms.split import split_groups

ROOT = Path(__file__).parents[3]


def test_file_list_is_sorted_and_chunks_rebuild_each_file():
    files = stdlib_files()
    assert files == stdlib_files() and len({package for package, _ in files}) == len(PACKAGES)
    assert [path for _, path in files] == sorted(path for _, path in files)
    assert all("test" not in path.parts for _, path in files)
    text = files[0][1].read_text(encoding="utf-8")
    chunks = chunk_lines(text, max_chars=300)
    assert "".join(chunks) == text
    assert all(len(chunk) <= 300 or chunk.count("\n") <= 1 for chunk in chunks)


def test_split_is_by_file_and_seeded():
    raw = load_stdlib_text()
    labels = np.unique(raw.labels, return_inverse=True)[1]
    cut = split_groups(
        raw.groups, val_fraction=0.1, test_fraction=0.2, seed=0, stratify_labels=labels
    )
    groups = {name: set(raw.groups[getattr(cut, name)]) for name in ("train", "val", "test")}
    assert not groups["train"] & groups["test"] and not groups["train"] & groups["val"]
    assert not groups["val"] & groups["test"]
    assert sum(len(getattr(cut, name)) for name in ("train", "val", "test")) == len(raw.labels)
    for name in ("train", "test"):  # every package on both sides (files stratified by package)
        assert set(raw.labels[getattr(cut, name)]) == set(PACKAGES)
    again = split_groups(
        raw.groups, val_fraction=0.1, test_fraction=0.2, seed=0, stratify_labels=labels
    )
    assert np.array_equal(again.test, cut.test)
    other = split_groups(
        raw.groups, val_fraction=0.1, test_fraction=0.2, seed=1, stratify_labels=labels
    )
    assert not np.array_equal(other.test, cut.test)
    bundle = build_data(DataConfig(name="stdlib_text", text=TextConfig(vectorizer="byte")), seed=0)
    assert (len(bundle.train), len(bundle.val), len(bundle.test)) == tuple(
        len(getattr(cut, name)) for name in ("train", "val", "test")
    )


def test_language_model_windows_are_the_train_files_in_order():
    cfg = DataConfig(
        name="stdlib_text",
        task="language_model",
        context_length=64,
        text=TextConfig(vectorizer="byte"),
    )
    bundle = build_data(cfg, seed=0)
    assert bundle.spec.task == "language_model" and bundle.spec.input_shape == (64,)
    assert torch.equal(bundle.train.inputs[:, 1:], bundle.train.targets[:, :-1])
    assert torch.equal(bundle.train.inputs[1:, 0], bundle.train.targets[:-1, -1])
    raw = load_stdlib_text()
    cut = split_groups(raw.groups, val_fraction=0.1, test_fraction=0.2, seed=0)  # unstratified
    first_file = raw.groups[cut.train[0]]
    text = "".join(raw.inputs.texts[raw.groups == first_file])
    stream = bytes((bundle.train.inputs[:4].flatten() - 1).tolist())
    assert stream == text.encode()[: len(stream)]


@pytest.fixture
def one_thread():
    """One intra-op thread: steady timing on a shared 2-core machine (restored after)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.mark.slow  # end-to-end (or several processes): make test, not test-fast
def test_textcnn_config_beats_the_majority_baseline_widely(tmp_path, one_thread):
    from scaletrain import api

    run = api.train(
        ROOT / "configs/textcnn-stdlib.yaml",
        overrides=[
            f"run.out_dir={tmp_path}",
            "train.device=cpu",
            "train.precision='32'",
            "log.progress=false",
            "log.tensorboard=false",
            "log.report=false",
        ],
    )
    test_targets = build_data(run.config.data, seed=run.config.run.seed).test.targets
    majority = max(Counter(test_targets.tolist()).values()) / len(test_targets)
    accuracy = run.metrics["test"]["accuracy"]
    assert majority < 0.3
    assert accuracy > majority + 0.25, (accuracy, majority)  # ~0.56 vs ~0.23 at seed 0
