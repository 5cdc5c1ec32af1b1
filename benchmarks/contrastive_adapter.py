"""A query adapter trained contrastively, measured against the product's ridge query map.

Measured by benchmarks/query_adapter.py and dropped (EVALUATION.md, "Contrastive query adapter"):
the product keeps the ridge map of retrieval/alignment.py. Kept here so the lever can be measured
again (another model, a larger corpus).

`fit_contrastive_map` trains a (dim, dim) map W for English queries (titles embedded as queries)
with InfoNCE over in-batch negatives: each title's positive is its own paper's bullets, the other
papers of the batch are its negatives, the scores hub-corrected as the search scores them
(retrieval/hubness.py). numpy only, one BLAS and OpenMP thread (deterministic for a seed).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from retrieval.alignment import fit_query_map, map_queries
from retrieval.hubness import bullet_centroids, paper_hub_scores

try:
    from threadpoolctl import threadpool_limits
except ImportError:  # installed with scikit-learn; without it BLAS keeps its own thread count

    def threadpool_limits(limits: int | None = None, user_api: str | None = None) -> Any:  # type: ignore[misc]
        return contextlib.nullcontext()


@dataclass(frozen=True)
class AdapterSettings:
    """A query adapter trained contrastively: InfoNCE over in-batch negatives.

    `rank` None trains a full (dim, dim) map W; an integer trains W0 + A B with A (dim, rank),
    B (rank, dim). W0, the start, is the identity or (`init="ridge"`) the ridge map; `penalty`
    times ||W - W0||^2 pulls towards it. A paper's score is the cosine of the mapped query to
    its best bullet (`positive="max"`), to its bullet centroid (`"centroid"`), or
    `centroid_share` of the second and the rest of the first (`"mixed"`), each minus (with
    `hubness`) the vector's hub score against the training papers' mapped titles, as the search
    does it, recomputed every `hub_refresh` epochs. Logits are scores / `temperature`; the
    optimiser is gradient descent with momentum (`"sgd"`) or Adam. `holdout` of the training
    papers (a fixed draw from `seed`) picks the epoch: the one whose map ranks those papers' own
    titles best (MRR@10 among every training paper); training stops after `patience` epochs
    without a gain. A low-rank A starts Gaussian with standard deviation `rank_init` (None:
    1 / sqrt(dim)), B at zero. The defaults are the best variant measured (`nce-sgd-mixed` in EVALUATION.md).
    """

    rank: int | None = None
    init: Literal["identity", "ridge"] = "identity"
    positive: Literal["max", "centroid", "mixed"] = "mixed"
    centroid_share: float = 0.5
    hubness: bool = True
    hub_refresh: int = 3
    temperature: float = 0.02
    penalty: float = 0.0
    batch: int = 256
    epochs: int = 60
    learning_rate: float = 0.03
    optimiser: Literal["adam", "sgd"] = "sgd"
    hard_batches: bool = False
    rank_init: float | None = None
    holdout: float = 0.1
    patience: int = 6
    seed: int = 0


def _unit_rows(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    norms = np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    return x / norms, norms


class _Adam:
    """Adam on a list of arrays, in place."""

    def __init__(self, params: list[np.ndarray], lr: float) -> None:
        self.params, self.lr, self.t = params, lr, 0
        self.m = [np.zeros_like(p) for p in params]
        self.v = [np.zeros_like(p) for p in params]

    def step(self, grads: list[np.ndarray]) -> None:
        self.t += 1
        b1, b2 = 0.9, 0.999
        for p, g, m, v in zip(self.params, grads, self.m, self.v, strict=True):
            m *= b1
            m += (1 - b1) * g
            v *= b2
            v += (1 - b2) * g * g
            p -= self.lr * (m / (1 - b1**self.t)) / (np.sqrt(v / (1 - b2**self.t)) + 1e-8)


class _Momentum:
    """Gradient descent with heavy-ball momentum on a list of arrays, in place."""

    def __init__(self, params: list[np.ndarray], lr: float, momentum: float = 0.9) -> None:
        self.params, self.lr, self.momentum = params, lr, momentum
        self.velocity = [np.zeros_like(p) for p in params]

    def step(self, grads: list[np.ndarray]) -> None:
        for p, g, v in zip(self.params, grads, self.velocity, strict=True):
            v *= self.momentum
            v += g
            p -= self.lr * v


class _Bullets:
    """Bullet vectors and centroids, for batched best-bullet or centroid scores, with a bias per
    bullet and per centroid (minus the hub scores; 0 without hubness)."""

    def __init__(self, bullet_vectors: np.ndarray, offsets: np.ndarray) -> None:
        self.vectors = bullet_vectors
        self.offsets = offsets
        self.counts = np.diff(offsets)
        self.centroids = bullet_centroids(bullet_vectors, offsets)
        self.bullet_bias = np.zeros(len(bullet_vectors), dtype=bullet_vectors.dtype)
        self.centroid_bias = np.zeros(len(self.centroids), dtype=bullet_vectors.dtype)

    def set_hubs(self, pool: np.ndarray, pool_owners: np.ndarray) -> None:
        """Bias every bullet and centroid by minus its hub score against `pool` (retrieval/hubness.py)."""
        hub_bullets, hub_papers = paper_hub_scores(self.vectors, self.offsets, self.centroids, pool, pool_owners)
        self.bullet_bias[:] = -hub_bullets
        self.centroid_bias[:] = -hub_papers

    def rows(self, papers: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The bullet rows of `papers`, paper after paper, and where each paper's rows start."""
        counts = self.counts[papers]
        starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
        rows = np.repeat(self.offsets[papers] - starts, counts) + np.arange(int(counts.sum()))
        return rows, starts

    def scores(self, u: np.ndarray, papers: np.ndarray, positive: str, share: float = 0.0) -> tuple[np.ndarray, Any]:
        """(queries, papers) scores: best bullet ("max"), centroid, or `share` of the centroid's
        and the rest of the best bullet's ("mixed"); and what `gradient` needs."""
        if positive == "centroid":
            return u @ self.centroids[papers].T + self.centroid_bias[papers], None
        rows, starts = self.rows(papers)
        sims = u @ self.vectors[rows].T + self.bullet_bias[rows]
        best = np.maximum.reduceat(sims, starts, axis=1)
        owner = np.repeat(np.arange(len(papers)), self.counts[papers])
        chosen = (sims == best[:, owner]).astype(sims.dtype)
        chosen /= np.add.reduceat(chosen, starts, axis=1)[:, owner]
        if positive == "mixed":
            centroid = u @ self.centroids[papers].T + self.centroid_bias[papers]
            return (1 - share) * best + share * centroid, (chosen, share)
        return best, (chosen, 0.0)

    def gradient(self, grad_scores: np.ndarray, papers: np.ndarray, state: Any) -> np.ndarray:
        """d loss / d u given d loss / d scores (the scores of `scores`, `state` its second value)."""
        if state is None:
            return grad_scores @ self.centroids[papers]
        chosen, share = state
        rows, _ = self.rows(papers)
        owner = np.repeat(np.arange(len(papers)), self.counts[papers])
        grad = ((1 - share) * grad_scores[:, owner] * chosen) @ self.vectors[rows]
        if share:
            grad += share * grad_scores @ self.centroids[papers]
        return grad


