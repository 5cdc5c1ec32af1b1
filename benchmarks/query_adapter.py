#!/usr/bin/env python3
"""Lever: a query adapter trained contrastively instead of the ridge query map (issue #10).

    python benchmarks/query_adapter.py --index /tmp/adapter-idx --proxy                  # every variant, dense proxy
    python benchmarks/query_adapter.py --index /tmp/adapter-idx --sample 1500 --variant ridge --variant nce-sgd-mixed
    python benchmarks/query_adapter.py --index /tmp/adapter-idx --sample 0 --variant ridge --variant nce-sgd-mixed \
        --queries retrieval/data/dev.jsonl                                              # full title task + dev
    python benchmarks/query_adapter.py --index /tmp/adapter-idx --no-title --variant ridge --variant nce-sgd-mixed \
        --queries benchmarks/queries/test.jsonl                                             # once, the chosen one
    python benchmarks/query_adapter.py --compare results.json ridge nce-sgd-mixed            # paired, from a --json
    python benchmarks/query_adapter.py --index /tmp/adapter-idx --fit-cost --variant ridge --variant nce-sgd-mixed

Every variant fits a (dim, dim) English query map. Title task (English title -> its paper, bullets
only): for each fixed fold (`evaluation.title_fold`) the map is fitted on the other fold's (title
embedded as a query, its paper's bullets) pairs only, the hub scores are recomputed against that
fold's titles moved by the map (as `alignment.english_corrections` does for the ridge map), both
are swapped into the searcher (`Searcher.set_english_corrections`) and the fold's titles run
through the product's own `Searcher.search` (hybrid unless `--mode`), as `retrieval eval` does.
`--sample N` scores a seeded random N titles per fold (0: every title). `--proxy` scores every
title of each fold with the dense legs only, in numpy (hub-corrected best bullet and centroid,
z-scored over the top `z_depth` and added with the English weights of `SearchSettings`): a quick
screen, not the product's figure. Query files: the map is fitted on every paper, as `build-index`
does, and the file runs as users see the index.

Variants (benchmarks/contrastive_adapter.py `AdapterSettings`, every field pinned here): `ridge`
(the product's map), `identity` (no map, hub pool of the plain titles), and InfoNCE adapters over
in-batch negatives; `*-tuned` try several temperatures and keep the one the held-out tenth of
the training fold ranks best. Each row also reports the mean cosine between a training title
and its mapped image (`cos_moved`: how far the map moves English queries). The titles embedded as
queries come from the index's cache.sqlite (key `<model>#query`).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from contrastive_adapter import AdapterSettings, fit_contrastive_map  # noqa: E402

from retrieval.alignment import fit_query_map, map_queries  # noqa: E402
from retrieval.evaluation import (  # noqa: E402
    Ranked,
    evaluate_query_file,
    run_queries,
    summarise,
    title_fold,
    title_queries,
)
from retrieval.hubness import bullet_centroids, paper_hub_scores  # noqa: E402
from retrieval.indexer import embed_with_cache  # noqa: E402
from retrieval.search import Searcher  # noqa: E402
from retrieval.service import open_searcher  # noqa: E402
from retrieval.store import CACHE_FILE, EmbeddingCache  # noqa: E402

Fit = Callable[[np.ndarray, np.ndarray, np.ndarray, np.ndarray], tuple[np.ndarray, dict[str, Any]]]


def ridge(
    titles: np.ndarray, bullets: np.ndarray, offsets: np.ndarray, papers: np.ndarray
) -> tuple[np.ndarray, dict[str, Any]]:
    centroids = bullet_centroids(bullets, offsets)
    return fit_query_map(titles[papers], centroids[papers]), {}


def identity(
    titles: np.ndarray, bullets: np.ndarray, offsets: np.ndarray, papers: np.ndarray
) -> tuple[np.ndarray, dict[str, Any]]:
    return np.eye(titles.shape[1], dtype=np.float32), {}


def adapter(settings: AdapterSettings, temperatures: Sequence[float] = ()) -> Fit:
    """An InfoNCE adapter; with `temperatures`, the one whose held-out MRR is best."""

    def fit(
        titles: np.ndarray, bullets: np.ndarray, offsets: np.ndarray, papers: np.ndarray
    ) -> tuple[np.ndarray, dict[str, Any]]:
        best: tuple[float, np.ndarray, dict[str, Any]] | None = None
        for temperature in temperatures or (settings.temperature,):
            log: list[dict[str, float]] = []
            weights = fit_contrastive_map(
                titles, bullets, offsets, papers, replace(settings, temperature=temperature), log
            )
            held = max(row["held_mrr"] for row in log)
            chosen = max(log, key=lambda row: row["held_mrr"])["epoch"]
            info = {"temperature": temperature, "held_mrr": round(held, 4), "epoch": chosen,
                    "held_mrr_start": round(log[0]["held_mrr"], 4)}  # fmt: skip
            if best is None or held > best[0]:
                best = (held, weights, info)
        assert best is not None
        return best[1], best[2]

    return fit


ADAM = AdapterSettings(
    optimiser="adam", learning_rate=1e-4, temperature=0.02, positive="max", hub_refresh=1, epochs=30, patience=4,
    rank_init=0.01,
)  # fmt: skip
SGD = AdapterSettings(
    optimiser="sgd", learning_rate=0.01, temperature=0.02, positive="max", hub_refresh=1, epochs=60, patience=6,
)  # fmt: skip
MIXED = replace(SGD, positive="mixed", centroid_share=0.5, learning_rate=0.03, hub_refresh=3)
VARIANTS: dict[str, Fit] = {
    "ridge": ridge,
    "identity": identity,
    # Adam (per-entry step sizes)
    "nce-adam": adapter(ADAM),
    "nce-adam-tuned": adapter(ADAM, (0.01, 0.02, 0.05)),
    "nce-adam-penalty": adapter(replace(ADAM, penalty=1.0)),
    "nce-adam-hard": adapter(replace(ADAM, hard_batches=True)),
    "nce-adam-centroid": adapter(replace(ADAM, positive="centroid")),
    "nce-adam-rank32": adapter(replace(ADAM, temperature=0.01, rank=32)),
    "nce-adam-rank32-tuned": adapter(replace(ADAM, rank=32), (0.01, 0.02, 0.05)),
    "nce-adam-ridge-init": adapter(replace(ADAM, init="ridge", learning_rate=1e-5)),
    "nce-adam-ridge-init-tuned": adapter(replace(ADAM, init="ridge", learning_rate=1e-5), (0.01, 0.02, 0.05)),
    # gradient descent with momentum
    "nce-sgd-max": adapter(SGD),
    "nce-sgd-max-t0.01": adapter(replace(SGD, temperature=0.01)),
    "nce-sgd-max-t0.05": adapter(replace(SGD, temperature=0.05)),
    "nce-sgd-max-lr0.03": adapter(replace(SGD, learning_rate=0.03)),
    "nce-sgd-max-nohub": adapter(replace(SGD, hubness=False)),
    "nce-sgd-max-ridge-init": adapter(replace(SGD, init="ridge", learning_rate=0.003)),
    "nce-sgd-centroid": adapter(replace(SGD, positive="centroid")),
    "nce-sgd-mixed0.25": adapter(replace(SGD, positive="mixed", centroid_share=0.25)),
    "nce-sgd-mixed0.75": adapter(replace(SGD, positive="mixed", centroid_share=0.75)),
    "nce-sgd-mixed-lr0.01": adapter(replace(SGD, positive="mixed", centroid_share=0.5)),
    "nce-sgd-mixed": adapter(MIXED),
    "nce-sgd-mixed-tuned": adapter(MIXED, (0.01, 0.02, 0.03)),
    "nce-sgd-mixed-penalty0.01": adapter(replace(MIXED, penalty=0.01)),
    "nce-sgd-mixed-penalty0.1": adapter(replace(MIXED, penalty=0.1)),
    "nce-sgd-mixed-penalty1": adapter(replace(MIXED, penalty=1.0)),
    "nce-sgd-mixed-penalty5": adapter(replace(MIXED, penalty=5.0)),
    "nce-sgd-mixed-batch512": adapter(replace(MIXED, batch=512)),
    "nce-sgd-mixed-ridge-init": adapter(replace(MIXED, init="ridge", learning_rate=0.01)),
    "nce-sgd-mixed-rank64": adapter(replace(MIXED, rank=64, learning_rate=0.01, epochs=80, patience=10)),
    "nce-sgd-mixed-rank32": adapter(replace(MIXED, rank=32, learning_rate=0.1)),
}


def hub_scores_for_map(
    bullets: np.ndarray, offsets: np.ndarray, titles: np.ndarray, papers: np.ndarray, weights: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Hub scores of every bullet and centroid against the titles of `papers` moved by `weights`,
    exactly as `alignment.english_corrections` computes them for the ridge map."""
    pool = map_queries(titles[papers], weights)
    return paper_hub_scores(bullets, offsets, bullet_centroids(bullets, offsets), pool, papers)


