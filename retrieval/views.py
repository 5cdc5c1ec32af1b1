"""Query-side views and lexical feedback (EVALUATION.md "Query views and lexical feedback").

Pure helpers the searcher uses when the matching `SearchSettings` are on:

* `description_of`: the part of a title-like query after its first colon ("Name: what it does").
* `mix_views`: one dense query vector from the query's own vector and extra views of it (the
  query embedded as a passage, its description, its lower-cased text), by their shares.
* `FeedbackTerms`: RM3-style pseudo-relevance feedback for the BM25 summary leg: the heaviest
  terms (Korean morphemes and English stems alike) of the first-ranked papers' summaries,
  added to the query's BM25 weights with a small weight.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from retrieval.backends.sparse import SparseEncoder, idf


def description_of(text: str) -> str | None:
    """The text after the first colon when both sides hold something ("LoRA: Low-Rank ..." ->
    "Low-Rank ..."); None otherwise."""
    head, colon, tail = text.partition(":")
    if not colon or not head.strip() or not tail.strip():
        return None
    return tail.strip()


def mix_views(own: np.ndarray, views: Sequence[tuple[float, np.ndarray]]) -> np.ndarray:
    """The normalised weighted mean of `own` and each `(share, vector)` view; `own` keeps the
    share the views leave (1 - their sum, at least 0). No views: `own` as it is."""
    if not views:
        return own
    total = sum(share for share, _ in views)
    mixed = max(0.0, 1.0 - total) * own.astype(np.float64)
    for share, vector in views:
        mixed = mixed + share * vector.astype(np.float64)
    norm = float(np.linalg.norm(mixed))
    return (mixed / norm).astype(np.float32) if norm > 1e-12 else own


@dataclass(frozen=True)
class FeedbackTerms:
    """Term statistics of the summaries for RM3-style feedback.

    `matrix` is the summaries' saturated term frequencies (papers x vocabulary, as stored for
    BM25), `idf` each term's idf, `eligible` which terms may be added (at least two characters,
    not a stop-word, found in some summary).
    """

    matrix: sp.csr_matrix
    idf: np.ndarray
    eligible: np.ndarray

    @classmethod
    def of(cls, encoder: SparseEncoder, matrix: sp.csr_matrix, stopwords: Collection[str]) -> FeedbackTerms:
        size = matrix.shape[1]
        weights = np.zeros(size, dtype=np.float32)
        eligible = np.zeros(size, dtype=bool)
        for term, term_id in encoder.vocab.items():
            df = encoder.doc_freq.get(term_id, 0)
            if term_id < size and df:
                weights[term_id] = idf(df, encoder.n_docs)
                eligible[term_id] = len(term) >= 2 and term not in stopwords
        return cls(sp.csr_matrix(matrix, dtype=np.float32), weights, eligible)

    def expansion(self, papers: Sequence[int], count: int) -> dict[int, float]:
        """The `count` heaviest eligible terms of these papers' summaries: each summary's tf x idf
        weights normalised to sum 1, averaged over the papers (the relevance model with every
        feedback paper equally likely), renormalised over the terms kept. `{term_id: share}`."""
        if not len(papers) or count <= 0:
            return {}
        rows = self.matrix[np.asarray(papers, dtype=np.int64)].multiply(self.idf[None, :]).tocsr()
        sums = np.asarray(rows.sum(axis=1)).reshape(-1)
        rows = sp.diags(1.0 / np.maximum(sums, 1e-12)) @ rows
        model = np.asarray(rows.sum(axis=0)).reshape(-1) / len(papers)
        model[~self.eligible] = 0.0
        nonzero = np.flatnonzero(model > 0)
        if not len(nonzero):
            return {}
        kept = nonzero[np.argsort(-model[nonzero], kind="stable")[:count]]
        total = float(model[kept].sum())
        return {int(t): float(model[t] / total) for t in kept}


def with_feedback(query: Mapping[int, float], expansion: Mapping[int, float], weight: float) -> dict[int, float]:
    """The query's BM25 weights plus the expansion scaled to `weight` x the query's own weight
    mass (the expansion shares sum to 1). A query with no weight of its own (none of its terms in
    any summary) gets the expansion alone (mass 1: the leg is standardised, its scale is moot)."""
    mass = float(sum(query.values())) or 1.0
    out = dict(query)
    for term_id, share in expansion.items():
        out[term_id] = out.get(term_id, 0.0) + weight * mass * share
    return out


class NameMentions:
    """Which summaries mention a name as a whole word ("MoSLoRA", "Coffee-Gym", "Motion Master"):
    case-insensitive, spaces and hyphens between the name's words optional, no letter or digit
    of the Latin alphabet right before or after (a Korean particle may follow: "MoSLoRA는")."""

    def __init__(self, summaries: Sequence[str]) -> None:
        self._texts = [s.lower() for s in summaries]
        # One ASCII string (every other character a space, so offsets stay those of the texts):
        # the substring test before the pattern runs at C speed over one byte per character.
        self._ascii = _SEPARATOR.join(_NON_ASCII.sub(" ", t) for t in self._texts)
        self._starts = np.cumsum([0] + [len(t) + len(_SEPARATOR) for t in self._texts[:-1]]).astype(np.int64)

    def papers(self, name: str) -> np.ndarray:
        """Rows of the summaries that mention `name` (sorted)."""
        parts = [p for p in re.split(r"[\s\-]+", name.lower()) if p]
        if not parts:
            return np.zeros(0, dtype=np.int64)
        pattern = re.compile(r"[\s\-]*".join(re.escape(p) for p in parts))
        longest = max(parts, key=len)
        rows = self._containing(longest) if longest.isascii() else range(len(self._texts))
        found = [row for row in rows if longest in self._texts[row] and _mentions(pattern, self._texts[row])]
        return np.asarray(found, dtype=np.int64)

    def _containing(self, part: str) -> list[int]:
        """Rows whose summary holds `part` as a substring (the cheap test before the pattern)."""
        rows: list[int] = []
        at = self._ascii.find(part)
        while at >= 0:
            row = int(np.searchsorted(self._starts, at, side="right")) - 1
            rows.append(row)
            if row + 1 >= len(self._starts):
                break
            at = self._ascii.find(part, int(self._starts[row + 1]))
        return rows


def _mentions(pattern: re.Pattern[str], text: str) -> bool:
    return any(not _word_char(text, m.start() - 1) and not _word_char(text, m.end()) for m in pattern.finditer(text))


_SEPARATOR = "\n\x00\n"
_NON_ASCII = re.compile(r"[^\x00-\x7f]")


def _word_char(text: str, at: int) -> bool:
    return 0 <= at < len(text) and text[at].isascii() and text[at].isalnum()


def title_name(text: str, max_words: int = 3, min_chars: int = 3) -> str | None:
    """The short name a title-shaped query starts with ("MoSLoRA" in "MoSLoRA: ..."): the head
    before its colon when it has at most `max_words` words and `min_chars` letters or digits."""
    head, colon, tail = text.partition(":")
    head = head.strip()
    if not colon or not tail.strip() or not head or len(head.split()) > max_words:
        return None
    return head if sum(ch.isalnum() for ch in head) >= min_chars else None
