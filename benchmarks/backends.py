"""Retrieval backends on a real index: syncs (full, unchanged, one changed paper) and top-K latency.

Usage::

    python benchmarks/backends.py --index index/daily [--milvus-uri FILE.db|http://...] [--batch-size 1000]
                                  [--queries 200] [-k 100] [--backends flat,hnsw,ivf-sq8,milvus] [--json-out FILE]

The index is only read (its token cache is opened read-only). Every paper becomes a
`PaperRecord`: bullet vectors with their hubness, centroid, title vector and BM25 weights of the
three document kinds (`retrieval.backends.sparse`, fitted on the cached tokens). The sparse
weights are first checked against the index's own BM25 arrays. Queries are the title vectors of
`--queries` papers (a seeded sample; hubness weight 1.0, as for an English query) and, for the
sparse legs, their title terms. Reports p50 / p95 in milliseconds per leg and backend, with the
numpy scan `Searcher` does today as the baseline, and the overlap of the backends' top 10.

Each backend is filled through `retrieval.backends.sync.sync_backend` on a fresh store: a full
sync of every paper, a sync with nothing changed, and a sync where one paper changed (one vote
more, its first bullet vector nudged), each timed, and the ratio of the last to the first. For
Milvus also the rows that last sync wrote, the rows held afterwards, the cost of the per-search
check of the live version (and the bullets leg with and without it, and without the version
filter, interleaved), and the legs again from a reader with `recheck_s=1.0` (that checks at most
once a second).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from retrieval.backends.base import Backend, PaperRecord  # noqa: E402
from retrieval.backends.embedded import DenseIndexConfig, EmbeddedBackend  # noqa: E402
from retrieval.backends.sparse import SparseEncoder  # noqa: E402
from retrieval.backends.sync import record_fingerprint, sync_backend  # noqa: E402
from retrieval.corpus import text_hash  # noqa: E402
from retrieval.hubness import bullet_centroids  # noqa: E402
from retrieval.indexer import lexical_title_document  # noqa: E402
from retrieval.lexical import BM25Index  # noqa: E402
from retrieval.models import Filters  # noqa: E402
from retrieval.store import load_index  # noqa: E402

FILTER = Filters(date_from="2024-06-01", min_votes=5)


def cached_tokens(index_dir: Path, tokenizer: str, texts: list[str]) -> list[list[str]]:
    """Token lists of `texts` from the index's cache, opened read-only."""
    db = sqlite3.connect(f"file:{index_dir / 'cache.sqlite'}?mode=ro", uri=True)
    hashes = [text_hash(t) for t in texts]
    found: dict[str, list[str]] = {}
    wanted = list(dict.fromkeys(hashes))
    for start in range(0, len(wanted), 500):
        chunk = wanted[start : start + 500]
        rows = db.execute(
            f"SELECT hash, tokens FROM tokens WHERE tokenizer = ? AND hash IN ({','.join('?' * len(chunk))})",
            [tokenizer, *chunk],
        )
        found.update((key, json.loads(value)) for key, value in rows)
    db.close()
    missing = [h for h in hashes if h not in found]
    if missing:
        raise SystemExit(f"{len(missing)} texts have no cached tokens in {index_dir / 'cache.sqlite'}; rebuild it")
    return [found[h] for h in hashes]