def cached_title_vectors(searcher: Searcher) -> np.ndarray:
    """Every paper's title embedded as a query (as build-index caches them; embeds what is missing)."""
    cache = EmbeddingCache(Path(searcher.index.path).parents[1] / CACHE_FILE)
    try:
        vectors, embedded, _ = embed_with_cache(searcher.embedder, [p.title.strip() for p in searcher.papers], cache,
                                                as_queries=True)  # fmt: skip
    finally:
        cache.close()
    if embedded:
        print(f"embedded {embedded} titles missing from the cache", file=sys.stderr)
    return vectors


def corrections(
    searcher: Searcher, fit: Fit, titles: np.ndarray, papers: np.ndarray
) -> tuple[tuple[np.ndarray, ...], dict[str, Any]]:
    """(query map, hub scores of bullets, hub scores of centroids) fitted on `papers` only."""
    started = time.perf_counter()
    weights, info = fit(titles, searcher.bullet_matrix, searcher.bullet_offsets, papers)
    info["fit_s"] = round(time.perf_counter() - started, 1)
    info["cos_moved"] = round(float((map_queries(titles[papers], weights) * titles[papers]).sum(axis=1).mean()), 3)
    hubs = hub_scores_for_map(searcher.bullet_matrix, searcher.bullet_offsets, titles, papers, weights)
    return (weights, *hubs), info


