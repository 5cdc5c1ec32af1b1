"""The retrieval-backend seam: what a store of paper vectors and term weights must answer.

The ranking legs ask a backend for top-K candidates instead of scanning arrays themselves:

* `top_bullets` - best bullets by inner product with a query vector;
* `top_papers` - best papers by their bullet centroid or their title vector;
* `top_sparse` - best bullets, summaries or title+author documents by a sparse inner product
  (BM25 when documents carry `retrieval.backends.sparse` weights and the query carries IDFs).

Hubness correction is one extra dimension: a bullet (or centroid) is stored as `[v, hub(v)]` and
queried with `[q, -w]`, so the inner product is `q.v - w * hub(v)`, a plain maximum inner
product search any engine can answer. `w` (english share x hubness weight) is given per query.

Versions: `begin_version(name)` starts a build (a copy of the live version unless
`from_live=False`), `upsert` / `delete` change only that build, `publish(name)` makes it live in
one atomic step. Queries always read the live version, so a build that never reaches `publish`
(crashed, interrupted) leaves the previous version answering. Grouping bullets into papers is
the caller's job.
"""

from __future__ import annotations

import abc
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, overload

import numpy as np

from retrieval.errors import UsageError
from retrieval.models import Filters

__all__ = [
    "Backend",
    "BulletHit",
    "Hits",
    "PaperField",
    "PaperRecord",
    "PaperScore",
    "SparseField",
    "SparseWeights",
    "augment",
    "check_version_name",
]

PaperField = Literal["centroid", "title"]
SparseField = Literal["bullets", "summary", "title"]
SparseWeights = Mapping[int, float]

# Milvus collection names allow letters, digits and underscores; one rule for every backend.
_VERSION_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,63}$")
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")


@dataclass(frozen=True, eq=False)
class PaperRecord:
    """One paper as a backend stores it: filter fields, vectors and sparse term weights.

    `bullet_hubness[i]` and `centroid_hubness` are the hubness offsets (retrieval/hubness.py)
    of bullet vector i and of the centroid; the title has none. `sparse_bullets` holds one
    `{term_id: weight}` per bullet, `sparse_summary` one for the whole summary, `sparse_title`
    one for title and authors. Arrays are converted to contiguous float32 on creation.
    """

    paper_id: str
    first_date: str  # YYYY-MM-DD, the earliest digest date
    last_date: str  # YYYY-MM-DD, the latest digest date
    votes: int  # -1 when unknown
    authors: str  # lower-cased author names joined with " | "
    bullet_vectors: np.ndarray  # (n, dim)
    bullet_hubness: np.ndarray  # (n,)
    centroid: np.ndarray  # (dim,)
    centroid_hubness: float
    title_vector: np.ndarray  # (dim,)
    sparse_bullets: tuple[SparseWeights, ...] = ()
    sparse_summary: SparseWeights = field(default_factory=dict)
    sparse_title: SparseWeights = field(default_factory=dict)

    def __post_init__(self) -> None:
        vectors = np.ascontiguousarray(self.bullet_vectors, dtype=np.float32)
        if vectors.ndim != 2:
            raise UsageError(f"paper {self.paper_id}: bullet_vectors must be (bullets, dim), got {vectors.shape}")
        n, dim = vectors.shape
        object.__setattr__(self, "bullet_vectors", vectors)
        object.__setattr__(self, "bullet_hubness", np.ascontiguousarray(self.bullet_hubness, dtype=np.float32))
        object.__setattr__(self, "centroid", np.ascontiguousarray(self.centroid, dtype=np.float32))
        object.__setattr__(self, "title_vector", np.ascontiguousarray(self.title_vector, dtype=np.float32))
        object.__setattr__(self, "centroid_hubness", float(self.centroid_hubness))
        object.__setattr__(self, "votes", int(self.votes))
        object.__setattr__(self, "sparse_bullets", tuple(self.sparse_bullets) or tuple({} for _ in range(n)))
        problems = []
        if self.bullet_hubness.shape != (n,):
            problems.append(f"bullet_hubness has shape {self.bullet_hubness.shape}, expected ({n},)")
        if self.centroid.shape != (dim,) or self.title_vector.shape != (dim,):
            problems.append(f"centroid {self.centroid.shape} and title_vector {self.title_vector.shape} need ({dim},)")
        if len(self.sparse_bullets) != n:
            problems.append(f"sparse_bullets has {len(self.sparse_bullets)} entries for {n} bullets")
        for name in ("first_date", "last_date"):
            if not _DATE.match(getattr(self, name)):
                problems.append(f"{name} must be YYYY-MM-DD, got {getattr(self, name)!r}")
        if problems:
            raise UsageError(f"paper {self.paper_id}: " + "; ".join(problems))

    @property
    def dim(self) -> int:
        return int(self.bullet_vectors.shape[1])