def _info_nce(
    x: np.ndarray, weights: np.ndarray, papers: np.ndarray, bullets: _Bullets, s: AdapterSettings
) -> tuple[float, np.ndarray]:
    """InfoNCE loss of one batch (query i's positive is paper i, the other papers are negatives)
    and its gradient with respect to the (dim, dim) map."""
    q = x @ weights
    u, norms = _unit_rows(q)
    scores, best = bullets.scores(u, papers, s.positive, s.centroid_share)
    logits = scores / s.temperature
    logits -= logits.max(axis=1, keepdims=True)
    probs = np.exp(logits)
    probs /= probs.sum(axis=1, keepdims=True)
    n = len(x)
    loss = float(-np.log(np.maximum(probs[np.arange(n), np.arange(n)], 1e-30)).mean())
    grad_scores = probs
    grad_scores[np.arange(n), np.arange(n)] -= 1.0
    grad_scores /= n * s.temperature
    grad_u = bullets.gradient(grad_scores, papers, best)
    grad_q = (grad_u - u * (u * grad_u).sum(axis=1, keepdims=True)) / norms
    return loss, x.T @ grad_q


def _mrr(x: np.ndarray, weights: np.ndarray, answers: np.ndarray, papers: np.ndarray, bullets: _Bullets,
         positive: str, share: float = 0.0) -> float:  # fmt: skip
    """MRR@10 of queries `x` (answer: `answers`, positions in `papers`) ranked among `papers`."""
    u, _ = _unit_rows(x @ weights)
    total = 0.0
    for start in range(0, len(u), 256):
        scores, _ = bullets.scores(u[start : start + 256], papers, positive, share)
        own = scores[np.arange(len(scores)), answers[start : start + 256]]
        rank = 1 + (scores > own[:, None]).sum(axis=1)
        total += float(np.where(rank <= 10, 1.0 / rank, 0.0).sum())
    return total / max(1, len(u))


