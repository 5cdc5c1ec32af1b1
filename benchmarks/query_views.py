#!/usr/bin/env python3
"""Query-side levers (issue #10): the summary-name leg against no leg.

The query views and RM3 feedback measured with it (EVALUATION.md "Query views and lexical
feedback") lost and were removed from the searcher; their variants run at commit d16ac81
(`git checkout d16ac81 && python benchmarks/query_views.py --index ...`).

    python benchmarks/query_views.py --index /tmp/views-idx                         # every variant
    python benchmarks/query_views.py --index /tmp/views-idx --json /tmp/views/views.json --no-title
    python benchmarks/query_views.py --index /tmp/views-idx --fold 0 --no-queries \
        --variant base --variant name-in-summary-0.3                                   # the other fold

Every variant is a set of `SearchSettings` fields switched on over the defaults and runs through
the product's own `Searcher.search` on the same queries: title fold 1 (as `retrieval eval
--title-fold 1`: query map and hub scores fitted on fold 0's titles only, bullets only) and the
dev and test query files (every field, the index's own corrections; per language). The queries
are embedded once in batches through the index folder's cache.sqlite (use a copy of a shared
index) and seeded into the searcher's cache, so `took_ms` is the search without embedding;
`--embed-cost N` times N single-query embeddings.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from title_misses import cached_vectors, install_fold  # noqa: E402

from retrieval.evaluation import EvalQuery, load_query_file, score_ranking, summarise, title_queries  # noqa: E402
from retrieval.search import Searcher  # noqa: E402
from retrieval.service import open_searcher  # noqa: E402

# Every variant of the first pass was measured before the summary-name leg was on by default,
# so each pins it off (`NO_NAME`); "default" is the product as it is now (the leg at 0.3).
NO_NAME: dict[str, Any] = {"summary_name_lift": 0.0}
VARIANTS: dict[str, dict[str, Any]] = {
    "base": NO_NAME,
    "name-in-summary-0.1": {"summary_name_lift": 0.1},
    "name-in-summary-0.3": {"summary_name_lift": 0.3},
    "name-in-summary-1": {"summary_name_lift": 1.0},
    "default": {},
}
QUERY_FILES = ("retrieval/data/dev.jsonl", "benchmarks/queries/test.jsonl")


def warm_views(searcher: Searcher, texts: Sequence[str]) -> None:
    """Embed the queries through the cache and seed the searcher's query cache with them."""
    as_queries = list(dict.fromkeys(t.strip() for t in texts))
    searcher.settings.query_cache_size = max(searcher.settings.query_cache_size, 2 * len(as_queries) + 16)
    queries = cached_vectors(searcher, as_queries, as_queries=True)
    searcher.remember_query_vectors(dict(zip(as_queries, queries, strict=True)))


def run(searcher: Searcher, queries: Sequence[EvalQuery], fields: tuple[str, ...] | None) -> dict[str, Any]:
    """Search every query; metrics overall and per group, per-query reciprocal ranks, mean ms."""
    ranked, took, reciprocal = [], [], []
    searcher.search(queries[0].q, limit=10, fields=fields)  # type: ignore[arg-type]  # warm-up, not timed
    for query in queries:
        response = searcher.search(query.q, limit=10, fields=fields)  # type: ignore[arg-type]
        ids = [hit.paper.id for hit in response.results]
        ranked.append((query, ids))
        took.append(response.took_ms)
        reciprocal.append(score_ranking(ids, query.ids)["mrr@10"])
    result = summarise(ranked, "hybrid", "views")
    return {"metrics": result.metrics, "by_group": result.by_group, "ms": round(statistics.mean(took), 2),
            "rr": reciprocal}  # fmt: skip


