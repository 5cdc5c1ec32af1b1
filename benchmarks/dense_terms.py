#!/usr/bin/env python3
"""Lever: English equivalents of Korean query terms appended to the dense legs' query text.

    python benchmarks/dense_terms.py --index /tmp/levers-idx                       # dev: every variant
    python benchmarks/dense_terms.py --index /tmp/levers-idx --queries benchmarks/queries/test.jsonl \\
        --variant off --variant min3                                              # held-out: the final one

Each variant is a setting of `SearchSettings.dense_english_terms` / `dense_english_min_ko` /
`dense_english_max`; the queries run through the product's own `Searcher.search` (hybrid, every
field) and the table gives MRR@10 overall and per `lang`. Choose variants on dev only; run the
test file once, with the chosen variant and `off`.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from retrieval.evaluation import evaluate, load_query_file  # noqa: E402
from retrieval.learned import DEV_QUERIES  # noqa: E402
from retrieval.search import SearchSettings  # noqa: E402
from retrieval.service import open_searcher  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
VARIANTS: dict[str, dict[str, object]] = {
    "off": {"dense_english_terms": False},
    "all": {"dense_english_terms": True, "dense_english_min_ko": 2, "dense_english_max": 100},
    "max4": {"dense_english_terms": True, "dense_english_min_ko": 2, "dense_english_max": 4},
    "min3": {"dense_english_terms": True, "dense_english_min_ko": 3, "dense_english_max": 100},
    "min4": {"dense_english_terms": True, "dense_english_min_ko": 4, "dense_english_max": 100},
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--index", type=Path, required=True)
    parser.add_argument("--queries", type=Path, default=DEV_QUERIES)
    parser.add_argument("--variant", action="append", choices=sorted(VARIANTS), help="default: every variant")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args(argv)
    searcher = open_searcher(args.index)
    queries = load_query_file(args.queries)
    base = searcher.settings
    rows = []
    print("| variant | all | en | ko | mixed |\n|---|---:|---:|---:|---:|")
    for name in args.variant or list(VARIANTS):
        searcher.settings = replace(base, **VARIANTS[name])  # type: ignore[arg-type]
        result = evaluate(searcher, queries, "hybrid", task=args.queries.name)
        groups = {g: m["mrr@10"] for g, m in result.by_group.items()}
        rows.append({"variant": name, "all": result.metrics, "by_group": result.by_group})
        print(
            f"| {name} | {result.metrics['mrr@10']:.3f} | {groups.get('en', 0):.3f} | "
            f"{groups.get('ko', 0):.3f} | {groups.get('mixed', 0):.3f} |",
            flush=True,
        )
    searcher.settings = base if isinstance(base, SearchSettings) else SearchSettings()
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1), encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
