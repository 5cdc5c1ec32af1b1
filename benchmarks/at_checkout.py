#!/usr/bin/env python3
"""Time one measure with the code of another checkout, so two versions can be measured
alternately in one session (the machine's load then hits both alike).

    git worktree add /tmp/before <commit>
    python benchmarks/at_checkout.py add-day --checkout /tmp/before --index <full index of its format>
    python benchmarks/at_checkout.py add-day --checkout .            --index <full index of this format>

Measures:

* ``add-day``: part (c) of benchmarks/build.py, adding the corpus's last day to a copy of the
  full index (the index itself is never written).
* ``search``: milliseconds per `Searcher.search` in hybrid and dense mode with the query vectors
  already cached, i.e. everything a query costs after its embedding.

Prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

DEFAULT_CORPUS = Path(__file__).resolve().parents[2] / "shared" / "corpus" / "daily_papers_ko" / "paper_logs"
SEARCH_QUERIES = [
    "speculative decoding for faster inference",
    "저랭크 행렬로 LLM 미세 조정",
    "Mamba 상태 공간 모델",
    "3D Gaussian splatting avatar",
]


def add_day(args: argparse.Namespace) -> dict[str, Any]:
    from benchmarks.build import part_c
    from retrieval.lexical import KoreanEnglishTokenizer

    with tempfile.TemporaryDirectory(prefix="add-day-") as tmp:
        work = Path(tmp)
        shutil.copytree(args.index, work / "index")
        return part_c(args.corpus.resolve(), work / "index", KoreanEnglishTokenizer(), args.model, work)


def search(args: argparse.Namespace, rounds: int = 50) -> dict[str, Any]:
    from retrieval.service import open_searcher

    searcher = open_searcher(args.index)
    for query in SEARCH_QUERIES:  # embeds and caches each query vector once
        searcher.search(query)
    result: dict[str, Any] = {"queries": SEARCH_QUERIES, "rounds": rounds}
    for mode in ("hybrid", "dense"):
        started = time.perf_counter()
        for _ in range(rounds):
            for query in SEARCH_QUERIES:
                searcher.search(query, mode=mode)
        seconds = (time.perf_counter() - started) / (rounds * len(SEARCH_QUERIES))
        result[f"{mode}_ms_per_query"] = round(seconds * 1000, 2)
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("measure", choices=("add-day", "search"))
    parser.add_argument("--checkout", type=Path, required=True, help="a checkout whose retrieval/ is timed")
    parser.add_argument("--index", type=Path, required=True, help="a full index built by that checkout")
    parser.add_argument("--corpus", type=Path, default=DEFAULT_CORPUS)
    parser.add_argument("--model", default="e5-small-q4")
    args = parser.parse_args()

    sys.path.insert(0, str(args.checkout.resolve()))
    # An editable install of this repository would otherwise win over the path entry.
    sys.meta_path = [f for f in sys.meta_path if "editable" not in repr(f).lower()]
    import retrieval

    result = add_day(args) if args.measure == "add-day" else search(args)
    print(json.dumps({"code": str(Path(retrieval.__file__).parent), **result}, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
