#!/usr/bin/env python3
"""Draw candidate target papers for the held-out test query set, at random and stratified by date.

Usage::

    python benchmarks/queries/draw_test_targets.py [--corpus DIR] [--seed 20250510] [--per-stratum 70] [--json]

The corpus is parsed with the project's own parser (`retrieval.corpus.load_corpus`). Each paper
falls in one of three date ranges by its first digest date (the same thirds as the dev set):
2023-11..2024-02, 2024-03..2024-07, 2024-08..2025-05. Every id used in `dev.jsonl` is excluded,
then `--per-stratum` papers are drawn from each range with `random.Random(seed)`, in drawn order.
Query writers walk each list from the top, skip a paper only when its summary describes another
work or is too generic to single out one paper, and stop when the range has its share.
Prints each candidate's stratum, rank, id, dates, title and Korean bullets (or JSON lines).
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from collections.abc import Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from retrieval.corpus import Paper, load_corpus  # noqa: E402
from retrieval.errors import CorpusError  # noqa: E402
from retrieval.learned import DEV_QUERIES  # noqa: E402

DEFAULT_CORPUS = ROOT.parent / "shared" / "corpus" / "daily_papers_ko" / "paper_logs"
DEV_FILE = DEV_QUERIES
DEFAULT_SEED = 20250510
# (name, first month, last month), inclusive, compared on "YYYY-MM"
STRATA: tuple[tuple[str, str, str], ...] = (
    ("2023-11..2024-02", "2023-11", "2024-02"),
    ("2024-03..2024-07", "2024-03", "2024-07"),
    ("2024-08..2025-05", "2024-08", "2025-05"),
)


def stratum_of(paper: Paper) -> str | None:
    """Name of the date range holding the paper's first digest date, or None when it has no date."""
    if not paper.dates:
        return None
    month = paper.dates[0][:7]
    for name, first, last in STRATA:
        if first <= month <= last:
            return name
    return None


def dev_ids(path: Path) -> set[str]:
    """Every arXiv id listed in a query file."""
    ids: set[str] = set()
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            ids.update(str(i) for i in json.loads(line)["ids"])
    return ids


def draw(papers: Sequence[Paper], exclude: set[str], seed: int, per_stratum: int) -> dict[str, list[Paper]]:
    """Per stratum, `per_stratum` papers drawn without replacement in a reproducible random order."""
    rng = random.Random(seed)
    drawn: dict[str, list[Paper]] = {}
    for name, _, _ in STRATA:
        pool = [p for p in papers if stratum_of(p) == name and p.arxiv_id not in exclude]
        pool.sort(key=lambda p: p.arxiv_id)
        drawn[name] = rng.sample(pool, min(per_stratum, len(pool)))
    return drawn


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", type=Path, default=DEFAULT_CORPUS)
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED)
    parser.add_argument("--per-stratum", type=int, default=70)
    parser.add_argument("--json", action="store_true", help="one JSON object per candidate instead of text")
    args = parser.parse_args(argv)
    if args.per_stratum < 1:
        print("error: --per-stratum must be at least 1", file=sys.stderr)
        return 2
    try:
        corpus = load_corpus(args.corpus)
    except CorpusError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 3
    drawn = draw(corpus.papers, dev_ids(DEV_FILE), args.seed, args.per_stratum)
    for name, papers in drawn.items():
        for rank, paper in enumerate(papers, start=1):
            if args.json:
                row = {
                    "stratum": name,
                    "rank": rank,
                    "id": paper.arxiv_id,
                    "dates": paper.dates,
                    "title": paper.title,
                    "bullets": [b.text for b in paper.bullets],
                }
                print(json.dumps(row, ensure_ascii=False))
                continue
            print(f"== {name} #{rank} {paper.arxiv_id} ({', '.join(paper.dates)})")
            print(f"   {paper.title}")
            for bullet in paper.bullets:
                print(f"   - {bullet.text}")
            print()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
