#!/usr/bin/env python3
"""Why the title task misses (issue #10): fold 1's titles whose paper is not first.

    python benchmarks/title_misses.py --index /tmp/views-idx                 # table + 30 random misses
    python benchmarks/title_misses.py --index /tmp/views-idx --json misses.json --sample 30 --seed 7
    python benchmarks/title_misses.py --index /tmp/views-idx --name-lift 0.3      # with the summary-name leg

The fold is run as `retrieval eval --title-fold 1` runs it: the query map and hub scores fitted
on fold 0's titles only (`evaluation.held_out_corrections`), bullets only, hybrid. Each query's
legs and fused scores are the searcher's own (`Searcher.query_legs`), what `Searcher.search`
ranks by when only bullets are searched, the summary-name leg at `--name-lift` (default 0: the
ranking EVALUATION.md analysed, before that leg; a check compares the first hit with the search
path on the first queries). For every miss it reports: whether the paper's summary is flagged
(`Searcher.summary_warnings`), where the paper ranks (top 10 / top 50 / below), which leg ranks
it best, and what beat it: a summary the searcher flags, a frequent winner (first for 3+ other
titles of the fold, a hub), a same-topic paper (among the 10 papers whose bullet centroids are
nearest the right paper's), or something else.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from collections import Counter
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from retrieval.evaluation import held_out_corrections, title_fold  # noqa: E402
from retrieval.indexer import embed_with_cache  # noqa: E402
from retrieval.search import Searcher  # noqa: E402
from retrieval.service import open_searcher  # noqa: E402
from retrieval.store import EmbeddingCache  # noqa: E402

BULLETS_ONLY = ("bullets",)
CACHE_FILE = "cache.sqlite"
FREQUENT_WINNER = 3
NEAR_TOPIC = 10


def cached_vectors(searcher: Searcher, texts: list[str], as_queries: bool) -> np.ndarray:
    """`texts` embedded as queries or passages, through the index folder's cache.sqlite (what
    is missing is embedded and cached there: use a copy of a shared index)."""
    cache = EmbeddingCache(Path(searcher.index.path).parents[1] / CACHE_FILE)
    try:
        vectors, embedded, _ = embed_with_cache(searcher.embedder, texts, cache, as_queries=as_queries)
    finally:
        cache.close()
    if embedded:
        print(f"embedded {embedded} texts missing from the cache", file=sys.stderr)
    return vectors


def install_fold(searcher: Searcher, fold: int) -> tuple[list[int], np.ndarray]:
    """Fit the English corrections on the other fold's titles, install them, and return the
    fold's paper rows with every paper's title vector (embedded as a query)."""
    titles = cached_vectors(searcher, [p.title.strip() for p in searcher.papers], as_queries=True)
    folds = np.array([title_fold(p.arxiv_id) for p in searcher.papers])
    searcher.set_english_corrections(*held_out_corrections(searcher, titles, fold))
    searcher.remember_query_vectors({p.title.strip(): titles[i] for i, p in enumerate(searcher.papers)})
    return [int(i) for i in np.flatnonzero(folds == fold)], titles


def rank_of(scores: np.ndarray, row: int) -> int:
    """1-based rank of `row` in `scores` (NaN counts as lowest; ties go to the lower row, as search)."""
    filled = np.where(np.isfinite(scores), scores, -np.inf)
    mine = filled[row]
    return int((filled > mine).sum() + (filled[:row] == mine).sum()) + 1


@dataclass
class Outcome:
    row: int
    rank: int
    winner: int
    leg_ranks: dict[str, int]


def run_fold(searcher: Searcher, rows: list[int], titles: np.ndarray) -> list[Outcome]:
    out: list[Outcome] = []
    for row in rows:
        query = searcher.query_legs(searcher.papers[row].title.strip(), titles[row], BULLETS_ONLY)
        legs, fused = query.legs, query.fused
        filled = np.where(np.isfinite(fused), fused, -np.inf)
        out.append(Outcome(row, rank_of(fused, row), int(np.argmax(filled)),
                           {leg.name: rank_of(leg.scores, row) for leg in legs}))  # fmt: skip
    return out


def check_against_search(searcher: Searcher, outcomes: list[Outcome], count: int = 40) -> None:
    """The fused ranks must be the product's: compare the first hit with `Searcher.search`."""
    for outcome in outcomes[:count]:
        top = searcher.search(searcher.papers[outcome.row].title, limit=1, fields=BULLETS_ONLY).results[0].paper.id
        if top != searcher.papers[outcome.winner].arxiv_id:
            raise SystemExit(f"fused ranking differs from Searcher.search for {searcher.papers[outcome.row].title!r}")


