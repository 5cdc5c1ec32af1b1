"""Which FAISS index type carries the bullet vectors to 1M+ vectors (recall, memory, one-thread latency).

Usage::

    python benchmarks/scale.py --n 1000000 --dim 384 --threads 1 --out scale-1m.json --markdown scale-1m.md
    python benchmarks/scale.py --n 100000 --out scale-100k.json          # development size
    python benchmarks/scale.py --n 20000 --queries 200 --out smoke.json  # smoke run (a minute)
    python benchmarks/scale.py --n 0 --out scale-real.json               # the real 21k vectors alone

Data: `--n` synthetic unit vectors shaped like the real bullet embeddings, plus the real bullet
vectors of `--real-index` appended (`--real-index none`: synthetic only, with a built-in shape).
The synthetic vectors are a mixture of `--clusters` Gaussian clusters (sizes log-normal) in the
residual space of the real vectors: point = normalise(global mean + cluster centre + noise), where
centre and noise are Gaussian with the real residual covariance (so the vectors share the real
common direction and the real anisotropic spectrum), `--alpha` of that variance between the
clusters. The defaults (3,000 clusters, alpha 0.45) reproduce the real vectors' mean cosine to
their 1st and 10th nearest neighbour at the real size (21,388); the JSON reports both.

Queries (never in the index): real title vectors, real bullet vectors perturbed along the real
residual covariance to cosine `--query-cos` with their source, and held-out synthetic vectors
perturbed the same way. Ground truth is exact inner-product search (IndexFlatIP).

Per index kind: build seconds (train + add, `--threads` threads), bytes per vector
(`faiss.serialize_index` / ntotal), and for every value of the search-time knob (efSearch for HNSW,
nprobe for IVF) recall@k against the exact search and one-thread latency p50 / p99 over every
query, searched one at a time. The operating point of a kind is the smallest knob value whose
recall meets the goal on every query set; the chosen kind is exact search when its p50 meets the
latency goal, otherwise the fastest approximate kind that meets every goal.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import faiss
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

DEFAULT_REAL_INDEX = ROOT.parent / "idx" / "daily"
GOAL_RECALL = 0.95
GOAL_BYTES_PER_VECTOR = 750.0
GOAL_P50_MS = 5.0
EF_SEARCH = (16, 32, 48, 64, 96, 128, 192, 256, 384, 512, 768, 1024)
NPROBE = (8, 16, 32, 48, 64, 96, 128, 192, 256, 384, 512)
ALL_KINDS = ("flat", "sq8", "hnsw32-sq8", "ivf-sq8", "hnsw32-flat", "ivf-pq-rsq8")
DEFAULT_KINDS = ("flat", "sq8", "hnsw32-sq8", "ivf-sq8")
DIAGNOSTIC_KINDS = ("flat", "sq8")  # measured for reference, never chosen as the approximate kind
TIE_MARGIN = 1e-5  # float32 rounding of a 384-dim dot product of unit vectors is about 1e-7
STOP_P50_MS = 4 * GOAL_P50_MS  # a sweep stops once a knob value is this slow

# Shape of the real bullet vectors (multilingual-e5-small, 21,388 bullets), measured with
# --real-index /work/idx/daily; used only with --real-index none.
REAL_MEAN_NORM = 0.9146
REAL_EFFECTIVE_DIM = 128.0


class UsageError(Exception):
    """Bad arguments or a missing input: reported in one line, exit code 2."""


# ---------------------------------------------------------------- data


@dataclass
class Shape:
    """Global mean and residual covariance factor (cov = basis @ basis.T) of a set of unit vectors."""

    mean: np.ndarray
    basis: np.ndarray

    def residuals(self, count: int, rng: np.random.Generator) -> np.ndarray:
        """`count` Gaussian residuals with this covariance (float32)."""
        z = rng.standard_normal((count, self.mean.shape[0]), dtype=np.float32)
        return z @ self.basis.T


def shape_of(vectors: np.ndarray) -> Shape:
    """The mean and residual covariance factor of real vectors."""
    mean = vectors.mean(axis=0, dtype=np.float64)
    values, vecs = np.linalg.eigh(np.cov((vectors - mean).T))
    basis = vecs * np.sqrt(np.clip(values, 0.0, None))
    return Shape(mean.astype(np.float32), basis.astype(np.float32))


def built_in_shape(dim: int, rng: np.random.Generator) -> Shape:
    """A random shape with the real data's mean norm, residual variance and effective dimension."""
    direction = rng.standard_normal(dim)
    direction /= np.linalg.norm(direction)
    ranks = np.arange(1, dim + 1, dtype=np.float64)
    target = min(REAL_EFFECTIVE_DIM * dim / 384.0, dim)
    low, high = 0.0, 4.0  # power-law exponent giving the target effective dimension
    for _ in range(60):
        mid = (low + high) / 2
        values = ranks**-mid
        if values.sum() ** 2 / (values**2).sum() > target:
            low = mid
        else:
            high = mid
    values = ranks ** -((low + high) / 2)
    values *= (1.0 - REAL_MEAN_NORM**2) / values.sum()
    ortho, _ = np.linalg.qr(rng.standard_normal((dim, dim)))
    return Shape((direction * REAL_MEAN_NORM).astype(np.float32), (ortho * np.sqrt(values)).astype(np.float32))