@dataclass(frozen=True)
class BulletHit:
    """A bullet among the top candidates: its paper, its 0-based position there, its score."""

    paper_id: str
    position: int
    score: float


@dataclass(frozen=True)
class PaperScore:
    """A paper among the top candidates (centroid, title or a whole-document sparse leg)."""

    paper_id: str
    score: float


@dataclass(frozen=True, eq=False)
class Hits(Sequence[Any]):
    """Top candidates as columns, best first: cheap to build and to read in bulk (the searcher
    reads the arrays); iterating or indexing gives `BulletHit`s (with `positions`) or `PaperScore`s."""

    paper_ids: np.ndarray  # str, one per hit
    scores: np.ndarray  # float32
    positions: np.ndarray | None = None  # int32 position of each bullet in its paper (bullet hits only)

    @classmethod
    def of(cls, hits: Sequence[BulletHit] | Sequence[PaperScore] | Hits) -> Hits:
        """Columns of a list of hits (a `Hits` comes back as it is)."""
        if isinstance(hits, Hits):
            return hits
        ids = np.array([h.paper_id for h in hits], dtype=str)
        scores = np.array([h.score for h in hits], dtype=np.float32)
        if hits and isinstance(hits[0], BulletHit):
            return cls(ids, scores, np.array([h.position for h in hits], dtype=np.int32))  # type: ignore[union-attr]
        return cls(ids, scores)

    def __len__(self) -> int:
        return len(self.scores)

    def _one(self, i: int) -> BulletHit | PaperScore:
        if self.positions is not None:
            return BulletHit(str(self.paper_ids[i]), int(self.positions[i]), float(self.scores[i]))
        return PaperScore(str(self.paper_ids[i]), float(self.scores[i]))

    def __getitem__(self, i: Any) -> Any:
        if isinstance(i, slice):
            return [self._one(j) for j in range(*i.indices(len(self)))]
        return self._one(range(len(self))[i])

    def __iter__(self) -> Iterator[Any]:
        return (self._one(i) for i in range(len(self)))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Sequence) and list(self) == list(other)


def augment(vectors: np.ndarray, extra: np.ndarray | float) -> np.ndarray:
    """`[v, extra]` rows: the stored `[v, hub(v)]`, or a query `[q, -w]` (float32)."""
    vectors = np.atleast_2d(np.asarray(vectors, dtype=np.float32))
    column = np.broadcast_to(np.asarray(extra, dtype=np.float32).reshape(-1, 1), (len(vectors), 1))
    return np.ascontiguousarray(np.hstack([vectors, column]), dtype=np.float32)


def check_version_name(name: str) -> str:
    """`name` if it can name a version everywhere (a letter, then letters, digits, `_`; <= 64)."""
    if not isinstance(name, str) or not _VERSION_NAME.match(name):
        raise UsageError(f"version name {name!r} is not allowed: use a letter then letters, digits or '_' (at most 64)")
    return name


def _check_filters(filters: Filters | None) -> Filters:
    """`filters` (or none) after checking what a backend puts into an expression."""
    filters = filters or Filters()
    for name in ("date_from", "date_to"):
        value = getattr(filters, name)
        if value is not None and not (isinstance(value, str) and _DATE.match(value)):
            raise UsageError(f"{name}: must be a date YYYY-MM-DD, got {str(value)[:40]!r}")
    if filters.min_votes is not None and (
        isinstance(filters.min_votes, bool) or not isinstance(filters.min_votes, int)
    ):
        raise UsageError(f"min_votes: must be a whole number, got {filters.min_votes!r}")
    return filters


