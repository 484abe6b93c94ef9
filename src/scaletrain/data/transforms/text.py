"""Text -> numbers, fit on the train split: token-id sequences or n-gram count/TF-IDF vectors.

Sequences (``bpe``, ``char``, ``byte``, ``words``) are int64 (N, max_length), cut at the end and
padded with id 0, for TextCNN-like models; ``token_ids`` gives the uncut ids a language model
needs. Vectors (``ngrams``, ``tfidf``) are float32 (N, V) for MLPs and follow scikit-learn's
CountVectorizer/TfidfVectorizer (token pattern, stop words removed before n-grams are formed,
smooth idf, l2 rows): the tests compare them.

``words`` is a count vectorizer read as a sequence: the vocabulary is the ``ngrams`` one (the
same n-grams, stop words, frequency floor and cap), id = column + 1, and a text becomes the ids
of the n-grams its count vector counts, in the analyzer's order (its words in text order, then
its bigrams in text order, ...). An n-gram outside the vocabulary is dropped, as the count
vector drops it, so the multiset of a sequence's ids is exactly its count vector.
"""

from __future__ import annotations

import math
import re
import unicodedata
from collections import Counter
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from scaletrain.config import TextConfig
from scaletrain.data.raw import RawTexts
from scaletrain.data.sources.text_files import read_texts_file
from scaletrain.data.transforms.stop_words import STOP_WORD_LISTS
from scaletrain.data.transforms.tokenizer import (
    SEQUENCE_KINDS,
    build_tokenizer,
    tokenizer_from_state,
)

WORD_PATTERN = re.compile(r"(?u)\b\w\w+\b")  # scikit-learn's default token_pattern


def normalize_text(text: str, *, lowercase: bool, strip_accents: bool) -> str:
    """Optional lowercasing and accent stripping (NFKD, then drop combining marks)."""
    if strip_accents:
        text = "".join(
            c for c in unicodedata.normalize("NFKD", text) if not unicodedata.combining(c)
        )
    return text.lower() if lowercase else text


def word_ngrams(text: str, ngram_max: int, stop_words: frozenset[str] = frozenset()) -> list[str]:
    """Words (2+ word characters) less stop words, then n-grams of 2..ngram_max of the words
    left, joined by one space (scikit-learn's order: a bigram may span a removed stop word)."""
    words = [word for word in WORD_PATTERN.findall(text) if word not in stop_words]
    grams = list(words)
    for size in range(2, ngram_max + 1):
        grams += [" ".join(words[start : start + size]) for start in range(len(words) - size + 1)]
    return grams


