"""`scaletrain compress` on tiny text runs (a textcnn and a bidirectional LSTM, a few steps
each, trained once for the module): pruning reaches embeddings and recurrent weights, the
zeros survive fine-tuning and reloading, gradual rounds fine-tune at the same lr, and a
structured textcnn reloads as a normal smaller textcnn."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import scaletrain
from scaletrain.compress import CompressOptions, compress
from scaletrain.compress.prune import prunable_parameters, sparsity_of

WORDS = ["alpha", "beta", "gamma", "delta", "pi", "rho", "sigma", "tau", "omega", "zeta"]
QUIET = {"progress": False, "tensorboard": False, "report": False}
FINETUNE = ["train.precision=bf16-mixed", "log.report=false", "log.progress=false"]
MODELS = {
    "textcnn": {"name": "textcnn", "embed_dim": 8, "num_filters": 8, "kernel_sizes": [1, 2]},
    "lstm": {"name": "rnn", "embed_dim": 8, "hidden": 8, "bidirectional": True, "pool": "max"},
}


@pytest.fixture(scope="module")
def text_runs(tmp_path_factory):
    """`text_runs[name]`: the run directory of that model's tiny run (trained on first use)."""
    root = tmp_path_factory.mktemp("text")
    generator = np.random.default_rng(0)
    rows = [
        f"{' '.join(generator.choice(WORDS, 2 + index % 5))},{'xyz'[index % 3]}"
        for index in range(90)
    ]
    (root / "texts.csv").write_text("text,label\n" + "\n".join(rows) + "\n")
    data = {"source": "text_csv", "path": str(root / "texts.csv")}
    data["text"] = {"vectorizer": "byte", "max_length": 24}

    class Runs(dict):
        def __missing__(self, name):
            cfg = {
                "run": {"name": name, "seed": 0, "out_dir": str(root / "runs")},
                "data": data,
                "model": MODELS[name],
                "optim": {"name": "adamw", "lr": 0.01, "weight_decay": 0.1},
                "train": {"max_steps": 3, "batch_size": 32, "precision": "bf16-mixed"},
                "log": QUIET,
            }
            self[name] = scaletrain.train(cfg).wait().run_dir
            return self[name]

    return Runs()


def _tokens() -> torch.Tensor:
    return torch.randint(1, 40, (6, 24), generator=torch.Generator().manual_seed(0))


def _exact(model, fraction: float) -> float:
    total = sum(param.numel() for param in prunable_parameters(model).values())
    return round(fraction * total) / total


@pytest.mark.slow
def test_gradual_textcnn_keeps_embedding_zeros_and_the_finetune_lr(text_runs, tmp_path):
    options = CompressOptions(
        prune=0.5,
        schedule="gradual",
        steps=2,
        finetune_epochs=1,
        overrides=FINETUNE,
        latency_repeats=1,
    )
    result = compress(text_runs["textcnn"], options, out=tmp_path / "g")
    assert result.sparsity == _exact(result.model, 0.5)
    reloaded = scaletrain.load_run(tmp_path / "g", checkpoint="last")
    assert sparsity_of(reloaded.model) == result.sparsity  # zeros held through fine-tuning
    assert int((reloaded.model.embedding.weight == 0).sum()) > 40  # embeddings reached
    # each round fine-tunes at a tenth of the source's lr, not a tenth of the last round's
    assert reloaded.config.optim.lr == pytest.approx(0.001)
    with torch.no_grad():
        torch.testing.assert_close(
            reloaded.model.float().cpu().eval()(_tokens()), result.model.eval()(_tokens())
        )
    exported = scaletrain.load_exported(
        scaletrain.export(tmp_path / "g", out=tmp_path / "g.safetensors")
    )
    assert sparsity_of(exported.model) == result.sparsity  # the zeros are in the export too


@pytest.mark.slow
def test_lstm_weights_are_pruned_and_stay_zero_through_finetuning(text_runs, tmp_path):
    options = CompressOptions(prune=0.5, finetune_epochs=1, overrides=FINETUNE, latency_repeats=1)
    result = compress(text_runs["lstm"], options, out=tmp_path / "r")
    reloaded = scaletrain.load_run(tmp_path / "r", checkpoint="last").model.cpu()
    assert sparsity_of(reloaded) == result.sparsity == _exact(reloaded, 0.5)
    for name, param in prunable_parameters(reloaded, ["recurrent"]).items():
        assert 0 < int((param == 0).sum()) < param.numel(), name


@pytest.mark.slow
def test_structured_textcnn_reloads_as_a_smaller_textcnn(text_runs, tmp_path):
    options = CompressOptions(prune=0.5, structured=True, latency_repeats=1)
    result = compress(text_runs["textcnn"], options, out=tmp_path / "s")
    assert result.sparsity == 0.5 and result.after.total < result.before.total
    reloaded = scaletrain.load_run(tmp_path / "s")
    assert reloaded.config.model.num_filters == 4
    with torch.no_grad():
        torch.testing.assert_close(
            reloaded.model.float().cpu().eval()(_tokens()), result.model.eval()(_tokens())
        )


@pytest.mark.slow
def test_structured_lstm_reloads_and_exports_as_a_smaller_rnn(text_runs, tmp_path):
    options = CompressOptions(prune=0.5, structured=True, latency_repeats=1)
    result = compress(text_runs["lstm"], options, out=tmp_path / "s")
    assert result.sparsity == 0.5 and result.after.total < result.before.total
    reloaded = scaletrain.load_run(tmp_path / "s")
    assert reloaded.config.model.hidden == 4 and reloaded.config.model.bidirectional
    exported = scaletrain.load_exported(
        scaletrain.export(tmp_path / "s", out=tmp_path / "s.safetensors")
    )
    with torch.no_grad():
        expected = result.model.eval()(_tokens())
        for model in (reloaded.model, exported.model):
            torch.testing.assert_close(model.float().cpu().eval()(_tokens()), expected)