def figures(ranked: Sequence[Ranked], mode: str) -> dict[str, float]:
    m = summarise(ranked, mode, "title").metrics  # type: ignore[arg-type]
    return {"R@1": m["recall@1"], "R@10": m["recall@10"], "MRR@10": m["mrr@10"], "queries": len(ranked)}


def title_task(searcher: Searcher, fit: Fit, titles: np.ndarray, sample: int, mode: str) -> dict[str, Any]:
    """Per fold and overall: the fold's titles searched with corrections fitted on the other fold."""
    queries = title_queries(searcher.papers)
    folds = np.array([title_fold(p.arxiv_id) for p in searcher.papers])
    out: dict[str, Any] = {}
    every: list[Ranked] = []
    for fold in (0, 1):
        members = np.flatnonzero(folds == fold)
        if sample:
            members = np.sort(np.random.default_rng(fold).choice(members, min(sample, len(members)), replace=False))
        fitted, info = corrections(searcher, fit, titles, np.flatnonzero(folds != fold))
        searcher.set_english_corrections(*fitted)
        ranked = run_queries(searcher, [queries[i] for i in members], mode, ("bullets",))  # type: ignore[arg-type]
        every += ranked
        out[f"fold{fold}"] = {**figures(ranked, mode), **info}
    out["all"] = figures(every, mode)
    # each title's rank (1-10; 0 = not in the top 10), for paired comparisons of variants
    out["ranks"] = {next(iter(q.ids)): next((i + 1 for i, d in enumerate(ids) if d in q.ids), 0) for q, ids in every}
    return out