def normalised(vectors: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return np.ascontiguousarray(vectors / np.maximum(norms, 1e-12), dtype=np.float32)


class Mixture:
    """Clusters of unit vectors around `shape`: centres take `alpha` of the residual variance."""

    def __init__(self, shape: Shape, clusters: int, alpha: float, size_spread: float, rng: np.random.Generator):
        self.shape = shape
        self.noise_scale = math.sqrt(1.0 - alpha)
        self.centres = shape.residuals(clusters, rng) * math.sqrt(alpha)
        weights = rng.lognormal(0.0, size_spread, clusters) if size_spread > 0 else np.ones(clusters)
        self.weights = weights / weights.sum()

    def sample(self, count: int, rng: np.random.Generator, chunk: int = 50_000) -> np.ndarray:
        out = np.empty((count, self.shape.mean.shape[0]), dtype=np.float32)
        for start in range(0, count, chunk):
            size = min(chunk, count - start)
            labels = rng.choice(len(self.centres), size, p=self.weights)
            points = self.shape.mean + self.centres[labels] + self.shape.residuals(size, rng) * self.noise_scale
            out[start : start + size] = normalised(points)
        return out


def perturbed(vectors: np.ndarray, shape: Shape, cos_target: float, rng: np.random.Generator) -> np.ndarray:
    """Unit vectors at about cosine `cos_target` from `vectors`, moved along the residual covariance."""
    variance = float((shape.basis**2).sum())
    scale = math.sqrt(max(1.0 / cos_target**2 - 1.0, 0.0) / variance)
    return normalised(vectors + scale * shape.residuals(len(vectors), rng))


def neighbour_stats(index: faiss.Index, vectors: np.ndarray, rng: np.random.Generator, sample: int = 1000) -> dict:
    """Mean cosine of sampled members of `index` to their 1st and 10th nearest other member, etc."""
    rows = rng.choice(len(vectors), min(sample, len(vectors)), replace=False)
    sims, _ = index.search(vectors[rows], 11)
    pairs = vectors[rows[: min(500, len(rows))]]
    gram = pairs @ pairs.T
    mean = vectors.mean(axis=0)
    mean /= np.linalg.norm(mean)
    return {
        "nn1_cos": round(float(sims[:, 1].mean()), 4),
        "nn10_cos": round(float(sims[:, 10].mean()), 4) if sims.shape[1] > 10 else None,
        "random_pair_cos": round(float(gram[np.triu_indices(len(pairs), 1)].mean()), 4),
        "cos_to_global_mean": round(float((vectors[rows] @ mean).mean()), 4),
    }


def real_vectors(path: str) -> tuple[np.ndarray, np.ndarray]:
    """Bullet and title vectors of a built index (float32, row-normalised)."""
    from retrieval.errors import RetrievalError
    from retrieval.store import load_index

    try:
        data = load_index(path)
    except RetrievalError as exc:
        raise UsageError(f"--real-index {path}: {exc}") from exc
    bullets = data.bullet_vectors.reconstruct_n(0, data.bullet_vectors.ntotal)
    titles = data.title_vectors.reconstruct_n(0, data.title_vectors.ntotal)
    return normalised(bullets), normalised(titles)


# ---------------------------------------------------------------- indexes


@dataclass
class Candidate:
    """One index kind: how to build it and its search-time knob."""

    kind: str
    factory: str
    knob: str | None
    values: tuple[int, ...]
    set_knob: Callable[[faiss.Index, int], None]
    needs_training: bool


def _set_ef(index: faiss.Index, value: int) -> None:
    faiss.downcast_index(index).hnsw.efSearch = value


def _set_nprobe(index: faiss.Index, value: int) -> None:
    faiss.extract_index_ivf(index).nprobe = value


def _no_knob(index: faiss.Index, value: int) -> None:
    return None


def candidates(
    kinds: Sequence[str], nlist: int, ef_values: tuple[int, ...], nprobe_values: tuple[int, ...]
) -> list[Candidate]:
    probes = tuple(sorted({min(v, nlist) for v in nprobe_values}))  # nprobe beyond nlist is the same search
    table = {
        "flat": Candidate("flat", "Flat", None, (0,), _no_knob, False),
        "sq8": Candidate("sq8", "SQ8", None, (0,), _no_knob, True),  # exhaustive on SQ8 codes: their recall ceiling
        "hnsw32-sq8": Candidate("hnsw32-sq8", "HNSW32,SQ8", "efSearch", ef_values, _set_ef, True),
        "hnsw32-flat": Candidate("hnsw32-flat", "HNSW32,Flat", "efSearch", ef_values, _set_ef, False),
        "ivf-sq8": Candidate("ivf-sq8", f"IVF{nlist},SQ8", "nprobe", probes, _set_nprobe, True),
        "ivf-pq-rsq8": Candidate("ivf-pq-rsq8", f"IVF{nlist},PQ48,Refine(SQ8)", "nprobe", probes, _set_nprobe, True),
    }
    return [table[kind] for kind in kinds]


@dataclass
class Built:
    """An index and what building it took; `complete` is False when the add time cap stopped it."""

    index: faiss.Index
    train_s: float
    add_s: float
    add_curve: list[tuple[int, float]]  # (vectors added, seconds since the adds began), per chunk
    complete: bool


def build(
    candidate: Candidate,
    vectors: np.ndarray,
    ef_construction: int,
    train_size: int,
    rng: np.random.Generator,
    max_add_s: float = 0.0,
) -> Built:
    """Train on a sample, then add in chunks (stopping after `max_add_s` seconds when it is > 0)."""
    index = faiss.index_factory(vectors.shape[1], candidate.factory, faiss.METRIC_INNER_PRODUCT)
    if candidate.kind.startswith("hnsw"):
        faiss.downcast_index(index).hnsw.efConstruction = ef_construction
    if candidate.kind == "ivf-pq-rsq8":
        faiss.downcast_index(index).k_factor = 4
    start = time.perf_counter()
    if not index.is_trained:
        rows = rng.choice(len(vectors), min(train_size, len(vectors)), replace=False)
        index.train(vectors[np.sort(rows)])
    trained = time.perf_counter()
    chunk = max(10_000, -(-len(vectors) // 20))
    curve: list[tuple[int, float]] = []
    for first in range(0, len(vectors), chunk):
        index.add(vectors[first : first + chunk])
        curve.append((index.ntotal, round(time.perf_counter() - trained, 2)))
        if max_add_s and curve[-1][1] > max_add_s and index.ntotal < len(vectors):
            return Built(index, trained - start, curve[-1][1], curve, False)
    return Built(index, trained - start, time.perf_counter() - trained, curve, True)


def extrapolated_add_s(curve: list[tuple[int, float]], total: int) -> float:
    """Seconds a stopped add would have taken: the rest at the rate of the last chunk.

    HNSW inserts slow down as the graph grows (about with log n), so this is a lower bound.
    """
    (n1, t1), (n0, t0) = curve[-1], curve[-2] if len(curve) > 1 else (0, 0.0)
    return t1 + (total - n1) * (t1 - t0) / max(n1 - n0, 1)


def bytes_per_vector(index: faiss.Index) -> float:
    return float(faiss.serialize_index(index).size) / max(index.ntotal, 1)


def recall_at(found: np.ndarray, kth_score: np.ndarray, queries: np.ndarray, database: np.ndarray) -> np.ndarray:
    """Per query: the share of the k results found that belong to the exact top k.

    A result belongs when its exact score reaches the exact k-th score (less a float32 rounding
    margin), so that ties at the k-th place, broken differently by another code path, count.
    """
    k = found.shape[1]
    out = np.empty(len(found))
    for row, ids in enumerate(found):
        ids = np.unique(ids[ids >= 0])
        scores = database[ids] @ queries[row]
        out[row] = np.count_nonzero(scores >= kth_score[row] - TIE_MARGIN) / k
    return out


def timed_queries(index: faiss.Index, queries: np.ndarray, k: int, warmup: int = 20) -> tuple[np.ndarray, np.ndarray]:
    """Search one query at a time; return the ids found and each query's seconds."""
    for row in range(min(warmup, len(queries))):
        index.search(queries[row : row + 1], k)
    found = np.empty((len(queries), k), dtype=np.int64)
    seconds = np.empty(len(queries))
    for row in range(len(queries)):
        start = time.perf_counter()
        _, ids = index.search(queries[row : row + 1], k)
        seconds[row] = time.perf_counter() - start
        found[row] = ids[0]
    return found, seconds


@dataclass
class Workload:
    """The queries, their sets, and what exact search says about them."""

    queries: np.ndarray
    sets: dict[str, slice]
    database: np.ndarray
    kth_score: np.ndarray  # exact k-th best score of every query
    k: int
    passes: int  # timing passes over the queries; each query's time is its fastest pass


def sweep_point(index: faiss.Index, work: Workload) -> dict:
    """Recall by query set and one-thread latency of one knob value.

    The machine is shared, so a burst of other work can slow a whole pass: with `passes` > 1 each
    query is timed again in later passes and keeps its fastest time (a pass whose p50 is already
    over STOP_P50_MS is not repeated).
    """
    found, seconds = timed_queries(index, work.queries, work.k)
    passes = 1
    while passes < work.passes and np.percentile(seconds, 50) * 1000 <= STOP_P50_MS:
        seconds = np.minimum(seconds, timed_queries(index, work.queries, work.k)[1])
        passes += 1
    recall = recall_at(found, work.kth_score, work.queries, work.database)
    sets = work.sets
    ms = seconds * 1000
    return {
        "recall": round(float(recall.mean()), 4),
        "recall_by_set": {name: round(float(recall[part].mean()), 4) for name, part in sets.items()},
        "p50_ms": round(float(np.percentile(ms, 50)), 3),
        "p99_ms": round(float(np.percentile(ms, 99)), 3),
        "mean_ms": round(float(ms.mean()), 3),
        "timing_passes": passes,
    }


def operating_point(result: dict, goal_sets: Sequence[str]) -> dict | None:
    """The first sweep point whose recall meets the goal on each of `goal_sets`, with its goal checks."""
    for point in result["sweep"]:
        if min(point["recall_by_set"][name] for name in goal_sets) >= GOAL_RECALL:
            small = result["bytes_per_vector"] <= GOAL_BYTES_PER_VECTOR
            fast = point["p50_ms"] <= GOAL_P50_MS
            goal = min(point["recall_by_set"][name] for name in goal_sets)
            return {
                **point,
                "goal_recall": goal,
                "meets_recall": True,
                "meets_bytes": small,
                "meets_p50": fast,
                "meets_all": small and fast,
            }
    return None


def goal_sets_for(sets: Sequence[str], synthetic: int) -> list[str]:
    """The query sets whose recall decides: the synthetic one when there are synthetic vectors.

    Real vectors among synthetic ones form islands (their nearest neighbours are mostly each
    other: `real_share_of_top10` in the JSON), which a homogeneous real corpus would not have; the
    queries near them are reported, and decide only when the index holds real vectors alone.
    """
    return ["synthetic"] if synthetic and "synthetic" in sets else list(sets)


def choose(results: list[dict]) -> dict:
    """Exact search when it is fast enough; else, of the kinds meeting every goal, the cheapest to build.

    The indexer writes the bullet index afresh from all vectors at every build, so its build time
    is paid on every rebuild; p50 breaks ties. "sq8" (exhaustive over the codes) only shows the
    recall ceiling of 8-bit codes and is never chosen.
    """
    flat = next((r for r in results if r["kind"] == "flat"), None)
    if flat and flat["operating_point"] and flat["operating_point"]["meets_p50"]:
        return {"kind": "flat", "why": f"exact search p50 {flat['operating_point']['p50_ms']} ms <= {GOAL_P50_MS} ms"}
    passing = [
        r
        for r in results
        if r["kind"] not in DIAGNOSTIC_KINDS and r["operating_point"] and r["operating_point"]["meets_all"]
    ]
    if not passing:
        return {"kind": None, "why": "no kind meets every goal"}
    best = min(passing, key=lambda r: (r["build_s"], r["operating_point"]["p50_ms"]))
    point = best["operating_point"]
    return {
        "kind": best["kind"],
        best["knob"]: point["value"],
        "why": f"cheapest build ({best['build_s']:.0f} s) of the kinds meeting every goal: "
        f"recall {point['goal_recall']}, {best['bytes_per_vector']:.0f} B/vector, p50 {point['p50_ms']} ms",
        "also_meeting_goals": [r["kind"] for r in passing if r is not best],
    }


# ---------------------------------------------------------------- run


def parse_ints(text: str, name: str) -> tuple[int, ...]:
    try:
        values = tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise UsageError(f"{name} must be comma-separated integers, not {text!r}") from None
    if not values or min(values) < 1:
        raise UsageError(f"{name} must be positive integers, not {text!r}")
    return values


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=1_000_000, help="synthetic vectors (0: the real vectors alone)")
    parser.add_argument("--dim", type=int, default=384)
    parser.add_argument("--threads", type=int, default=1, help="threads for building (queries always use one)")
    parser.add_argument("--queries", type=int, default=1000, help="queries, split evenly over the query sets")
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--real-index", default=str(DEFAULT_REAL_INDEX), help="index with the real vectors, or none")
    parser.add_argument("--clusters", type=int, default=3000)
    parser.add_argument("--alpha", type=float, default=0.45, help="share of residual variance between clusters")
    parser.add_argument("--size-spread", type=float, default=0.8, help="sigma of the log-normal cluster sizes")
    parser.add_argument("--query-cos", type=float, default=0.88, help="cosine of a perturbed query to its source")
    parser.add_argument("--kinds", default=",".join(DEFAULT_KINDS), help=f"comma-separated, of {', '.join(ALL_KINDS)}")
    parser.add_argument("--ef-construction", type=int, default=200)
    parser.add_argument("--ef-search", default=",".join(map(str, EF_SEARCH)))
    parser.add_argument("--nprobe", default=",".join(map(str, NPROBE)))
    parser.add_argument("--nlist", type=int, default=0, help="IVF lists (0: 4*sqrt(ntotal))")
    parser.add_argument("--train-per-list", type=int, default=40, help="IVF training vectors per list")
    parser.add_argument(
        "--max-add-s",
        type=float,
        default=0.0,
        help="stop adding to an index after this many seconds and report an extrapolated build time",
    )
    parser.add_argument("--passes", type=int, default=2, help="timing passes; each query keeps its fastest")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--rerender", type=Path, help="measure nothing: recompute the choice of this JSON report")
    parser.add_argument("--out", type=Path, help="write the JSON here (default: stdout)")
    parser.add_argument("--markdown", type=Path, help="write a markdown table here ('-': stdout)")
    args = parser.parse_args(argv)
    least = {"n": 0, "dim": 2, "threads": 1, "queries": 2, "k": 1, "clusters": 1, "passes": 1}
    for name, bound in least.items():
        if getattr(args, name) < bound:
            raise UsageError(f"--{name} must be >= {bound}, not {getattr(args, name)}")
    if not 0.0 <= args.alpha < 1.0 or not 0.0 < args.query_cos <= 1.0:
        raise UsageError("--alpha must be in [0, 1) and --query-cos in (0, 1]")
    args.kind_list = [k.strip() for k in args.kinds.split(",") if k.strip()]
    unknown = [k for k in args.kind_list if k not in ALL_KINDS]
    if unknown or not args.kind_list:
        raise UsageError(f"--kinds: unknown {', '.join(unknown) or '(none given)'}; choose from {', '.join(ALL_KINDS)}")
    args.ef_values = parse_ints(args.ef_search, "--ef-search")
    args.nprobe_values = parse_ints(args.nprobe, "--nprobe")
    if args.real_index.lower() == "none" and args.n == 0:
        raise UsageError("--n 0 needs the real vectors: give --real-index")
    return args


def make_data(
    args: argparse.Namespace, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, dict[str, slice], dict]:
    """Database vectors, query vectors, the query sets (slices of the queries) and a data summary."""
    real, titles, shape = None, None, None
    if args.real_index.lower() != "none":
        real, titles = real_vectors(args.real_index)
        if real.shape[1] != args.dim:
            raise UsageError(
                f"--dim {args.dim} does not match the real vectors of {args.real_index} (dim {real.shape[1]})"
            )
        shape = shape_of(real)
    else:
        shape = built_in_shape(args.dim, rng)
    mixture = Mixture(shape, args.clusters, args.alpha, args.size_spread, rng)
    calibrated = calibration(real, mixture, args.query_cos, rng) if real is not None else None
    set_names = (["titles", "perturbed-real"] if real is not None else []) + (["synthetic"] if args.n else [])
    per_set = args.queries // len(set_names)
    synthetic = mixture.sample(args.n + per_set, rng) if args.n else np.zeros((0, args.dim), np.float32)
    parts: list[np.ndarray] = []
    source_cos: dict[str, float] = {}
    if real is not None:
        parts.append(titles[rng.choice(len(titles), min(per_set, len(titles)), replace=False)])
        held_out = np.zeros(len(real), dtype=bool)
        held_out[rng.choice(len(real), per_set, replace=False)] = True
        parts.append(perturbed(real[held_out], shape, args.query_cos, rng))
        source_cos["perturbed-real"] = round(float((parts[-1] * real[held_out]).sum(axis=1).mean()), 4)
        real = np.ascontiguousarray(real[~held_out])  # the sources of the perturbed queries stay out
    if args.n:
        sources = synthetic[args.n :]
        parts.append(perturbed(sources, shape, args.query_cos, rng))
        source_cos["synthetic"] = round(float((parts[-1] * sources).sum(axis=1).mean()), 4)
        synthetic = synthetic[: args.n]
    sets, start = {}, 0
    for name, part in zip(set_names, parts, strict=True):
        sets[name] = slice(start, start + len(part))
        start += len(part)
    queries = np.ascontiguousarray(np.concatenate(parts), dtype=np.float32)
    database = synthetic if real is None else np.concatenate([synthetic, real])
    summary = {
        "synthetic": int(args.n),
        "real": 0 if real is None else len(real),
        "ntotal": len(database),
        "dim": args.dim,
        "shape_source": "real" if real is not None else "built-in",
        "clusters": args.clusters,
        "alpha": args.alpha,
        "size_spread": args.size_spread,
        "queries": {name: part.stop - part.start for name, part in sets.items()},
        "query_cos_target": args.query_cos,
        "query_cos_to_source": source_cos,
        "calibration": calibrated,
    }
    return np.ascontiguousarray(database), queries, sets, summary


def calibration(real: np.ndarray, mixture: Mixture, cos_target: float, rng: np.random.Generator) -> dict:
    """How the real vectors and as many synthetic ones from the mixture compare.

    Neighbour statistics, and the recall@10 of a small HNSW graph (HNSW32, efConstruction 40,
    efSearch 64) for perturbed held-out members: how hard each set is for a graph index.
    """
    synthetic = mixture.sample(len(real), rng)
    out = {}
    for name, vectors in (("real", real), ("synthetic_same_size", synthetic)):
        flat = faiss.IndexFlatIP(vectors.shape[1])
        flat.add(vectors)
        out[name] = neighbour_stats(flat, vectors, rng)
        held_out = np.zeros(len(vectors), dtype=bool)
        held_out[rng.choice(len(vectors), min(200, len(vectors) // 5), replace=False)] = True
        kept = np.ascontiguousarray(vectors[~held_out])
        queries = perturbed(vectors[held_out], mixture.shape, cos_target, rng)
        exact = faiss.IndexFlatIP(vectors.shape[1])
        exact.add(kept)
        scores, _ = exact.search(queries, 10)
        graph = faiss.IndexHNSWFlat(vectors.shape[1], 32, faiss.METRIC_INNER_PRODUCT)
        graph.hnsw.efConstruction = 40
        graph.add(kept)
        graph.hnsw.efSearch = 64
        _, found = graph.search(queries, 10)
        out[name]["hnsw32_ef64_recall"] = round(float(recall_at(found, scores[:, -1], queries, kept).mean()), 4)
    return out


def run(args: argparse.Namespace) -> dict:
    rng = np.random.default_rng(args.seed)
    faiss.omp_set_num_threads(args.threads)
    started = time.perf_counter()
    database, queries, sets, data = make_data(args, rng)
    ntotal = len(database)
    nlist = args.nlist or max(8, round(4 * math.sqrt(ntotal)))
    data["nlist"] = nlist
    data["generate_s"] = round(time.perf_counter() - started, 2)
    log(f"data: {ntotal} vectors, {len(queries)} queries, {data['generate_s']} s")

    exact = faiss.IndexFlatIP(args.dim)
    exact.add(database)
    scores, truth = exact.search(queries, args.k)
    work = Workload(queries, sets, database, scores[:, -1].copy(), args.k, args.passes)
    goal_sets = goal_sets_for(list(sets), args.n)
    data["goal_sets"] = goal_sets
    data["real_share_of_database"] = round(data["real"] / ntotal, 4)
    data["real_share_of_top10"] = {  # rows >= args.n are the real vectors
        name: round(float((truth[part] >= args.n).mean()), 4) for name, part in sets.items()
    }
    data["neighbours_at_n"] = neighbour_stats(exact, database, rng)
    data["query_neighbours"] = {
        name: round(float(exact.search(queries[part], 1)[0].mean()), 4) for name, part in sets.items()
    }
    del exact

    results = []
    for candidate in candidates(args.kind_list, nlist, args.ef_values, args.nprobe_values):
        faiss.omp_set_num_threads(args.threads)
        load_before = round(os.getloadavg()[0], 2)
        built = build(candidate, database, args.ef_construction, nlist * args.train_per_list, rng, args.max_add_s)
        index = built.index
        result: dict[str, Any] = {
            "kind": candidate.kind,
            "factory": candidate.factory,
            "knob": candidate.knob,
            "train_s": round(built.train_s, 2),
            "add_s": round(built.add_s, 2),
            "build_s": round(built.train_s + built.add_s, 2),
            "build_complete": built.complete,
            "add_curve": built.add_curve,
            "bytes_per_vector": round(bytes_per_vector(index), 1),
            "ef_construction": args.ef_construction if candidate.kind.startswith("hnsw") else None,
            "sweep": [],
        }
        if not built.complete:
            estimate = built.train_s + extrapolated_add_s(built.add_curve, ntotal)
            result["build_s_extrapolated"] = round(estimate, 1)
            log(
                f"{candidate.kind}: stopped after {index.ntotal} vectors in {result['build_s']} s "
                f"(--max-add-s {args.max_add_s}); the whole build would take >= {estimate:.0f} s; no sweep"
            )
        else:
            log(f"{candidate.kind}: built in {result['build_s']} s, {result['bytes_per_vector']} B/vector")
        faiss.omp_set_num_threads(1)
        for value in candidate.values if built.complete else ():
            candidate.set_knob(index, value)
            point = {"value": value if candidate.knob else None, **sweep_point(index, work)}
            result["sweep"].append(point)
            log(f"  {candidate.knob or 'exact'}={value}: recall {point['recall_by_set']} p50 {point['p50_ms']} ms")
            if candidate.knob and (point["recall"] >= 0.999 or point["p50_ms"] > STOP_P50_MS):
                break  # larger values only cost time
        result["load_avg_1m"] = [load_before, round(os.getloadavg()[0], 2)]  # other users of the machine
        result["operating_point"] = operating_point(result, goal_sets)
        result["operating_point_all_sets"] = operating_point(result, list(sets))
        results.append(result)
        del index
    return {
        "config": {
            "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
            "k": args.k,
            "build_threads": args.threads,
            "query_threads": 1,
            "seed": args.seed,
            "goals": {"recall": GOAL_RECALL, "bytes_per_vector": GOAL_BYTES_PER_VECTOR, "p50_ms": GOAL_P50_MS},
        },
        "environment": environment(),
        "data": data,
        "results": results,
        "choice": choose(results),
        "ann_module": ann_view(ntotal, args.dim),
        "total_s": round(time.perf_counter() - started, 1),
    }


def ann_view(ntotal: int, dim: int) -> dict:
    """What retrieval/ann.py would build for this size, to compare with the measured choice."""
    from retrieval import ann

    kind = ann.choose_kind(ntotal)
    index = ann.make_index(kind, dim, ntotal)
    knobs = {"efSearch": index.hnsw.efSearch} if kind == "hnsw-sq8" else {}
    if kind == "ivf-sq8":
        knobs = {"nprobe": index.nprobe, "nlist": index.nlist}
    return {"choose_kind": kind, **knobs}


def environment() -> dict:
    cpu = platform.processor()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "faiss": faiss.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
        "cpu": cpu,
        "cpus_visible": os.cpu_count(),
    }


def summary_cells(result: dict, goal_sets: Sequence[str]) -> list[str]:
    """Knob, recall on the goal sets, lowest recall of any set, p50, p99 and verdict at the operating point."""
    point = result["operating_point"]
    if not result["sweep"]:
        added = result["add_curve"][-1][0] if result["add_curve"] else 0
        stopped = f"build stopped at {added:,} vectors; whole build >= {result.get('build_s_extrapolated')} s"
        return [stopped, "-", "-", "-", "-", "not measured"]
    verdict = "no (recall)"
    if point is None:
        point = max(result["sweep"], key=lambda p: min(p["recall_by_set"][name] for name in goal_sets))
        knob = f"none (best {result['knob']}={point['value']})"
    else:
        knob = f"{result['knob']}={point['value']}" if result["knob"] else "exact"
        misses = [name for name, ok in (("bytes", point["meets_bytes"]), ("p50", point["meets_p50"])) if not ok]
        verdict = "yes" if not misses else "no (" + ", ".join(misses) + ")"
    goal = min(point["recall_by_set"][name] for name in goal_sets)
    return [knob, goal, min(point["recall_by_set"].values()), point["p50_ms"], point["p99_ms"], verdict]


def markdown(report: dict) -> str:
    """The operating point of every kind, the choice, and each knob sweep, as markdown tables."""
    data = report["data"]
    lines = [
        f"ntotal {data['ntotal']:,} ({data['synthetic']:,} synthetic + {data['real']:,} real), dim {data['dim']}, "
        f"k {report['config']['k']}, queries {data['queries']}, one query thread, "
        f"{report['config']['build_threads']} build thread(s); the knob at goal is the smallest value with "
        f"recall@{report['config']['k']} >= {GOAL_RECALL} on {', '.join(data['goal_sets'])}"
        + (" (on every set: last column)" if data["goal_sets"] != list(data["queries"]) else ""),
        "",
        "| kind | factory | build s | bytes/vector | knob at goal | recall@10 (goal) | min set recall | p50 ms "
        "| p99 ms | meets goals | knob, every set |",
        "|---|---|---:|---:|---|---:|---:|---:|---:|---|---|",
    ]
    for r in report["results"]:
        cells = " | ".join(map(str, summary_cells(r, data["goal_sets"])))
        strict = r.get("operating_point_all_sets")
        every = "-" if not r["sweep"] else "none" if strict is None else f"{r['knob'] or 'exact'}={strict['value']}"
        if r["knob"] is None and strict is not None:
            every = "exact"
        lines.append(
            f"| {r['kind']} | `{r['factory']}` | {r['build_s']} | {r['bytes_per_vector']:.0f} | {cells} | {every} |"
        )
    choice = report["choice"]
    lines += ["", f"Chosen: **{choice['kind']}** ({choice['why']})", ""]
    for r in report["results"]:
        if not r["knob"] or not r["sweep"]:
            continue
        sets = list(r["sweep"][0]["recall_by_set"])
        lines += [
            f"{r['kind']} sweep:",
            "",
            f"| {r['knob']} | recall@10 | " + " | ".join(sets) + " | p50 ms | p99 ms |",
            "|---:|---:|" + "---:|" * len(sets) + "---:|---:|",
        ]
        for p in r["sweep"]:
            recalls = " | ".join(str(v) for v in p["recall_by_set"].values())
            lines.append(f"| {p['value']} | {p['recall']} | {recalls} | {p['p50_ms']} | {p['p99_ms']} |")
        lines.append("")
    return "\n".join(lines)


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def refresh(report: dict) -> dict:
    """Recompute the operating points and the choice of a report with the rules of this script."""
    data = report["data"]
    data["goal_sets"] = goal_sets_for(list(data["queries"]), data["synthetic"])
    for result in report["results"]:
        result["operating_point"] = operating_point(result, data["goal_sets"])
        result["operating_point_all_sets"] = operating_point(result, list(data["queries"]))
    report["choice"] = choose(report["results"])
    return report


def load_report(path: Path) -> dict:
    try:
        return refresh(json.loads(path.read_text(encoding="utf-8")))
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise UsageError(f"--rerender {path}: not a report of this script ({exc})") from exc


def main(argv: Sequence[str] | None = None) -> int:
    try:
        args = parse_args(argv)
        report = load_report(args.rerender) if args.rerender else run(args)
    except UsageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    text = json.dumps(report, indent=2, ensure_ascii=False)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n", encoding="utf-8")
    else:
        print(text)
    if args.markdown:
        table = markdown(report)
        if str(args.markdown) == "-":
            print(table)
        else:
            args.markdown.write_text(table + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