def prepare(index_dir: Path) -> dict[str, Any]:
    index = load_index(index_dir)
    papers = index.papers
    bullets = index.bullet_vectors.reconstruct_n(0, index.bullet_vectors.ntotal)
    titles = index.title_vectors.reconstruct_n(0, index.title_vectors.ntotal)
    counts = np.array([len(p.bullets) for p in papers])
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    centroids = bullet_centroids(bullets, offsets)
    texts = [b.text for p in papers for b in p.bullets]
    tokenizer = index.manifest.tokenizer
    bullet_terms = cached_tokens(index_dir, tokenizer, texts)
    title_terms = cached_tokens(index_dir, tokenizer, [lexical_title_document(p) for p in papers])
    summary_terms = [
        [t for row in range(offsets[i], offsets[i + 1]) for t in bullet_terms[row]] for i in range(len(papers))
    ]
    encoders = {
        "bullets": SparseEncoder().fit(bullet_terms),
        "summary": SparseEncoder().fit(summary_terms),
        "title": SparseEncoder().fit(title_terms),
    }
    records = []
    for i, paper in enumerate(papers):
        rows = slice(int(offsets[i]), int(offsets[i + 1]))
        records.append(
            PaperRecord(
                paper_id=paper.arxiv_id,
                first_date=min(paper.dates),
                last_date=max(paper.dates),
                votes=paper.votes if paper.votes is not None else -1,
                authors=" | ".join(paper.authors).lower(),
                bullet_vectors=bullets[rows],
                bullet_hubness=index.hub_bullets[rows],
                centroid=centroids[i],
                centroid_hubness=float(index.hub_papers[i]),
                title_vector=titles[i],
                sparse_bullets=tuple(encoders["bullets"].encode_document(t) for t in bullet_terms[rows]),
                sparse_summary=encoders["summary"].encode_document(summary_terms[i]),
                sparse_title=encoders["title"].encode_document(title_terms[i]),
            )
        )
    return {
        "index": index,
        "records": records,
        "encoders": encoders,
        "bullets": bullets,
        "titles": titles,
        "centroids": centroids,
        "title_terms": title_terms,
        "offsets": offsets,
    }


def check_bm25(data: dict[str, Any], sample: np.ndarray) -> dict[str, float]:
    """Largest |sparse score - index BM25 score|, absolute and relative to max(1, BM25 score), over
    the sample's title terms (title and author names: long queries, large scores) and every document."""
    index = data["index"]
    worst = {"max_abs_diff": 0.0, "max_rel_diff": 0.0, "max_score": 0.0}
    for kind, directory in (("bullets", "bm25_bullets"), ("summary", "bm25_papers"), ("title", "bm25_titles")):
        bm25 = BM25Index.load(index.bm25_dirs[directory])
        encoder: SparseEncoder = data["encoders"][kind]
        matrix = {
            "bullets": [w for r in data["records"] for w in r.sparse_bullets],
            "summary": [r.sparse_summary for r in data["records"]],
            "title": [r.sparse_title for r in data["records"]],
        }[kind]
        for pi in sample[:20]:
            terms = data["title_terms"][pi]
            query = encoder.encode_query(terms)
            ours = np.array([sum(w * doc.get(t, 0.0) for t, w in query.items()) for doc in matrix])
            reference = bm25.scores(terms)
            diff = np.abs(ours - reference)
            worst["max_abs_diff"] = max(worst["max_abs_diff"], float(diff.max()))
            worst["max_rel_diff"] = max(worst["max_rel_diff"], float((diff / np.maximum(reference, 1.0)).max()))
            worst["max_score"] = max(worst["max_score"], float(reference.max()))
    return worst


def latency(fn: Callable[[int], Any], n: int) -> dict[str, float]:
    fn(0)  # warm-up
    times = []
    for i in range(n):
        started = time.perf_counter()
        fn(i)
        times.append((time.perf_counter() - started) * 1000)
    times.sort()
    return {"p50_ms": round(statistics.median(times), 3), "p95_ms": round(times[int(0.95 * (n - 1))], 3)}


def query_legs(backend: Backend, data: dict[str, Any], sample: np.ndarray, k: int) -> dict[str, dict[str, float]]:
    titles = data["titles"]
    encoders = data["encoders"]
    sparse = [encoders["bullets"].encode_query(data["title_terms"][pi]) for pi in sample]
    sparse_summary = [encoders["summary"].encode_query(data["title_terms"][pi]) for pi in sample]
    n = len(sample)
    return {
        "bullets": latency(lambda i: backend.top_bullets(titles[sample[i]], k, hubness_weight=1.0), n),
        "bullets_filtered": latency(lambda i: backend.top_bullets(titles[sample[i]], k, FILTER, 1.0), n),
        "centroid": latency(lambda i: backend.top_papers(titles[sample[i]], k, hubness_weight=1.0), n),
        "title": latency(lambda i: backend.top_papers(titles[sample[i]], k, field="title"), n),
        "sparse_bullets": latency(lambda i: backend.top_sparse(sparse[i], k, field="bullets"), n),
        "sparse_summary": latency(lambda i: backend.top_sparse(sparse_summary[i], k, field="summary"), n),
    }


def timed(fn: Callable[[], Any]) -> float:
    started = time.perf_counter()
    fn()
    return round(time.perf_counter() - started, 3)


