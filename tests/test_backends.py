"""One suite for every retrieval backend (retrieval/backends/): embedded FAISS + scipy, and Milvus.

Milvus runs as Milvus Lite on a file in a temporary folder (one server per module), or against
the server named by `RETRIEVAL_TEST_MILVUS_URI` (e.g. http://127.0.0.1:19530). Every answer is
compared with a brute-force computation over the same hand-made, seeded fixture, so both
backends are held to the same exact results.
"""

from __future__ import annotations

import datetime as dt
import itertools
import os
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pytest

from retrieval.backends.base import Backend, PaperRecord, augment
from retrieval.backends.embedded import DenseIndexConfig, EmbeddedBackend
from retrieval.backends.sparse import SparseEncoder
from retrieval.errors import BackendUnavailableError, IndexNotFoundError, UsageError, error_codes
from retrieval.lexical import BM25Index
from retrieval.models import Filters

if TYPE_CHECKING:
    from retrieval.backends.milvus import MilvusBackend

DIM = 8
WORDS = ["lora", "rank", "adapt", "diffus", "video", "token", "sparse", "attent", "저랭크", "미세", "조정", "확산"]
AUTHORS = ["Edward Hu", "Yelong Shen", "Tri Dao", "Ana O'Brien", "Li_Wei", "50% Team", 'Quote "Q" Lab', "김민수"]
MILVUS_ENV = "RETRIEVAL_TEST_MILVUS_URI"


# --------------------------------------------------------------------------- fixture corpus
@dataclass
class Doc:
    """One fixture paper with everything needed to compute the expected answers."""

    paper_id: str
    first: str
    last: str
    votes: int
    authors: list[str]
    vectors: np.ndarray
    hubs: np.ndarray
    centroid: np.ndarray
    centroid_hub: float
    title: np.ndarray
    bullet_tokens: list[list[str]]
    title_tokens: list[str]

    @property
    def summary_tokens(self) -> list[str]:
        return [t for tokens in self.bullet_tokens for t in tokens]

    @property
    def joined_authors(self) -> str:
        return " | ".join(self.authors).lower()


def _unit(rng: np.random.Generator, *shape: int) -> np.ndarray:
    x = rng.normal(size=(*shape, DIM)).astype(np.float32)
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def make_docs(n: int = 14, seed: int = 7) -> list[Doc]:
    rng = np.random.default_rng(seed)
    docs = []
    day0 = dt.date(2024, 1, 1)
    for i in range(n):
        bullets = int(rng.integers(1, 5))
        first = day0 + dt.timedelta(days=int(rng.integers(0, 150)))
        last = first + dt.timedelta(days=int(rng.integers(0, 40)))
        tokens = [list(rng.choice(WORDS, size=int(rng.integers(1, 7)))) for _ in range(bullets)]
        if i == 3:
            tokens[0] = []  # a bullet without any term
        vectors = _unit(rng, bullets)
        centroid = vectors.mean(axis=0)
        docs.append(
            Doc(
                paper_id=f"2401.{i:05d}",
                first=first.isoformat(),
                last=last.isoformat(),
                votes=-1 if i % 5 == 0 else int(rng.integers(0, 120)),
                authors=list(rng.choice(AUTHORS, size=int(rng.integers(1, 4)), replace=False)),
                vectors=vectors,
                hubs=rng.uniform(0.0, 0.5, size=bullets).astype(np.float32),
                centroid=centroid / np.linalg.norm(centroid),
                centroid_hub=float(rng.uniform(0.0, 0.5)),
                title=_unit(rng, 1)[0],
                bullet_tokens=tokens,
                title_tokens=list(rng.choice(WORDS, size=int(rng.integers(1, 4)))),
            )
        )
    return docs


@dataclass
class Encoders:
    bullets: SparseEncoder
    summary: SparseEncoder
    title: SparseEncoder


def fit_encoders(docs: list[Doc]) -> Encoders:
    return Encoders(
        SparseEncoder().fit([t for d in docs for t in d.bullet_tokens]),
        SparseEncoder().fit([d.summary_tokens for d in docs]),
        SparseEncoder().fit([d.title_tokens for d in docs]),
    )


def record(doc: Doc, enc: Encoders) -> PaperRecord:
    return PaperRecord(
        paper_id=doc.paper_id,
        first_date=doc.first,
        last_date=doc.last,
        votes=doc.votes,
        authors=doc.joined_authors,
        bullet_vectors=doc.vectors,
        bullet_hubness=doc.hubs,
        centroid=doc.centroid,
        centroid_hubness=doc.centroid_hub,
        title_vector=doc.title,
        sparse_bullets=tuple(enc.bullets.encode_document(t) for t in doc.bullet_tokens),
        sparse_summary=enc.summary.encode_document(doc.summary_tokens),
        sparse_title=enc.title.encode_document(doc.title_tokens),
    )


