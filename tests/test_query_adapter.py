"""The contrastive query adapter measured against the ridge map (benchmarks/contrastive_adapter.py,
benchmarks/query_adapter.py): deterministic, better than the identity on its own objective, and
the benchmark's folds and hub scores the same as the product's."""

from __future__ import annotations

import functools
import importlib.util
import json
import sys
from dataclasses import replace
from typing import Any

import numpy as np
import pytest
from conftest import ROOT

from retrieval.alignment import english_corrections, fit_query_map
from retrieval.evaluation import title_fold
from retrieval.hubness import bullet_centroids
from retrieval.search import Searcher


def _load(name: str) -> Any:
    """A benchmarks/ script as a module (benchmarks/ is not a package)."""
    if str(ROOT / "benchmarks") not in sys.path:
        sys.path.insert(0, str(ROOT / "benchmarks"))
    spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


@functools.cache
def adapter() -> Any:
    return _load("contrastive_adapter")


@functools.cache
def benchmark() -> Any:
    return _load("query_adapter")


def fast() -> Any:
    """Settings for a small synthetic set: small batches, a fixed number of epochs."""
    return adapter().AdapterSettings(epochs=15, patience=15, batch=32, learning_rate=0.05, hub_refresh=1)


def synthetic(seed: int = 0, papers: int = 120, dim: int = 12) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Papers with 2-4 bullets around a topic vector; each query is its topic seen through a fixed
    random linear distortion plus noise, so the identity is a poor map and a linear one helps."""
    rng = np.random.default_rng(seed)
    topics = rng.standard_normal((papers, dim))
    counts = rng.integers(2, 5, papers)
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    bullets = np.repeat(topics, counts, axis=0) + 0.5 * rng.standard_normal((int(counts.sum()), dim))
    distortion = np.eye(dim) + 0.8 * rng.standard_normal((dim, dim))
    queries = topics @ distortion + 0.3 * rng.standard_normal((papers, dim))

    def unit(m: np.ndarray) -> np.ndarray:
        return (m / np.linalg.norm(m, axis=1, keepdims=True)).astype(np.float32)

    return unit(queries), unit(bullets), offsets


def test_the_fit_is_deterministic_for_a_seed_and_depends_on_it() -> None:
    queries, bullets, offsets = synthetic()
    papers = np.arange(len(queries))
    first = adapter().fit_contrastive_map(queries, bullets, offsets, papers, fast())
    again = adapter().fit_contrastive_map(queries, bullets, offsets, papers, fast())
    assert first.shape == (12, 12) and first.dtype == np.float32
    assert np.array_equal(first, again)
    other_seed = adapter().fit_contrastive_map(queries, bullets, offsets, papers, replace(fast(), seed=1))
    assert not np.array_equal(first, other_seed)


@pytest.mark.parametrize("positive", ["max", "centroid", "mixed"])
@pytest.mark.parametrize("optimiser", ["sgd", "adam"])
def test_the_fit_lowers_the_training_objective_below_the_identity(positive: str, optimiser: str) -> None:
    queries, bullets, offsets = synthetic()
    papers = np.arange(len(queries))
    rate = 0.05 if optimiser == "sgd" else 0.01
    settings = replace(fast(), positive=positive, optimiser=optimiser, learning_rate=rate)
    log: list[dict[str, float]] = []
    fitted = adapter().fit_contrastive_map(queries, bullets, offsets, papers, settings, log)
    identity = np.eye(12, dtype=np.float32)
    before = adapter().info_nce_loss(queries, bullets, offsets, papers, identity, settings)
    after = adapter().info_nce_loss(queries, bullets, offsets, papers, fitted, settings)
    assert after < 0.8 * before
    # the held-out tenth, never trained on, picked the epoch, and ranks better than at the start
    assert log[0]["epoch"] == 0 and max(row["held_mrr"] for row in log[1:]) > log[0]["held_mrr"]


def test_the_gradient_is_the_loss_s_derivative() -> None:
    """The hand-written gradient of InfoNCE (best bullet, centroid, mixed) against central differences."""
    module = adapter()
    queries, bullets, offsets = synthetic(papers=8, dim=6)
    store = module._Bullets(bullets.astype(np.float64), offsets)
    store.centroids = store.centroids.astype(np.float64)
    weights = np.eye(6) + 0.1 * np.random.default_rng(3).standard_normal((6, 6))
    papers = np.arange(8)
    x = queries.astype(np.float64)
    for positive in ("max", "centroid", "mixed"):
        settings = module.AdapterSettings(positive=positive, temperature=0.3)
        _, grad = module._info_nce(x, weights, papers, store, settings)
        numeric = np.zeros_like(weights)
        for i, j in np.ndindex(*weights.shape):
            step = np.zeros_like(weights)
            step[i, j] = 1e-6
            up = module._info_nce(x, weights + step, papers, store, settings)[0]
            down = module._info_nce(x, weights - step, papers, store, settings)[0]
            numeric[i, j] = (up - down) / 2e-6
        assert np.allclose(grad, numeric, atol=1e-6), positive


def test_the_map_is_scaled_to_unit_mean_norm_and_a_low_rank_one_stays_low_rank() -> None:
    queries, bullets, offsets = synthetic()
    papers = np.arange(len(queries))
    full = adapter().fit_contrastive_map(queries, bullets, offsets, papers, fast())
    assert np.linalg.norm(queries @ full, axis=1).mean() == pytest.approx(1.0, abs=1e-4)
    low = adapter().fit_contrastive_map(queries, bullets, offsets, papers, replace(fast(), rank=2, learning_rate=0.2))
    # low = (I + A B) / c: ten of its twelve eigenvalues are 1 / c, and low - I / c has rank 2
    inverse_scale = float(np.median(np.linalg.eigvals(low.astype(np.float64)).real))
    residual = low - inverse_scale * np.eye(12)
    assert np.linalg.matrix_rank(residual, tol=1e-4) <= 2
    assert np.abs(residual).max() > 1e-3  # it did move


def test_too_few_pairs_give_the_identity() -> None:
    queries, bullets, offsets = synthetic()
    fitted = adapter().fit_contrastive_map(queries, bullets, offsets, np.arange(3))
    assert np.array_equal(fitted, np.eye(12, dtype=np.float32))


def test_only_the_given_papers_train_the_adapter() -> None:
    queries, bullets, offsets = synthetic()
    papers = np.arange(0, len(queries), 2)
    fitted = adapter().fit_contrastive_map(queries, bullets, offsets, papers, fast())
    scrambled = queries.copy()
    scrambled[1::2] = scrambled[1::2][::-1]  # the other papers' titles
    assert np.array_equal(adapter().fit_contrastive_map(scrambled, bullets, offsets, papers, fast()), fitted)


def test_the_default_settings_are_the_measured_variant() -> None:
    assert adapter().AdapterSettings() == benchmark().MIXED


def test_the_benchmark_hub_scores_are_the_product_s_for_the_ridge_map() -> None:
    queries, bullets, offsets = synthetic()
    papers = np.arange(0, len(queries), 2)
    weights, hub_bullets, hub_papers = english_corrections(bullets, offsets, queries, papers)
    assert np.array_equal(weights, fit_query_map(queries[papers], bullet_centroids(bullets, offsets)[papers]))
    ours = benchmark().hub_scores_for_map(bullets, offsets, queries, papers, weights)
    assert np.array_equal(ours[0], hub_bullets) and np.array_equal(ours[1], hub_papers)


def test_the_benchmark_title_task_fits_on_the_other_fold_only(fake_searcher: Searcher) -> None:
    bench = benchmark()
    seen: list[set[int]] = []

    def recording(titles: np.ndarray, bullets: np.ndarray, offsets: np.ndarray, papers: np.ndarray) -> Any:
        seen.append({int(p) for p in papers})
        return bench.ridge(titles, bullets, offsets, papers)

    titles = fake_searcher.embedder.embed_queries([p.title.strip() for p in fake_searcher.papers])
    live = fake_searcher.english_corrections
    try:
        result = bench.title_task(fake_searcher, recording, titles, 0, "hybrid")
        screened = bench.proxy(fake_searcher, recording, titles)
    finally:
        fake_searcher.set_english_corrections(*live)
    folds = [title_fold(p.arxiv_id) for p in fake_searcher.papers]
    other = [{i for i, f in enumerate(folds) if f != fold} for fold in (0, 1)]
    assert seen == other + other  # the title task, then the proxy
    assert result["all"]["queries"] == len(fake_searcher.papers)
    assert 0.0 <= result["all"]["MRR@10"] <= 1.0 and 0.0 <= screened["fold0"]["MRR@10"] <= 1.0


def test_compare_counts_paired_ranks(tmp_path: Any) -> None:
    ranks_a = {"1": 1, "2": 2, "3": 0, "4": 1}
    ranks_b = {"1": 1, "2": 1, "3": 5, "4": 3}
    path = tmp_path / "r.json"
    path.write_text(json.dumps({"a": {"title": {"ranks": ranks_a}}, "b": {"title": {"ranks": ranks_b}}}))
    line = benchmark().compare(path, "a", "b", rounds=50)
    assert "4 titles; at rank 1 only with a: 1, only with b: 1" in line
    assert "better with b: 2, worse: 1" in line
    # (0 + 0.5 + 0.2 - 2/3) / 4
    assert f"{(0.5 + 0.2 - 2 / 3) / 4:+.4f}" in line
    with pytest.raises(SystemExit, match="no title ranks for 'c'"):
        benchmark().compare(path, "a", "c")