def info_nce_loss(
    queries: np.ndarray,
    bullet_vectors: np.ndarray,
    offsets: np.ndarray,
    papers: np.ndarray,
    weights: np.ndarray,
    settings: AdapterSettings | None = None,
) -> float:
    """The objective `fit_contrastive_map` lowers (without its penalty), over all of `papers` in
    one batch: each title's own paper against every other one, hub-corrected with `hubness`."""
    s = settings or AdapterSettings()
    papers = np.asarray(papers, dtype=np.int64)
    bullets = _Bullets(bullet_vectors.astype(np.float32), offsets)
    if s.hubness:
        bullets.set_hubs(map_queries(queries[papers], weights), papers)
    return _info_nce(queries[papers].astype(np.float32), weights.astype(np.float32), papers, bullets, s)[0]


def _neighbour_batches(u: np.ndarray, centroids: np.ndarray, papers: np.ndarray, size: int,
                       rng: np.random.Generator) -> list[np.ndarray]:  # fmt: skip
    """Batches of mutually confusable papers: a random seed paper and the unbatched papers whose
    bullet centroids are nearest to its mapped title, until every paper is in a batch."""
    sims = u @ centroids.T
    left = np.ones(len(papers), dtype=bool)
    batches = []
    for seed in rng.permutation(len(papers)):
        if not left[seed]:
            continue
        near = np.where(left, sims[seed], -np.inf)
        take = np.argsort(-near, kind="stable")[: min(size, int(left.sum()))]
        left[take] = False
        batches.append(papers[take])
    return batches


def fit_contrastive_map(
    queries: np.ndarray,
    bullet_vectors: np.ndarray,
    offsets: np.ndarray,
    papers: np.ndarray,
    settings: AdapterSettings | None = None,
    log: list[dict[str, float]] | None = None,
) -> np.ndarray:
    """A (dim, dim) query map trained on (queries[i], paper i's bullets) for i in `papers`.

    Deterministic for a given `settings.seed`. The returned map is scaled so that the mapped
    training queries have a mean norm of 1 (the scale does not change a fully mapped query, it
    keeps `map_queries`' partial strength comparable). `log`, when given, receives one row per
    epoch (mean batch loss, held-out MRR).
    """
    with threadpool_limits(1):  # BLAS and OpenMP (FAISS) on one thread: deterministic, and faster on a busy machine
        return _fit_contrastive(queries, bullet_vectors, offsets, papers, settings or AdapterSettings(), log)


