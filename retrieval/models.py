"""Typed results shared by the library, the HTTP API, the CLI's JSON and the integrations."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from retrieval.corpus import Paper

Mode = Literal["dense", "lexical", "hybrid"]


@dataclass(frozen=True)
class Filters:
    """Paper filters; all optional. Dates are ISO `YYYY-MM-DD` strings, inclusive."""

    date_from: str | None = None
    date_to: str | None = None
    min_votes: int | None = None
    author: str | None = None


class PaperInfo(BaseModel):
    """A paper's identity and metadata."""

    id: str = Field(description="arXiv id, e.g. 2402.17764")
    title: str
    url: str
    dates: list[str] = Field(description="every digest date (YYYY-MM-DD) the paper appeared on")
    votes: int | None
    authors: list[str]

    @classmethod
    def from_paper(cls, paper: Paper) -> PaperInfo:
        return cls(
            id=paper.arxiv_id,
            title=paper.title,
            url=paper.url,
            dates=paper.dates,
            votes=paper.votes,
            authors=paper.authors,
        )


class Evidence(BaseModel):
    """A cited bullet: the summary sentence that made the paper match."""

    position: int = Field(description="0-based position of the bullet in the paper's summary")
    section: str | None = Field(description="what's new, technical details, performance highlights, or null")
    text: str
    score: float
    highlights: list[tuple[int, int]] = Field(
        default_factory=list, description="[start, end) character spans of query terms in `text`"
    )


class LegContribution(BaseModel):
    """One ranking leg's part in a hit's fused score."""

    leg: str = Field(
        description="dense_best_bullet, dense_centroid, dense_title, lexical_summary, lexical_title; "
        "exact_name (the query is the paper's name) or arxiv_id (the query names the paper by id); reranker "
        "(the second stage moved the paper: the score of the position it now holds minus its fused score)"
    )
    raw: float | None = Field(
        description="the leg's own score for this paper: a cosine (corrected for English queries) or a BM25 "
        "score; null when the leg did not score the paper"
    )
    standardised: float | None = Field(description="the raw score as a z-score against the leg's top papers")
    weight: float | None = Field(description="the leg's weight for this query")
    contribution: float = Field(description="weight x standardised; a hit's contributions add up to its score")


class MatchedTerm(BaseModel):
    """A query term found in the paper's summary or title by the lexical legs."""

    model_config = ConfigDict(frozen=True)

    term: str
    via: str | None = Field(
        default=None,
        description="the English phrase this Korean term translates (corpus term map); null: the query's own",
    )


class Explanation(BaseModel):
    """Why a paper was ranked where it is: the real computation of its score, leg by leg."""

    legs: list[LegContribution]
    terms: list[MatchedTerm] = Field(description="query terms the lexical legs matched in this paper")
    bullets: dict[str, int | None] = Field(
        description="the bullet position that carried each kind of match: dense (best corrected cosine) and "
        "lexical (best BM25); null when that kind did not match"
    )


class PaperHit(BaseModel):
    """One paper in the results, with the bullets that justify it."""

    paper: PaperInfo
    score: float = Field(
        description="the ranking's fused score (a sum of per-query z-scores): orders one query's hits, "
        "not comparable across queries"
    )
    relevance: float | None = Field(
        default=None,
        ge=0.0,
        le=1.0,
        description="how likely this paper answers the query, 0-1, comparable across queries "
        "(calibrated on the evaluation sets, retrieval/relevance.py); null for hits not found by a text query "
        "(/papers/{id}/similar)",
    )
    weak: bool = Field(
        default=False, description="relevance below the measured threshold: probably not what the query asks for"
    )
    evidence: list[Evidence]
    warning: str | None = Field(default=None, description="set when the summary may not describe this paper")
    explain: Explanation | None = Field(default=None, description="the score breakdown, when asked for (explain=true)")


class SearchResponse(BaseModel):
    query: str
    mode: Mode
    total: int = Field(description="papers matching the filters among the ranked candidates")
    offset: int = 0
    limit: int = 10
    results: list[PaperHit]
    weak: bool = Field(
        default=False,
        description="every hit on this page is weak (or there is none): no paper here answers the query well",
    )
    facets: dict[str, dict[str, int]] | None = Field(
        default=None,
        description='with facets=months: {"months": {"YYYY-MM": n}}, the papers matching the query well (not weak) '
        "and the filters, by the month of their first digest date, oldest first",
    )
    took_ms: float


class PaperDetail(BaseModel):
    """A whole paper summary, for `GET /papers/{id}` and the MCP `get_paper` tool."""

    paper: PaperInfo
    bullets: list[Evidence]
    warning: str | None = None


class DayCount(BaseModel):
    date: str = Field(description="digest date, YYYY-MM-DD")
    papers: int = Field(description="papers in that day's digest")


class DaysResponse(BaseModel):
    """`GET /days`: every digest date in the index, newest first."""

    days: list[DayCount]


class DayResponse(BaseModel):
    """`GET /days/{date}`: one day's digest in its own order."""

    date: str
    papers: list[PaperHit] = Field(
        description="the day's papers in the digest's order; each cites all its bullets, and `score` is 0 (not ranked)"
    )
    previous: str | None = Field(default=None, description="the nearest earlier digest date, if any")
    next: str | None = Field(default=None, description="the nearest later digest date, if any")