def changed_copy(record: PaperRecord) -> PaperRecord:
    """`record` with one vote more and its first bullet vector nudged: a changed paper."""
    vectors = record.bullet_vectors.copy()
    vectors[0] = vectors[0] + np.float32(1e-3)
    return dataclasses.replace(record, votes=record.votes + 1, bullet_vectors=vectors)


def build_and_measure(backend: Backend, data: dict[str, Any], sample: np.ndarray, k: int) -> dict[str, Any]:
    """A full sync (every paper), an unchanged sync, a sync of one changed paper, then latency."""
    records: list[PaperRecord] = data["records"]
    out: dict[str, Any] = {}
    prints, full = sync_backend(backend, records, "full", None)
    out["full_sync_s"] = full.seconds
    out["begin_s"], out["upsert_all_s"], out["publish_s"] = (full.phases[p] for p in ("begin", "upsert", "publish"))
    prints, same = sync_backend(backend, records, "same", prints)
    out["unchanged_sync_s"] = same.seconds
    middle = len(records) // 2
    changed = [*records[:middle], changed_copy(records[middle]), *records[middle + 1 :]]
    _, one = sync_backend(backend, changed, "incr", prints)
    assert (one.full, one.upserted, one.kept) == (False, 1, len(records) - 1), one
    out["incremental_sync_s"] = one.seconds
    out["incremental_phases_s"] = one.phases
    out["incremental_over_full"] = round(one.seconds / full.seconds, 4)
    # the backend's own work (begin + upsert + delete + publish), without fingerprinting the records
    out["full_backend_s"] = round(sum(full.phases.values()), 4)
    out["incremental_backend_s"] = round(sum(one.phases.values()), 4)
    out["incremental_over_full_backend"] = round(out["incremental_backend_s"] / out["full_backend_s"], 4)
    writes = getattr(backend, "writes", None)
    if writes is not None:  # Milvus: the rows that sync wrote
        out["incremental_row_writes"] = dict(+writes)
        out["changed_paper_bullets"] = len(records[middle].bullet_vectors)
    # two rounds: the first right after the writes (Milvus may still be sealing and merging
    # segments), the second is the one reported as "latency"
    out["latency_first_round"] = query_legs(backend, data, sample, k)
    out["latency"] = query_legs(backend, data, sample, k)
    return out


def fingerprint_time(records: list[PaperRecord]) -> float:
    """Seconds to fingerprint every record (part of every sync)."""
    return timed(lambda: [record_fingerprint(r) for r in records])


def milvus_bullet_paths(backend: Any, data: dict[str, Any], sample: np.ndarray, k: int) -> dict[str, float]:
    """p50 ms of the bullets leg three ways, interleaved query by query so load hits all alike:
    the backend's search (version filter + live-row check), the same search without the check,
    and a bare client search without the version filter."""
    from retrieval.backends.base import augment

    titles = data["titles"]
    view = backend._view
    collection = backend._name("bullets")
    params = {"metric_type": "IP", "params": backend.search_params}

    def query(i: int) -> list[float]:
        return augment(titles[sample[i]], -1.0)[0].tolist()

    paths: dict[str, Callable[[int], Any]] = {
        "with_check": lambda i: backend.top_bullets(titles[sample[i]], k, hubness_weight=1.0),
        "version_filter_only": lambda i: backend._search_in(
            view, "bullets", "vector", query(i), k, Filters(), ["paper_id", "position"]
        ),
        "no_version_filter": lambda i: backend._client.search(
            collection,
            data=[query(i)],
            limit=k,
            anns_field="vector",
            output_fields=["paper_id", "position"],
            search_params=params,
        ),
    }
    times: dict[str, list[float]] = {name: [] for name in paths}
    for fn in paths.values():
        fn(0)
    for i in range(len(sample)):
        for name, fn in paths.items():
            started = time.perf_counter()
            fn(i)
            times[name].append((time.perf_counter() - started) * 1000)
    return {name: round(statistics.median(values), 3) for name, values in times.items()}


def numpy_baseline(data: dict[str, Any], sample: np.ndarray, k: int) -> dict[str, float]:
    """What Searcher does today per dense bullet leg: one einsum over every bullet, argpartition."""
    bullets = data["bullets"]
    hubs = data["index"].hub_bullets
    titles = data["titles"]

    def scan(i: int) -> np.ndarray:
        scores = np.einsum("ij,j->i", bullets, titles[sample[i]]) - hubs
        top = np.argpartition(scores, len(scores) - k)[len(scores) - k :]
        return top[np.argsort(-scores[top])]

    return latency(scan, len(sample))


