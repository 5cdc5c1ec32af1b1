"""The digest days of a loaded index: which papers each day's digest listed, in the digest's own order.

Built from the papers of an index (each paper keeps `positions`, its place in every day's digest),
so no corpus file is read at query time. Indexes written before `positions` existed list a day's
papers in arXiv-id order instead. `days_of(searcher)` builds the listing once per loaded index.
"""

from __future__ import annotations

import bisect
import threading
import weakref
from collections.abc import Sequence

from retrieval.corpus import Paper
from retrieval.errors import DayNotFoundError
from retrieval.models import DayCount, Evidence, PaperHit, PaperInfo
from retrieval.requests import InvalidRequest, Problem, iso_date
from retrieval.search import Searcher

_UNPLACED = 1 << 30  # a paper without a recorded place (older index) sorts after placed ones, by id


def parse_day(value: str, field: str = "date") -> str:
    """`value` as a `YYYY-MM-DD` calendar date, or `InvalidRequest` naming `field`."""
    try:
        return iso_date(value)
    except ValueError as exc:
        raise InvalidRequest([Problem(field, str(exc))]) from None


class DayIndex:
    """Every digest date of an index and the papers listed on it, in the digest's order."""

    def __init__(self, papers: Sequence[Paper]) -> None:
        by_day: dict[str, list[int]] = {}
        for pi, paper in enumerate(papers):
            for date in paper.dates:
                by_day.setdefault(date, []).append(pi)
        for date, members in by_day.items():
            members.sort(key=lambda pi: (papers[pi].positions.get(date, _UNPLACED), papers[pi].arxiv_id))
        self._by_day = by_day
        self._ascending = sorted(by_day)

    @property
    def dates(self) -> list[str]:
        """Every date with a digest, newest first."""
        return self._ascending[::-1]

    @property
    def latest(self) -> str | None:
        return self._ascending[-1] if self._ascending else None

    def counts(self) -> list[DayCount]:
        """Each date with its number of papers, newest first."""
        return [DayCount(date=date, papers=len(self._by_day[date])) for date in self.dates]

    def papers_on(self, date: str) -> list[int]:
        """Paper indices of `date`'s digest in its order; `DayNotFoundError` naming the nearest dates."""
        members = self._by_day.get(date)
        if members is None:
            raise DayNotFoundError(self._missing(date))
        return list(members)

    def neighbours(self, date: str) -> tuple[str | None, str | None]:
        """The nearest digest dates before and after `date` (which need not have a digest itself)."""
        left = bisect.bisect_left(self._ascending, date)
        right = bisect.bisect_right(self._ascending, date)
        before = self._ascending[left - 1] if left > 0 else None
        after = self._ascending[right] if right < len(self._ascending) else None
        return before, after

    def _missing(self, date: str) -> str:
        if not self._ascending:
            return f"no digest for {date}: the index holds no dated digest"
        before, after = self.neighbours(date)
        nearest = [f"{d} ({where})" for d, where in ((before, "before"), (after, "after")) if d is not None]
        return f"no digest for {date} in the index; nearest: {', '.join(nearest)}"


_cache: weakref.WeakKeyDictionary[Searcher, DayIndex] = weakref.WeakKeyDictionary()
_cache_lock = threading.Lock()


def days_of(searcher: Searcher) -> DayIndex:
    """The day listing of the index `searcher` serves, built on first use."""
    with _cache_lock:
        days = _cache.get(searcher)
        if days is None:
            days = _cache[searcher] = DayIndex(searcher.papers)
        return days


def day_hits(searcher: Searcher, date: str) -> list[PaperHit]:
    """The papers of `date`'s digest as search-hit objects: every bullet as evidence, score 0 (not ranked)."""
    warnings = searcher.summary_warnings
    hits = []
    for pi in days_of(searcher).papers_on(date):
        paper = searcher.papers[pi]
        evidence = [Evidence(position=b.position, section=b.section, text=b.text, score=0.0) for b in paper.bullets]
        hits.append(
            PaperHit(
                paper=PaperInfo.from_paper(paper), score=0.0, evidence=evidence, warning=warnings.get(paper.arxiv_id)
            )
        )
    return hits
