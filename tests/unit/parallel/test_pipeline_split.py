"""Cutting a GPT into pipeline stages: even layer split, loop order, full-model names, and
the stages chained equal the model (one process, no communication)."""

from __future__ import annotations

import pytest
import torch

from scaletrain.config import load_config
from scaletrain.errors import UserError
from scaletrain.models import build_model
from scaletrain.parallel.pipeline import micro_batch_pieces
from scaletrain.parallel.pipeline_split import StageModule, check_layout, layer_split, stage_ids

VOCAB, CONTEXT = 50, 12


def _gpt(*overrides: str):
    cfg = load_config(
        {},
        [
            "model.name=gpt",
            "model.n_layer=5",
            "model.d_model=32",
            "model.n_head=4",
            "model.tie_weights=false",
            *overrides,
        ],
    )
    torch.manual_seed(0)
    return build_model(
        cfg.model,
        input_shape=(CONTEXT,),
        num_outputs=VOCAB,
        vocab_size=VOCAB,
        task="language_model",
    )


@pytest.mark.parametrize(
    ("layers", "stages", "sizes"),
    [(4, 2, [2, 2]), (5, 2, [3, 2]), (7, 4, [2, 2, 2, 1]), (4, 4, [1, 1, 1, 1])],
)
def test_layer_split_is_even_and_contiguous(layers, stages, sizes):
    split = layer_split(layers, stages)
    assert [len(part) for part in split] == sizes
    assert [layer for part in split for layer in part] == list(range(layers))


def test_stage_ids_loop_order():
    assert stage_ids(0, 2, 1) == [0] and stage_ids(1, 2, 1) == [1]
    assert stage_ids(0, 2, 2) == [0, 2] and stage_ids(1, 2, 2) == [1, 3]
    assert stage_ids(1, 4, 3) == [1, 5, 9]


@pytest.mark.parametrize(
    ("size", "wanted", "pieces"),
    [(16, 4, 4), (6, 4, 3), (7, 4, 1), (2, 4, 2), (10, 5, 2), (15, 5, 3)],
)
def test_pieces_is_the_largest_divisor_interleaving_accepts(size, wanted, pieces):
    # 5 pieces on 2 ranks: 2 rounds, 5 % 2 != 0 (torch refuses); 3 pieces: 1 round
    assert micro_batch_pieces(size, wanted, ranks=2) == pieces


@pytest.mark.parametrize("positions", ["rope", "learned"])
def test_stages_chained_equal_the_model_and_keep_its_names(positions):
    model = _gpt(f"model.positions={positions}").eval()
    tokens = torch.randint(0, VOCAB, (3, CONTEXT))
    split = layer_split(len(model.blocks), 3)
    stages = [
        StageModule(model, part, first=index == 0, last=index == 2)
        for index, part in enumerate(split)
    ]
    hidden = tokens
    with torch.no_grad():
        for stage in stages:
            hidden = stage(hidden)
        torch.testing.assert_close(hidden, model(tokens), rtol=0, atol=0)
    names = set(model.state_dict())
    stage_names = [set(stage.state_dict()) for stage in stages]
    assert set().union(*stage_names) == names  # nothing lost, nothing renamed
    assert sum(len(each) for each in stage_names) == len(names)  # nothing held twice
    assert "tok_emb.weight" in stage_names[0] and "head.weight" in stage_names[2]
    assert "blocks.3.attn.q_proj.weight" in stage_names[1]


def test_a_tied_head_is_refused():
    with pytest.raises(UserError, match="untie them"):
        check_layout(_gpt("model.tie_weights=true"))


def test_a_model_without_the_gpt_layout_is_refused():
    with pytest.raises(UserError, match="lacks the GPT layout"):
        check_layout(torch.nn.Sequential(torch.nn.Linear(2, 2)))