def overlap(a: Backend, b: Backend, data: dict[str, Any], sample: np.ndarray) -> float:
    shared = []
    for pi in sample:
        q = data["titles"][pi]
        left = {(h.paper_id, h.position) for h in a.top_bullets(q, 10, hubness_weight=1.0)}
        right = {(h.paper_id, h.position) for h in b.top_bullets(q, 10, hubness_weight=1.0)}
        shared.append(len(left & right) / 10)
    return round(float(np.mean(shared)), 4)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--index", type=Path, required=True)
    parser.add_argument("--milvus-uri", default=None, help="default: a Milvus Lite file in a temporary folder")
    parser.add_argument("--batch-size", type=int, default=1000)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("-k", type=int, default=100)
    parser.add_argument("--backends", default="flat,hnsw,milvus", help="comma-separated: flat, hnsw, ivf-sq8, milvus")
    parser.add_argument("--json-out", type=Path)
    args = parser.parse_args()

    started = time.perf_counter()
    data = prepare(args.index)
    records = data["records"]
    sample = np.random.default_rng(0).choice(len(records), size=args.queries, replace=False)
    dim = data["bullets"].shape[1]
    report: dict[str, Any] = {
        "papers": len(records),
        "bullets": int(sum(len(r.bullet_vectors) for r in records)),
        "k": args.k,
        "queries": args.queries,
        "prepare_s": round(time.perf_counter() - started, 2),
        "sparse_vs_bm25index": check_bm25(data, sample),
        "numpy_scan_bullets": numpy_baseline(data, sample, args.k),
        "fingerprint_all_s": fingerprint_time(records),
    }
    print(json.dumps(report), flush=True)
    with tempfile.TemporaryDirectory(prefix="backends-bench-") as tmp:
        wanted = args.backends.split(",")
        embedded = {}
        for kind in [k for k in wanted if k != "milvus"]:
            backend = EmbeddedBackend(Path(tmp) / f"embedded-{kind}", dim, DenseIndexConfig(index_type=kind))
            embedded[kind] = backend
            report[f"embedded_{kind}"] = build_and_measure(backend, data, sample, args.k)
            report[f"embedded_{kind}"]["reopen_s"] = timed(lambda b=backend: EmbeddedBackend(b.path, dim))
            print(json.dumps({f"embedded_{kind}": report[f"embedded_{kind}"]}), flush=True)
        for kind in embedded:
            if kind != "flat" and "flat" in embedded:
                report[f"top10_overlap_{kind}_vs_flat"] = overlap(embedded["flat"], embedded[kind], data, sample)
        if "milvus" in wanted:
            from retrieval.backends.milvus import MilvusBackend

            uri = args.milvus_uri or str(Path(tmp) / "milvus.db")
            connect_started = time.perf_counter()
            milvus = MilvusBackend(uri, dim, prefix=f"bench{int(time.time())}", batch_size=args.batch_size)
            report["milvus"] = {"uri": uri, "batch_size": args.batch_size}
            report["milvus"]["connect_s"] = round(time.perf_counter() - connect_started, 3)
            report["milvus"].update(build_and_measure(milvus, data, sample, args.k))
            report["milvus"]["rows_after"] = milvus.count()
            report["milvus"]["meta_check"] = latency(lambda i: milvus._read_live(), args.queries)
            report["milvus"]["bullets_p50_by_path"] = milvus_bullet_paths(milvus, data, sample, args.k)
            lazy = MilvusBackend(uri, dim, prefix=milvus.prefix, batch_size=args.batch_size, recheck_s=1.0)
            report["milvus"]["latency_recheck_1s"] = query_legs(lazy, data, sample, args.k)
            lazy.close()
            if "flat" in embedded:
                report["top10_overlap_milvus_vs_flat"] = overlap(embedded["flat"], milvus, data, sample)
            for name in milvus._client.list_collections():
                if name.startswith(milvus.prefix + "_"):
                    milvus._client.drop_collection(name)
            milvus.close()
    print(json.dumps(report, indent=2))
    if args.json_out:
        args.json_out.write_text(json.dumps(report, indent=2), encoding="utf-8")


if __name__ == "__main__":
    main()
