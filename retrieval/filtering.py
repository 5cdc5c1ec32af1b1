"""Which papers pass a request's filters: one rule for the searcher and the embedded backend.

Milvus applies the same rule as a filter expression (`retrieval/backends/milvus.py`), checked
against this one by the shared backend tests. Dates overlap: a paper passes `date_from` when its
last digest date is on or after it, `date_to` when its first is on or before it; `author` is a
case-insensitive substring of the joined author names.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from retrieval.corpus import Paper
from retrieval.models import Filters

CACHED_MASKS = 16  # a search asks once per leg, and a page's filters repeat across its requests


def paper_filter_fields(paper: Paper) -> tuple[str, str, int, str]:
    """(first date, last date, votes or -1, lower-cased authors joined by " | ") of a paper."""
    dates = sorted(paper.dates) or ["1970-01-01"]
    votes = paper.votes if paper.votes is not None else -1
    return dates[0], dates[-1], votes, " | ".join(paper.authors).lower()


@dataclass(frozen=True, eq=False)
class FilterColumns:
    """The filter fields of a list of papers, one entry per paper, and the masks they gave."""

    first: np.ndarray  # "<U10" first digest date
    last: np.ndarray  # "<U10" last digest date
    votes: np.ndarray  # int64, -1 when unknown
    authors: list[str]  # lower-cased, joined by " | "
    _masks: OrderedDict[Filters, np.ndarray] = field(default_factory=OrderedDict, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @classmethod
    def of_fields(cls, fields: Sequence[tuple[str, str, int, str]]) -> FilterColumns:
        return cls(
            first=np.array([f[0] for f in fields], dtype="<U10"),
            last=np.array([f[1] for f in fields], dtype="<U10"),
            votes=np.array([f[2] for f in fields], dtype=np.int64),
            authors=[f[3] for f in fields],
        )

    @classmethod
    def of_papers(cls, papers: Sequence[Paper]) -> FilterColumns:
        return cls.of_fields([paper_filter_fields(p) for p in papers])

    def __len__(self) -> int:
        return len(self.authors)

    def mask(self, filters: Filters) -> np.ndarray | None:
        """A read-only boolean mask of the papers passing `filters`; None when nothing is filtered."""
        if filters == Filters():
            return None
        with self._lock:
            mask = self._masks.get(filters)
            if mask is not None:
                self._masks.move_to_end(filters)
                return mask
        mask = self._compute(filters)
        mask.setflags(write=False)
        with self._lock:
            self._masks[filters] = mask
            while len(self._masks) > CACHED_MASKS:
                self._masks.popitem(last=False)
        return mask

    def passing(self, filters: Filters) -> np.ndarray:
        """`mask` as a fresh writable array, all True when nothing is filtered."""
        mask = self.mask(filters)
        return np.ones(len(self), dtype=bool) if mask is None else mask.copy()

    def _compute(self, filters: Filters) -> np.ndarray:
        mask = np.ones(len(self), dtype=bool)
        if filters.date_from:
            mask &= self.last >= filters.date_from
        if filters.date_to:
            mask &= self.first <= filters.date_to
        if filters.min_votes is not None:
            mask &= self.votes >= filters.min_votes
        if filters.author:
            needle = filters.author.strip().lower()
            mask &= np.fromiter((needle in a for a in self.authors), dtype=bool, count=len(self.authors))
        return mask
