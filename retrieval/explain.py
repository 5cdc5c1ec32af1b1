"""Why a paper was ranked where it is: each hit's score broken down by the legs that made it.

The breakdown reads the very arrays the ranking fused (`search.Fusion`), so a hit's leg
contributions add up to its `score`; nothing is recomputed or approximated here. A hit the
re-ranker moved (retrieval/rerank.py) shows the score of the position it now holds: the
`reranker` contribution is that score minus its fused one.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from retrieval.models import Explanation, LegContribution, MatchedTerm

ARXIV_ID_LEG = "arxiv_id"
EXACT_NAME_LEG = "exact_name"
RERANKER_LEG = "reranker"
SUMMARY_NAME_LEG = "summary_name"


def _number(value: float) -> float | None:
    return round(float(value), 6) if np.isfinite(value) else None


@dataclass(frozen=True)
class Explainer:
    """Breakdowns for one query's hits.

    `legs` are the fused legs with their standardised scores; `fused` the fused score before the
    name legs; `lifted` after the summary-name leg; `boosted` after the exact-name leg too;
    `offsets` the paper -> bullet rows map; `dense_rows` every bullet's corrected cosine and
    `lexical_rows` its BM25 (None: not scored); `term_hits` a mask of the papers each query term
    was found in, keyed by the term as shown.
    """

    legs: list[tuple[str, np.ndarray, float, np.ndarray]]  # (name, raw, weight, standardised)
    fused: np.ndarray
    boosted: np.ndarray
    offsets: np.ndarray
    dense_rows: np.ndarray | None
    lexical_rows: np.ndarray | None
    term_hits: Mapping[MatchedTerm, np.ndarray]
    lifted: np.ndarray | None = None  # `fused` after the summary-name leg (None: `fused`)

    def explain(self, pi: int, score: float, by_id: bool) -> Explanation:
        """The breakdown of paper `pi`, whose returned score is `score`; `by_id`: named by arXiv id."""
        if by_id:
            legs = [LegContribution(leg=ARXIV_ID_LEG, raw=None, standardised=None, weight=None, contribution=score)]
        else:
            legs = [
                LegContribution(
                    leg=name,
                    raw=_number(raw[pi]),
                    standardised=round(float(z[pi]), 6),
                    weight=round(weight, 6),
                    contribution=round(weight * float(z[pi]), 6),
                )
                for name, raw, weight, z in self.legs
            ]
            base = float(np.nan_to_num(self.fused[pi], nan=0.0))
            lifted = float(self.lifted[pi]) if self.lifted is not None and np.isfinite(self.lifted[pi]) else base
            moved = score - float(self.boosted[pi])  # the re-ranker gave the paper another position's score
            parts = (
                (SUMMARY_NAME_LEG, lifted - base),
                (EXACT_NAME_LEG, float(self.boosted[pi]) - lifted),
                (RERANKER_LEG, moved if abs(moved) > 1e-5 else 0.0),
            )
            for leg, part in parts:
                if abs(part) > 1e-9:
                    legs.append(
                        LegContribution(leg=leg, raw=None, standardised=None, weight=None, contribution=round(part, 6))
                    )
        terms = [term for term, hits in self.term_hits.items() if hits[pi]]
        return Explanation(legs=legs, terms=terms, bullets=self._bullets(pi))

    def _bullets(self, pi: int) -> dict[str, int | None]:
        start, end = int(self.offsets[pi]), int(self.offsets[pi + 1])
        found: dict[str, int | None] = {"dense": None, "lexical": None}
        if end > start and self.dense_rows is not None:
            found["dense"] = int(np.argmax(self.dense_rows[start:end]))
        if end > start and self.lexical_rows is not None and float(self.lexical_rows[start:end].max()) > 0:
            found["lexical"] = int(np.argmax(self.lexical_rows[start:end]))
        return found
