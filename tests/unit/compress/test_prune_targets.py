"""Unstructured pruning reaches every weight family: embeddings, recurrent matrices and a
transformer's projections, each shared (tied) weight counted once; biases and norms stay
dense; the zeros asked for are exactly the zeros made."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from scaletrain.compress.prune import (
    parse_targets,
    prunable_parameters,
    prune_unstructured,
    sparsity_of,
)
from scaletrain.config import GPTConfig, TextCNNConfig
from scaletrain.config.models import RNNConfig
from scaletrain.errors import UserError
from scaletrain.models.gpt import GPT
from scaletrain.models.rnn import RNN
from scaletrain.models.textcnn import TextCNN


def _textcnn() -> TextCNN:
    torch.manual_seed(0)
    cfg = TextCNNConfig(embed_dim=8, num_filters=6, kernel_sizes=[1, 2, 3], hidden=5)
    return TextCNN(cfg, vocab_size=40, num_outputs=3)


def _rnn(cell: str = "lstm") -> RNN:
    torch.manual_seed(0)
    cfg = RNNConfig(cell=cell, embed_dim=8, hidden=6, layers=2, bidirectional=True)
    return RNN(cfg, vocab_size=30, num_outputs=3, language_model=False)


def _gpt(task: str = "language_model") -> GPT:
    torch.manual_seed(0)
    cfg = GPTConfig(n_layer=2, n_head=2, d_model=16, tie_weights=True)
    return GPT(cfg, vocab_size=50, num_outputs=50, context=12, task=task)


def _dense(model: nn.Module, pruned: dict) -> dict[str, torch.Tensor]:
    """Every parameter pruning must not touch, by name (biases, norms)."""
    ids = {id(param) for param in pruned.values()}
    return {
        name: param.detach().clone()
        for name, param in model.named_parameters()
        if id(param) not in ids
    }


@pytest.mark.parametrize("build", [_textcnn, _rnn, lambda: _rnn("gru"), _gpt])
@pytest.mark.parametrize("fraction", [0.5, 0.8])
def test_global_pruning_zeroes_exactly_the_asked_share_of_every_family(build, fraction):
    model = build()
    params = prunable_parameters(model)
    dense_before = _dense(model, params)
    total = sum(param.numel() for param in params.values())
    zeros_before = sum(int((param == 0).sum()) for param in params.values())
    masks = prune_unstructured(model, fraction, scope="global")
    zeros = sum(int((param == 0).sum()) for param in params.values())
    assert zeros == round(fraction * total) and zeros > zeros_before
    assert sum(int((~mask).sum()) for mask in masks.values()) == zeros
    assert sparsity_of(model) == zeros / total
    for name, value in _dense(model, params).items():  # biases and norms untouched
        assert torch.equal(value, dense_before[name]), name


def test_each_family_is_reached_and_the_embedding_share_is_counted():
    names = set(prunable_parameters(_textcnn()))
    assert names == {
        "embedding.weight",
        "blocks.0.conv.weight",
        "blocks.1.conv.weight",
        "blocks.2.conv.weight",
        "hidden.0.weight",
        "output.weight",
    }
    rnn = set(prunable_parameters(_rnn()))
    recurrent = {
        f"recurrent.rnn.weight_{kind}_l{layer}{suffix}"
        for kind in ("ih", "hh")
        for layer in (0, 1)
        for suffix in ("", "_reverse")
    }
    assert rnn == {"embedding.weight", "head.weight", *recurrent}
    assert set(prunable_parameters(_rnn(), ["linear"])) == {"head.weight"}
    model = _textcnn()
    prune_unstructured(model, 0.5, scope="global", targets=("linear", "conv"))
    assert int((model.embedding.weight[1:] == 0).sum()) == 0  # embeddings left alone


def test_a_tied_embedding_is_pruned_once_and_stays_tied():
    model = _gpt()
    assert model.head.weight is model.tok_emb.weight
    params = prunable_parameters(model)
    assert "tok_emb.weight" in params and "head.weight" not in params
    projections = {
        f"blocks.{layer}.{name}.weight"
        for layer in (0, 1)
        for name in ("attn.q_proj", "attn.k_proj", "attn.v_proj", "attn.out_proj")
        + ("mlp.w_in", "mlp.w_out")
    }
    assert projections <= set(params)
    unique_total = sum(param.numel() for param in params.values())
    prune_unstructured(model, 0.5, scope="global")
    assert model.head.weight is model.tok_emb.weight
    zeros = sum(int((param == 0).sum()) for param in params.values())
    assert zeros == round(0.5 * unique_total)  # 50 % of the unique weights, not of 2x the table


def test_global_ranks_each_embedding_table_on_its_own():
    """Embeddings (here N(0, 1), as torch initializes them) and layer weights (~0.1) differ
    in scale: ranked together, 50 % would remove every layer weight. Each table loses its
    own share; the layers share the rest of the exact total."""
    model = _textcnn()
    params = prunable_parameters(model)
    table = model.embedding.weight
    total = sum(param.numel() for param in params.values())
    prune_unstructured(model, 0.5, scope="global")
    assert int((table == 0).sum()) == round(0.5 * table.numel())
    layers = [param for name, param in params.items() if name != "embedding.weight"]
    for param in layers:
        assert 0 < int((param == 0).sum()) < param.numel()
    assert sum(int((param == 0).sum()) for param in params.values()) == round(0.5 * total)


def test_layer_scope_prunes_each_tensor_of_each_family_by_the_fraction():
    model = _rnn()
    prune_unstructured(model, 0.25, scope="layer")
    for name, param in prunable_parameters(model).items():
        assert int((param == 0).sum()) == round(0.25 * param.numel()), name


def test_a_pruned_lstm_computes_with_its_pruned_weights():
    """The in-place zeros reach the LSTM's flattened weights: its outputs equal a fresh model
    loaded with the pruned state dict, and differ from the unpruned model's."""
    model = _rnn().eval()
    tokens = torch.randint(1, 30, (4, 7), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        dense = model(tokens)
        prune_unstructured(model, 0.6, scope="global", targets=("recurrent",))
        pruned = model(tokens)
    fresh = _rnn().eval()
    fresh.load_state_dict(model.state_dict())
    with torch.no_grad():
        assert torch.equal(fresh(tokens), pruned)
    assert not torch.allclose(dense, pruned)


def test_unknown_targets_are_one_line_naming_the_flag():
    assert parse_targets("embedding,recurrent") == ("embedding", "recurrent")
    with pytest.raises(UserError, match=r"^--targets: expected .* got 'linear,attention'$"):
        parse_targets("linear,attention")


def test_a_tied_state_is_stored_once_and_a_missing_untied_name_is_still_refused(tmp_path):
    from safetensors.torch import load_file, save_file

    from scaletrain.trained.quantized import stored_once, with_tied_aliases

    model = _gpt()
    save_file(stored_once(model.state_dict()), str(tmp_path / "w.safetensors"))
    tensors = load_file(str(tmp_path / "w.safetensors"))
    assert "head.weight" not in tensors and "tok_emb.weight" in tensors
    fresh = _gpt()
    with torch.no_grad():
        for param in fresh.parameters():
            param.zero_()  # so the load, not the shared seed, gives the weights
    fresh.load_state_dict(with_tied_aliases(fresh, tensors))
    assert fresh.head.weight is fresh.tok_emb.weight
    assert torch.equal(fresh.tok_emb.weight, model.tok_emb.weight)
    dropped = next(name for name in sorted(tensors) if name != "tok_emb.weight")
    del tensors[dropped]
    with pytest.raises(RuntimeError, match=f"Missing key.*{dropped}"):
        fresh.load_state_dict(with_tied_aliases(fresh, tensors))