def passes(doc: Doc, filters: Filters) -> bool:
    """The filter semantics of retrieval.search.Searcher, written out again."""
    if filters.date_from and doc.last < filters.date_from:
        return False
    if filters.date_to and doc.first > filters.date_to:
        return False
    if filters.min_votes is not None and doc.votes < filters.min_votes:
        return False
    return not (filters.author and filters.author.strip().lower() not in doc.joined_authors)


def expected_bullets(docs: list[Doc], q: np.ndarray, w: float, k: int, filters: Filters) -> list[tuple]:
    rows = [
        (d.paper_id, i, float(d.vectors[i] @ q - w * d.hubs[i]))
        for d in docs
        if passes(d, filters)
        for i in range(len(d.vectors))
    ]
    return sorted(rows, key=lambda r: -r[2])[:k]


def expected_papers(docs: list[Doc], q: np.ndarray, w: float, k: int, filters: Filters, field: str) -> list[tuple]:
    if field == "centroid":
        rows = [(d.paper_id, float(d.centroid @ q - w * d.centroid_hub)) for d in docs if passes(d, filters)]
    else:
        rows = [(d.paper_id, float(d.title @ q)) for d in docs if passes(d, filters)]
    return sorted(rows, key=lambda r: -r[1])[:k]


def assert_same(hits: list, expected: list[tuple]) -> None:
    got = [(h.paper_id, h.position, h.score) if hasattr(h, "position") else (h.paper_id, h.score) for h in hits]
    assert [g[:-1] for g in got] == [e[:-1] for e in expected]
    np.testing.assert_allclose([g[-1] for g in got], [e[-1] for e in expected], atol=1e-5)


# --------------------------------------------------------------------------- backends under test
@pytest.fixture(scope="module")
def milvus_uri(tmp_path_factory: pytest.TempPathFactory) -> str:
    return os.environ.get(MILVUS_ENV) or str(tmp_path_factory.mktemp("milvus") / "lite.db")


Opener = Callable[[], Backend]


@contextmanager
def store_opener(kind: str, tmp_path: Path, milvus_uri: str, batch_size: int) -> Iterator[Opener]:
    """Opens views of one fresh store of backend `kind`; drops its Milvus collections afterwards."""
    opened: list[Backend] = []
    prefix = "t" + uuid.uuid4().hex[:10]
    if kind == "embedded":

        def open_store() -> Backend:
            opened.append(EmbeddedBackend(tmp_path / "store", DIM))
            return opened[-1]
    else:
        from retrieval.backends.milvus import MilvusBackend

        def open_store() -> Backend:
            opened.append(MilvusBackend(milvus_uri, DIM, prefix=prefix, batch_size=batch_size))
            return opened[-1]

    try:
        yield open_store
    finally:
        if kind == "milvus" and opened:
            client = opened[0]._client  # type: ignore[attr-defined]
            for name in client.list_collections():
                if name.startswith(prefix + "_"):
                    client.drop_collection(name)
        for backend in opened:
            backend.close()


@pytest.fixture(params=["embedded", "milvus"])
def opener(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Opener]:
    """Opens a backend on one fresh store; every call opens another view of the same store."""
    uri = request.getfixturevalue("milvus_uri") if request.param == "milvus" else ""
    with store_opener(request.param, tmp_path, uri, batch_size=7) as open_store:
        yield open_store


@pytest.fixture(scope="module")
def docs() -> list[Doc]:
    return make_docs()


@pytest.fixture(scope="module")
def encoders(docs: list[Doc]) -> Encoders:
    return fit_encoders(docs)


def build(backend: Backend, name: str, records: list[PaperRecord], from_live: bool = False) -> None:
    backend.begin_version(name, from_live=from_live)
    backend.upsert(records)
    backend.publish(name)


@pytest.fixture
def store(opener: Opener, docs: list[Doc], encoders: Encoders) -> Backend:
    backend = opener()
    build(backend, "v1", [record(d, encoders) for d in docs])
    return backend


QUERIES = _unit(np.random.default_rng(99), 3)
FILTERS = [
    Filters(date_from="2024-03-01"),
    Filters(date_to="2024-02-15"),
    Filters(date_from="2024-02-01", date_to="2024-03-31"),
    Filters(min_votes=40),
    Filters(min_votes=0),
    Filters(author="tri"),
    Filters(author="O'BRIEN"),
    Filters(author="li_w"),
    Filters(author="50% t"),
    Filters(author='"q"'),
    Filters(author="민수"),
    Filters(author="hu | y"),  # spans two names, as a substring of the joined list does
    Filters(author="nobody"),
    Filters(date_from="2024-02-01", min_votes=10, author="e"),
]