def _fit_contrastive(
    queries: np.ndarray,
    bullet_vectors: np.ndarray,
    offsets: np.ndarray,
    papers: np.ndarray,
    s: AdapterSettings,
    log: list[dict[str, float]] | None,
) -> np.ndarray:
    dim = queries.shape[1]
    papers = np.asarray(papers, dtype=np.int64)
    if len(papers) < 4:
        return np.eye(dim, dtype=np.float32)
    rng = np.random.default_rng(s.seed)
    order = rng.permutation(papers)
    held_count = int(round(s.holdout * len(order))) if len(order) >= 20 else 0
    held, train = order[:held_count], order[held_count:]
    bullets = _Bullets(bullet_vectors.astype(np.float32), offsets)
    x_all = queries.astype(np.float32)
    if s.init == "ridge":
        start = fit_query_map(x_all[train], bullets.centroids[train])
    else:
        start = np.eye(dim, dtype=np.float32)
    if s.rank is None:
        params = [start.copy()]
    else:
        spread = s.rank_init if s.rank_init is not None else 1.0 / np.sqrt(dim)
        params = [(rng.standard_normal((dim, s.rank)) * spread).astype(np.float32), np.zeros((s.rank, dim), np.float32)]
    optimiser = (_Adam if s.optimiser == "adam" else _Momentum)(params, s.learning_rate)

    def current() -> np.ndarray:
        return params[0] if s.rank is None else start + params[0] @ params[1]

    def refresh_hubs(weights: np.ndarray) -> None:
        if s.hubness:
            bullets.set_hubs(map_queries(x_all[train], weights), train)

    position = {int(p): i for i, p in enumerate(papers)}
    held_answers = np.array([position[int(p)] for p in held], dtype=np.int64)
    best_weights, best_mrr, stale = current().copy(), -1.0, 0
    refresh_hubs(best_weights)
    if held_count:
        best_mrr = _mrr(x_all[held], best_weights, held_answers, papers, bullets, s.positive, s.centroid_share)
        if log is not None:
            log.append({"epoch": 0, "loss": float("nan"), "held_mrr": best_mrr})
    for epoch in range(s.epochs):
        losses = []
        if s.hard_batches:
            mapped, _ = _unit_rows(x_all[train] @ current())
            batches = _neighbour_batches(mapped, bullets.centroids[train], train, s.batch, rng)
        else:
            shuffled = rng.permutation(train)
            batches = [shuffled[begin : begin + s.batch] for begin in range(0, len(shuffled), s.batch)]
        for batch in batches:
            if len(batch) < 2:
                continue
            loss, grad_w = _info_nce(x_all[batch], current(), batch, bullets, s)
            if s.penalty:
                delta = current() - start
                loss += s.penalty * float((delta * delta).sum())
                grad_w = grad_w + 2 * s.penalty * delta
            losses.append(loss)
            if s.rank is None:
                optimiser.step([grad_w])
            else:
                optimiser.step([grad_w @ params[1].T, params[0].T @ grad_w])
        if (epoch + 1) % s.hub_refresh == 0:
            refresh_hubs(current())
        row = {"epoch": epoch + 1, "loss": float(np.mean(losses)) if losses else 0.0}
        if held_count:
            row["held_mrr"] = _mrr(x_all[held], current(), held_answers, papers, bullets, s.positive, s.centroid_share)
            if row["held_mrr"] > best_mrr:
                best_weights, best_mrr, stale = current().copy(), row["held_mrr"], 0
            else:
                stale += 1
        else:
            best_weights = current().copy()
        if log is not None:
            log.append(row)
        if held_count and stale >= s.patience:
            break
    scale = float(np.linalg.norm(x_all[papers] @ best_weights, axis=1).mean())
    return (best_weights / max(scale, 1e-12)).astype(np.float32)
