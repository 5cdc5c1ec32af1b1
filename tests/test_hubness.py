"""Hubness correction: hub scores, the query's English share, its use in ranking and in the title task."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from retrieval import evaluation
from retrieval.alignment import fit_query_map, map_queries
from retrieval.embedding import load_embedder
from retrieval.hubness import bullet_centroids, hub_scores, latin_share, paper_hub_scores
from retrieval.search import Searcher, standardise
from retrieval.store import load_index


def _unit(*rows: list[float]) -> np.ndarray:
    m = np.array(rows, dtype=np.float32)
    return m / np.linalg.norm(m, axis=1, keepdims=True)


def test_hub_score_is_the_mean_cosine_to_the_k_nearest_pool_rows_of_other_papers() -> None:
    vectors = _unit([1, 0], [0, 1])
    pool = _unit([1, 0], [1, 1], [0, 1], [-1, 0])
    # vector 0 belongs to paper 7, whose title is pool row 0: that row must be skipped
    scores = hub_scores(vectors, np.array([7, 8]), pool, np.array([7, 1, 2, 3]), k=2)
    s = 1 / np.sqrt(2)
    assert scores[0] == pytest.approx((s + 0.0) / 2)  # [1,1] and [0,1]; not its own [1,0]
    assert scores[1] == pytest.approx((1.0 + s) / 2)  # [0,1] and [1,1]
    # a pool no larger than k gives no correction at all
    assert not hub_scores(vectors, np.array([0, 1]), pool[:2], np.array([5, 6]), k=2).any()


def test_paper_hub_scores_cover_bullets_and_centroids() -> None:
    bullets = _unit([1, 0], [0.9, 0.1], [0, 1])
    offsets = np.array([0, 2, 3])
    centroids = bullet_centroids(bullets, offsets)
    assert centroids.shape == (2, 2)
    assert np.allclose(np.linalg.norm(centroids, axis=1), 1.0)
    pool = _unit([1, 0], [0, 1], [1, 1], [1, -1])
    per_bullet, per_paper = paper_hub_scores(bullets, offsets, centroids, pool, np.array([0, 1, 2, 3]), k=1)
    assert per_bullet.shape == (3,) and per_paper.shape == (2,)
    # paper 0's bullets may not use pool row 0 (its own title); their nearest is then [1,1] or [1,-1]
    assert per_bullet[0] == pytest.approx(1 / np.sqrt(2), abs=1e-6)
    # paper 1's bullet [0,1] may not use row 1; its nearest other row is [1,1]
    assert per_bullet[2] == pytest.approx(1 / np.sqrt(2), abs=1e-6)
    # so does paper 1's centroid (its only bullet)
    assert per_paper[1] == pytest.approx(1 / np.sqrt(2), abs=1e-6)


@pytest.mark.parametrize(
    ("text", "share"),
    [
        ("state space models", 1.0),
        ("상태 공간 모델", 0.0),
        ("Mamba 모델", 5 / 7),
        ("2024 !!", 0.0),
        ("", 0.0),
    ],
)
def test_latin_share(text: str, share: float) -> None:
    assert latin_share(text) == pytest.approx(share)


def _top(searcher: Searcher, query: str) -> list[str]:
    return [hit.paper.id for hit in searcher.search(query, mode="dense", limit=12, fields=("bullets",)).results]


def test_a_hub_bullet_is_pushed_down_for_english_queries_only(fake_searcher: Searcher) -> None:
    live = fake_searcher.english_corrections
    english, korean = "selective state space model", "선택적 상태 공간 모델"
    try:
        before_en, before_ko = _top(fake_searcher, english), _top(fake_searcher, korean)
        first = fake_searcher._by_id[before_en[0]]
        query_map, hub_b, hub_p = live[0], np.zeros_like(live[1]), np.zeros_like(live[2])
        start, end = fake_searcher._offsets[first], fake_searcher._offsets[first + 1]
        hub_b[start:end] = 5.0  # every bullet of the first paper is a strong hub
        hub_p[first] = 5.0
        fake_searcher.set_english_corrections(query_map, hub_b, hub_p)
        after_en, after_ko = _top(fake_searcher, english), _top(fake_searcher, korean)
        assert after_en[0] != before_en[0] and after_en[-1] == before_en[0]
        assert after_ko == before_ko  # no Latin letters: no correction
    finally:
        fake_searcher.set_english_corrections(*live)
    assert _top(fake_searcher, english) == before_en
    with pytest.raises(ValueError):
        fake_searcher.set_english_corrections(live[0], np.zeros(3), np.zeros(2))


def test_title_task_map_and_hub_pool_never_hold_the_query_s_own_title(
    fake_searcher: Searcher, monkeypatch: pytest.MonkeyPatch
) -> None:
    pools: list[set[int]] = []
    asked: list[set[int]] = []
    real_fit, real_run = evaluation.english_corrections, evaluation.run_queries

    def recording_fit(bullets, offsets, titles, papers):  # type: ignore[no-untyped-def]
        pools.append({int(p) for p in papers})
        return real_fit(bullets, offsets, titles, papers)

    def recording_run(searcher, queries, *args, **kwargs):  # type: ignore[no-untyped-def]
        asked.append({searcher._by_id[next(iter(q.ids))] for q in queries})
        return real_run(searcher, queries, *args, **kwargs)

    monkeypatch.setattr(evaluation, "english_corrections", recording_fit)
    monkeypatch.setattr(evaluation, "run_queries", recording_run)
    live = fake_searcher.english_corrections
    result = evaluation.evaluate_title_task(fake_searcher, "hybrid")
    assert result.queries == len(fake_searcher.papers)
    assert len(pools) == len(asked) == 2
    for pool, queried in zip(pools, asked, strict=True):
        assert queried and pool and not (pool & queried)
    assert set().union(*asked) == set(range(len(fake_searcher.papers)))
    restored = fake_searcher.english_corrections
    assert all(np.array_equal(a, b) for a, b in zip(restored, live, strict=True))


@pytest.mark.slow
def test_index_stores_hub_scores_from_the_real_model(e5_sample_index: Path) -> None:
    index = load_index(e5_sample_index)
    assert index.hub_bullets.shape == (index.bullet_vectors.ntotal,)
    assert index.hub_papers.shape == (len(index.papers),)
    # cosines of Korean bullets to other papers' English titles: positive, well below 1
    assert 0.3 < float(index.hub_bullets.mean()) < 0.95
    assert np.all(index.hub_papers > 0)


@pytest.mark.slow
def test_english_query_with_the_real_model_ranks_with_the_correction(e5_sample_index: Path) -> None:
    """Through the real model: an English question still finds the paper, and the corrected leg
    is the cosine of the mapped query minus the hub term."""
    index = load_index(e5_sample_index)
    searcher = Searcher(index, load_embedder(index.manifest.model))
    hits = searcher.search("a translation model without recurrence or convolution, only attention", limit=3)
    assert hits.results[0].paper.id == "1706.03762"
    qvec = searcher._embed_query("state space")
    legs = searcher.dense_legs(qvec, 1.0, ("bullets",), depth=10_000)
    raw_best = searcher._group_max(searcher.bullet_matrix @ qvec)
    mapped = map_queries(qvec, index.query_map)[0]
    corrected_best = searcher._group_max(searcher.bullet_matrix @ mapped - index.hub_bullets)
    assert legs[0].name == "dense_best_bullet"
    assert np.allclose(legs[0].scores, corrected_best, atol=1e-5)
    assert not np.allclose(legs[0].scores, raw_best)


def test_papers_beyond_the_candidate_depth_never_outrank_candidates(fake_searcher: Searcher) -> None:
    """Corrected cosines can be negative; after standardisation, papers without a bullet among
    the candidates must still score no higher than any paper with one."""
    live = fake_searcher.english_corrections
    qvec = fake_searcher._embed_query("low-rank adapters for fine-tuning")
    try:
        fake_searcher.set_english_corrections(live[0], np.ones_like(live[1]), np.ones_like(live[2]))
        legs = fake_searcher.dense_legs(qvec, 1.0, ("bullets",), depth=5)
    finally:
        fake_searcher.set_english_corrections(*live)
    best = legs[0].scores
    mapped = map_queries(qvec, live[0])[0]
    corrected = fake_searcher.bullet_matrix @ mapped - 1.0
    top = np.argsort(-corrected)[:5]
    with_candidate = np.unique(fake_searcher._row_paper[top])
    without = np.setdiff1d(np.arange(len(fake_searcher.papers)), with_candidate)
    assert len(without) and np.all(corrected[top] < 0)
    z = standardise(best, fake_searcher.settings.z_depth)
    assert z[without].max() <= z[with_candidate].min()


def test_query_map_recovers_a_linear_relation_and_respects_strength() -> None:
    rng = np.random.default_rng(0)
    true_map = np.eye(8) + 0.3 * rng.standard_normal((8, 8))
    queries = rng.standard_normal((400, 8)).astype(np.float32)
    fitted = fit_query_map(queries, queries @ true_map, ridge=1e-6)
    assert np.allclose(fitted, true_map, atol=1e-3)
    assert np.allclose(fit_query_map(queries, queries @ true_map, ridge=1e9), np.eye(8), atol=1e-3)
    assert np.array_equal(fit_query_map(queries[:0], queries[:0]), np.eye(8, dtype=np.float32))
    unit = queries[:3] / np.linalg.norm(queries[:3], axis=1, keepdims=True)
    assert np.allclose(map_queries(unit, fitted, 0.0), unit, atol=1e-6)  # strength 0: unchanged
    moved = map_queries(unit, fitted, np.array([0.0, 0.5, 1.0]))
    assert np.allclose(np.linalg.norm(moved, axis=1), 1.0, atol=1e-5)
    assert np.allclose(moved[0], unit[0], atol=1e-6) and not np.allclose(moved[2], unit[2])
    full = unit[2] @ fitted
    assert np.allclose(moved[2], full / np.linalg.norm(full), atol=1e-5)


def test_the_query_map_moves_english_queries_only(fake_searcher: Searcher) -> None:
    live = fake_searcher.english_corrections
    query = "선택적 상태 공간 모델"
    qvec = fake_searcher._embed_query(query)
    before = _top(fake_searcher, query)
    legs = [fake_searcher.dense_legs(qvec, english, ("bullets",), 10_000) for english in (0.0, 1.0)]
    try:
        scrambled = np.random.default_rng(1).standard_normal(live[0].shape).astype(np.float32)
        fake_searcher.set_english_corrections(scrambled, live[1], live[2])
        assert _top(fake_searcher, query) == before  # no Latin letters: ranked as before
        after = [fake_searcher.dense_legs(qvec, english, ("bullets",), 10_000) for english in (0.0, 1.0)]
    finally:
        fake_searcher.set_english_corrections(*live)
    for old_leg, new_leg in zip(legs[0], after[0], strict=True):
        assert np.array_equal(old_leg.scores, new_leg.scores)  # share 0: the map is not applied
    for old_leg, new_leg in zip(legs[1], after[1], strict=True):
        assert not np.allclose(old_leg.scores, new_leg.scores)  # share 1: both the bullet and centroid legs move
