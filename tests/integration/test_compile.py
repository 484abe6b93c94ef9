"""`train.compile: true`: regional compilation that compiles each block once per grad mode.

Correctness only (no speed asserts): the run finishes, `compile_s` is reported, the number of
Dynamo graphs is what regional compilation promises (no recompile for the partial last batch,
the eval batch sizes or later epochs), the result is close to eager, and a checkpoint saved
under compile loads into an eager model.
"""

import json
import os
import shutil

import pytest
import torch
import torch._dynamo
from torch._dynamo.utils import counters

import scaletrain

pytestmark = pytest.mark.skipif(
    not any(shutil.which(name) for name in ("g++", "c++", "clang++")),
    reason="torch.compile (inductor) needs a C++ compiler to build CPU kernels; none on PATH",
)

# one ConvBlock and one MLPBlock: two compiled regions
MODEL = {"name": "cnn", "channels": [8], "head": [16], "dropout": 0.0}
EPOCHS = 3  # 1,257 train samples / 64: 19 full batches and a partial one of 41 per epoch


def _cfg(tmp_path, name: str, compile_: bool) -> dict:
    return {
        "run": {"name": name, "seed": 0, "out_dir": str(tmp_path)},
        "data": {"source": "builtin", "name": "digits"},
        "model": MODEL,
        "optim": {"name": "adamw", "lr": 3e-3},
        "train": {
            "max_epochs": EPOCHS,
            "batch_size": 64,
            "precision": "32",
            "device": "cpu",
            "compile": compile_,
        },
        "log": {"progress": False, "tensorboard": False, "report": False},
    }


class GraphCounter:
    """Dynamo's unique graphs after each epoch (evaluation of that epoch included)."""

    def __init__(self):
        self.per_epoch: list[int] = []

    def on_epoch_end(self, state) -> None:
        self.per_epoch.append(counters["stats"]["unique_graphs"])


@pytest.fixture
def fresh_dynamo():
    torch._dynamo.reset()
    counters.clear()
    before = set(os.environ)
    yield
    torch._dynamo.reset()
    for name in set(os.environ) - before:  # inductor's own, set once it has compiled
        if name.startswith("_TORCHINDUCTOR"):
            del os.environ[name]


def test_compiled_run_compiles_each_block_once_per_grad_mode_and_matches_eager(
    tmp_path, fresh_dynamo
):
    graphs = GraphCounter()
    compiled = scaletrain.train(_cfg(tmp_path, "compiled", True), callbacks=[graphs])
    assert compiled.status == "finished"
    summary = json.loads((compiled.run_dir / "summary.json").read_text())
    assert summary["compile_s"] is not None and summary["compile_s"] > 0

    # 2 regions x (training graph + evaluation graph under no_grad) = 4 graphs, all made in
    # the first epoch (whose 41-sample last batch and 180-sample val pass reuse them); the
    # later epochs and the final test pass (256 + 104 samples) compile nothing more
    # (on_epoch_end fires after each epoch's validation, the last epoch's included)
    assert graphs.per_epoch == [4] * EPOCHS
    assert counters["stats"]["unique_graphs"] == 4
    assert not counters["graph_break"], dict(counters["graph_break"])
    # compiled in place: the same parameter names as eager, no `_orig_mod.` prefixes
    names = list(compiled.model.state_dict())
    assert names and not any("_orig_mod" in name for name in names)

    eager = scaletrain.train(_cfg(tmp_path, "eager", False))
    # Not bitwise: inductor fuses BatchNorm, ReLU and pooling into its own C++ kernels whose
    # reductions sum in another order than ATen's, so each step differs by fp32 rounding and
    # AdamW carries that on. Measured on this run: val loss 2.4e-7 apart, weights at most
    # 1.8e-7 apart; the tolerances leave a ~50x margin and still catch a wrong graph.
    assert compiled.metrics["val"]["loss"] == pytest.approx(eager.metrics["val"]["loss"], rel=1e-5)
    assert compiled.metrics["test"]["accuracy"] == pytest.approx(
        eager.metrics["test"]["accuracy"], abs=0.01
    )
    eager_state = eager.model.state_dict()
    for name, value in compiled.model.state_dict().items():
        torch.testing.assert_close(value, eager_state[name], rtol=1e-4, atol=1e-5, msg=name)

    # a checkpoint saved under compile loads into a model that was never compiled (run.model
    # holds the best checkpoint's weights: the run reloads them for its final evaluation)
    loaded = scaletrain.load_run(compiled.run_dir, checkpoint="best").model
    assert not any("forward" in vars(module) for module in loaded.modules())  # not compiled
    assert list(loaded.state_dict()) == names
    for name, value in loaded.state_dict().items():
        assert torch.equal(value, compiled.model.state_dict()[name]), name
