"""BM25 as a sparse inner product, scored exactly as `retrieval.lexical.BM25Index` (bm25s) does.

bm25s's default ("lucene") variant scores a document d for query terms q1..qn as

    sum_i  idf(q_i) * tf(q_i, d) / (tf(q_i, d) + k1 * (1 - b + b * |d| / avgdl))

with idf(t) = ln(1 + (N - df(t) + 0.5) / (df(t) + 0.5)), k1 = 1.5, b = 0.75, and a query term
written twice counted twice. (Lucene dropped the classic `(k1 + 1)` factor; it scales every score
alike, so leaving it out matches bm25s.) Split in two, the document side carries the saturated,
length-normalised term frequency and the query side carries idf x (times the term occurs), so
their inner product is the BM25 score and any sparse-vector engine can rank by it.

Term ids come from an append-only vocabulary, so a term keeps its id across incremental builds.
The document weights depend on the average document length: re-encode every document when it
changes, or keep the build's `avg_len` (`fit(..., avg_len=...)`) between full rebuilds.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import scipy.sparse as sp

K1 = 1.5
B = 0.75


def idf(df: int, n_docs: int) -> float:
    """bm25s's "lucene" inverse document frequency."""
    return math.log(1.0 + (n_docs - df + 0.5) / (df + 0.5))


@dataclass
class SparseEncoder:
    """Vocabulary and corpus statistics of one document kind (bullets, summaries or titles)."""

    vocab: dict[str, int] = field(default_factory=dict)
    doc_freq: dict[int, int] = field(default_factory=dict)
    n_docs: int = 0
    avg_len: float = 1.0
    k1: float = K1
    b: float = B

    @staticmethod
    def _doc(tokens: Sequence[str]) -> Sequence[str]:
        # BM25Index indexes an empty document as [""] (bm25s needs a token); do the same so the
        # lengths, and with them avg_len and every score, agree.
        return tokens if tokens else ("",)

    def fit(self, documents: Iterable[Sequence[str]], avg_len: float | None = None) -> SparseEncoder:
        """Count document frequencies over the whole current corpus of this kind (new terms get
        new ids, known terms keep theirs). `avg_len` overrides the measured average length."""
        docs = [self._doc(d) for d in documents]
        self.doc_freq = {}
        total = 0
        for doc in docs:
            total += len(doc)
            for term in set(doc):
                term_id = self.vocab.setdefault(term, len(self.vocab))
                self.doc_freq[term_id] = self.doc_freq.get(term_id, 0) + 1
        self.n_docs = len(docs)
        self.avg_len = float(avg_len) if avg_len is not None else (total / len(docs) if docs else 1.0)
        return self

    def encode_document(self, tokens: Sequence[str]) -> dict[int, float]:
        """`{term_id: tf / (tf + k1 * (1 - b + b * len / avg_len))}`; terms outside the vocabulary
        are left out (fit on a corpus that holds the document)."""
        doc = self._doc(tokens)
        norm = self.k1 * (1.0 - self.b + self.b * len(doc) / self.avg_len)
        weights: dict[int, float] = {}
        for term, tf in Counter(doc).items():
            term_id = self.vocab.get(term)
            if term_id is not None:
                weights[term_id] = tf / (tf + norm)
        return weights

    def encode_query(self, terms: Sequence[str]) -> dict[int, float]:
        """`{term_id: idf(term) x count}` for the query terms the corpus holds."""
        weights: dict[int, float] = {}
        for term, count in Counter(terms).items():
            term_id = self.vocab.get(term)
            df = self.doc_freq.get(term_id, 0) if term_id is not None else 0
            if term_id is not None and df:
                weights[term_id] = idf(df, self.n_docs) * count
        return weights

    def save(self, path: Path) -> None:
        """Write the encoder as JSON (never pickle)."""
        data = {
            "vocab": self.vocab,
            "doc_freq": {str(k): v for k, v in self.doc_freq.items()},
            "n_docs": self.n_docs,
            "avg_len": self.avg_len,
            "k1": self.k1,
            "b": self.b,
        }
        path.write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")

    @classmethod
    def load(cls, path: Path) -> SparseEncoder:
        data = json.loads(path.read_text(encoding="utf-8"))
        return cls(
            vocab={str(k): int(v) for k, v in data["vocab"].items()},
            doc_freq={int(k): int(v) for k, v in data["doc_freq"].items()},
            n_docs=int(data["n_docs"]),
            avg_len=float(data["avg_len"]),
            k1=float(data["k1"]),
            b=float(data["b"]),
        )


def rows_to_csr(rows: Sequence[Mapping[int, float]]) -> sp.csr_matrix:
    """`{term_id: weight}` rows as one float32 CSR matrix (as wide as the largest term id)."""
    indptr = np.zeros(len(rows) + 1, dtype=np.int64)
    indptr[1:] = np.cumsum([len(r) for r in rows])
    indices = np.fromiter((t for r in rows for t in r), dtype=np.int64, count=int(indptr[-1]))
    data = np.fromiter((w for r in rows for w in r.values()), dtype=np.float32, count=int(indptr[-1]))
    width = int(indices.max()) + 1 if len(indices) else 0
    return sp.csr_matrix((data, indices, indptr), shape=(len(rows), width), dtype=np.float32)
