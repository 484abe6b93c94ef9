"""Text: normalization, n-gram/TF-IDF vectors against scikit-learn, char/byte/BPE tokenizers
(round trip, saved and reloaded), text_csv/text_jsonl sources, TextCNN end to end."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch

from scaletrain.config import DataConfig, TextConfig
from scaletrain.data import Preprocessor, build_data, read_inputs_file
from scaletrain.data.raw import RawTexts
from scaletrain.data.transforms.text import TextEncoder, normalize_text
from scaletrain.errors import DataError

DOCUMENTS = [
    "The café served crème brûlée and great coffee",
    "the coffee was great, the service slow",
    "Slow service; cold coffee. Never again!",
    "Great crème brûlée, great café",
    "naïve reviewers love the café",
    "the the the coffee coffee",
]


def reviews(num_rows: int = 240, *, seed: int = 0) -> list[tuple[str, str]]:
    """Short reviews whose words give the label away (a learnable task)."""
    good = ["great movie", "loved it", "wonderful acting", "best film ever", "so enjoyable"]
    bad = ["terrible movie", "hated it", "awful acting", "worst film ever", "so boring"]
    generator = np.random.default_rng(seed)
    rows = []
    for index in range(num_rows):
        positive = index % 2 == 0
        words = generator.choice(good if positive else bad, size=3)
        rows.append((" and ".join(words), "pos" if positive else "neg"))
    return rows


def write_reviews_csv(path, rows) -> None:
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["text", "label"])
        writer.writerows(rows)


def test_normalization():
    assert normalize_text("Crème Brûlée", lowercase=True, strip_accents=True) == "creme brulee"
    assert normalize_text("Crème", lowercase=False, strip_accents=False) == "Crème"
    assert normalize_text("NAÏVE", lowercase=False, strip_accents=True) == "NAIVE"


@pytest.mark.parametrize("vectorizer", ["ngrams", "tfidf"])
@pytest.mark.parametrize("ngram_max", [1, 2])
def test_vectors_match_scikit_learn(vectorizer, ngram_max):
    from sklearn.feature_extraction.text import CountVectorizer, TfidfVectorizer

    cfg = TextConfig(
        vectorizer=vectorizer,
        lowercase=True,
        strip_accents=True,
        ngram_max=ngram_max,
        min_frequency=2,
    )
    encoder = TextEncoder.fit(cfg, DOCUMENTS)
    ours = encoder.encode(RawTexts(np.array(DOCUMENTS, dtype=object)))
    reference_class = CountVectorizer if vectorizer == "ngrams" else TfidfVectorizer
    reference = reference_class(
        lowercase=True, strip_accents="unicode", ngram_range=(1, ngram_max), min_df=2
    )
    expected = reference.fit_transform(DOCUMENTS).toarray()
    assert sorted(encoder.vocabulary) == list(reference.get_feature_names_out())
    np.testing.assert_allclose(ours, expected, rtol=1e-6, atol=1e-7)


def test_vocabulary_cap_keeps_the_most_frequent():
    encoder = TextEncoder.fit(TextConfig(vectorizer="ngrams", vocab_size=2), DOCUMENTS)
    assert sorted(encoder.vocabulary) == ["coffee", "the"]


@pytest.mark.parametrize("vectorizer", ["bpe", "char", "byte"])
def test_tokenizers_round_trip_and_reload(vectorizer):
    cfg = TextConfig(vectorizer=vectorizer, vocab_size=300, max_length=64)
    encoder = TextEncoder.fit(cfg, DOCUMENTS * 5)
    state = json.loads(json.dumps(encoder.state_dict()))
    restored = TextEncoder.from_state_dict(state)
    unseen = "Grëat coffee — 新しい ☕ café!"
    for text in [*DOCUMENTS, unseen]:
        ids = encoder.token_ids([text])[0]
        assert np.array_equal(ids, restored.token_ids([text])[0])
        assert ids.min() >= 1 and ids.max() < encoder.vocab_size  # 0 is padding
        if vectorizer != "char":  # char maps unseen characters to one unknown id
            assert encoder.tokenizer.decode(ids) == text
    if vectorizer == "bpe":
        assert state["tokenizer"]["kind"] == "bpe" and '"BPE"' in state["tokenizer"]["json"]
        assert encoder.vocab_size == 300
        # merges make BPE ids shorter than bytes for text like the training data
        assert len(encoder.token_ids([DOCUMENTS[0]])[0]) < len(DOCUMENTS[0].encode())
    padded = encoder.encode(RawTexts(np.array(["a", DOCUMENTS[0] * 10], dtype=object)))
    assert padded.shape == (2, 64) and padded.dtype == np.int64
    assert (padded[0, 1:] == 0).all() and (padded[1] > 0).all()  # padded, then cut


def test_bpe_training_is_deterministic():
    cfg = TextConfig(vectorizer="bpe", vocab_size=300)
    first = TextEncoder.fit(cfg, DOCUMENTS * 5).state_dict()
    second = TextEncoder.fit(cfg, DOCUMENTS * 5).state_dict()
    assert first == second


def test_tokenizer_is_fit_on_train_only(tmp_path):
    rows = reviews()
    rows[0] = ("zebra " * 5, "pos")  # the only row with a 'z'
    write_reviews_csv(tmp_path / "r.csv", rows)
    cfg = DataConfig(
        source="text_csv", path=str(tmp_path / "r.csv"), text=TextConfig(vectorizer="char")
    )
    seen = set()
    for seed in range(12):
        bundle = build_data(cfg, seed=seed)
        in_train = "z" in bundle.preprocessor.encoder.tokenizer.characters
        unknown_in = {
            name: bool((getattr(bundle, name).inputs == 1).any())
            for name in ("train", "val", "test")
        }
        assert not unknown_in["train"]  # every train character is in the vocabulary
        # 'z' is known exactly when its row is a train row; else it is unknown (id 1) there
        assert in_train != (unknown_in["val"] or unknown_in["test"])
        seen.add(in_train)
    assert seen == {True, False}


def test_text_jsonl_source_and_errors(tmp_path):
    rows = reviews(60)
    lines = [
        json.dumps({"body": text, "stars": 5 if label == "pos" else 1}) for text, label in rows
    ]
    (tmp_path / "r.jsonl").write_text("\n".join(lines) + "\n\n")
    cfg = DataConfig(
        source="text_jsonl",
        path=str(tmp_path / "r.jsonl"),
        label="stars",
        text=TextConfig(column="body", vectorizer="byte", max_length=40),
    )
    bundle = build_data(cfg, seed=0)
    assert bundle.spec.class_names == ["1", "5"] and bundle.spec.input_shape == (40,)
    assert bundle.spec.vocab_size == 257
    (tmp_path / "bad.jsonl").write_text(lines[0] + "\n{not json\n")
    with pytest.raises(DataError, match=r"bad.jsonl:2: not valid JSON"):
        build_data(cfg.model_copy(update={"path": str(tmp_path / "bad.jsonl")}), seed=0)
    (tmp_path / "nokey.jsonl").write_text(lines[0] + "\n" + json.dumps({"stars": 1}) + "\n")
    with pytest.raises(DataError, match=r"nokey.jsonl:2: no value for key 'body'"):
        build_data(cfg.model_copy(update={"path": str(tmp_path / "nokey.jsonl")}), seed=0)


def test_predict_reads_text_with_the_saved_tokenizer(tmp_path):
    write_reviews_csv(tmp_path / "r.csv", reviews())
    cfg = DataConfig(
        source="text_csv",
        path=str(tmp_path / "r.csv"),
        text=TextConfig(vectorizer="bpe", vocab_size=280, max_length=24),
    )
    bundle = build_data(cfg, seed=0)
    restored = Preprocessor.from_state_dict(
        json.loads(json.dumps(bundle.preprocessor.state_dict()))
    )
    (tmp_path / "new.txt").write_text("loved it and so enjoyable\nworst film ever\n")
    raw = read_inputs_file(tmp_path / "new.txt", spec=bundle.spec, feature_columns=None)
    encoded = restored.transform(raw)
    expected = bundle.preprocessor.encoder.encode(
        RawTexts(np.array(["loved it and so enjoyable", "worst film ever"], dtype=object))
    )
    assert encoded.dtype == torch.int64 and torch.equal(encoded, torch.from_numpy(expected))


def test_textcnn_trains_on_text_csv_end_to_end(tmp_path):
    from scaletrain import api

    write_reviews_csv(tmp_path / "r.csv", reviews(400))
    config = {
        "run": {"name": "text", "out_dir": str(tmp_path / "runs")},
        "data": {
            "source": "text_csv",
            "path": str(tmp_path / "r.csv"),
            "text": {"vectorizer": "bpe", "vocab_size": 300, "max_length": 32},
        },
        "model": {"name": "textcnn", "embed_dim": 16, "num_filters": 16, "kernel_sizes": [2, 3]},
        "optim": {"lr": 0.01},
        "train": {"max_epochs": 3, "batch_size": 32, "precision": "32", "device": "cpu"},
        "log": {"progress": False, "tensorboard": False, "report": False},
    }
    run = api.train(config)
    assert run.metrics["test"]["accuracy"] > 0.95
    saved = json.loads((run.run_dir / "preprocess.json").read_text())
    assert saved["encoder"]["tokenizer"]["kind"] == "bpe"
    (tmp_path / "new.csv").write_text("text\nloved it and so enjoyable\nhated it and so boring\n")
    predicted = api.predict(run.run_dir, tmp_path / "new.csv")
    assert [predicted["class_names"][i] for i in predicted["pred"]] == ["pos", "neg"]
