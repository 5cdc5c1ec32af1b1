#!/usr/bin/env python3
"""The weak flag of an index's relevance calibration, measured on the product path.

    python benchmarks/weak_flags.py --index /tmp/learned-idx [--index /work/idx/daily]

For each index (its learned calibration, or the code default when it has none): the share of
right answers in the top 10 flagged weak (dev, the held-out test set, and 300 titles of the title
task's fold 1, the half the learned models never see: bullets only, English corrections fitted on
fold 0) and the share of benchmarks/queries/offtopic.jsonl queries whose top hit is not weak (the
build's calibration sees no off-topic query; `calibrate_relevance.py` fits on the odd lines).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from retrieval.evaluation import CUTOFF, held_out_corrections, load_query_file, title_fold, warm_query_vectors  # noqa: E402
from retrieval.learned import DEV_QUERIES  # noqa: E402
from retrieval.search import Field_, Searcher  # noqa: E402
from retrieval.service import open_searcher  # noqa: E402

QUERIES = Path(__file__).resolve().parent / "queries"
TITLES = 300


def flagged(searcher: Searcher, queries: list[tuple[str, set[str]]], fields: tuple[Field_, ...] | None) -> float:
    """Share of the right answers found in the top 10 that are flagged weak."""
    weak, found = 0, 0
    for text, right in queries:
        for hit in searcher.search(text, limit=CUTOFF, fields=fields).results:
            if hit.paper.id in right:
                found += 1
                weak += hit.weak
    return weak / found if found else float("nan")


def title_sample(searcher: Searcher) -> list[tuple[str, set[str]]]:
    fold1 = [p for p in searcher.papers if title_fold(p.arxiv_id) == 1]
    picked = np.random.default_rng(0).choice(len(fold1), size=min(TITLES, len(fold1)), replace=False)
    return [(fold1[i].title.strip(), {fold1[i].arxiv_id}) for i in sorted(picked)]


def measure(index: Path) -> dict[str, object]:
    searcher = open_searcher(index)
    dev = [(q.q, set(q.ids)) for q in load_query_file(DEV_QUERIES)]
    test = [(q.q, set(q.ids)) for q in load_query_file(QUERIES / "test.jsonl")]
    lines = (QUERIES / "offtopic.jsonl").read_text(encoding="utf-8").splitlines()
    offtopic = [str(json.loads(line)["q"]).strip() for line in lines if line.strip()]
    titles = title_sample(searcher)
    vectors = warm_query_vectors(searcher, [p.title.strip() for p in searcher.papers], "hybrid")
    warm_query_vectors(searcher, [q for q, _ in dev + test] + offtopic, "hybrid")
    passing = [not searcher.search(q, limit=CUTOFF).results[0].weak for q in offtopic]
    row: dict[str, object] = {
        "index": str(index),
        "calibration": repr(searcher.relevance_calibration),
        "learned": searcher.index.learned is not None and searcher.index.learned.calibration is not None,
        "dev right flagged": flagged(searcher, dev, None),
        "test right flagged": flagged(searcher, test, None),
        "offtopic top passing (all 60)": float(np.mean(passing)),
        "offtopic odd lines": float(np.mean(passing[0::2])),
        "offtopic even lines": float(np.mean(passing[1::2])),
    }
    pool = np.stack([vectors[p.title.strip()] for p in searcher.papers])
    searcher.set_english_corrections(*held_out_corrections(searcher, pool, 1))
    row[f"title fold 1 ({TITLES}) right flagged"] = flagged(searcher, titles, ("bullets",))
    searcher.close()
    return row


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--index", type=Path, action="append", required=True)
    args = parser.parse_args()
    for index in args.index:
        row = measure(index)
        print("\n".join(f"{k}: {v:.3f}" if isinstance(v, float) else f"{k}: {v}" for k, v in row.items()), "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
