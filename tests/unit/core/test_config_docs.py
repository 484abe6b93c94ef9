from pathlib import Path

from scaletrain.config_docs import render_config_reference

DOC = Path(__file__).parents[3] / "docs" / "config.md"


def test_config_reference_is_current():
    assert DOC.read_text() == render_config_reference(), (
        "docs/config.md is stale: run `.venv/bin/python -m scaletrain.config_docs docs/config.md`"
    )


def test_reference_lists_every_leaf_key():
    text = render_config_reference()
    for key in ("optim.lr", "optim.schedule.min_lr_ratio", "train.precision", "model.init.name"):
        assert f"`{key}`" in text
