"""The searcher over a backend: legs ask for top-K candidates, missing papers take the leg's floor,
the backend's failures reach the API as 503, and a backend of another version is refused."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient

from retrieval.alignment import map_queries
from retrieval.api.app import create_app
from retrieval.backends.base import Backend, BulletHit, Hits, PaperScore
from retrieval.backends.choice import backend_version_name, check_serves, connect_backend
from retrieval.config import Settings
from retrieval.embedding import FakeEmbedder
from retrieval.errors import BackendUnavailableError, IndexMismatchError, UsageError
from retrieval.lexical import BM25Index, KoreanEnglishTokenizer
from retrieval.search import Searcher, SearchSettings
from retrieval.store import load_index


@dataclass
class Spy:
    """Delegates to a real backend; records every question's leg and k; can be made to fail."""

    inner: Backend
    asked: list[tuple[str, int]] = field(default_factory=list)
    failing: bool = False
    rename: dict[str, str] = field(default_factory=dict)

    def _fail(self) -> None:
        if self.failing:
            raise BackendUnavailableError("Milvus at http://milvus.test:19530: search failed: connection refused")

    def top_bullets(self, vector: np.ndarray, k: int, filters: Any = None, hubness_weight: float = 0.0) -> Any:
        self._fail()
        self.asked.append(("bullets", k))
        hits = self.inner.top_bullets(vector, k, filters, hubness_weight)
        return Hits.of([BulletHit(self.rename.get(h.paper_id, h.paper_id), h.position, h.score) for h in hits])

    def top_papers(self, vector: np.ndarray, k: int, filters: Any = None, field: Any = "centroid",
                   hubness_weight: float = 0.0) -> Any:  # fmt: skip
        self._fail()
        self.asked.append((field, k))
        hits = self.inner.top_papers(vector, k, filters, field=field, hubness_weight=hubness_weight)
        return Hits.of([PaperScore(self.rename.get(h.paper_id, h.paper_id), h.score) for h in hits])

    def top_sparse(self, weights: Any, k: int, filters: Any = None, *, field: Any = "summary") -> Any:
        self._fail()
        self.asked.append((f"sparse_{field}", k))
        return self.inner.top_sparse(weights, k, filters, field=field)

    def check(self) -> None:
        self._fail()

    def close(self) -> None:
        self.inner.close()


def spied(index_path: Path, tokenizer: KoreanEnglishTokenizer, **settings: Any) -> tuple[Searcher, Spy]:
    searcher = Searcher(
        load_index(index_path), FakeEmbedder(64), tokenizer=tokenizer, settings=SearchSettings(**settings)
    )
    spy = Spy(searcher.backend)
    searcher.backend = spy  # type: ignore[assignment]
    return searcher, spy


def test_every_leg_asks_the_backend_for_its_top_k_only(
    fake_sample_index: Path, tokenizer: KoreanEnglishTokenizer
) -> None:
    searcher, spy = spied(fake_sample_index, tokenizer, candidate_depth=10, leg_depth=4)
    response = searcher.search("low-rank adaptation 저랭크 행렬", limit=3)
    assert len(response.results) == 3
    legs = dict(spy.asked)
    assert set(legs) == {"bullets", "centroid", "title", "sparse_summary", "sparse_title"}
    assert legs["bullets"] == 10 and all(legs[leg] == 4 for leg in legs if leg != "bullets")
    assert len(searcher.papers) > 4  # so a paper-level leg really saw only some of the papers


def test_a_paper_beyond_a_legs_candidates_takes_the_legs_floor(
    fake_sample_index: Path, tokenizer: KoreanEnglishTokenizer
) -> None:
    searcher, _ = spied(fake_sample_index, tokenizer, leg_depth=3)
    full, _ = spied(fake_sample_index, tokenizer, leg_depth=10_000)
    qvec = searcher.embedder.embed_queries(["diffusion video generation"])[0]
    centroid = {leg.name: leg.scores for leg in searcher.dense_legs(qvec, 0.0, ("bullets",))}["dense_centroid"]
    exact = {leg.name: leg.scores for leg in full.dense_legs(qvec, 0.0, ("bullets",))}["dense_centroid"]
    top = np.argsort(-exact, kind="stable")[:3]
    assert np.allclose(centroid[top], exact[top], atol=1e-6)
    rest = np.setdiff1d(np.arange(len(exact)), top)
    assert np.allclose(centroid[rest], exact[top].min())  # the floor: the weakest candidate's score
    assert np.all(exact[rest] <= exact[top].min() + 1e-6)


