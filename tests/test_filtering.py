"""The one filter rule (retrieval/filtering.py): what passes, and that a mask is computed once."""

from __future__ import annotations

import numpy as np
import pytest

import retrieval.filtering as filtering
from retrieval.filtering import FilterColumns
from retrieval.models import Filters
from retrieval.search import Searcher

COLUMNS = [
    ("2024-01-02", "2024-01-05", 10, "ada lovelace | alan turing"),
    ("2024-02-01", "2024-02-01", -1, "grace hopper"),
    ("2024-03-10", "2024-04-01", 50, "alan kay"),
]


def test_filters_overlap_dates_and_match_authors_case_insensitively() -> None:
    columns = FilterColumns.of_fields(COLUMNS)
    assert columns.mask(Filters()) is None
    assert columns.passing(Filters()).tolist() == [True, True, True]
    assert columns.mask(Filters(date_from="2024-01-05")).tolist() == [True, True, True]
    assert columns.mask(Filters(date_from="2024-01-06")).tolist() == [False, True, True]
    assert columns.mask(Filters(date_to="2024-02-01")).tolist() == [True, True, False]
    assert columns.mask(Filters(min_votes=0)).tolist() == [True, False, True]
    assert columns.mask(Filters(author=" ALAN ")).tolist() == [True, False, True]
    both = Filters(author="alan", date_from="2024-03-01", min_votes=20)
    assert columns.mask(both).tolist() == [False, False, True]


def test_a_mask_is_computed_once_is_read_only_and_old_ones_are_dropped(monkeypatch: pytest.MonkeyPatch) -> None:
    columns = FilterColumns.of_fields(COLUMNS)
    computed: list[Filters] = []
    real = FilterColumns._compute

    def counting(self: FilterColumns, filters: Filters) -> np.ndarray:
        computed.append(filters)
        return real(self, filters)

    monkeypatch.setattr(FilterColumns, "_compute", counting)
    author = Filters(author="alan")
    first = columns.mask(author)
    assert first is not None and columns.mask(author) is first and computed == [author]
    with pytest.raises(ValueError):
        first[0] = False  # shared by every leg of a search: nobody may change it
    fresh = columns.passing(author)
    fresh[0] = False  # a copy is the caller's own
    assert columns.mask(author) is first and bool(first[0])

    monkeypatch.setattr(filtering, "CACHED_MASKS", 2)
    columns.mask(Filters(min_votes=1))
    columns.mask(author)  # used again: now the newest
    columns.mask(Filters(min_votes=2))  # evicts min_votes=1, not the author filter
    assert columns.mask(author) is first
    columns.mask(Filters(min_votes=1))
    assert computed.count(Filters(min_votes=1)) == 2 and computed.count(author) == 1


def test_the_searcher_and_its_embedded_backend_share_one_copy_of_the_columns(fake_searcher: Searcher) -> None:
    live = fake_searcher.backend._live  # type: ignore[attr-defined]
    assert live is not None
    ours = fake_searcher._filters
    columns = live.columns
    assert columns.first is ours.first and columns.votes is ours.votes and columns.authors is ours.authors
    authored = Filters(author=next(p.authors[0] for p in fake_searcher.papers if p.authors))
    assert columns.paper_mask(authored).tolist() == ours.mask(authored).tolist()  # the same rule