# --------------------------------------------------------------------------- dense legs
def test_dense_bullets_and_papers_are_the_exact_top_k(store: Backend, docs: list[Doc]) -> None:
    for q in QUERIES:
        assert_same(store.top_bullets(q, 5), expected_bullets(docs, q, 0.0, 5, Filters()))
        assert_same(store.top_bullets(q, 1000), expected_bullets(docs, q, 0.0, 1000, Filters()))
        for field in ("centroid", "title"):
            assert_same(store.top_papers(q, 4, field=field), expected_papers(docs, q, 0.0, 4, Filters(), field))


@pytest.mark.parametrize("weight", [0.35, 2.0])
def test_the_hubness_dimension_gives_exactly_q_dot_v_minus_w_hub(
    store: Backend, docs: list[Doc], weight: float
) -> None:
    q = QUERIES[0]
    hits = store.top_bullets(q, 1000, hubness_weight=weight)
    assert_same(hits, expected_bullets(docs, q, weight, 1000, Filters()))
    plain = {(h.paper_id, h.position): h.score for h in store.top_bullets(q, 1000)}
    by_id = {d.paper_id: d for d in docs}
    for hit in hits:
        hub = float(by_id[hit.paper_id].hubs[hit.position])
        assert hit.score == pytest.approx(plain[(hit.paper_id, hit.position)] - weight * hub, abs=1e-5)
    assert_same(
        store.top_papers(q, 1000, field="centroid", hubness_weight=weight),
        expected_papers(docs, q, weight, 1000, Filters(), "centroid"),
    )
    # the title carries no hubness: the weight changes nothing there
    assert_same(
        store.top_papers(q, 3, field="title", hubness_weight=weight), expected_papers(docs, q, 0, 3, Filters(), "title")
    )


def test_every_filter_gives_the_brute_force_answer(store: Backend, docs: list[Doc]) -> None:
    q = QUERIES[1]
    matched = set()
    for filters in FILTERS:
        expected = expected_bullets(docs, q, 0.5, 6, filters)
        assert_same(store.top_bullets(q, 6, filters, hubness_weight=0.5), expected)
        assert_same(store.top_papers(q, 50, filters), expected_papers(docs, q, 0, 50, filters, "centroid"))
        matched.add(len(expected_papers(docs, q, 0, 50, filters, "centroid")))
    assert 0 in matched and len(matched) > 4  # the fixture exercises empty, partial and wide filters


# --------------------------------------------------------------------------- sparse legs
def bm25_cases(docs: list[Doc]) -> list[tuple[str, list[list[str]], list[tuple[str, int | None]]]]:
    bullets = [(d.paper_id, i) for d in docs for i in range(len(d.bullet_tokens))]
    return [
        ("bullets", [t for d in docs for t in d.bullet_tokens], bullets),
        ("summary", [d.summary_tokens for d in docs], [(d.paper_id, None) for d in docs]),
        ("title", [d.title_tokens for d in docs], [(d.paper_id, None) for d in docs]),
    ]


QUERY_TERMS = [["lora", "rank"], ["저랭크", "미세", "조정", "조정"], ["video", "unknown-term"], ["diffus"], ["nothing"]]


def test_sparse_scores_equal_bm25index(store: Backend, docs: list[Doc], encoders: Encoders) -> None:
    for field, documents, keys in bm25_cases(docs):
        bm25 = BM25Index.build(documents)
        encoder = getattr(encoders, field)
        for terms in QUERY_TERMS:
            reference = bm25.scores(terms)
            hits = store.top_sparse(encoder.encode_query(terms), 1000, field=field)
            got = {(h.paper_id, getattr(h, "position", None)): h.score for h in hits}
            want = {key: float(s) for key, s in zip(keys, reference, strict=True) if s > 0}
            assert got.keys() == want.keys(), (field, terms)
            for key, score in want.items():
                assert got[key] == pytest.approx(score, abs=1e-4), (field, terms, key)
            scores = [h.score for h in hits]
            assert scores == sorted(scores, reverse=True)
            top = store.top_sparse(encoder.encode_query(terms), 2, field=field)
            assert [h.score for h in top] == pytest.approx(sorted(want.values(), reverse=True)[:2], abs=1e-4)
    assert QUERY_TERMS[-1] and store.top_sparse(encoders.summary.encode_query(["nothing"]), 5) == []


def test_sparse_legs_respect_filters(store: Backend, docs: list[Doc], encoders: Encoders) -> None:
    terms = ["lora", "token", "저랭크"]
    for filters in FILTERS:
        for field, documents, keys in bm25_cases(docs):
            reference = BM25Index.build(documents).scores(terms)
            by_id = {d.paper_id: d for d in docs}
            want = {k: float(s) for k, s in zip(keys, reference, strict=True) if s > 0 and passes(by_id[k[0]], filters)}
            hits = store.top_sparse(getattr(encoders, field).encode_query(terms), 1000, filters, field=field)
            assert {(h.paper_id, getattr(h, "position", None)) for h in hits} == want.keys(), (field, filters)


