"""Typed results shared by the library, the HTTP API, the CLI's JSON and the integrations."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel, Field

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


class PaperHit(BaseModel):
    """One paper in the results, with the bullets that justify it."""

    paper: PaperInfo
    score: float
    evidence: list[Evidence]
    warning: str | None = Field(default=None, description="set when the summary may not describe this paper")


class SearchResponse(BaseModel):
    query: str
    mode: Mode
    total: int = Field(description="papers matching the filters among the ranked candidates")
    offset: int = 0
    limit: int = 10
    results: list[PaperHit]
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
