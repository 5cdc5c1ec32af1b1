"""Ranking parity of the top-K legs: full scan vs embedded top-K vs Milvus top-K, on the real index.

Usage::

    python benchmarks/backend_parity.py --index index/daily [--milvus-uri FILE.db|http://...]
        [--tasks title,dev,test] [--backends full,embedded,milvus] [--leg-depth 1000] [--json-out FILE]

* `full`: the embedded backend with every leg's depth covering the corpus: each leg scores every
  paper, which is the ranking before the legs asked for top-K candidates (identical figures).
* `embedded`: the default, in-memory top-K (`--leg-depth` papers per paper-level leg).
* `milvus`: the same settings answered by Milvus (Milvus Lite in a temporary folder unless
  `--milvus-uri` names a server; `pip install '.[milvus]'`). The index's records are upserted
  into it, and for the title task once more per fold with that fold's hubness offsets, so no
  query sees its own title (as `retrieval eval` does with the embedded backend).

Prints MRR@10 / R@1 per task and backend, with each backend's difference from `full`.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from retrieval.backends.base import Backend  # noqa: E402
from retrieval.backends.records import paper_records  # noqa: E402
from retrieval.embedding import load_embedder  # noqa: E402
from retrieval.evaluation import EvalResult, evaluate_query_file, evaluate_title_task  # noqa: E402
from retrieval.search import Searcher, SearchSettings  # noqa: E402
from retrieval.store import IndexData, load_index  # noqa: E402

QUERY_SETS = {"dev": ROOT / "retrieval/data/dev.jsonl", "test": ROOT / "benchmarks/queries/test.jsonl"}


def publish_records(backend: Backend, searcher: Searcher, name: str, hubs: tuple[np.ndarray, np.ndarray]) -> float:
    """Upsert every paper with these (bullet, paper) hubness offsets as version `name`; seconds taken."""
    started = time.perf_counter()
    titles = searcher.index.title_vectors.reconstruct_n(0, searcher.index.title_vectors.ntotal)
    records = paper_records(
        searcher.papers, searcher.bullet_matrix, searcher.bullet_offsets, searcher.centroids, titles,
        hubs[0], hubs[1], searcher.index.sparse,
    )  # fmt: skip
    backend.begin_version(name, from_live=False)
    backend.upsert(records)
    backend.publish(name)
    return time.perf_counter() - started


def run_tasks(searcher: Searcher, tasks: list[str], swap: Any = None) -> dict[str, EvalResult]:
    results: dict[str, EvalResult] = {}
    for task in tasks:
        started = time.perf_counter()
        if task == "title":
            results[task] = evaluate_title_task(searcher, "hybrid", swap=swap)
        else:
            results[task] = evaluate_query_file(searcher, QUERY_SETS[task], "hybrid")
        print(f"  {task}: MRR@10 {results[task].metrics['mrr@10']:.4f} in {time.perf_counter() - started:.0f}s",
              file=sys.stderr, flush=True)  # fmt: skip
    return results


def milvus_results(index: IndexData, settings: SearchSettings, tasks: list[str], uri: str | None) -> tuple[Any, dict]:
    from retrieval.backends.milvus import MilvusBackend

    with tempfile.TemporaryDirectory(prefix="parity-milvus-") as tmp:
        backend = MilvusBackend(uri or str(Path(tmp) / "parity.db"), index.manifest.dim, prefix="parity")
        searcher = Searcher(index, load_embedder(index.manifest.model), settings=settings, backend=backend)
        live = searcher.english_corrections
        upserts = {"live": publish_records(backend, searcher, "live0", (live[1], live[2]))}
        count = iter(range(1, 100))

        def swap(fitted: tuple[np.ndarray, np.ndarray, np.ndarray]) -> None:
            name = f"fold{next(count)}"
            upserts[name] = publish_records(backend, searcher, name, (fitted[1], fitted[2]))
            searcher.set_english_corrections(*fitted, in_backend=True)

        try:
            return run_tasks(searcher, tasks, swap), upserts
        finally:
            searcher.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--index", type=Path, required=True)
    parser.add_argument("--milvus-uri")
    parser.add_argument("--tasks", default="title,dev,test")
    parser.add_argument("--backends", default="full,embedded,milvus")
    parser.add_argument("--leg-depth", type=int, default=SearchSettings().leg_depth)
    parser.add_argument("--json-out", type=Path)
    args = parser.parse_args()
    tasks = args.tasks.split(",")
    index = load_index(args.index)
    embedder = load_embedder(index.manifest.model)
    out: dict[str, Any] = {"leg_depth": args.leg_depth, "tasks": tasks, "results": {}}
    for backend in args.backends.split(","):
        print(f"{backend}:", file=sys.stderr, flush=True)
        if backend == "full":
            everything = max(index.manifest.bullets, index.manifest.papers)
            settings = SearchSettings(leg_depth=everything, candidate_depth=everything)
            results = run_tasks(Searcher(index, embedder, settings=settings), tasks)
        elif backend == "embedded":
            results = run_tasks(Searcher(index, embedder, settings=SearchSettings(leg_depth=args.leg_depth)), tasks)
        else:
            results, upserts = milvus_results(index, SearchSettings(leg_depth=args.leg_depth), tasks, args.milvus_uri)
            out["milvus_upsert_s"] = {k: round(v, 1) for k, v in upserts.items()}
        out["results"][backend] = {t: {"metrics": r.metrics, "by_group": r.by_group} for t, r in results.items()}
    full = out["results"].get("full")
    print("| backend | " + " | ".join(f"{t} MRR@10 | {t} R@1 | {t} ΔMRR" for t in tasks) + " |")
    print("|---|" + "---:|" * (3 * len(tasks)))
    for backend, by_task in out["results"].items():
        cells = []
        for task in tasks:
            m = by_task[task]["metrics"]
            delta = m["mrr@10"] - full[task]["metrics"]["mrr@10"] if full else float("nan")
            cells += [f"{m['mrr@10']:.4f}", f"{m['recall@1']:.4f}", f"{delta:+.4f}"]
        print(f"| {backend} | " + " | ".join(cells) + " |")
    if args.json_out:
        args.json_out.write_text(json.dumps(out, indent=2), encoding="utf-8")


if __name__ == "__main__":
    main()