# --------------------------------------------------------------------------- versions and changes
def test_upsert_then_delete(store: Backend, docs: list[Doc], encoders: Encoders) -> None:
    rng = np.random.default_rng(5)
    vectors, title = _unit(rng, 2), _unit(rng, 1)[0]
    newcomer = replace(
        docs[0], paper_id="2402.99999", vectors=vectors, hubs=np.zeros(2, np.float32), centroid=vectors[0], title=title
    )
    newcomer.bullet_tokens = [["lora"], ["video"]]
    gone = docs[2].paper_id
    store.begin_version("v2")
    store.upsert([record(newcomer, encoders)])
    store.delete([gone, "0000.00000"])  # an unknown id is ignored
    store.publish("v2")
    now = [d for d in docs if d.paper_id != gone] + [newcomer]
    q = newcomer.vectors[1]
    assert store.top_bullets(q, 1)[0].paper_id == "2402.99999"
    assert_same(store.top_bullets(q, 1000), expected_bullets(now, q, 0.0, 1000, Filters()))
    assert_same(store.top_papers(q, 1000, field="title"), expected_papers(now, q, 0.0, 1000, Filters(), "title"))
    everything = {t: 1.0 for t in range(64)}
    for field in ("bullets", "summary", "title"):
        ids = {h.paper_id for h in store.top_sparse(everything, 1000, field=field)}
        assert gone not in ids
    assert "2402.99999" in {h.paper_id for h in store.top_sparse(everything, 1000, field="bullets")}


def test_incremental_upsert_of_one_changed_paper_keeps_the_others(
    store: Backend, docs: list[Doc], encoders: Encoders
) -> None:
    rng = np.random.default_rng(11)
    changed = replace(docs[4], vectors=_unit(rng, 3), hubs=np.full(3, 0.1, np.float32), votes=500)
    changed.bullet_tokens = docs[4].bullet_tokens[:1] * 3
    store.begin_version("v2")  # a copy of v1
    store.upsert([record(changed, encoders)])
    store.publish("v2")
    now = [changed if d.paper_id == changed.paper_id else d for d in docs]
    for q in [*QUERIES, changed.vectors[2]]:
        assert_same(store.top_bullets(q, 1000, hubness_weight=0.3), expected_bullets(now, q, 0.3, 1000, Filters()))
    assert [h.paper_id for h in store.top_papers(QUERIES[0], 5, Filters(min_votes=200))] == [changed.paper_id]
    positions = {h.position for h in store.top_bullets(changed.vectors[0], 1000) if h.paper_id == changed.paper_id}
    assert positions == {0, 1, 2}  # the old bullets of that paper are gone, the new ones are all there


def test_publish_switches_versions_atomically(opener: Opener, docs: list[Doc], encoders: Encoders) -> None:
    builder = opener()
    build(builder, "v1", [record(d, encoders) for d in docs[:6]])
    reader = opener()
    assert reader.live_version() == "v1"
    q = QUERIES[2]
    before = expected_bullets(docs[:6], q, 0, 1000, Filters())
    builder.begin_version("v2", from_live=False)
    builder.upsert([record(d, encoders) for d in docs[6:]])
    assert_same(builder.top_bullets(q, 1000), before)  # the builder itself still answers v1
    assert_same(reader.top_bullets(q, 1000), before)
    builder.publish("v2")
    after = expected_bullets(docs[6:], q, 0, 1000, Filters())
    assert builder.live_version() == reader.live_version() == "v2"
    assert_same(builder.top_bullets(q, 1000), after)
    assert_same(reader.top_bullets(q, 1000), before)  # a reader moves on when it refreshes
    assert reader.refresh() == "v2"
    assert_same(reader.top_bullets(q, 1000), after)
    assert_same(opener().top_bullets(q, 1000), after)


def test_a_reader_keeps_answering_when_a_later_build_removes_its_version(
    opener: Opener, docs: list[Doc], encoders: Encoders, request: pytest.FixtureRequest
) -> None:
    builder = opener()
    build(builder, "v1", [record(d, encoders) for d in docs[:5]])
    reader = opener()
    q = QUERIES[1]
    first = expected_bullets(docs[:5], q, 0, 1000, Filters())
    assert_same(reader.top_bullets(q, 1000), first)
    build(builder, "v2", [record(d, encoders) for d in docs[5:]])
    builder.begin_version("v3")  # removes v1, which the reader still reads
    second = expected_bullets(docs[5:], q, 0, 1000, Filters())
    hits = reader.top_bullets(q, 1000)
    # the embedded reader keeps v1 in memory; the Milvus reader finds v1 gone and moves to v2
    assert_same(hits, first if "embedded" in request.node.name else second)
    assert reader.refresh() == "v2"
    assert_same(reader.top_bullets(q, 1000), second)


