"""One tiny run per built-in model family (a step or two of training), trained once per
session on first use and shared by the export tests."""

from __future__ import annotations

import numpy as np
import pytest

WORDS = ["alpha", "beta", "gamma", "delta", "pi", "rho", "sigma", "tau", "omega", "zeta"]
DIGITS = {"source": "builtin", "name": "digits"}

FAMILIES = {
    "mlp": ({"name": "mlp", "hidden": [16]}, DIGITS),
    "cnn": ({"name": "cnn", "channels": [4, 8], "head": [16]}, DIGITS),
    "resnet": ({"name": "resnet", "depth": 18, "width": 4}, DIGITS),
    "textcnn": (
        {"name": "textcnn", "embed_dim": 8, "num_filters": 8, "kernel_sizes": [1, 2]},
        "text",
    ),
    "rnn-lstm": (
        {"name": "rnn", "cell": "lstm", "embed_dim": 8, "hidden": 8, "bidirectional": True}
        | {"pool": "max"},
        "text",
    ),
    "rnn-gru": (  # pool last (the default): read from the outputs for export
        {"name": "rnn", "cell": "gru", "embed_dim": 8, "hidden": 8, "bidirectional": True},
        "text",
    ),
    "rnn-last": ({"name": "rnn", "embed_dim": 8, "hidden": 8}, "text"),  # lstm, pool last
    "gpt": ({"name": "gpt", "n_layer": 1, "n_head": 2, "d_model": 16}, "text"),
    "gpt-lm": ({"name": "gpt", "n_layer": 1, "n_head": 2, "d_model": 16}, "corpus"),
    "mlp-regression": (
        {"name": "mlp", "hidden": [8]},
        {"source": "builtin", "name": "diabetes", "normalize_target": "standardize"},
    ),
}


def write_texts(root) -> dict:
    generator = np.random.default_rng(0)
    rows = [
        f"{' '.join(generator.choice(WORDS, 2 + index % 5))},{'xyz'[index % 3]}"
        for index in range(90)
    ]
    (root / "texts.csv").write_text("text,label\n" + "\n".join(rows) + "\n")
    text = {"vectorizer": "byte", "max_length": 24}
    return {"source": "text_csv", "path": str(root / "texts.csv"), "text": text}


def write_corpus(root) -> dict:
    corpus = root / "corpus"
    corpus.mkdir()
    for index in range(4):
        (corpus / f"part{index}.txt").write_text(f"def add_{index}(a, b):\n    return a + b\n" * 8)
    return {
        "source": "text_corpus",
        "path": str(corpus),
        "task": "language_model",
        "context_length": 16,
        "text": {"vectorizer": "byte"},
    }


def family_config(name: str, root) -> dict:
    model, data = FAMILIES[name]
    if data == "text":
        data = write_texts(root)
    elif data == "corpus":
        data = write_corpus(root)
    return {
        "run": {"name": name, "seed": 0, "out_dir": str(root / "runs")},
        "data": data,
        "model": model,
        "optim": {"name": "adamw", "lr": 0.01},
        "train": {"max_steps": 2, "batch_size": 32, "precision": "32", "num_threads": 1},
        "log": {"progress": False, "tensorboard": False, "report": False},
    }


@pytest.fixture
def user_run(tmp_path):
    """`user_run(module)`: one step of digits with a user module (no registry model)."""
    import scaletrain

    def train(module):
        cfg = {
            "run": {"name": "user", "seed": 0, "out_dir": str(tmp_path / "runs")},
            "data": DIGITS,
            "optim": {"name": "adamw", "lr": 0.01},
            "train": {"max_steps": 1, "batch_size": 32, "precision": "32"},
            "log": {"progress": False, "tensorboard": False, "report": False},
        }
        return scaletrain.train(cfg, model=module).wait()

    return train


@pytest.fixture(scope="session")
def family_run(tmp_path_factory):
    """`family_run(name)`: the Run of that family's tiny training (trained on first use)."""
    import scaletrain

    runs: dict = {}

    def get(name: str):
        if name not in runs:
            root = tmp_path_factory.mktemp(name)
            runs[name] = scaletrain.train(family_config(name, root)).wait()
        return runs[name]

    return get
