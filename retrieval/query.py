"""A query analysed once (`Searcher.analyse`): what every ranking leg, the evidence and the relevance read."""

from __future__ import annotations

from dataclasses import dataclass

from retrieval.highlight import QueryMarks


@dataclass(frozen=True)
class AnalysedQuery:
    """`raw` as typed (stripped); `ids` the arXiv ids it names (canonical); `text` the rest.

    `own_terms` are the lexical terms of `text` (Kiwi morphemes, English stems), `expansions` the
    term map's terms for its English phrases; `terms` = both, what the lexical legs search.
    `english` is the share of Latin letters (0-1), `dense_text` what the dense legs embed, and
    `marks` what the evidence highlights.
    """

    raw: str
    ids: tuple[str, ...]
    text: str
    own_terms: tuple[str, ...]
    expansions: tuple[str, ...]
    english: float
    dense_text: str
    marks: QueryMarks

    @property
    def terms(self) -> list[str]:
        return [*self.own_terms, *self.expansions]