def test_an_interrupted_build_leaves_the_old_version_answering(
    opener: Opener, docs: list[Doc], encoders: Encoders
) -> None:
    builder = opener()
    build(builder, "v1", [record(d, encoders) for d in docs])
    q = QUERIES[0]
    full = expected_bullets(docs, q, 0, 1000, Filters())
    builder.begin_version("v2", from_live=False)
    builder.upsert([record(docs[0], encoders)])  # a partial build that never publishes
    builder.delete([d.paper_id for d in docs[1:4]])
    builder.close()
    fresh = opener()
    assert fresh.live_version() == "v1"
    assert_same(fresh.top_bullets(q, 1000), full)
    # the next build clears the leftovers and can even reuse the name
    build(fresh, "v2", [record(d, encoders) for d in docs[:3]])
    assert_same(fresh.top_bullets(q, 1000), expected_bullets(docs[:3], q, 0, 1000, Filters()))


def test_misuse_is_one_line_errors(opener: Opener, docs: list[Doc], encoders: Encoders) -> None:
    backend = opener()
    with pytest.raises(IndexNotFoundError, match="no published version"):
        backend.top_bullets(QUERIES[0], 3)
    with pytest.raises(UsageError, match="begin_version"):
        backend.upsert([record(docs[0], encoders)])
    with pytest.raises(UsageError, match="version name 'v-1' is not allowed"):
        backend.begin_version("v-1")
    build(backend, "v1", [record(docs[0], encoders)])
    with pytest.raises(UsageError, match="v1 is the live version"):
        backend.begin_version("v1")
    with pytest.raises(UsageError, match="vector: expected 8 dimensions, got \\(3,\\)"):
        backend.top_bullets(np.ones(3), 3)
    with pytest.raises(UsageError, match="k: must be a whole number of at least 1, got 0"):
        backend.top_papers(QUERIES[0], 0)
    with pytest.raises(UsageError, match="date_from: must be a date YYYY-MM-DD"):
        backend.top_bullets(QUERIES[0], 3, Filters(date_from='2024" or votes > 0'))
    with pytest.raises(UsageError, match="field"):
        backend.top_papers(QUERIES[0], 3, field="summary")  # type: ignore[arg-type]
    backend.begin_version("v2")
    wrong = replace(docs[0], vectors=np.ones((1, 4), np.float32), hubs=np.zeros(1, np.float32))
    with pytest.raises(UsageError, match="centroid"):
        record(wrong, encoders)
    small = replace(wrong, centroid=np.ones(4, np.float32), title=np.ones(4, np.float32), bullet_tokens=[["lora"]])
    with pytest.raises(UsageError, match="vectors have 4 dimensions, the store 8"):
        backend.upsert([record(small, encoders)])
    with pytest.raises(UsageError, match="not being built"):
        backend.publish("v3")


# --------------------------------------------------------------------------- one backend only
def test_unreachable_milvus_is_one_quick_line_naming_the_uri() -> None:
    from retrieval.backends.milvus import MilvusBackend

    started = time.monotonic()
    with pytest.raises(BackendUnavailableError) as caught:
        MilvusBackend("http://127.0.0.1:1", DIM, timeout=2.0)
    assert time.monotonic() - started < 10
    message = str(caught.value)
    assert "http://127.0.0.1:1" in message and "\n" not in message
    assert error_codes(caught.value) == (13, 503)


def test_milvus_filter_expressions_escape_what_the_user_typed() -> None:
    from retrieval.backends.milvus import filter_expression

    assert filter_expression(Filters()) == ""
    assert filter_expression(Filters(date_from="2024-01-02", date_to="2024-02-03", min_votes=3)) == (
        'last_date >= "2024-01-02" and first_date <= "2024-02-03" and votes >= 3'
    )
    assert filter_expression(Filters(author=' 50%_"x"\\ ')) == r'authors like "%50\\%\\_\"x\"\\\\%"'


def test_milvus_beyond_one_search_limit_pages_with_the_iterator(
    milvus_uri: str, docs: list[Doc], encoders: Encoders, monkeypatch: pytest.MonkeyPatch
) -> None:
    from retrieval.backends import milvus

    backend = milvus.MilvusBackend(milvus_uri, DIM, prefix="iter" + uuid.uuid4().hex[:8])
    try:
        build(backend, "v1", [record(d, encoders) for d in docs])
        monkeypatch.setattr(milvus, "MAX_TOPK", 4)
        q = QUERIES[0]
        assert_same(backend.top_bullets(q, 9), expected_bullets(docs, q, 0, 9, Filters()))
        filters = Filters(date_from="2024-02-01")
        assert_same(backend.top_papers(q, 6, filters), expected_papers(docs, q, 0, 6, filters, "centroid"))
    finally:
        for name in backend._client.list_collections():
            if name.startswith(backend.prefix + "_"):
                backend._client.drop_collection(name)
        backend.close()