def embed_cost(searcher: Searcher, texts: Sequence[str], count: int) -> dict[str, float]:
    """Mean ms of one query embedded alone, as a query and as a passage (no cache)."""
    out: dict[str, float] = {}
    for name, embed in (("query", searcher.embedder.embed_queries), ("passage", searcher.embedder.embed_passages)):
        embed([texts[0]])  # load the engine
        started = time.perf_counter()
        for text in texts[:count]:
            embed([text])
        out[name] = round(1000 * (time.perf_counter() - started) / max(1, min(count, len(texts))), 2)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--index", type=Path, required=True)
    parser.add_argument("--variant", action="append", choices=sorted(VARIANTS), help="default: every variant")
    parser.add_argument("--no-title", action="store_true", help="skip the title task")
    parser.add_argument("--fold", type=int, default=1, choices=(0, 1), help="the title task's fold (default 1)")
    parser.add_argument("--no-queries", action="store_true", help="skip the query files")
    parser.add_argument("--queries", action="append", type=Path, help=f"default: {', '.join(QUERY_FILES)}")
    parser.add_argument("--embed-cost", type=int, default=0, metavar="N")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    names = args.variant or list(VARIANTS)
    searcher = open_searcher(args.index)
    defaults = searcher.settings
    results: dict[str, dict[str, Any]] = {name: {} for name in names}
    files = (
        []
        if args.no_queries
        else [(path, load_query_file(path)) for path in (args.queries or [Path(p) for p in QUERY_FILES])]
    )
    for path, queries in files:
        warm_views(searcher, [q.q for q in queries])
        for name in names:
            searcher.settings = replace(defaults, **VARIANTS[name], query_cache_size=defaults.query_cache_size)
            results[name][path.stem] = run(searcher, queries, None)
            print(f"{name} {path.stem}: {results[name][path.stem]['metrics']} ms {results[name][path.stem]['ms']}",
                  file=sys.stderr)  # fmt: skip
    if not args.no_title:
        rows, _ = install_fold(searcher, args.fold)
        wanted = set(rows)
        queries = [q for i, q in enumerate(title_queries(searcher.papers)) if i in wanted]
        warm_views(searcher, [q.q for q in queries])
        for name in names:
            searcher.settings = replace(defaults, **VARIANTS[name], query_cache_size=defaults.query_cache_size)
            result = results[name]["title1"] = run(searcher, queries, ("bullets",))  # the key for either fold
            print(f"{name} title fold {args.fold}: {result['metrics']} ms {result['ms']}", file=sys.stderr)
    if args.embed_cost:
        texts = [q.q for _, qs in files for q in qs]
        results["_embed_ms"] = embed_cost(searcher, texts, args.embed_cost)  # type: ignore[assignment]
    print(format_table(results, names, args.fold))
    if args.json:
        args.json.write_text(json.dumps(results, ensure_ascii=False), encoding="utf-8")
    return 0


def format_table(results: dict[str, dict[str, Any]], names: Sequence[str], fold: int = 1) -> str:
    lines = [f"| variant | title fold {fold} R@1 / R@10 / MRR@10 | dev MRR all / en / ko / mixed | "
             "test R@1 / MRR all / en / ko / mixed | ms/query (title, test) |", "|---|---|---|---|---|"]  # fmt: skip
    for name in names:
        row = results[name]
        cells = [name]
        t = row.get("title1")
        cells.append(f"{t['metrics']['recall@1']:.3f} / {t['metrics']['recall@10']:.3f} / "
                     f"{t['metrics']['mrr@10']:.3f}" if t else "-")  # fmt: skip
        for stem in ("dev", "test"):
            d = row.get(stem)
            if not d:
                cells.append("-")
                continue
            groups = " / ".join(
                f"{d['by_group'][g]['mrr@10']:.3f}" for g in ("en", "ko", "mixed") if g in d["by_group"]
            )
            head = f"{d['metrics']['recall@1']:.3f} / " if stem == "test" else ""
            cells.append(f"{head}{d['metrics']['mrr@10']:.3f} / {groups}")
        cells.append(f"{t['ms'] if t else '-'}, {row['test']['ms'] if 'test' in row else '-'}")
        lines.append("| " + " | ".join(cells) + " |")
    if "_embed_ms" in results:
        lines.append(f"\none embedding alone (ms): {results['_embed_ms']}")
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
