"""Stop words and word n-grams: scikit-learn's list and CountVectorizer as the reference, and
the `words` vectorizer (a count vectorizer read as a token-id sequence for a TextCNN)."""

from __future__ import annotations

import json
from collections import Counter

import numpy as np
import pytest

from scaletrain.config import TextConfig, load_config
from scaletrain.data.raw import RawTexts
from scaletrain.data.transforms.stop_words import ENGLISH_STOP_WORDS
from scaletrain.data.transforms.text import TextEncoder, word_ngrams
from scaletrain.errors import ConfigError

DOCUMENTS = [
    "The delivery was late and the box was damaged",
    "Great phone, the battery lasts all day",
    "Battery died after a week; the screen is great though",
    "I would not buy this phone again",
    "The screen of this phone is bright and the battery is great",
]


def raw(texts) -> RawTexts:
    return RawTexts(np.array(texts, dtype=object))


def test_english_list_is_scikit_learns():
    from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS as reference

    assert set(ENGLISH_STOP_WORDS) == set(reference) and len(ENGLISH_STOP_WORDS) == 318


def test_stop_words_go_before_bigrams_are_formed():
    grams = word_ngrams("the box was not damaged", 2, ENGLISH_STOP_WORDS)
    # "the", "was", "not" are stop words; the bigram spans where they were, as in scikit-learn
    assert grams == ["box", "damaged", "box damaged"]
    assert word_ngrams("the box", 1) == ["the", "box"]  # no list: nothing removed


@pytest.mark.parametrize("vectorizer", ["ngrams", "tfidf"])
def test_vectors_with_stop_words_and_bigrams_match_scikit_learn(vectorizer):
    from sklearn.feature_extraction.text import CountVectorizer, TfidfVectorizer

    cfg = TextConfig(vectorizer=vectorizer, lowercase=True, stop_words="english", ngram_max=2)
    encoder = TextEncoder.fit(cfg, DOCUMENTS)
    reference_class = CountVectorizer if vectorizer == "ngrams" else TfidfVectorizer
    reference = reference_class(stop_words="english", ngram_range=(1, 2))
    expected = reference.fit_transform(DOCUMENTS).toarray()
    assert sorted(encoder.vocabulary) == list(reference.get_feature_names_out())
    np.testing.assert_allclose(encoder.encode(raw(DOCUMENTS)), expected, rtol=1e-6, atol=1e-7)


def test_words_sequence_holds_exactly_the_count_vector():
    options = {"lowercase": True, "stop_words": "english", "ngram_max": 2, "max_length": 40}
    words = TextEncoder.fit(TextConfig(vectorizer="words", **options), DOCUMENTS)
    counts = TextEncoder.fit(TextConfig(vectorizer="ngrams", **options), DOCUMENTS)
    assert words.vocabulary == counts.vocabulary
    assert words.vocab_size == len(words.vocabulary) + 1  # id 0 pads
    assert not set(words.vocabulary) & ENGLISH_STOP_WORDS
    assert "battery lasts" in words.vocabulary and "phone" in words.vocabulary
    sequences = words.encode(raw(DOCUMENTS))
    vectors = counts.encode(raw(DOCUMENTS))
    assert sequences.shape == (len(DOCUMENTS), 40) and sequences.dtype == np.int64
    for sequence, vector in zip(sequences, vectors, strict=True):
        ids = Counter(int(i) - 1 for i in sequence if i > 0)
        assert ids == {column: count for column, count in enumerate(vector) if count}
    # the analyzer's order: words in text order, then bigrams in text order
    names = sorted(words.vocabulary)
    first = [names[i - 1] for i in sequences[1] if i > 0]
    assert first == ["great", "phone", "battery", "lasts", "day"] + [
        "great phone",
        "phone battery",
        "battery lasts",
        "lasts day",
    ]


def test_words_drop_unknown_ngrams_cut_and_reload():
    cfg = TextConfig(vectorizer="words", lowercase=True, stop_words="english", max_length=3)
    encoder = TextEncoder.fit(cfg, DOCUMENTS)
    restored = TextEncoder.from_state_dict(json.loads(json.dumps(encoder.state_dict())))
    texts = raw(["zebra phone zebra", "battery screen phone great delivery", "the and of"])
    encoded = encoder.encode(texts)
    np.testing.assert_array_equal(encoded, restored.encode(texts))
    phone = encoder.vocabulary["phone"] + 1
    assert encoded[0].tolist() == [phone, 0, 0]  # unseen word dropped, then padding
    assert (encoded[1] > 0).all()  # five known words cut to three
    assert encoded[2].tolist() == [0, 0, 0]  # stop words only


def test_stop_words_refused_for_subword_tokenizers():
    with pytest.raises(ConfigError, match=r"^data\.text\.stop_words: .*vectorizer=bpe"):
        load_config({"data": {"source": "text_csv", "text": {"stop_words": "english"}}})
