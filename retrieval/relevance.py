"""Relevance a person can read: a 0-1 number per hit and a `weak` flag, comparable across queries.

The fused `score` of a hit is a sum of per-query z-scores: it ranks the papers of one query but
says nothing about whether any of them answers it (an off-topic query still gets a top hit with
a high z-score). Relevance is instead computed from signals that mean the same for every query:

* `cosine`: the best cosine between the query as written and one of the paper's bullets;
* `term_share`: the share of the query's own terms (BM25 terms, weighted by their idf in the
  summaries) that occur in the text searched for the paper (its summary, and its title and
  authors when the title is searched); a term the corpus never uses counts as missing;
* `latin`: the query's share of Latin letters (an English query has lower cosines to Korean
  bullets than a Korean one with the same meaning; this moves the cosine's scale).

A logistic regression turns them into the probability that the hit is a right answer, with right
and wrong answers weighted equally. A hit is `weak` below a threshold measured on the evaluation
sets. Calibration is per model: the numbers below were fitted for the default `e5-small-q4`;
other models (e.g. the `fake:` test embedder) use the same numbers until refitted.

`E5_SMALL_Q4` below is the fallback: `build-index --tuning-queries` fits a calibration for the
index's own model and corpus and stores it in the index (retrieval/learned.py, training.py: no
off-topic queries needed), which the searcher uses instead. The numbers below were fitted by
`python benchmarks/calibrate_relevance.py --index <a copy of the full-corpus index>`
(it prints a `Calibration(...)` and the threshold table): positives are
the right answers of the dev queries (retrieval/data/dev.jsonl) and of a fixed sample of the
title task when they are in the top 10; negatives are the other top-10 hits of those queries and
the top-10 hits of the fitting half (odd lines) of benchmarks/queries/offtopic.jsonl. The
threshold is the largest one on a 0.05 grid that flags at most 5 % of the dev right answers.
The term weights come from the index searched, so a much smaller corpus (the 12-paper sample)
shifts the scale somewhat; refit for another model or corpus.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from retrieval.lexical import BM25Index


@dataclass(frozen=True)
class Signals:
    """The per-hit inputs of the relevance model (see the module docstring)."""

    cosine: float
    term_share: float
    latin: float


@dataclass(frozen=True)
class Calibration:
    """Logistic-regression coefficients over `Signals` and the weak threshold."""

    intercept: float
    cosine: float
    term_share: float
    latin: float
    threshold: float

    def relevance(self, signals: Signals) -> float:
        """P(right answer) for these signals, in [0, 1]."""
        z = self.intercept + self.cosine * signals.cosine + self.term_share * signals.term_share
        z += self.latin * signals.latin
        return 1.0 / (1.0 + math.exp(-z)) if z > -700 else 0.0

    def is_weak(self, relevance: float) -> bool:
        return relevance < self.threshold


# Fitted for e5-small-q4 on the full corpus (357 digests, 5,487 papers); see the module docstring.
E5_SMALL_Q4 = Calibration(intercept=-37.235, cosine=38.771, term_share=8.354, latin=2.592, threshold=0.2)

CALIBRATIONS: dict[str, Calibration] = {"e5-small-q4": E5_SMALL_Q4}


def calibration_for(model: str) -> Calibration:
    """The calibration fitted for `model`; the default model's for any other."""
    return CALIBRATIONS.get(model, E5_SMALL_Q4)


def idf(document_frequency: int, documents: int) -> float:
    """BM25's (Lucene) idf: positive for every term, largest for a term no document has."""
    return math.log(1.0 + (documents - document_frequency + 0.5) / (document_frequency + 0.5))


class QueryJudge:
    """Relevance of the hits of one query: built once per query, asked once per hit."""

    def __init__(
        self,
        vector: np.ndarray,
        presence: np.ndarray,
        weights: np.ndarray,
        latin: float,
        bullet_matrix: np.ndarray,
        offsets: np.ndarray,
        calibration: Calibration,
    ) -> None:
        self._vector = np.asarray(vector, dtype=np.float32)
        self._presence = presence  # (terms, papers) bool
        self._weights = weights  # (terms,) idf
        self._latin = latin
        self._bullets = bullet_matrix
        self._offsets = offsets
        self.calibration = calibration

    @classmethod
    def build(
        cls,
        vector: np.ndarray,
        terms: Sequence[str],
        searched: Sequence[BM25Index],
        summaries: BM25Index,
        latin: float,
        bullet_matrix: np.ndarray,
        offsets: np.ndarray,
        calibration: Calibration,
    ) -> QueryJudge:
        """`terms`: the query's own lexical terms; `searched`: per-paper BM25 indexes of the
        searched text (a term is present in a paper when any of them scores it); `summaries`:
        the per-paper summary index whose document frequencies weight the terms."""
        unique = list(dict.fromkeys(terms))
        papers = len(offsets) - 1
        presence = np.zeros((len(unique), papers), dtype=bool)
        weights = np.zeros(len(unique), dtype=np.float64)
        for row, term in enumerate(unique):
            in_summaries = summaries.scores([term]) > 0
            weights[row] = idf(int(in_summaries.sum()), papers)
            for index in searched:
                presence[row] |= (in_summaries if index is summaries else index.scores([term]) > 0)[:papers]
        return cls(vector, presence, weights, latin, bullet_matrix, offsets, calibration)

    def signals(self, paper: int) -> Signals:
        start, end = int(self._offsets[paper]), int(self._offsets[paper + 1])
        cosine = float((self._bullets[start:end] @ self._vector).max()) if end > start else 0.0
        total = float(self._weights.sum())
        share = float(self._weights[self._presence[:, paper]].sum()) / total if total > 0 else 0.0
        return Signals(cosine=cosine, term_share=share, latin=self._latin)

    def signal_rows(self, papers: np.ndarray) -> np.ndarray:
        """(len(papers), 3) rows of (cosine, term_share, latin): `signals` of many papers at once."""
        out = np.zeros((len(papers), 3))
        total = float(self._weights.sum())
        for row, paper in enumerate(papers):
            start, end = int(self._offsets[paper]), int(self._offsets[paper + 1])
            out[row, 0] = float((self._bullets[start:end] @ self._vector).max()) if end > start else 0.0
        if total > 0:
            out[:, 1] = (self._weights @ self._presence[:, papers]) / total
        out[:, 2] = self._latin
        return out

    def relevance_of_all(self) -> np.ndarray:
        """Every paper's relevance at once (the same model as `judge`, vectorised)."""
        papers = len(self._offsets) - 1
        if papers == 0:
            return np.zeros(0)
        counts = np.diff(self._offsets)
        rows = self._bullets @ self._vector if len(self._bullets) else np.zeros(0, dtype=np.float32)
        cosine = np.zeros(papers)
        has = counts > 0
        if has.any():
            cosine[has] = np.maximum.reduceat(rows, self._offsets[:-1][has])
        total = float(self._weights.sum())
        share = (self._weights @ self._presence) / total if total > 0 else np.zeros(papers)
        c = self.calibration
        z = c.intercept + c.cosine * cosine + c.term_share * share + c.latin * self._latin
        return 1.0 / (1.0 + np.exp(-np.clip(z, -700, 700)))

    def judge(self, paper: int) -> tuple[float, bool]:
        """(relevance rounded to 4 places, weak) of one paper (an index into the searcher's papers)."""
        value = self.calibration.relevance(self.signals(paper))
        return round(value, 4), self.calibration.is_weak(value)