@pytest.mark.parametrize("index_type", ["hnsw", "ivf-sq8"])
def test_embedded_approximate_indexes_find_nearly_all_of_the_exact_top_10(tmp_path: Path, index_type: str) -> None:
    rng = np.random.default_rng(3)
    docs = [
        replace(d, paper_id=f"2403.{i:05d}") for i, d in enumerate(itertools.islice(itertools.cycle(make_docs()), 600))
    ]
    for d in docs:
        d.vectors = _unit(rng, len(d.vectors))
    enc = fit_encoders(docs)
    approx = EmbeddedBackend(tmp_path / index_type, DIM, DenseIndexConfig(index_type=index_type))
    build(approx, "v1", [record(d, enc) for d in docs])
    reopened = EmbeddedBackend(tmp_path / index_type, DIM)  # the stored index type, not the default
    recalls = []
    for q in _unit(rng, 20):
        exact = {(p, i) for p, i, _ in expected_bullets(docs, q, 1.0, 10, Filters())}
        found = {(h.paper_id, h.position) for h in reopened.top_bullets(q, 10, hubness_weight=1.0)}
        recalls.append(len(exact & found) / 10)
    assert np.mean(recalls) >= 0.9, recalls
    assert (tmp_path / index_type / "versions" / "v1" / "bullets.faiss").is_file()


def test_embedded_versions_are_plain_files_and_a_damaged_one_is_refused(
    tmp_path: Path, docs: list[Doc], encoders: Encoders
) -> None:
    from retrieval.errors import IndexCorruptError, IndexMismatchError

    backend = EmbeddedBackend(tmp_path / "s", DIM)
    build(backend, "v1", [record(d, encoders) for d in docs])
    folder = tmp_path / "s" / "versions" / "v1"
    assert (tmp_path / "s" / "LIVE").read_text().strip() == "v1"
    assert {p.suffix for p in folder.iterdir()} == {".json", ".npy"}
    bullets = np.load(folder / "bullets.npy", allow_pickle=False)
    assert bullets.shape == (sum(len(d.vectors) for d in docs), DIM + 1)
    np.testing.assert_allclose(bullets[:, :DIM], augment(np.concatenate([d.vectors for d in docs]), 0)[:, :DIM])
    with pytest.raises(IndexMismatchError, match="8-dim"):
        EmbeddedBackend(tmp_path / "s", 16)
    with (folder / "titles.npy").open("ab") as handle:
        handle.write(b"xx")
    with pytest.raises(IndexCorruptError, match="titles.npy"):
        EmbeddedBackend(tmp_path / "s", DIM)


# --------------------------------------------------------------------------- builds after builds
def test_a_second_incremental_build_after_an_interrupted_incremental_one_is_correct(
    opener: Opener, docs: list[Doc], encoders: Encoders
) -> None:
    builder = opener()
    build(builder, "v1", [record(d, encoders) for d in docs])
    rng = np.random.default_rng(21)
    half_done = replace(docs[1], vectors=_unit(rng, 2), hubs=np.zeros(2, np.float32))
    half_done.bullet_tokens = [["video"], ["lora"]]
    builder.begin_version("v2")  # from the live version; marks what it replaces, never publishes
    builder.upsert([record(half_done, encoders)])
    builder.delete([docs[2].paper_id, docs[3].paper_id])
    builder.close()
    q = QUERIES[2]
    fresh = opener()
    assert_same(fresh.top_bullets(q, 1000), expected_bullets(docs, q, 0, 1000, Filters()))
    changed = replace(docs[5], votes=777)
    fresh.begin_version("v2")
    fresh.upsert([record(changed, encoders)])
    fresh.delete([docs[6].paper_id])
    fresh.publish("v2")
    now = [changed if d is docs[5] else d for d in docs if d is not docs[6]]
    for probe in (q, half_done.vectors[0], docs[2].vectors[0], docs[3].vectors[-1]):
        assert_same(fresh.top_bullets(probe, 1000), expected_bullets(now, probe, 0, 1000, Filters()))
        assert_same(fresh.top_papers(probe, 1000), expected_papers(now, probe, 0, 1000, Filters(), "centroid"))
    assert [h.paper_id for h in fresh.top_papers(q, 3, Filters(min_votes=700))] == [changed.paper_id]
    summary = fresh.top_sparse({t: 1.0 for t in range(64)}, 1000, field="summary")
    assert {h.paper_id for h in summary} == {d.paper_id for d in now if d.summary_tokens}


