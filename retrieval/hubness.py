"""Hubness correction for English queries against Korean bullets.

With a small multilingual model some bullets sit close to almost every English query ("hubs"),
so they crowd the top of the ranking for queries they do not answer. Cross-domain similarity
local scaling (CSLS) corrects this: a bullet's cosine to the query is lowered by the bullet's
mean cosine to its `k` nearest queries from a reference pool. The pool here is the English
titles of the indexed papers, embedded as queries; a bullet is never compared with its own
paper's title, so the score measures how close it is to *other* papers.

The correction is applied in proportion to how English the query is (`latin_share`): Korean
queries against Korean bullets do not suffer from this cross-lingual hubness and measured
worse with it (EVALUATION.md).
"""

from __future__ import annotations

import re

import faiss
import numpy as np

DEFAULT_NEIGHBOURS = 10

_LATIN = re.compile(r"[A-Za-z]")
_HANGUL = re.compile(r"[\uac00-\ud7a3\u3131-\u318e]")


def hub_scores(
    vectors: np.ndarray,
    owners: np.ndarray,
    pool: np.ndarray,
    pool_owners: np.ndarray,
    k: int = DEFAULT_NEIGHBOURS,
) -> np.ndarray:
    """Mean cosine of each row of `vectors` to its `k` nearest rows of `pool`.

    `owners[i]` and `pool_owners[j]` are paper indexes: a vector is never matched with the pool
    row of its own paper (each paper has at most one row in the pool). Rows are L2-normalised,
    so inner products are cosines. Returns float32 of len(vectors); zeros when the pool has no
    more than `k` rows.
    """
    out = np.zeros(len(vectors), dtype=np.float32)
    if len(pool) <= k or not len(vectors):
        return out
    index = faiss.IndexFlatIP(pool.shape[1])
    index.add(np.ascontiguousarray(pool, dtype=np.float32))
    sims, rows = index.search(np.ascontiguousarray(vectors, dtype=np.float32), k + 1)
    keep = np.asarray(pool_owners)[rows] != np.asarray(owners)[:, None]
    keep[keep.all(axis=1), k] = False  # own title not among the k + 1: drop the (k + 1)-th instead
    out[:] = np.where(keep, sims, 0.0).sum(axis=1) / k
    return out


def bullet_centroids(bullet_vectors: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """Normalised mean of each paper's bullet vectors (paper i owns rows offsets[i]:offsets[i+1])."""
    if not len(bullet_vectors):
        return np.zeros((len(offsets) - 1, bullet_vectors.shape[1] if bullet_vectors.ndim == 2 else 1), np.float32)
    sums = np.add.reduceat(bullet_vectors, offsets[:-1], axis=0)
    return (sums / np.maximum(np.linalg.norm(sums, axis=1, keepdims=True), 1e-12)).astype(np.float32)


def paper_hub_scores(
    bullet_vectors: np.ndarray,
    offsets: np.ndarray,
    centroids: np.ndarray,
    pool: np.ndarray,
    pool_owners: np.ndarray,
    k: int = DEFAULT_NEIGHBOURS,
) -> tuple[np.ndarray, np.ndarray]:
    """Hub scores of every bullet and of every paper's bullet centroid against one pool.

    `offsets` has one entry per paper plus the end (paper i owns rows offsets[i]:offsets[i+1]);
    `centroids` are `bullet_centroids(bullet_vectors, offsets)`; `pool_owners[j]` is the paper
    whose title is pool row j.
    """
    counts = np.diff(offsets)
    bullet_owners = np.repeat(np.arange(len(counts)), counts)
    paper_owners = np.arange(len(counts))
    return (
        hub_scores(bullet_vectors, bullet_owners, pool, pool_owners, k),
        hub_scores(centroids, paper_owners, pool, pool_owners, k),
    )


def latin_share(text: str) -> float:
    """Share of Latin letters among the Latin and Hangul letters of `text` (0 when it has none)."""
    latin = len(_LATIN.findall(text))
    hangul = len(_HANGUL.findall(text))
    return latin / (latin + hangul) if latin + hangul else 0.0


def summary_ranks(title_vectors: np.ndarray, centroids: np.ndarray, block: int = 512) -> np.ndarray:
    """For each paper, how many other papers' summaries (bullet centroids) are nearer to its
    title than its own summary is (int32): a large count flags a summary about another paper."""
    ranks = np.zeros(len(title_vectors), dtype=np.int32)
    if not len(title_vectors) or not len(centroids):
        return ranks
    for start in range(0, len(title_vectors), block):
        sims = title_vectors[start : start + block] @ centroids.T
        own = sims[np.arange(len(sims)), np.arange(start, start + len(sims))]
        ranks[start : start + len(sims)] = (sims > own[:, None]).sum(axis=1)
    return ranks
