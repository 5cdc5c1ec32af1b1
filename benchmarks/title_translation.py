#!/usr/bin/env python3
"""Lever (issue #10): embed an English title together with the Korean translations the term map
knows for its phrases, so that the dense query sits nearer the Korean bullets.

    python benchmarks/title_translation.py --index /tmp/xp-idx                 # tuning: fold 0, inner half B
    python benchmarks/title_translation.py --index /tmp/xp-idx --fold 1        # the finished lever, held out

The dense query becomes `title (번역1, 번역2, ...)` with at most `--terms` Korean phrases from
`TermMap.translations` (the lexical legs keep the title as written). Variants: the title alone
(the product), the expanded text alone, and the normalised mean of both vectors. Each fold is run
as `retrieval eval --title-fold` runs it: query map and hub scores fitted on the other fold's
titles (`title_misses.install_fold`), bullets only, the searcher's fused ranking
(`Searcher.query_legs`, no re-ranker). Without `--fold`, the scored queries are the seeded half B
of fold 0 that `benchmarks/rerank.py --inner` scores (`rerank.inner_half_a`), so fold 1 stays for the final check.
Expanded titles are embedded through the index folder's cache (use a copy of a shared index).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rerank import fmt, inner_half_a  # noqa: E402
from title_misses import BULLETS_ONLY, cached_vectors, install_fold, rank_of  # noqa: E402

from retrieval.service import open_searcher  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--index", type=Path, required=True)
    parser.add_argument("--fold", type=int, choices=(0, 1), help="score this whole fold (default: fold 0, half B)")
    parser.add_argument("--terms", type=int, default=6, help="Korean phrases appended at most (default: 6)")
    args = parser.parse_args(argv)
    searcher = open_searcher(args.index)
    fold = 0 if args.fold is None else args.fold
    rows, plain = install_fold(searcher, fold)
    if args.fold is None:  # the half B of benchmarks/rerank.py --inner
        rows = [r for r, a in zip(rows, inner_half_a(len(rows)), strict=True) if not a]
    titles = [p.title.strip() for p in searcher.papers]
    expanded_texts = []
    for title in titles:
        korean = searcher.term_map.translations(title)[: args.terms]
        expanded_texts.append(f"{title} ({', '.join(korean)})" if korean else title)
    print(f"titles with a translation: {np.mean([e != t for e, t in zip(expanded_texts, titles, strict=True)]):.3f}")
    expanded = cached_vectors(searcher, expanded_texts, as_queries=True)
    mean = plain + expanded
    mean /= np.linalg.norm(mean, axis=1, keepdims=True)
    variants = {"title (product)": plain, "title + Korean terms": expanded, "mean of both": mean}
    ranks = {name: np.zeros(len(rows)) for name in variants}
    for n, row in enumerate(rows):
        for name, vectors in variants.items():
            fused = searcher.query_legs(titles[row], vectors[row], BULLETS_ONLY).fused
            ranks[name][n] = rank_of(fused, row)
    where = f"fold {fold}" + (" (half B)" if args.fold is None else "")
    base = ranks["title (product)"]
    print(f"\n| dense query | {where}, {len(rows)} titles: R@1 / R@10 / MRR@10 | titles ranked differently |")
    print("|---|---|---:|")
    for name, r in ranks.items():
        print(f"| {name} | {fmt(r)} | {int((r != base).sum())} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
