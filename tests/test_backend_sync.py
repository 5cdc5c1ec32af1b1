"""`retrieval.backends.sync`: fingerprints of paper records and incremental syncs, on both backends.

The fixture corpus and the brute-force answers come from tests/test_backends.py; Milvus runs as
Milvus Lite in a temporary folder (or at `RETRIEVAL_TEST_MILVUS_URI`).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from test_backends import (  # noqa: F401 (milvus_uri is a fixture used here)
    DIM,
    QUERIES,
    Doc,
    Encoders,
    _unit,
    assert_same,
    expected_bullets,
    expected_papers,
    fit_encoders,
    make_docs,
    milvus_uri,
    record,
    store_opener,
)

from retrieval.backends.base import Backend, PaperRecord
from retrieval.backends.sync import Fingerprints, record_fingerprint, sync_backend
from retrieval.errors import UsageError
from retrieval.models import Filters


@pytest.fixture(scope="module")
def docs() -> list[Doc]:
    return make_docs(n=16, seed=17)


@pytest.fixture(scope="module")
def encoders(docs: list[Doc]) -> Encoders:
    return fit_encoders(docs)


@pytest.fixture(params=["embedded", "milvus"])
def opener(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Callable[[], Backend]]:
    """Opens views of one fresh store of the backend under test."""
    uri = request.getfixturevalue("milvus_uri") if request.param == "milvus" else ""
    with store_opener(request.param, tmp_path, uri, batch_size=6) as open_store:
        yield open_store


def records_of(docs: list[Doc], enc: Encoders) -> list[PaperRecord]:
    return [record(d, enc) for d in docs]


def assert_holds(backend: Backend, docs: list[Doc]) -> None:
    """The backend answers exactly as brute force over `docs` does."""
    for q in QUERIES:
        assert_same(backend.top_bullets(q, 1000, hubness_weight=0.4), expected_bullets(docs, q, 0.4, 1000, Filters()))
        assert_same(backend.top_papers(q, 1000, field="title"), expected_papers(docs, q, 0, 1000, Filters(), "title"))
    every_term = {t: 1.0 for t in range(64)}
    assert {h.paper_id for h in backend.top_sparse(every_term, 1000, field="title")} == {d.paper_id for d in docs}


# --------------------------------------------------------------------------- fingerprints
def test_the_fingerprint_covers_every_field(docs: list[Doc], encoders: Encoders) -> None:
    base = record(docs[1], encoders)
    changed: dict[str, Any] = {
        "paper_id": "2401.99999",
        "first_date": "2023-01-01",
        "last_date": "2030-01-01",
        "votes": base.votes + 1,
        "authors": base.authors + " | x",
        "bullet_vectors": base.bullet_vectors + np.float32(1e-3),
        "bullet_hubness": base.bullet_hubness + np.float32(1e-3),
        "centroid": base.centroid[::-1].copy(),
        "centroid_hubness": base.centroid_hubness + 1e-3,
        "title_vector": -base.title_vector,
        "sparse_bullets": tuple({**w, 63: 0.5} for w in base.sparse_bullets),
        "sparse_summary": {**base.sparse_summary, 63: 0.5},
        "sparse_title": {},
    }
    assert set(changed) == {f.name for f in dataclasses.fields(PaperRecord)}  # a new field needs a case here
    seen = {record_fingerprint(base)}
    for name, value in changed.items():
        seen.add(record_fingerprint(replace(base, **{name: value})))
    assert len(seen) == len(changed) + 1
    # a bullet moving between two bullets' term maps changes it too (not only the union of terms)
    two = replace(base, bullet_vectors=np.ones((2, DIM)), bullet_hubness=np.zeros(2), sparse_bullets=({1: 1.0}, {}))
    assert record_fingerprint(two) != record_fingerprint(replace(two, sparse_bullets=({}, {1: 1.0})))


def test_the_fingerprint_is_stable_across_dtypes_orders_and_zero_weights(docs: list[Doc], encoders: Encoders) -> None:
    base = record(docs[2], encoders)
    same = replace(
        base,
        bullet_vectors=base.bullet_vectors.astype(np.float64),
        title_vector=list(base.title_vector),  # type: ignore[arg-type]
        sparse_summary={**dict(reversed(list(base.sparse_summary.items()))), 60: 0.0},
    )
    assert record_fingerprint(same) == record_fingerprint(base)
    assert record_fingerprint(record(docs[2], encoders)) == record_fingerprint(base)
    assert len(record_fingerprint(base)) == 32 and int(record_fingerprint(base), 16) >= 0
    with pytest.raises(UsageError, match="PaperRecord objects, got dict"):
        record_fingerprint({"paper_id": "x"})  # type: ignore[arg-type]


def test_fingerprints_round_trip_through_json_and_bad_ones_are_one_line_errors() -> None:
    kept = Fingerprints("v3", {"2401.00001": "ab" * 16})
    assert Fingerprints.from_dict(json.loads(json.dumps(kept.to_dict()))) == kept
    for bad, message in (
        ([], "expected a dict with format 1"),
        ({"format": 9, "version": "v1", "papers": {}}, "format 1"),
        ({"format": 1, "version": 3, "papers": {}}, "'version' must be a string"),
        ({"format": 1, "version": "v1", "papers": {"a": 1}}, "paper 'a' has no string fingerprint"),
        ({"format": 1, "version": "v-1", "papers": {}}, "version name 'v-1' is not allowed"),
    ):
        with pytest.raises(UsageError, match=message) as caught:
            Fingerprints.from_dict(bad)
        assert "\n" not in str(caught.value)


# --------------------------------------------------------------------------- syncs
def test_a_first_sync_is_full_and_an_unchanged_one_writes_nothing(
    opener: Callable[[], Backend], docs: list[Doc], encoders: Encoders
) -> None:
    backend = opener()
    prints, report = sync_backend(backend, records_of(docs, encoders), "s1", None)
    assert (report.full, report.upserted, report.deleted, report.kept) == (True, len(docs), 0, 0)
    assert report.reason == "no previous fingerprints" and report.seconds >= sum(report.phases.values()) * 0.99
    assert prints.version == "s1" and set(prints.papers) == {d.paper_id for d in docs}
    assert backend.live_version() == "s1"
    assert_holds(backend, docs)
    again, report = sync_backend(backend, records_of(docs, encoders), "s2", prints)
    assert (report.full, report.upserted, report.deleted, report.kept) == (False, 0, 0, len(docs))
    assert again.papers == prints.papers and backend.live_version() == "s2"
    assert_holds(opener(), docs)


def test_an_incremental_sync_upserts_the_changed_and_new_papers_and_deletes_the_gone(
    opener: Callable[[], Backend], docs: list[Doc], encoders: Encoders, request: pytest.FixtureRequest
) -> None:
    backend = opener()
    prints, _ = sync_backend(backend, records_of(docs, encoders), "s1", None)
    rng = np.random.default_rng(4)
    changed = replace(docs[3], vectors=_unit(rng, 2), hubs=np.full(2, 0.2, np.float32), votes=321)
    changed.bullet_tokens = [["video"], ["token", "lora"]]
    newcomer = replace(docs[0], paper_id="2402.12345", vectors=_unit(rng, 3), hubs=np.zeros(3), title=_unit(rng, 1)[0])
    newcomer.bullet_tokens = [["rank"], ["sparse"], ["미세"]]
    gone = docs[7]
    now = [changed if d is docs[3] else d for d in docs if d is not gone] + [newcomer]
    prints2, report = sync_backend(backend, records_of(now, encoders), "s2", prints)
    assert (report.full, report.upserted, report.deleted, report.kept) == (False, 2, 1, len(docs) - 2)
    assert set(prints2.papers) == {d.paper_id for d in now}
    assert prints2.papers[docs[4].paper_id] == prints.papers[docs[4].paper_id]
    assert prints2.papers[changed.paper_id] != prints.papers[changed.paper_id]
    assert_holds(backend, now)
    assert [h.paper_id for h in backend.top_papers(QUERIES[0], 2, Filters(min_votes=300))] == [changed.paper_id]
    if "milvus" in request.node.name:  # only the two upserted papers' rows and the gone one's were written
        writes = +backend.writes  # type: ignore[attr-defined]
        assert writes == {
            "bullets_inserted": 2 + len(newcomer.vectors),
            "papers_inserted": 2,
            "bullets_rewritten": len(docs[3].vectors) + len(gone.vectors),
            "papers_rewritten": 2,
        }


def test_fingerprints_of_another_version_or_none_give_a_full_sync(
    opener: Callable[[], Backend], docs: list[Doc], encoders: Encoders
) -> None:
    backend = opener()
    prints, _ = sync_backend(backend, records_of(docs, encoders), "s1", None)
    # someone else publishes another version: our fingerprints no longer describe the store
    other = opener()
    other.begin_version("elsewhere", from_live=False)
    other.upsert(records_of(docs[:3], encoders))
    other.publish("elsewhere")
    _, report = sync_backend(backend, records_of(docs[2:], encoders), "s2", prints)
    assert report.full and "the live version is elsewhere, the fingerprints belong to s1" in report.reason
    assert (report.upserted, report.deleted, report.kept) == (len(docs) - 2, 0, 0)
    assert_holds(backend, docs[2:])
    _, report = sync_backend(backend, records_of(docs[5:], encoders), "s3", None)  # a full one drops the rest
    assert report.full and report.upserted == len(docs) - 5
    assert_holds(opener(), docs[5:])


def test_a_failed_sync_leaves_the_live_version_and_the_next_one_is_incremental(
    opener: Callable[[], Backend], docs: list[Doc], encoders: Encoders
) -> None:
    backend = opener()
    prints, _ = sync_backend(backend, records_of(docs, encoders), "s1", None)

    def failing() -> Iterator[PaperRecord]:
        yield record(replace(docs[0], votes=5000), encoders)
        yield record(replace(docs[1], votes=5000), encoders)
        raise RuntimeError("the indexer stopped")

    with pytest.raises(RuntimeError, match="indexer stopped"):
        sync_backend(backend, failing(), "s2", prints, batch_size=1)
    assert backend.live_version() == "s1"
    assert_holds(opener(), docs)
    changed = replace(docs[1], votes=4000)
    now = [changed if d is docs[1] else d for d in docs]
    _, report = sync_backend(opener(), records_of(now, encoders), "s2", prints)
    assert (report.full, report.upserted, report.kept) == (False, 1, len(docs) - 1)
    fresh = opener()
    assert_holds(fresh, now)
    assert [h.paper_id for h in fresh.top_papers(QUERIES[1], 5, Filters(min_votes=1000))] == [changed.paper_id]


def test_sync_misuse_is_one_line_errors(opener: Callable[[], Backend], docs: list[Doc], encoders: Encoders) -> None:
    backend = opener()
    twice = [record(docs[0], encoders), record(replace(docs[0], votes=1), encoders)]
    with pytest.raises(UsageError, match=f"paper {docs[0].paper_id} appears twice"):
        sync_backend(backend, twice, "s1", None)
    with pytest.raises(UsageError, match="version name 'bad name' is not allowed"):
        sync_backend(backend, [], "bad name", None)
    with pytest.raises(UsageError, match="batch_size"):
        sync_backend(backend, [], "s1", None, batch_size=0)
    assert backend.live_version() is None
    prints, _ = sync_backend(backend, records_of(docs[:2], encoders), "s1", None)
    with pytest.raises(UsageError, match="s1 is the live version"):
        sync_backend(backend, records_of(docs[:2], encoders), "s1", prints)
