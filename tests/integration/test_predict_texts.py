"""`Run.predict` on a text run takes a list of strings through the run's fitted tokenizer."""

import numpy as np
import pytest

import scaletrain
from scaletrain.errors import UserError


@pytest.mark.slow  # trains a TextCNN end to end
def test_a_text_run_predicts_and_evaluates_lists_of_strings(tmp_path):
    rng = np.random.default_rng(0)
    good = ["great film loved it", "wonderful acting", "loved the music", "a great joy"]
    bad = ["terrible film hated it", "awful acting", "hated the music", "a boring mess"]
    rows = [f"{rng.choice(good)},good" for _ in range(60)] + [
        f"{rng.choice(bad)},bad" for _ in range(60)
    ]
    (tmp_path / "texts.csv").write_text("text,label\n" + "\n".join(rows) + "\n")
    config = {
        "run": {"name": "texts", "out_dir": str(tmp_path)},
        "data": {"source": "text_csv", "path": str(tmp_path / "texts.csv")},
        "model": {"name": "textcnn"},
        "train": {"max_epochs": 4, "precision": "32"},
        "log": {"progress": False, "tensorboard": False, "report": False},
    }
    run = scaletrain.train(config)
    texts = ["loved it, a great film", "hated it, awful and boring"]
    probabilities = run.predict(texts)
    assert probabilities.shape == (2, 2)
    assert run.spec.class_names == ["bad", "good"]
    assert probabilities[0].argmax() == 1 and probabilities[1].argmax() == 0
    assert run.evaluate(texts, ["good", "bad"])["accuracy"] == 1.0
    reloaded = scaletrain.load_run(run.run_dir)
    np.testing.assert_allclose(reloaded.predict(np.array(texts)), probabilities, rtol=1e-5)
    with pytest.raises(UserError, match="list of strings"):
        run.predict(np.zeros((2, 3)))