def test_upserting_a_paper_twice_in_one_build_keeps_the_last_and_a_delete_removes_a_new_one(
    store: Backend, docs: list[Doc], encoders: Encoders
) -> None:
    rng = np.random.default_rng(8)
    first = replace(docs[0], vectors=_unit(rng, 4), hubs=np.zeros(4, np.float32))
    first.bullet_tokens = [["lora"]] * 4
    second = replace(docs[0], vectors=_unit(rng, 1), hubs=np.zeros(1, np.float32), votes=999)
    second.bullet_tokens = [["rank"]]
    newcomer = replace(docs[1], paper_id="2405.00001")
    store.begin_version("v2")
    store.upsert([record(first, encoders), record(newcomer, encoders)])
    store.upsert([record(second, encoders)])
    store.delete([newcomer.paper_id])
    store.publish("v2")
    now = [second if d is docs[0] else d for d in docs]
    for q in (*QUERIES, first.vectors[0], second.vectors[0]):
        assert_same(store.top_bullets(q, 1000), expected_bullets(now, q, 0, 1000, Filters()))
    assert {h.position for h in store.top_bullets(QUERIES[0], 1000) if h.paper_id == docs[0].paper_id} == {0}
    assert newcomer.paper_id not in {h.paper_id for h in store.top_papers(QUERIES[0], 1000, field="title")}


# --------------------------------------------------------------------------- Milvus: what a build writes
@pytest.fixture
def milvus_store(milvus_uri: str) -> Iterator[Callable[..., MilvusBackend]]:
    """Opens MilvusBackend views of one fresh prefix (keyword arguments go to the constructor)."""
    from retrieval.backends.milvus import MilvusBackend

    prefix = "rows" + uuid.uuid4().hex[:8]
    opened: list[MilvusBackend] = []

    def open_store(**options: Any) -> MilvusBackend:
        opened.append(MilvusBackend(milvus_uri, DIM, prefix=prefix, batch_size=5, **options))
        return opened[-1]

    yield open_store
    for name in opened[0]._client.list_collections():
        if name.startswith(prefix + "_"):
            opened[0]._client.drop_collection(name)
    for backend in opened:
        backend.close()


def test_milvus_an_incremental_build_of_one_changed_paper_writes_only_its_rows(
    milvus_store: Callable[..., MilvusBackend], docs: list[Doc], encoders: Encoders
) -> None:
    backend = milvus_store()
    build(backend, "v1", [record(d, encoders) for d in docs])
    total = sum(len(d.vectors) for d in docs)
    assert backend.count() == {"bullets": total, "papers": len(docs)}
    old = docs[4]
    rng = np.random.default_rng(13)
    changed = replace(old, vectors=_unit(rng, len(old.vectors) + 2), hubs=np.zeros(len(old.vectors) + 2, np.float32))
    changed.bullet_tokens = [["video"]] * len(changed.vectors)
    backend.begin_version("v2")
    assert +backend.writes == {}  # nothing copied, nothing to collect
    backend.upsert([record(changed, encoders)])
    assert +backend.writes == {
        "bullets_inserted": len(changed.vectors),
        "papers_inserted": 1,
        "bullets_rewritten": len(old.vectors),  # the old rows, now died = 2
        "papers_rewritten": 1,
    }
    backend.publish("v2")
    # what Milvus holds: the new rows born in v2, the old ones replaced in v2, all of that paper
    count = backend.count
    assert count("born == 2") == {"bullets": len(changed.vectors), "papers": 1}
    assert count("died == 2") == {"bullets": len(old.vectors), "papers": 1}
    assert count(f'paper_id == "{old.paper_id}"') == {
        "bullets": len(old.vectors) + len(changed.vectors),
        "papers": 2,
    }
    assert count(f'born == 1 and died > 2 and paper_id != "{old.paper_id}"') == {
        "bullets": total - len(old.vectors),
        "papers": len(docs) - 1,
    }
    now = [changed if d is old else d for d in docs]
    for q in (*QUERIES, changed.vectors[-1]):
        assert_same(backend.top_bullets(q, 1000), expected_bullets(now, q, 0, 1000, Filters()))


def test_milvus_old_versions_rows_are_collected(
    milvus_store: Callable[..., MilvusBackend], docs: list[Doc], encoders: Encoders
) -> None:
    builder = milvus_store()
    build(builder, "v1", [record(d, encoders) for d in docs])
    reader = milvus_store()
    total = sum(len(d.vectors) for d in docs)
    count = builder.count
    q = QUERIES[0]
    v1 = expected_bullets(docs, q, 0, 1000, Filters())
    changed = replace(docs[0], vectors=docs[0].vectors[:1], hubs=docs[0].hubs[:1])
    changed.bullet_tokens = docs[0].bullet_tokens[:1]
    v2_docs = [changed, *docs[1:]]
    build(builder, "v2", [record(changed, encoders)], from_live=True)
    # the replaced rows stay for a reader still on v1, which answers exactly from v1
    assert count() == {"bullets": total + 1, "papers": len(docs) + 1}
    assert_same(reader.top_bullets(q, 1000), v1)
    on_v2 = milvus_store()
    # a full rebuild: the next build collects v1's rows, keeps v2's (now the previous version)
    build(builder, "v3", [record(d, encoders) for d in docs[:5]], from_live=False)
    assert builder.writes["collected"] == len(docs[0].vectors) + 1
    v2_rows = {"bullets": total - len(docs[0].vectors) + 1, "papers": len(docs)}
    v3_rows = {"bullets": sum(len(d.vectors) for d in docs[:5]), "papers": 5}
    assert count() == {k: v2_rows[k] + v3_rows[k] for k in v2_rows}
    v3 = expected_bullets(docs[:5], q, 0, 1000, Filters())
    assert_same(on_v2.top_bullets(q, 1000), expected_bullets(v2_docs, q, 0, 1000, Filters()))
    assert_same(reader.top_bullets(q, 1000), v3)  # v1 is gone: that reader moved to the live version
    builder.collect()
    assert count() == v3_rows
    assert_same(on_v2.top_bullets(q, 1000), v3)