class Backend(abc.ABC):
    """A versioned store answering the ranking legs' top-K questions (see the module docstring).

    Subclasses implement the `_`-prefixed methods; this class checks the arguments once.
    """

    dim: int

    # ------------------------------------------------------------------ versions
    @abc.abstractmethod
    def begin_version(self, name: str, *, from_live: bool = True) -> None:
        """Start building version `name`: a copy of the live one (or empty); leftovers of builds
        that never published are removed. `upsert` and `delete` then change only this build."""

    @abc.abstractmethod
    def upsert(self, papers: Sequence[PaperRecord]) -> None:
        """Add or replace these papers (all their bullets) in the version being built."""

    @abc.abstractmethod
    def delete(self, paper_ids: Sequence[str]) -> None:
        """Remove these papers from the version being built; unknown ids are ignored."""

    @abc.abstractmethod
    def publish(self, name: str) -> None:
        """Make the version being built, `name`, the live one, atomically."""

    @abc.abstractmethod
    def live_version(self) -> str | None:
        """The name of the live version in the store (None before the first publish)."""

    @abc.abstractmethod
    def refresh(self) -> str | None:
        """Answer queries from the store's live version from now on (another process may have
        published one); returns its name."""

    def close(self) -> None:
        """Release connections; the default has none."""
        return None

    def check(self) -> None:
        """Raise `BackendUnavailableError` (one line) when the store cannot answer now; a cheap
        round trip (reading the live version), for readiness probes."""
        self.live_version()

    def __enter__(self) -> Backend:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ queries
    def top_bullets(
        self, vector: np.ndarray, k: int, filters: Filters | None = None, hubness_weight: float = 0.0
    ) -> Hits:
        """The `k` best bullets of papers passing `filters` by `q.v - hubness_weight * hub(v)`."""
        query = augment(self._check_vector(vector), -float(hubness_weight))[0]
        return Hits.of(self._top_bullets(query, self._check_k(k), _check_filters(filters)))

    def top_papers(
        self,
        vector: np.ndarray,
        k: int,
        filters: Filters | None = None,
        field: PaperField = "centroid",
        hubness_weight: float = 0.0,
    ) -> Hits:
        """The `k` best papers by centroid (`q.c - hubness_weight * hub(c)`) or title (`q.t`)."""
        if field not in ("centroid", "title"):
            raise UsageError(f"field: must be 'centroid' or 'title', got {field!r}")
        query = self._check_vector(vector)
        if field == "centroid":
            query = augment(query, -float(hubness_weight))[0]
        return Hits.of(self._top_papers(query, self._check_k(k), _check_filters(filters), field))

    @overload
    def top_sparse(
        self, weights: SparseWeights, k: int, filters: Filters | None = ..., *, field: Literal["bullets"]
    ) -> Hits: ...

    @overload
    def top_sparse(
        self,
        weights: SparseWeights,
        k: int,
        filters: Filters | None = ...,
        *,
        field: Literal["summary", "title"] = ...,
    ) -> Hits: ...

    def top_sparse(
        self, weights: SparseWeights, k: int, filters: Filters | None = None, *, field: SparseField = "summary"
    ) -> Hits:
        """The `k` best documents of `field` by sparse inner product with `weights`; only
        documents sharing a term with the query (score > 0) come back."""
        if field not in ("bullets", "summary", "title"):
            raise UsageError(f"field: must be 'bullets', 'summary' or 'title', got {field!r}")
        k = self._check_k(k)
        clean = {int(t): float(w) for t, w in weights.items() if float(w) != 0.0}
        if any(t < 0 or t >= 2**32 for t in clean):
            raise UsageError("weights: term ids must be in 0 .. 2**32 - 1")
        if not clean:
            return Hits.of([])
        if field == "bullets":
            return Hits.of(self._sparse_bullets(clean, k, _check_filters(filters)))
        return Hits.of(self._sparse_papers(clean, k, _check_filters(filters), field))

    # ------------------------------------------------------------------ for subclasses
    @abc.abstractmethod
    def _top_bullets(self, query: np.ndarray, k: int, filters: Filters) -> Sequence[BulletHit] | Hits: ...

    @abc.abstractmethod
    def _top_papers(
        self, query: np.ndarray, k: int, filters: Filters, field: PaperField
    ) -> Sequence[PaperScore] | Hits: ...

    @abc.abstractmethod
    def _sparse_bullets(self, weights: dict[int, float], k: int, filters: Filters) -> Sequence[BulletHit] | Hits: ...

    @abc.abstractmethod
    def _sparse_papers(
        self, weights: dict[int, float], k: int, filters: Filters, field: Literal["summary", "title"]
    ) -> Sequence[PaperScore] | Hits: ...

    def _check_vector(self, vector: np.ndarray) -> np.ndarray:
        query = np.asarray(vector, dtype=np.float32).reshape(-1)
        if query.shape != (self.dim,):
            raise UsageError(f"vector: expected {self.dim} dimensions, got {np.asarray(vector).shape}")
        return query

    @staticmethod
    def _check_k(k: int) -> int:
        if isinstance(k, bool) or not isinstance(k, int | np.integer) or k < 1:
            raise UsageError(f"k: must be a whole number of at least 1, got {k!r}")
        return int(k)

    def _check_records(self, papers: Sequence[PaperRecord]) -> list[PaperRecord]:
        """The records, last one per paper id; each of this backend's dimension."""
        by_id: dict[str, PaperRecord] = {}
        for record in papers:
            if not isinstance(record, PaperRecord):
                raise UsageError(f"upsert takes PaperRecord objects, got {type(record).__name__}")
            if record.dim != self.dim:
                raise UsageError(f"paper {record.paper_id}: vectors have {record.dim} dimensions, the store {self.dim}")
            by_id[record.paper_id] = record
        return list(by_id.values())