def standardise_rows(scores: np.ndarray, depth: int) -> np.ndarray:
    """`search.standardise` of every row at once (z-score against the row's top `depth`)."""
    filled = scores.astype(np.float64)
    depth = max(1, min(depth, filled.shape[1] - 1))
    head = np.partition(filled, filled.shape[1] - depth, axis=1)[:, filled.shape[1] - depth :]
    return (filled - head.mean(axis=1, keepdims=True)) / (head.std(axis=1, keepdims=True) + 1e-6)


def proxy(searcher: Searcher, fit: Fit, titles: np.ndarray, chunk: int = 256) -> dict[str, Any]:
    """Per fold: R@1 and MRR@10 of every title with the dense legs only (see the module docstring)."""
    s = searcher.settings
    folds = np.array([title_fold(p.arxiv_id) for p in searcher.papers])
    bullets, offsets = searcher.bullet_matrix, searcher.bullet_offsets
    centroids = bullet_centroids(bullets, offsets)
    out: dict[str, Any] = {}
    for fold in (0, 1):
        (weights, hub_bullets, hub_papers), info = corrections(searcher, fit, titles, np.flatnonzero(folds != fold))
        members = np.flatnonzero(folds == fold)
        ranks = []
        for start in range(0, len(members), chunk):
            queries = members[start : start + chunk]
            u = map_queries(titles[queries], weights)
            best = np.maximum.reduceat(u @ bullets.T - s.hubness_bullets * hub_bullets, offsets[:-1], axis=1)
            centroid = u @ centroids.T - s.hubness_centroid * hub_papers
            fused = s.weight_dense_max_english * standardise_rows(best, s.z_depth)
            fused += s.weight_dense_centroid_english * standardise_rows(centroid, s.z_depth)
            own = fused[np.arange(len(queries)), queries]
            ranks += list(1 + (fused > own[:, None]).sum(axis=1))
        r = np.array(ranks)
        out[f"fold{fold}"] = {"R@1": round(float((r == 1).mean()), 4),
                              "MRR@10": round(float(np.where(r <= 10, 1.0 / r, 0.0).mean()), 4), **info}  # fmt: skip
    return out


def query_file(searcher: Searcher, fit: Fit, titles: np.ndarray, path: Path, mode: str) -> dict[str, Any]:
    """The file's queries with corrections fitted on every paper (as the build does)."""
    fitted, info = corrections(searcher, fit, titles, np.arange(len(searcher.papers)))
    searcher.set_english_corrections(*fitted)
    result = evaluate_query_file(searcher, path, mode)  # type: ignore[arg-type]
    groups = {g: round(m["mrr@10"], 4) for g, m in result.by_group.items()}
    m = result.metrics
    return {"R@1": m["recall@1"], "R@10": m["recall@10"], "MRR@10": m["mrr@10"], "mrr_by_group": groups, **info}


def fit_cost(searcher: Searcher, fit: Fit, titles: np.ndarray) -> dict[str, Any]:
    """Seconds (wall and this process's CPU) to fit the map on every paper and recompute the hub
    scores, as build-index would; the ridge map is what `alignment.english_corrections` does."""
    wall, cpu = time.perf_counter(), time.process_time()
    (weights, _, _), info = corrections(searcher, fit, titles, np.arange(len(searcher.papers)))
    info.update(wall_s=round(time.perf_counter() - wall, 1), cpu_s=round(time.process_time() - cpu, 1))
    # where the map puts the titles: mean cosine to their own paper's bullet centroid, and to all
    mapped = map_queries(titles, weights)
    centroids = bullet_centroids(searcher.bullet_matrix, searcher.bullet_offsets)
    info["cos_own_centroid"] = round(float((mapped * centroids).sum(axis=1).mean()), 3)
    info["cos_any_centroid"] = round(float(mapped.mean(axis=0) @ centroids.mean(axis=0)), 3)
    return info