def test_milvus_without_keep_previous_publish_collects_at_once_and_readers_move_on(
    milvus_store: Callable[..., MilvusBackend], docs: list[Doc], encoders: Encoders
) -> None:
    builder = milvus_store(keep_previous=False)
    build(builder, "v1", [record(d, encoders) for d in docs])
    reader = milvus_store()
    q = QUERIES[1]
    assert_same(reader.top_bullets(q, 1000), expected_bullets(docs, q, 0, 1000, Filters()))
    build(builder, "v2", [record(d, encoders) for d in docs[3:]], from_live=False)
    assert builder.count() == {
        "bullets": sum(len(d.vectors) for d in docs[3:]),
        "papers": len(docs) - 3,
    }
    assert_same(reader.top_bullets(q, 1000), expected_bullets(docs[3:], q, 0, 1000, Filters()))
    assert reader._view is not None and reader._view.name == "v2"  # it moved for good, without a refresh


def test_milvus_refuses_the_older_collection_per_version_layout(milvus_uri: str) -> None:
    from pymilvus import DataType, MilvusClient

    from retrieval.backends.milvus import MilvusBackend
    from retrieval.errors import IndexMismatchError

    prefix = "old" + uuid.uuid4().hex[:8]
    client = MilvusClient(milvus_uri)
    schema = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False)
    schema.add_field("key", DataType.VARCHAR, is_primary=True, max_length=64)
    schema.add_field("value", DataType.VARCHAR, max_length=256)
    schema.add_field("dim", DataType.INT64)
    schema.add_field("vec", DataType.FLOAT_VECTOR, dim=2)
    client.create_collection(f"{prefix}_meta", schema=schema)
    try:
        with pytest.raises(IndexMismatchError, match=f"{prefix}_meta holds another layout") as caught:
            MilvusBackend(milvus_uri, DIM, prefix=prefix)
        assert "\n" not in str(caught.value)
    finally:
        client = MilvusClient(milvus_uri)  # the refused backend closed the connection it shared
        for name in client.list_collections():
            if name.startswith(prefix + "_"):
                client.drop_collection(name)


def test_milvus_recheck_s_reads_the_live_row_less_often_and_learns_of_a_collection_late(
    milvus_store: Callable[..., MilvusBackend], docs: list[Doc], encoders: Encoders, monkeypatch: pytest.MonkeyPatch
) -> None:
    builder = milvus_store()
    build(builder, "v1", [record(d, encoders) for d in docs])
    exact, lazy = milvus_store(), milvus_store(recheck_s=3600.0)
    reads = {id(exact): 0, id(lazy): 0}
    for reader in (exact, lazy):
        original = reader._read_live

        def counted(original: Callable[[], object] = original, key: int = id(reader)) -> object:
            reads[key] += 1
            return original()

        monkeypatch.setattr(reader, "_read_live", counted)
    q = QUERIES[0]
    for reader in (exact, lazy):
        for _ in range(4):
            assert_same(reader.top_bullets(q, 1000), expected_bullets(docs, q, 0, 1000, Filters()))
    assert reads == {id(exact): 4, id(lazy): 0}
    build(builder, "v2", [record(d, encoders) for d in docs[4:]])
    builder.begin_version("v3")  # collects v1, which both readers hold
    now = expected_bullets(docs[4:], q, 0, 1000, Filters())
    assert_same(exact.top_bullets(q, 1000), now)
    assert lazy.top_bullets(q, 1000) == []  # v1's rows are gone and it has not looked yet
    assert lazy.refresh() == "v2"
    assert_same(lazy.top_bullets(q, 1000), now)


def test_milvus_closing_one_backend_leaves_the_others_on_the_same_uri_working(
    milvus_store: Callable[..., MilvusBackend], docs: list[Doc], encoders: Encoders
) -> None:
    builder = milvus_store()
    build(builder, "v1", [record(d, encoders) for d in docs])
    reader, other = milvus_store(), milvus_store()
    other.close()
    q = QUERIES[0]
    assert_same(reader.top_bullets(q, 1000), expected_bullets(docs, q, 0, 1000, Filters()))
    build(builder, "v2", [record(d, encoders) for d in docs[:3]])
    assert reader.refresh() == "v2"