class TextEncoder:
    """Normalization + a tokenizer or an n-gram vocabulary, all learned from train texts."""

    kind = "text"

    def __init__(self, options: dict, *, tokenizer=None, vocabulary=None, idf=None):
        self.options = options  # the TextConfig fields, as saved in preprocess.json
        self.vectorizer = options["vectorizer"]
        self.tokenizer = tokenizer  # sequences: CharTokenizer | ByteTokenizer | BpeTokenizer
        self.vocabulary = vocabulary  # words/vectors: n-gram -> column, in sorted n-gram order
        self.stop_words = STOP_WORD_LISTS[options.get("stop_words", "none")]
        self.idf = idf  # tfidf: float64 (V,)

    @classmethod
    def fit(cls, cfg: TextConfig, train: RawTexts | Iterable[str]) -> TextEncoder:
        """Learn the tokenizer or n-gram vocabulary from the train texts only."""
        options = cfg.model_dump()
        encoder = cls(options)
        # A generator: a corpus streams through the tokenizer trainer file by file.
        texts = (encoder.normalize(text) for text in _texts(train))
        if cfg.vectorizer in SEQUENCE_KINDS:
            encoder.tokenizer = build_tokenizer(cfg, texts)
        else:
            encoder._fit_vocabulary(texts, cfg)
        return encoder

    def normalize(self, text: str) -> str:
        """The configured lowercasing and accent stripping."""
        return normalize_text(
            text, lowercase=self.options["lowercase"], strip_accents=self.options["strip_accents"]
        )

    @property
    def vocab_size(self) -> int | None:
        """Token ids are < vocab_size (sequences); None for n-gram vectors."""
        if self.tokenizer is not None:
            return self.tokenizer.vocab_size
        if self.vectorizer == "words":
            return len(self.vocabulary) + 1  # id 0 pads
        return None

    def token_ids(self, texts: Iterable[str]) -> list[np.ndarray]:
        """Uncut token ids of each text (language modeling)."""
        return self.tokenizer.encode([self.normalize(text) for text in texts])

    def ngrams(self, text: str) -> list[str]:
        """The n-grams the vocabulary counts in an already normalized text."""
        return word_ngrams(text, self.options["ngram_max"], self.stop_words)

    def encode(self, raw: RawTexts) -> np.ndarray:
        """int64 (N, max_length) ids padded with 0, or float32 (N, V) count/TF-IDF rows."""
        texts = [self.normalize(text) for text in _texts(raw)]
        if self.tokenizer is not None:
            return _pad(self.tokenizer.encode(texts), length=self.options["max_length"])
        if self.vectorizer == "words":
            ids = [self._word_ids(text) for text in texts]
            return _pad(ids, length=self.options["max_length"])
        return self._vectors(texts)

    def read(self, path) -> RawTexts:
        """Texts of a predict file: .txt (one per line), .csv or .jsonl (the text column)."""
        return read_texts_file(Path(path), column=self.options["column"])

    def _fit_vocabulary(self, texts: Iterable[str], cfg: TextConfig) -> None:
        document_counts: Counter = Counter()
        total_counts: Counter = Counter()
        num_documents = 0
        for text in texts:
            num_documents += 1
            grams = Counter(self.ngrams(text))
            document_counts.update(grams.keys())
            total_counts.update(grams)
        kept = [gram for gram, count in document_counts.items() if count >= cfg.min_frequency]
        # The cap keeps the most frequent n-grams (ties: alphabetical), as scikit-learn does.
        kept = sorted(kept, key=lambda gram: (-total_counts[gram], gram))[: cfg.vocab_size]
        self.vocabulary = {gram: column for column, gram in enumerate(sorted(kept))}
        if cfg.vectorizer == "tfidf":
            self.idf = np.array(
                [
                    math.log((1 + num_documents) / (1 + document_counts[gram])) + 1
                    for gram in sorted(kept)
                ]
            )

    def _word_ids(self, text: str) -> np.ndarray:
        lookup = self.vocabulary
        ids = [lookup[gram] + 1 for gram in self.ngrams(text) if gram in lookup]
        return np.array(ids, dtype=np.int64)

    def _vectors(self, texts: list[str]) -> np.ndarray:
        counts = np.zeros((len(texts), len(self.vocabulary)), dtype=np.float64)
        for row, text in enumerate(texts):
            for gram in self.ngrams(text):
                column = self.vocabulary.get(gram)
                if column is not None:
                    counts[row, column] += 1
        if self.idf is not None:
            counts *= self.idf
            norms = np.linalg.norm(counts, axis=1, keepdims=True)
            counts /= np.where(norms > 0, norms, 1.0)
        return counts.astype(np.float32)

    def state_dict(self) -> dict:
        """JSON-safe; a BPE tokenizer is embedded as its Hugging Face JSON."""
        return {
            "kind": self.kind,
            "options": self.options,
            "tokenizer": None if self.tokenizer is None else self.tokenizer.state_dict(),
            "vocabulary": None if self.vocabulary is None else sorted(self.vocabulary),
            "idf": None if self.idf is None else self.idf.tolist(),
        }

    @classmethod
    def from_state_dict(cls, state: dict) -> TextEncoder:
        """Inverse of ``state_dict``."""
        vocabulary = state["vocabulary"]
        return cls(
            state["options"],
            tokenizer=None
            if state["tokenizer"] is None
            else tokenizer_from_state(state["tokenizer"]),
            vocabulary=None if vocabulary is None else {g: i for i, g in enumerate(vocabulary)},
            idf=None if state["idf"] is None else np.array(state["idf"]),
        )


def _texts(raw: RawTexts | Iterable[str]) -> Iterable[str]:
    return raw.texts if isinstance(raw, RawTexts) else raw


def _pad(sequences: list[np.ndarray], *, length: int) -> np.ndarray:
    """Cut each sequence to ``length`` and pad it with id 0 (the padding id)."""
    out = np.zeros((len(sequences), length), dtype=np.int64)
    for row, ids in enumerate(sequences):
        ids = ids[:length]
        out[row, : len(ids)] = ids
    return out
