#!/usr/bin/env python3
"""Explore ranking levers fast, on whole score matrices instead of one query at a time.

    python benchmarks/levers.py --index index/daily [--queries retrieval/data/dev.jsonl] [--cache DIR]

For the title task (bullets only) and the development set it computes, for every query, the
paper scores of each leg variant (dense max / max+second / centroid mix; BM25 over bullets,
summed bullets or the whole paper; with and without the corpus term map) and of each fusion
(reciprocal rank fusion with several k and weights, and a normalised linear mix), then prints
R@1, R@10 and MRR@10 per variant. It is for choosing defaults; the figures in EVALUATION.md
come from `retrieval eval`, which runs the product's own query path.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from retrieval.evaluation import load_query_file, paper_era  # noqa: E402
from retrieval.service import open_searcher  # noqa: E402

Scores = np.ndarray  # (queries, papers)


def ranks_of(scores: Scores, answers: list[set[int]]) -> np.ndarray:
    """1-based rank of the best-ranked answer of each query (inf when never scored)."""
    out = np.full(len(answers), np.inf)
    for qi, wanted in enumerate(answers):
        row = np.nan_to_num(scores[qi], nan=-np.inf)
        best = max(row[a] for a in wanted)
        if np.isfinite(best):
            out[qi] = 1 + int(np.sum(row > best))
    return out


def metrics(ranks: np.ndarray) -> dict[str, float]:
    return {
        "R@1": float(np.mean(ranks <= 1)),
        "R@10": float(np.mean(ranks <= 10)),
        "MRR@10": float(np.mean(np.where(ranks <= 10, 1.0 / ranks, 0.0))),
    }


def rank_matrix(scores: Scores) -> Scores:
    """Per-query rank (1 = best) of every paper; unscored papers get +inf."""
    filled = np.nan_to_num(scores, nan=-np.inf)
    order = np.argsort(-filled, axis=1, kind="stable")
    ranks = np.empty_like(filled)
    rows = np.arange(filled.shape[0])[:, None]
    ranks[rows, order] = np.arange(1, filled.shape[1] + 1)[None, :]
    ranks[~np.isfinite(filled)] = np.inf
    return ranks


_RANKS: dict[int, Scores] = {}
_Z: dict[int, Scores] = {}


def cached_ranks(scores: Scores) -> Scores:
    key = id(scores)
    if key not in _RANKS:
        _RANKS[key] = rank_matrix(scores).astype(np.float32)
    return _RANKS[key]


def standardised(scores: Scores, depth: int = 100) -> Scores:
    key = id(scores)
    if key not in _Z:
        filled = np.nan_to_num(scores, nan=0.0)
        depth = min(depth, filled.shape[1] - 1)
        top = -np.partition(-filled, depth, axis=1)[:, :depth]
        mean = top.mean(axis=1, keepdims=True)
        std = top.std(axis=1, keepdims=True) + 1e-6
        _Z[key] = ((filled - mean) / std).astype(np.float32)
    return _Z[key]


def rrf(legs: list[tuple[Scores, float]], k: float) -> Scores:
    total = np.zeros(legs[0][0].shape, dtype=np.float32)
    for scores, weight in legs:
        total += weight / (k + cached_ranks(scores))
    return total


def zmix(legs: list[tuple[Scores, float]]) -> Scores:
    """Linear mix of per-query standardised scores (mean/std over each leg's top 100)."""
    total = np.zeros(legs[0][0].shape, dtype=np.float32)
    for scores, weight in legs:
        total += weight * standardised(scores)
    return total


def cached_query_vectors(searcher, texts: list[str], cache_dir: Path) -> np.ndarray:
    key = hashlib.sha256(("\n".join(texts) + searcher.embedder.name).encode()).hexdigest()[:16]
    path = cache_dir / f"queries-{key}.npy"
    if path.exists():
        return np.load(path, allow_pickle=False)
    vectors = np.vstack([searcher.embedder.embed_queries(texts[i : i + 256]) for i in range(0, len(texts), 256)])
    cache_dir.mkdir(parents=True, exist_ok=True)
    np.save(path, vectors, allow_pickle=False)
    return vectors


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--index", type=Path, required=True)
    parser.add_argument("--queries", type=Path, default=Path("retrieval/data/dev.jsonl"))
    parser.add_argument("--cache", type=Path, default=Path("/tmp/levers-cache"))
    parser.add_argument("--out", type=Path, help="write the table as JSON here too")
    args = parser.parse_args()

    searcher = open_searcher(args.index)
    papers = searcher.papers
    offsets = searcher._offsets
    bullets = searcher._bullet_matrix
    titles_m = searcher._title_matrix
    centroids = np.add.reduceat(bullets, offsets[:-1], axis=0)
    centroids /= np.linalg.norm(centroids, axis=1, keepdims=True)
    id_to_index = {p.arxiv_id: i for i, p in enumerate(papers)}

    tasks: dict[str, tuple[list[str], list[set[int]], bool, list[str]]] = {
        "title": ([p.title for p in papers], [{i} for i in range(len(papers))], False, [paper_era(p) for p in papers])
    }
    dev = load_query_file(args.queries)
    dev = [q for q in dev if all(i in id_to_index for i in q.ids)]
    if dev:
        tasks["dev"] = (
            [q.q for q in dev],
            [{id_to_index[i] for i in q.ids} for q in dev],
            True,
            [q.group for q in dev],
        )

    table: list[dict[str, object]] = []
    for task, (texts, answers, use_titles, groups) in tasks.items():  # noqa: B007
        _RANKS.clear()
        _Z.clear()
        started = time.perf_counter()
        qv = cached_query_vectors(searcher, texts, args.cache)
        row_scores = qv @ bullets.T
        dense_max = np.maximum.reduceat(row_scores, offsets[:-1], axis=1)
        # second best bullet per paper
        top2 = np.full_like(dense_max, -1.0)
        for pi in range(len(papers)):
            chunk = row_scores[:, offsets[pi] : offsets[pi + 1]]
            if chunk.shape[1] > 1:
                top2[:, pi] = np.partition(chunk, -2, axis=1)[:, -2]
            else:
                top2[:, pi] = chunk[:, 0]
        dense_centroid = qv @ centroids.T
        dense_title = qv @ titles_m.T
        del row_scores
        print(f"[{task}] dense matrices in {time.perf_counter() - started:.1f}s", file=sys.stderr)

        lexical: dict[str, Scores] = {}
        for expand in (False, True):
            searcher.settings.expand_terms = expand
            terms = [searcher.query_terms(t) for t in texts]
            rows_bm25 = np.vstack([searcher._bm25_bullets.scores(t) for t in terms])
            lexical[f"bm25-max{'+map' if expand else ''}"] = np.maximum.reduceat(rows_bm25, offsets[:-1], axis=1)
            lexical[f"bm25-sum{'+map' if expand else ''}"] = np.add.reduceat(rows_bm25, offsets[:-1], axis=1)
            lexical[f"bm25-paper{'+map' if expand else ''}"] = np.vstack(
                [searcher._bm25_papers.scores(t) for t in terms]
            )
            if use_titles:
                title_bm25 = np.vstack([searcher._bm25_titles.scores(t) for t in terms])
                for name in [k for k in lexical if k.endswith("+map") == expand and "+title" not in k]:
                    lexical[name + "+title"] = lexical[name] + title_bm25
            del rows_bm25
        for scores in lexical.values():
            scores[scores <= 0] = np.nan
        print(f"[{task}] lexical matrices in {time.perf_counter() - started:.1f}s", file=sys.stderr)

        dense: dict[str, Scores] = {
            "max": dense_max,
            "max+0.1second": dense_max + 0.1 * top2,
            "max+0.3second": dense_max + 0.3 * top2,
            "0.8max+0.2centroid": 0.8 * dense_max + 0.2 * dense_centroid,
            "0.6max+0.4centroid": 0.6 * dense_max + 0.4 * dense_centroid,
            "centroid": dense_centroid,
        }
        if use_titles:
            for name in list(dense):
                dense[name + "|title"] = np.maximum(dense[name], dense_title)
                dense[name + "+0.5title"] = dense[name] + 0.5 * dense_title

        def record(name: str, scores: Scores, answers=answers, task=task, groups=groups) -> None:  # noqa: ANN001
            ranks = ranks_of(scores, answers)
            row: dict[str, object] = {"task": task, "variant": name, **metrics(ranks)}
            for group in sorted(set(groups)):
                picked = np.array([g == group for g in groups])
                row[f"MRR[{group}]"] = metrics(ranks[picked])["MRR@10"]
            table.append(row)
            print(json.dumps(row), flush=True)

        for name, scores in dense.items():
            record(f"dense:{name}", scores)
        for name, scores in lexical.items():
            record(f"lexical:{name}", scores)
        best_dense = ["max", "0.8max+0.2centroid", "0.6max+0.4centroid"]
        if use_titles:
            best_dense = [d + suffix for d in best_dense for suffix in ("", "|title", "+0.5title")]
        fusions: dict[str, Callable[[list[tuple[Scores, float]]], Scores]] = {
            "rrf60": lambda legs: rrf(legs, 60),
            "rrf20": lambda legs: rrf(legs, 20),
            "rrf5": lambda legs: rrf(legs, 5),
            "z": zmix,
        }
        lexical_names = [n for n in lexical if n.split("+")[0] in ("bm25-paper", "bm25-max")]
        for d in best_dense:
            for ln in lexical_names:
                for fname, fuse in fusions.items():
                    for wl in (0.5, 1.0, 1.5):
                        record(f"hybrid:{fname}:w{wl}:{d}:{ln}", fuse([(dense[d], 1.0), (lexical[ln], wl)]))
    if args.out:
        args.out.write_text(json.dumps(table, indent=1), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
