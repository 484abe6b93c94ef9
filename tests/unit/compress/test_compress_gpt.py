"""`scaletrain compress --structured` of a tiny gpt language model end to end: fewer MLP
hidden units in every block, fine-tuned as a normal run, then `eval` and a safetensors
export of the compressed run load it as a normal gpt with `model.mlp_hidden` set."""

from __future__ import annotations

import shutil

import pytest
import torch
import yaml

import scaletrain
from scaletrain.cli import main
from scaletrain.compress import CompressOptions, compress
from scaletrain.errors import UserError

FINETUNE = ["train.precision=bf16-mixed", "log.report=false", "log.progress=false"]


def _gpt_config(tmp_path, **parallel) -> dict:
    letters = "abcdefgh"
    rows = ["".join(letters[(start + 3 * i) % 8] for i in range(24)) for start in range(40)]
    (tmp_path / "corpus.csv").write_text("text,label\n" + ",0\n".join(rows) + ",0\n")
    return {
        "run": {"name": "gpt", "seed": 0, "out_dir": str(tmp_path)},
        "data": {
            "source": "text_csv",
            "path": str(tmp_path / "corpus.csv"),
            "text": {"vectorizer": "char"},
            "context_length": 8,
            "task": "language_model",
        },
        "model": {"name": "gpt", "n_layer": 2, "n_head": 2, "d_model": 16},  # 48 units
        "train": {"max_steps": 3, "batch_size": 32, "precision": "bf16-mixed"},
        "parallel": parallel,
        "log": {"progress": False, "tensorboard": False, "report": False},
    }


@pytest.mark.slow
def test_structured_gpt_finetunes_reloads_evaluates_and_exports(tmp_path):
    cfg = _gpt_config(tmp_path)
    source = scaletrain.train(cfg).wait()
    options = CompressOptions(
        prune=0.25, structured=True, finetune_epochs=1, overrides=FINETUNE, latency_repeats=1
    )
    result = compress(source.run_dir, options, out=tmp_path / "s")
    assert result.sparsity == 0.25  # 48 -> 36 units in each block
    assert result.after.total < result.before.total
    reloaded = scaletrain.load_run(tmp_path / "s", checkpoint="last")
    assert reloaded.config.model.mlp_hidden == 36
    assert reloaded.model.head.weight is reloaded.model.tok_emb.weight  # still tied
    assert reloaded.status == "finished" and reloaded.steps > 0  # fine-tuned, not "compressed"
    tokens = torch.randint(0, 8, (3, 8), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = result.model.eval()(tokens)
        torch.testing.assert_close(reloaded.model.float().cpu().eval()(tokens), expected)
    assert main(["eval", str(tmp_path / "s")]) == 0
    out = tmp_path / "s.safetensors"
    args = ["export", str(tmp_path / "s"), "--format", "safetensors", "--out", str(out)]
    assert main([*args, "--checkpoint", "last"]) == 0
    exported = scaletrain.load_exported(out)
    with torch.no_grad():
        torch.testing.assert_close(exported.model.float().cpu().eval()(tokens), expected)

    # as if trained under tensor parallelism (tp 2): --prune 0.69 leaves round(48 x 0.31) =
    # 15 units, which 2 ranks cannot split: refused before anything is measured or written
    shutil.copytree(source.run_dir, tmp_path / "tp")
    raw = yaml.safe_load((tmp_path / "tp" / "config.yaml").read_text())
    raw["parallel"].update(strategy="fsdp", dims={**raw["parallel"]["dims"], "tp": 2})
    (tmp_path / "tp" / "config.yaml").write_text(yaml.safe_dump(raw))
    with pytest.raises(UserError, match=r"^parallel.dims.tp: 2 does not divide model.mlp_hidd"):
        compress(tmp_path / "tp", prune=0.69, structured=True, out=tmp_path / "tp-s")
    assert not (tmp_path / "tp-s").exists()


@pytest.mark.slow
def test_a_gpt_trained_under_fsdp_is_pruned_and_finetuned(tmp_path):
    """The fine-tune runs the source's fsdp in this one process: the user-module path found
    the top-level norm (an fp32 unit already) and the tied embedding/head as blocks of their
    own, and the pruning masks met DTensor parameters; the published model is unsharded."""
    source = scaletrain.train(_gpt_config(tmp_path, strategy="fsdp")).wait()
    options = CompressOptions(prune=0.5, finetune_epochs=1, overrides=FINETUNE, latency_repeats=1)
    result = compress(source.run_dir, options, out=tmp_path / "u")
    assert result.sparsity == 0.5
    reloaded = scaletrain.load_run(tmp_path / "u", checkpoint="last")
    assert reloaded.steps > 0 and reloaded.config.parallel.strategy == "fsdp"
    assert reloaded.model.head.weight is reloaded.model.tok_emb.weight
    weights = reloaded.model.blocks[0].mlp.w_in.weight
    assert 0.3 < float((weights == 0).float().mean()) < 0.7  # the masks held through training
    structured = compress(
        source.run_dir,
        prune=0.25,
        structured=True,
        finetune_epochs=1,
        overrides=FINETUNE,
        latency_repeats=1,
        out=tmp_path / "s",
    )
    assert structured.sparsity == 0.25 and structured.after.total < structured.before.total