def compare(path: Path, first: str, second: str, rounds: int = 2000) -> str:
    """Paired comparison of two variants' title ranks in a `--json` file: titles at rank 1 under one
    only, reciprocal ranks better / worse, and the MRR@10 difference with a bootstrap 95% interval."""
    data = json.loads(path.read_text())
    try:
        ranks = [data[name]["title"]["ranks"] for name in (first, second)]
    except KeyError as exc:
        raise SystemExit(f"{path} has no title ranks for {exc}") from None
    keys = sorted(ranks[0])
    a, b = (np.array([r[k] for k in keys]) for r in ranks)
    diff = np.where(b > 0, 1.0 / np.maximum(b, 1), 0.0) - np.where(a > 0, 1.0 / np.maximum(a, 1), 0.0)
    rng = np.random.default_rng(0)
    boot = np.array([diff[rng.integers(0, len(diff), len(diff))].mean() for _ in range(rounds)])
    return (
        f"{len(keys)} titles; at rank 1 only with {first}: {int(((a == 1) & (b != 1)).sum())}, only with {second}: "
        f"{int(((b == 1) & (a != 1)).sum())}; reciprocal rank better with {second}: {int((diff > 0).sum())}, worse: "
        f"{int((diff < 0).sum())}; MRR@10 {second} - {first}: {diff.mean():+.4f} "
        f"(bootstrap 95% {np.percentile(boot, 2.5):+.4f} to {np.percentile(boot, 97.5):+.4f})"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--index", type=Path, help="the index (needed unless --compare)")
    parser.add_argument("--variant", action="append", choices=sorted(VARIANTS), help="default: every variant")
    parser.add_argument("--sample", type=int, default=1500, help="titles per fold (seeded); 0 = all")
    parser.add_argument("--queries", type=Path, action="append", default=[], help="query file(s) to score too")
    parser.add_argument("--no-title", action="store_true", help="skip the title task")
    parser.add_argument("--proxy", action="store_true", help="the quick dense-only screen of the title task instead")
    parser.add_argument("--mode", default="hybrid", choices=["dense", "hybrid"])
    parser.add_argument("--json", type=Path, help="also write the results here (with every title's rank)")
    parser.add_argument("--fit-cost", action="store_true", help="only time the fit on every paper (build-index's)")
    parser.add_argument("--compare", nargs=3, metavar=("JSON", "A", "B"), help="paired title ranks of two variants")
    args = parser.parse_args(argv)
    if args.compare:
        print(compare(Path(args.compare[0]), args.compare[1], args.compare[2]))
        return 0
    if args.sample < 0:
        parser.error("--sample must be 0 (every title) or more")
    if args.index is None:
        parser.error("--index is required")
    for path in args.queries:
        if not path.is_file():
            parser.error(f"no query file at {path}")
    searcher = open_searcher(args.index)
    searcher.settings.query_cache_size = max(searcher.settings.query_cache_size, len(searcher.papers) + 1)
    titles = cached_title_vectors(searcher)
    searcher.remember_query_vectors({p.title.strip(): v for p, v in zip(searcher.papers, titles, strict=True)})
    live = searcher.english_corrections
    results: dict[str, Any] = {}
    try:
        for name in args.variant or list(VARIANTS):
            row: dict[str, Any] = {}
            if args.fit_cost:
                row["fit_cost"] = fit_cost(searcher, VARIANTS[name], titles)
            elif args.proxy:
                row["proxy"] = proxy(searcher, VARIANTS[name], titles)
            elif not args.no_title:
                row["title"] = title_task(searcher, VARIANTS[name], titles, args.sample, args.mode)
            for path in args.queries:
                row[path.name] = query_file(searcher, VARIANTS[name], titles, path, args.mode)
            results[name] = row
            shown = {k: ({f: v for f, v in r.items() if f != "ranks"} if k == "title" else r) for k, r in row.items()}
            print(json.dumps({name: shown}), flush=True)
    finally:
        searcher.set_english_corrections(*live)
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