def nearest_topics(searcher: Searcher, row: int, k: int = NEAR_TOPIC) -> set[int]:
    sims = searcher.centroids @ searcher.centroids[row]
    sims[row] = -np.inf
    return {int(i) for i in np.argpartition(-sims, k)[:k]}


def classify(searcher: Searcher, outcomes: list[Outcome]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Counts over the misses and one record per miss."""
    flagged = {i for i, p in enumerate(searcher.papers) if p.arxiv_id in searcher.summary_warnings}
    wins = Counter(o.winner for o in outcomes if o.winner != o.row)
    misses = [o for o in outcomes if o.rank > 1]
    records: list[dict[str, Any]] = []
    counts: Counter[str] = Counter()
    for o in misses:
        depth = "top 10" if o.rank <= 10 else "top 50" if o.rank <= 50 else "below 50"
        best_leg = min(o.leg_ranks, key=lambda name: o.leg_ranks[name])
        if o.winner in flagged:
            beaten_by = "flagged summary"
        elif wins[o.winner] >= FREQUENT_WINNER:
            beaten_by = "frequent winner (hub)"
        elif o.winner in nearest_topics(searcher, o.row):
            beaten_by = "same-topic paper"
        else:
            beaten_by = "other"
        own_flag = "own summary flagged" if o.row in flagged else "own summary not flagged"
        counts.update([f"depth: {depth}", f"best leg: {best_leg}", f"beaten by: {beaten_by}", own_flag])
        counts[f"{own_flag} / {depth}"] += 1
        paper, winner = searcher.papers[o.row], searcher.papers[o.winner]
        records.append({
            "title": paper.title, "id": paper.arxiv_id, "rank": o.rank, "leg_ranks": o.leg_ranks,
            "own_flagged": o.row in flagged, "beaten_by": beaten_by, "winner_wins": wins[o.winner],
            "winner": winner.title, "winner_id": winner.arxiv_id,
            "bullets": [b.text for b in paper.bullets[:3]], "winner_bullets": [b.text for b in winner.bullets[:2]],
        })  # fmt: skip
    summary = {
        "queries": len(outcomes),
        "misses": len(misses),
        "recall@1": round(1 - len(misses) / max(1, len(outcomes)), 4),
        "counts": dict(sorted(counts.items())),
        "best leg ties": "a leg's rank of the right paper; the smallest wins, ties to the first leg listed",
    }
    return summary, records


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--index", type=Path, required=True)
    parser.add_argument("--fold", type=int, default=1, choices=(0, 1))
    parser.add_argument("--sample", type=int, default=30, help="misses drawn at random and printed in full")
    parser.add_argument("--seed", type=int, default=20261201)
    parser.add_argument("--json", type=Path, help="write the summary and every miss here")
    parser.add_argument("--name-lift", type=float, default=0.0, help="the summary-name leg's lift (default 0: off)")
    args = parser.parse_args(argv)
    searcher = open_searcher(args.index)
    searcher.settings = replace(searcher.settings, summary_name_lift=args.name_lift)
    rows, titles = install_fold(searcher, args.fold)
    outcomes = run_fold(searcher, rows, titles)
    check_against_search(searcher, outcomes)
    summary, records = classify(searcher, outcomes)
    print(json.dumps(summary, ensure_ascii=False, indent=1))
    drawn = random.Random(args.seed).sample(records, min(args.sample, len(records)))
    for number, record in enumerate(drawn, start=1):
        print(f"\n#{number} rank {record['rank']} {record['leg_ranks']} own flagged={record['own_flagged']} "
              f"beaten by {record['beaten_by']} (winner wins {record['winner_wins']})")  # fmt: skip
        print(f"  Q: {record['title']}")
        for text in record["bullets"]:
            print(f"   - {text[:160]}")
        print(f"  W: {record['winner']}")
        for text in record["winner_bullets"]:
            print(f"   - {text[:160]}")
    if args.json:
        args.json.write_text(json.dumps({"summary": summary, "misses": records, "drawn": [r["id"] for r in drawn]},
                                        ensure_ascii=False, indent=1), encoding="utf-8")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
