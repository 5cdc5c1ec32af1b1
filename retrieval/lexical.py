"""The lexical leg: Korean morphology plus Latin words, scored with BM25 (bm25s).

Korean text is split by Kiwi into morphemes; content morphemes (nouns, verb and adjective
stems, roots, foreign words, numbers) are kept. Latin words are lower-cased, and a word with
inner hyphens or dots ("llama-2", "gpt-4o") is kept whole as well as split, because users
type model names both ways. Plain Latin words are stemmed (Snowball English, PyStemmer), so
"models" in a query meets "model" in a bullet.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import bm25s
import numpy as np
import Stemmer

TOKENIZER_NAME = "kiwi-content-v2-stem"

# Kiwi part-of-speech tags kept as index terms.
_KEEP_TAGS = {"NNG", "NNP", "NR", "NP", "XR", "SL", "SH", "SN", "VV", "VA", "MAG", "W_SERIAL"}
_PLAIN_LATIN = re.compile(r"^[a-z][a-z0-9]*$")
_LATIN_COMPOUND = re.compile(r"[A-Za-z0-9]+(?:[\-\.][A-Za-z0-9]+)+")
STOPWORDS = frozenset({
    "the", "a", "an", "of", "and", "or", "for", "to", "in", "on", "with", "by", "is", "are", "we", "our",
    "this", "that", "which", "paper", "from", "as", "at", "be", "it", "its", "into", "using", "via",
    "하", "있", "되", "않", "없", "이", "그", "수", "것", "등", "및", "위하", "통하", "대하", "같",
})  # fmt: skip
_STOPWORDS = STOPWORDS


class KoreanEnglishTokenizer:
    """Turns mixed Korean/English text into BM25 terms. Kiwi is loaded on first use."""

    name = TOKENIZER_NAME

    def __init__(self) -> None:
        self._kiwi: Any = None
        self._lock = threading.Lock()
        self._stemmer = Stemmer.Stemmer("english")

    def stem(self, word: str) -> str:
        """The English stem the index uses for a lower-case Latin word."""
        return str(self._stemmer.stemWord(word))

    def _analyzer(self) -> Any:
        if self._kiwi is None:
            with self._lock:
                if self._kiwi is None:
                    from kiwipiepy import Kiwi

                    self._kiwi = Kiwi()
        return self._kiwi

    def _terms(self, text: str, tokens: Sequence[Any]) -> list[str]:
        terms: list[str] = []
        for token in tokens:
            if token.tag not in _KEEP_TAGS:
                continue
            form = token.form.lower()
            if form in _STOPWORDS:
                continue
            if token.tag in ("VV", "VA"):
                form = form.rstrip("하")
            if not form or form in _STOPWORDS:
                continue
            if token.tag in ("SN", "SL") and len(form) < 2:
                continue
            if token.tag == "SL" and _PLAIN_LATIN.match(form):
                form = self._stemmer.stemWord(form)
            terms.append(form)
        terms.extend(m.group(0).lower() for m in _LATIN_COMPOUND.finditer(text))
        return terms

    def tokenize(self, text: str) -> list[str]:
        return self.tokenize_many([text])[0]

    def tokenize_many(self, texts: Sequence[str]) -> list[list[str]]:
        if not texts:
            return []
        analyzer = self._analyzer()
        results = analyzer.tokenize(list(texts))
        return [self._terms(text, tokens) for text, tokens in zip(texts, results, strict=True)]


class BM25Index:
    """BM25 over a list of token lists; saved as `.npy` + JSON (never pickle)."""

    def __init__(self, model: bm25s.BM25, size: int) -> None:
        self._model = model
        self.size = size
        self._vocab: dict[str, int] = dict(model.vocab_dict) if getattr(model, "vocab_dict", None) else {}

    @classmethod
    def build(cls, documents: Sequence[Sequence[str]]) -> BM25Index:
        model = bm25s.BM25()
        if documents:
            corpus = [list(doc) if doc else [""] for doc in documents]
            model.index(corpus, show_progress=False)
        return cls(model, len(documents))

    def save(self, path: Path) -> None:
        path.mkdir(parents=True, exist_ok=True)
        self._model.save(str(path), allow_pickle=False)
        (path / "size.txt").write_text(str(self.size), encoding="utf-8")

    @classmethod
    def load(cls, path: Path) -> BM25Index:
        size = int((path / "size.txt").read_text(encoding="utf-8"))
        if size == 0:
            return cls(bm25s.BM25(), 0)
        model = bm25s.BM25.load(str(path), allow_pickle=False, mmap=False)
        return cls(model, size)

    def scores(self, query_terms: Sequence[str]) -> np.ndarray:
        """BM25 score of every document for these terms (zeros when none is known)."""
        known = [t for t in query_terms if t in self._vocab]
        if self.size == 0 or not known:
            return np.zeros(self.size, dtype=np.float32)
        return np.asarray(self._model.get_scores(known), dtype=np.float32)
