"""A linear map from English queries towards the Korean bullets, learned from the corpus itself.

Every paper pairs an English title with a Korean summary. A ridge regression, pulled towards the
identity, maps each title (embedded as a query) onto its paper's bullet centroid; applying the
map to an English query moves it to where the model puts the Korean text about the same thing.
The map is applied in proportion to the query's share of Latin letters (`hubness.latin_share`),
so Korean queries are left as they are. Measured in EVALUATION.md.
"""

from __future__ import annotations

import numpy as np

from retrieval.hubness import bullet_centroids, paper_hub_scores

DEFAULT_RIDGE = 1.0


def fit_query_map(queries: np.ndarray, targets: np.ndarray, ridge: float = DEFAULT_RIDGE) -> np.ndarray:
    """W minimising ||queries @ W - targets||^2 + ridge * ||W - I||^2; (dim, dim) float32.

    With no training pairs the identity comes back (the map then changes nothing).
    """
    dim = queries.shape[1] if queries.ndim == 2 else targets.shape[1]
    if not len(queries):
        return np.eye(dim, dtype=np.float32)
    x = queries.astype(np.float64)
    y = targets.astype(np.float64)
    identity = np.eye(dim)
    weights = np.linalg.solve(x.T @ x + ridge * identity, x.T @ y + ridge * identity)
    return weights.astype(np.float32)


def map_queries(vectors: np.ndarray, weights: np.ndarray, strength: float | np.ndarray = 1.0) -> np.ndarray:
    """Move L2-normalised query rows `strength` of the way to their mapped image; rows stay normalised.

    `strength` is a scalar or one value per row (0 = unchanged, 1 = fully mapped).
    """
    vectors = np.atleast_2d(vectors).astype(np.float32)
    strength = np.asarray(strength, dtype=np.float32).reshape(-1, 1) if np.ndim(strength) else strength
    moved = vectors + strength * (vectors @ weights - vectors)
    norms = np.linalg.norm(moved, axis=1, keepdims=True)
    return (moved / np.maximum(norms, 1e-12)).astype(np.float32)


def english_corrections(
    bullet_vectors: np.ndarray, offsets: np.ndarray, title_queries: np.ndarray, papers: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The query map fitted on the (title, bullet centroid) pairs of `papers`, and the hub scores
    of every bullet and centroid against those papers' mapped titles.

    `title_queries` holds every paper's title embedded as a query; `papers` picks the pairs used
    (all papers when building; the other half in the title task, so no query sees its own title).
    """
    centroids = bullet_centroids(bullet_vectors, offsets)
    weights = fit_query_map(title_queries[papers], centroids[papers])
    pool = map_queries(title_queries[papers], weights)
    hub_bullets, hub_papers = paper_hub_scores(bullet_vectors, offsets, centroids, pool, papers)
    return weights, hub_bullets, hub_papers
