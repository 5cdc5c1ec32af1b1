#!/usr/bin/env python3
"""Lever: a query adapter trained contrastively instead of the ridge query map (issue #10).

    python benchmarks/query_adapter.py --index /tmp/adapter-idx --sample 1500            # title folds, subsample
    python benchmarks/query_adapter.py --index /tmp/adapter-idx --variant ridge --variant nce-rank32 --sample 0 \\
        --queries benchmarks/queries/dev.jsonl                                              # full title task + dev
    python benchmarks/query_adapter.py --index /tmp/adapter-idx --variant ridge --variant CHOSEN --no-title \\
        --queries benchmarks/queries/test.jsonl                                             # once, the chosen one

Every variant fits a (dim, dim) English query map. Title task (English title -> its paper, bullets
only): for each fixed fold (`evaluation.title_fold`) the map is fitted on the other fold's (title
embedded as a query, its paper's bullets) pairs only, the hub scores are recomputed against that
fold's titles moved by the map (as `alignment.english_corrections` does for the ridge map), both
are swapped into the searcher (`Searcher.set_english_corrections`) and the fold's titles run
through the product's own `Searcher.search` (hybrid unless `--mode`), as `retrieval eval` does.
`--sample N` scores a seeded random N titles per fold (0: every title). Query files: the map is
fitted on every paper, as `build-index` does, and the file runs as users see the index.

Variants (retrieval/alignment.py `AdapterSettings`): `ridge` (today's map), `identity` (no map,
hub pool of the plain titles), and InfoNCE adapters over in-batch negatives; `nce-*-tuned` try
temperatures 0.01 / 0.02 / 0.05 and keep the one the held-out tenth of the training fold ranks best.
The titles embedded as queries come from the index's cache.sqlite (key `<model>#query`).
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

from retrieval.alignment import (  # noqa: E402
    AdapterSettings,
    fit_contrastive_map,
    fit_query_map,
    hub_scores_for_map,
)
from retrieval.evaluation import (  # noqa: E402
    Ranked,
    evaluate_query_file,
    run_queries,
    summarise,
    title_fold,
    title_queries,
)
from retrieval.hubness import bullet_centroids  # noqa: E402
from retrieval.indexer import embed_with_cache  # noqa: E402
from retrieval.search import Searcher  # noqa: E402
from retrieval.service import open_searcher  # noqa: E402
from retrieval.store import CACHE_FILE, EmbeddingCache  # noqa: E402

TEMPERATURES = (0.01, 0.02, 0.05)
Fit = Callable[[np.ndarray, np.ndarray, np.ndarray, np.ndarray], tuple[np.ndarray, dict[str, Any]]]


def ridge(titles: np.ndarray, bullets: np.ndarray, offsets: np.ndarray, papers: np.ndarray) -> tuple[np.ndarray, dict[str, Any]]:
    centroids = bullet_centroids(bullets, offsets)
    return fit_query_map(titles[papers], centroids[papers]), {}


def identity(titles: np.ndarray, bullets: np.ndarray, offsets: np.ndarray, papers: np.ndarray) -> tuple[np.ndarray, dict[str, Any]]:
    return np.eye(titles.shape[1], dtype=np.float32), {}


def adapter(settings: AdapterSettings, temperatures: Sequence[float] = ()) -> Fit:
    """An InfoNCE adapter; with `temperatures`, the one whose held-out MRR is best."""

    def fit(titles: np.ndarray, bullets: np.ndarray, offsets: np.ndarray, papers: np.ndarray) -> tuple[np.ndarray, dict[str, Any]]:
        best: tuple[float, np.ndarray, dict[str, Any]] | None = None
        for temperature in temperatures or (settings.temperature,):
            log: list[dict[str, float]] = []
            weights = fit_contrastive_map(titles, bullets, offsets, papers, replace(settings, temperature=temperature), log)
            held = max(row["held_mrr"] for row in log)
            chosen = max(log, key=lambda row: row["held_mrr"])["epoch"]
            info = {"temperature": temperature, "held_mrr": round(held, 4), "epoch": chosen,
                    "held_mrr_start": round(log[0]["held_mrr"], 4)}  # fmt: skip
            if best is None or held > best[0]:
                best = (held, weights, info)
        assert best is not None
        return best[1], best[2]

    return fit


VARIANTS: dict[str, Fit] = {
    "ridge": ridge,
    "identity": identity,
    "nce-full": adapter(AdapterSettings(temperature=0.02)),
    "nce-full-tuned": adapter(AdapterSettings(), TEMPERATURES),
    "nce-full-penalty": adapter(AdapterSettings(temperature=0.02, penalty=1.0)),
    "nce-full-hard": adapter(AdapterSettings(temperature=0.02, hard_batches=True)),
    "nce-centroid": adapter(AdapterSettings(temperature=0.02, positive="centroid")),
    "nce-rank32": adapter(AdapterSettings(temperature=0.01, rank=32)),
    "nce-rank32-tuned": adapter(AdapterSettings(rank=32), TEMPERATURES),
    "nce-ridge-init": adapter(AdapterSettings(temperature=0.02, init="ridge", learning_rate=1e-5)),
    "nce-ridge-init-tuned": adapter(AdapterSettings(init="ridge", learning_rate=1e-5), TEMPERATURES),
}


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


def corrections(searcher: Searcher, fit: Fit, titles: np.ndarray, papers: np.ndarray) -> tuple[tuple[np.ndarray, ...], dict[str, Any]]:
    """(query map, hub scores of bullets, hub scores of centroids) fitted on `papers` only."""
    started = time.perf_counter()
    weights, info = fit(titles, searcher.bullet_matrix, searcher.bullet_offsets, papers)
    info["fit_s"] = round(time.perf_counter() - started, 1)
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
    return out


def query_file(searcher: Searcher, fit: Fit, titles: np.ndarray, path: Path, mode: str) -> dict[str, Any]:
    """The file's queries with corrections fitted on every paper (as the build does)."""
    fitted, info = corrections(searcher, fit, titles, np.arange(len(searcher.papers)))
    searcher.set_english_corrections(*fitted)
    result = evaluate_query_file(searcher, path, mode)  # type: ignore[arg-type]
    groups = {g: round(m["mrr@10"], 4) for g, m in result.by_group.items()}
    m = result.metrics
    return {"R@1": m["recall@1"], "R@10": m["recall@10"], "MRR@10": m["mrr@10"], "mrr_by_group": groups, **info}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--index", type=Path, required=True)
    parser.add_argument("--variant", action="append", choices=sorted(VARIANTS), help="default: every variant")
    parser.add_argument("--sample", type=int, default=1500, help="titles per fold (seeded); 0 = all")
    parser.add_argument("--queries", type=Path, action="append", default=[], help="query file(s) to score too")
    parser.add_argument("--no-title", action="store_true", help="skip the title task")
    parser.add_argument("--mode", default="hybrid", choices=["dense", "hybrid"])
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args(argv)
    if args.sample < 0:
        parser.error("--sample must be 0 (every title) or more")
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
            if not args.no_title:
                row["title"] = title_task(searcher, VARIANTS[name], titles, args.sample, args.mode)
            for path in args.queries:
                row[path.name] = query_file(searcher, VARIANTS[name], titles, path, args.mode)
            results[name] = row
            print(json.dumps({name: row}), flush=True)
    finally:
        searcher.set_english_corrections(*live)
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