def test_with_every_candidate_the_legs_are_the_full_scan(
    fake_sample_index: Path, tokenizer: KoreanEnglishTokenizer
) -> None:
    """With a depth covering the corpus, each leg equals scoring every paper: the corrected cosine
    for the dense legs, bm25s's own BM25 for the lexical ones."""
    index = load_index(fake_sample_index)
    searcher, _ = spied(fake_sample_index, tokenizer, leg_depth=10_000, candidate_depth=10_000)
    qvec = searcher.embedder.embed_queries(["sparse attention tokens"])[0]
    legs = {leg.name: leg.scores for leg in searcher.dense_legs(qvec, 1.0)}
    mapped = map_queries(qvec, index.query_map)[0]
    centroids = searcher.centroids
    assert np.allclose(legs["dense_centroid"], centroids @ mapped - index.hub_papers, atol=1e-5)
    titles = index.title_vectors.reconstruct_n(0, index.title_vectors.ntotal)
    assert np.allclose(legs["dense_title"], titles @ qvec, atol=1e-5)
    terms = searcher.query_terms("sparse attention 희소 토큰")
    lexical = {leg.name: leg.scores for leg in searcher.lexical_legs(terms, 0.5)}
    bm25 = BM25Index.load(index.bm25_dirs["bm25_papers"]).scores(terms)
    matched = bm25 > 0
    assert matched.any()
    assert np.allclose(lexical["lexical_summary"][matched], bm25[matched], atol=1e-4)
    assert np.all(np.isnan(lexical["lexical_summary"][~matched]))


def test_a_backend_naming_an_unknown_paper_is_a_version_mismatch(
    fake_sample_index: Path, tokenizer: KoreanEnglishTokenizer
) -> None:
    searcher, spy = spied(fake_sample_index, tokenizer)
    spy.rename = {p.arxiv_id: "9999.99999" for p in searcher.papers}
    with pytest.raises(IndexMismatchError, match="9999.99999"):
        searcher.search("diffusion", mode="dense")


def test_a_failing_backend_is_a_503_with_its_reason_and_readyz_says_so(
    fake_sample_index: Path, tokenizer: KoreanEnglishTokenizer
) -> None:
    searcher, spy = spied(fake_sample_index, tokenizer)
    app = create_app(Settings(index_dir=fake_sample_index), searcher)
    with TestClient(app) as client:
        assert client.get("/readyz").json()["backend"] == "embedded"
        spy.failing = True
        response = client.get("/search", params={"q": "diffusion"})
        assert response.status_code == 503
        assert "connection refused" in response.text and "Traceback" not in response.text
        ready = client.get("/readyz")
        assert ready.status_code == 503 and "milvus.test" in ready.json()["detail"]
        spy.failing = False  # the store is back: no restart needed
        assert client.get("/search", params={"q": "diffusion"}).status_code == 200
        assert client.get("/readyz").status_code == 200


def test_a_backend_at_another_version_is_refused_with_one_line(
    fake_sample_index: Path, tokenizer: KoreanEnglishTokenizer
) -> None:
    searcher, _ = spied(fake_sample_index, tokenizer)
    version = searcher.index.path.name
    assert searcher.backend.inner.live_version() == "index"  # type: ignore[attr-defined]
    with pytest.raises(IndexMismatchError, match=f"serves version index, the index serves {version}"):
        check_serves(searcher.backend.inner, version)  # type: ignore[attr-defined]
    assert backend_version_name(version).replace("_", "-") == version


def test_milvus_without_a_uri_is_a_usage_error() -> None:
    with pytest.raises(UsageError, match="RETRIEVAL_MILVUS_URI"):
        connect_backend(Settings(backend="milvus"), 64)
    assert connect_backend(Settings(), 64) is None


@pytest.fixture
def no_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for name in ("RETRIEVAL_BACKEND", "RETRIEVAL_MILVUS_URI"):
        monkeypatch.delenv(name, raising=False)
    yield


def test_the_backend_setting_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch, no_env: None) -> None:
    monkeypatch.setenv("RETRIEVAL_BACKEND", "milvus")
    monkeypatch.setenv("RETRIEVAL_MILVUS_URI", "http://milvus.test:19530")
    settings = Settings()
    assert (settings.backend, settings.milvus_uri) == ("milvus", "http://milvus.test:19530")
