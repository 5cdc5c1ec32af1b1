"""The embedded backend: numpy / FAISS for the dense legs, scipy sparse matrices for BM25, in-process.

A version lives in memory as columns (one row per bullet, one per paper) and on disk in a folder::

    <root>/LIVE                       name of the live version (write, fsync, rename)
    <root>/versions/<name>/
        version.json                  dim, each dense index (kind, lift bound), counts, byte size of every file
        papers.json                   paper ids and filter fields (dates, votes, authors)
        bullet_paper.npy bullet_position.npy   owner paper and position of every bullet row
        bullets.npy centroids.npy titles.npy   [v, hub(v)] rows (titles: plain rows)
        sparse_<field>_{data,indices,indptr}.npy   CSR term weights of bullets, summary, title
        <field>.faiss                 the FAISS index, for "hnsw" and "ivf-sq8" only (retrieval/backends/dense.py)

Nothing is pickled. `publish` writes the new version under `versions/.tmp-*`, renames it into
place and only then replaces LIVE, so a build stopped at any point leaves the old version live.
Filters become a mask over the rows (papers -> their bullets), applied inside the search, so a
filtered query still gets its full `k` while enough rows pass.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, replace
from functools import cached_property
from pathlib import Path
from typing import Literal

import numpy as np
import scipy.sparse as sp

from retrieval.backends.base import (
    Backend,
    Hits,
    PaperField,
    PaperRecord,
    SparseField,
    augment,
    check_version_name,
)
from retrieval.backends.dense import DenseIndex, DenseIndexConfig, IndexType
from retrieval.backends.records import SparseDocuments
from retrieval.backends.sparse import rows_to_csr
from retrieval.corpus import Paper
from retrieval.errors import IndexCorruptError, IndexMismatchError, IndexNotFoundError, UsageError
from retrieval.filtering import FilterColumns
from retrieval.models import Filters

__all__ = ["DenseIndexConfig", "EmbeddedBackend", "IndexType"]  # config re-exported from dense

FORMAT = 1
LIVE_FILE = "LIVE"
VERSIONS_DIR = "versions"
TMP_PREFIX = ".tmp-"
DENSE_FIELDS = ("bullets", "centroids", "titles")
SPARSE_FIELDS: tuple[SparseField, ...] = ("bullets", "summary", "title")


@dataclass(frozen=True, eq=False)
class _Columns:
    """A version's data: one entry per paper, one row per bullet."""

    paper_ids: list[str]
    first: np.ndarray  # "<U10" per paper
    last: np.ndarray
    votes: np.ndarray  # int64
    authors: list[str]
    bullet_paper: np.ndarray  # int64: the owner paper of each bullet row
    bullet_position: np.ndarray  # int32
    dense: dict[str, np.ndarray]  # bullets, centroids: [v, hub(v)] rows; titles: plain rows
    sparse: dict[str, sp.csr_matrix]  # documents x vocabulary, per sparse field

    @classmethod
    def of(cls, records: Sequence[PaperRecord], dim: int) -> _Columns:
        counts = [len(r.bullet_vectors) for r in records]
        bullets = [augment(r.bullet_vectors, r.bullet_hubness) for r in records if len(r.bullet_vectors)]
        return cls(
            paper_ids=[r.paper_id for r in records],
            first=np.array([r.first_date for r in records], dtype="<U10"),
            last=np.array([r.last_date for r in records], dtype="<U10"),
            votes=np.array([r.votes for r in records], dtype=np.int64),
            authors=[r.authors for r in records],
            bullet_paper=np.repeat(np.arange(len(records), dtype=np.int64), counts),
            bullet_position=np.concatenate([np.arange(c, dtype=np.int32) for c in counts] or [np.zeros(0, np.int32)]),
            dense={
                "bullets": np.concatenate(bullets) if bullets else np.zeros((0, dim + 1), np.float32),
                "centroids": augment(
                    np.array([r.centroid for r in records]).reshape(-1, dim),
                    np.array([r.centroid_hubness for r in records], dtype=np.float32),
                ),
                "titles": np.array([r.title_vector for r in records], dtype=np.float32).reshape(-1, dim),
            },
            sparse={
                "bullets": rows_to_csr([w for r in records for w in r.sparse_bullets]),
                "summary": rows_to_csr([r.sparse_summary for r in records]),
                "title": rows_to_csr([r.sparse_title for r in records]),
            },
        )

    def without(self, paper_ids: set[str]) -> _Columns:
        """These columns less the given papers (bullet owners renumbered)."""
        keep = np.array([pid not in paper_ids for pid in self.paper_ids], dtype=bool)
        papers = np.flatnonzero(keep)
        rows = np.flatnonzero(keep[self.bullet_paper])
        renumber = np.cumsum(keep) - 1
        return _Columns(
            paper_ids=[self.paper_ids[i] for i in papers],
            first=self.first[papers],
            last=self.last[papers],
            votes=self.votes[papers],
            authors=[self.authors[i] for i in papers],
            bullet_paper=renumber[self.bullet_paper[rows]],
            bullet_position=self.bullet_position[rows],
            dense={
                "bullets": self.dense["bullets"][rows],
                **{f: self.dense[f][papers] for f in ("centroids", "titles")},
            },
            sparse={k: m[rows if k == "bullets" else papers] for k, m in self.sparse.items()},
        )

    def then(self, other: _Columns) -> _Columns:
        """These columns followed by `other`'s."""
        return _Columns(
            paper_ids=self.paper_ids + other.paper_ids,
            first=np.concatenate([self.first, other.first]).astype("<U10"),
            last=np.concatenate([self.last, other.last]).astype("<U10"),
            votes=np.concatenate([self.votes, other.votes]),
            authors=self.authors + other.authors,
            bullet_paper=np.concatenate([self.bullet_paper, other.bullet_paper + len(self.paper_ids)]),
            bullet_position=np.concatenate([self.bullet_position, other.bullet_position]),
            dense={f: np.ascontiguousarray(np.concatenate([self.dense[f], other.dense[f]])) for f in DENSE_FIELDS},
            sparse={k: _stack(self.sparse[k], other.sparse[k]) for k in SPARSE_FIELDS},
        )

    @cached_property
    def filters(self) -> FilterColumns:
        return FilterColumns(self.first, self.last, self.votes, self.authors)

    def paper_mask(self, filters: Filters) -> np.ndarray | None:
        """Papers passing `filters` (None: no filter at all), computed once per filters and version."""
        return self.filters.mask(filters)


@dataclass(frozen=True, eq=False)
class _Version:
    """A version: its columns, the FAISS index of each dense field, CSC copies for queries."""

    name: str
    columns: _Columns
    indexes: dict[str, DenseIndex]
    by_term: dict[str, sp.csc_matrix]
    ids: np.ndarray  # the paper ids as one str array, for hits in bulk

    @classmethod
    def of(cls, name: str, columns: _Columns, indexes: dict[str, DenseIndex]) -> _Version:
        by_term = {k: m.tocsc() for k, m in columns.sparse.items()}
        return cls(name, columns, indexes, by_term, np.array(columns.paper_ids, dtype=str))


def _stack(top: sp.csr_matrix, bottom: sp.csr_matrix) -> sp.csr_matrix:
    width = max(top.shape[1], bottom.shape[1])
    parts = []
    for part in (top, bottom):
        if part.shape[1] != width:
            part = part.copy()
            part.resize((part.shape[0], width))
        parts.append(part)
    return sp.csr_matrix(sp.vstack(parts, format="csr"), dtype=np.float32)


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write(version: _Version, target: Path, dim: int) -> None:
    columns = version.columns
    arrays = {
        "bullet_paper.npy": columns.bullet_paper,
        "bullet_position.npy": columns.bullet_position,
        **{f"{f}.npy": columns.dense[f] for f in DENSE_FIELDS},
    }
    for kind, matrix in columns.sparse.items():
        arrays[f"sparse_{kind}_data.npy"] = matrix.data.astype(np.float32)
        arrays[f"sparse_{kind}_indices.npy"] = matrix.indices.astype(np.int64)
        arrays[f"sparse_{kind}_indptr.npy"] = matrix.indptr.astype(np.int64)
    for name, array in arrays.items():
        np.save(target / name, array, allow_pickle=False)
    papers = {
        "ids": columns.paper_ids,
        "first": columns.first.tolist(),
        "last": columns.last.tolist(),
        "votes": columns.votes.tolist(),
        "authors": columns.authors,
    }
    (target / "papers.json").write_text(json.dumps(papers, ensure_ascii=False), encoding="utf-8")
    indexes = {f: index.save(target / f"{f}.faiss") for f, index in version.indexes.items()}
    meta = {
        "format": FORMAT,
        "name": version.name,
        "dim": dim,
        "indexes": indexes,
        "papers": len(columns.paper_ids),
        "bullets": len(columns.bullet_paper),
        "vocabulary": {k: int(m.shape[1]) for k, m in columns.sparse.items()},
        "files": {p.name: p.stat().st_size for p in sorted(target.iterdir())},
    }
    (target / "version.json").write_text(json.dumps(meta, indent=2), encoding="utf-8")
    for path in target.iterdir():
        _fsync_file(path)
    _fsync_file(target)


def _read(folder: Path, dim: int, config: DenseIndexConfig) -> _Version:
    meta_path = folder / "version.json"
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        if meta.get("format") != FORMAT or meta["dim"] != dim:
            raise IndexMismatchError(
                f"{meta_path} holds format {meta.get('format')} with {meta['dim']}-dim vectors, "
                f"this backend reads format {FORMAT} with {dim}; rebuild it"
            )
        for name, size in meta["files"].items():
            if (folder / name).stat().st_size != size:
                raise IndexCorruptError(f"{folder / name} is not the size version.json records (truncated?); rebuild")

        def load(name: str) -> np.ndarray:
            return np.load(folder / name, allow_pickle=False)

        papers = json.loads((folder / "papers.json").read_text(encoding="utf-8"))
        sparse: dict[str, sp.csr_matrix] = {}
        for kind in SPARSE_FIELDS:
            data, indices, indptr = (load(f"sparse_{kind}_{p}.npy") for p in ("data", "indices", "indptr"))
            sparse[kind] = sp.csr_matrix((data, indices, indptr), shape=(len(indptr) - 1, meta["vocabulary"][kind]))
        columns = _Columns(
            paper_ids=list(papers["ids"]),
            first=np.array(papers["first"], dtype="<U10"),
            last=np.array(papers["last"], dtype="<U10"),
            votes=np.array(papers["votes"], dtype=np.int64),
            authors=list(papers["authors"]),
            bullet_paper=load("bullet_paper.npy").astype(np.int64),
            bullet_position=load("bullet_position.npy").astype(np.int32),
            dense={f: load(f"{f}.npy") for f in DENSE_FIELDS},
            sparse=sparse,
        )
        indexes = {
            f: DenseIndex.load(columns.dense[f], meta["indexes"][f], folder / f"{f}.faiss", config)
            for f in DENSE_FIELDS
        }
        return _Version.of(meta["name"], columns, indexes)
    except (IndexCorruptError, IndexMismatchError):
        raise
    except (OSError, ValueError, KeyError, TypeError, RuntimeError) as exc:
        raise IndexCorruptError(f"backend version {folder} cannot be read ({exc}); rebuild it") from exc


@dataclass
class _Build:
    name: str
    base: _Version | None
    changes: dict[str, PaperRecord | None]


class EmbeddedBackend(Backend):
    """The in-process backend over a folder (see the module docstring)."""

    def __init__(self, path: Path | str | None, dim: int, config: DenseIndexConfig | None = None) -> None:
        """`path`: the backend's folder; None keeps every version in memory only."""
        self.path = Path(path) if path is not None else None
        self.dim = int(dim)
        self.config = config or DenseIndexConfig()
        if self.path is not None and self.path.exists() and not self.path.is_dir():
            raise UsageError(f"backend path {self.path} is a file, not a directory")
        self._live: _Version | None = None
        self._build: _Build | None = None
        self.refresh()

    @classmethod
    def serving(
        cls,
        dim: int,
        papers: Sequence[Paper],
        bullet_vectors: np.ndarray,
        offsets: np.ndarray,
        centroids: np.ndarray,
        title_vectors: np.ndarray,
        hub_bullets: np.ndarray,
        hub_papers: np.ndarray,
        sparse: SparseDocuments,
        config: DenseIndexConfig | None = None,
        name: str = "index",
        filters: FilterColumns | None = None,
    ) -> EmbeddedBackend:
        """An in-memory backend whose live version holds an index's arrays (paper i owns bullet
        rows offsets[i]:offsets[i + 1]); built from arrays, without a Python loop per bullet.
        `filters`: the papers' filter columns when the caller has them (shared, not copied)."""
        backend = cls(None, dim, config)
        filters = filters if filters is not None else FilterColumns.of_papers(papers)
        counts = np.diff(np.asarray(offsets, dtype=np.int64)).astype(np.int64)
        columns = _Columns(
            paper_ids=[p.arxiv_id for p in papers],
            first=filters.first,
            last=filters.last,
            votes=filters.votes,
            authors=filters.authors,
            bullet_paper=np.repeat(np.arange(len(papers), dtype=np.int64), counts),
            bullet_position=(np.arange(int(counts.sum()), dtype=np.int64) - np.repeat(offsets[:-1], counts)).astype(
                np.int32
            ),
            dense={
                "bullets": augment(np.asarray(bullet_vectors).reshape(-1, dim), hub_bullets),
                "centroids": augment(np.asarray(centroids).reshape(-1, dim), hub_papers),
                "titles": np.ascontiguousarray(title_vectors, dtype=np.float32).reshape(-1, dim),
            },
            sparse={k: sparse.matrices[k] for k in SPARSE_FIELDS},
        )
        check_version_name(name)
        backend._live = _Version.of(name, columns, {f: backend.config.build(columns.dense[f]) for f in DENSE_FIELDS})
        return backend

    def replace_hubness(self, bullets: np.ndarray, centroids: np.ndarray) -> None:
        """Give the live version other hubness offsets (one per bullet row, one per paper, in the
        version's order); the title task swaps in ones fitted without the evaluated fold."""
        version = self._version()
        dense = dict(version.columns.dense)
        if bullets.shape != (len(dense["bullets"]),) or centroids.shape != (len(dense["centroids"]),):
            raise UsageError("need one hubness offset per bullet row and one per paper")
        dense["bullets"] = augment(dense["bullets"][:, :-1], bullets)
        dense["centroids"] = augment(dense["centroids"][:, :-1], centroids)
        columns = replace(version.columns, dense=dense)
        self._live = _Version.of(version.name, columns, {f: self.config.build(columns.dense[f]) for f in DENSE_FIELDS})

    # ------------------------------------------------------------------ versions
    def live_version(self) -> str | None:
        if self.path is None:
            return self._live.name if self._live is not None else None
        try:
            name = (self.path / LIVE_FILE).read_text(encoding="utf-8").strip()
        except FileNotFoundError:
            return None
        return check_version_name(name) if name else None

    def refresh(self) -> str | None:
        name = self.live_version()
        if self.path is None:
            return name
        if name is not None and (self._live is None or self._live.name != name):
            folder = self.path / VERSIONS_DIR / name
            if not folder.is_dir():
                raise IndexCorruptError(f"{self.path / LIVE_FILE} names version {name}, but {folder} is missing")
            self._live = _read(folder, self.dim, self.config)
        return name

    def begin_version(self, name: str, *, from_live: bool = True) -> None:
        check_version_name(name)
        live = self.live_version()
        if name == live:
            raise UsageError(f"version {name} is the live version; begin a version with a new name")
        versions = self.path / VERSIONS_DIR if self.path is not None else None
        if versions is not None and versions.is_dir():
            for child in versions.iterdir():
                if child.name != live:
                    shutil.rmtree(child, ignore_errors=True)
        self.refresh()
        self._build = _Build(name, self._live if from_live else None, {})

    def _building(self) -> _Build:
        if self._build is None:
            raise UsageError("no version is being built; call begin_version(name) first")
        return self._build

    def upsert(self, papers: Sequence[PaperRecord]) -> None:
        build = self._building()
        for record in self._check_records(papers):
            build.changes.pop(record.paper_id, None)  # keep the order of the latest upsert
            build.changes[record.paper_id] = record

    def delete(self, paper_ids: Sequence[str]) -> None:
        build = self._building()
        for paper_id in paper_ids:
            build.changes.pop(paper_id, None)
            build.changes[paper_id] = None

    def publish(self, name: str) -> None:
        build = self._building()
        if build.name != name:
            raise UsageError(f"version {name} is not being built (the build in progress is {build.name})")
        version = self._assemble(build)
        if self.path is None:
            self._live = version
            self._build = None
            return
        versions = self.path / VERSIONS_DIR
        versions.mkdir(parents=True, exist_ok=True)
        tmp = versions / f"{TMP_PREFIX}{uuid.uuid4().hex[:12]}"
        tmp.mkdir()
        _write(version, tmp, self.dim)
        os.rename(tmp, versions / name)
        _fsync_file(versions)
        pointer = self.path / f"{LIVE_FILE}{TMP_PREFIX}{uuid.uuid4().hex[:6]}"
        with pointer.open("w", encoding="utf-8") as handle:
            handle.write(name + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(pointer, self.path / LIVE_FILE)
        _fsync_file(self.path)
        self._live = version
        self._build = None

    def _assemble(self, build: _Build) -> _Version:
        """The base version less every changed paper, then the upserted papers, indexed."""
        records = [r for r in build.changes.values() if r is not None]
        fresh = _Columns.of(records, self.dim)
        columns = build.base.columns.without(set(build.changes)).then(fresh) if build.base is not None else fresh
        return _Version.of(build.name, columns, {f: self.config.build(columns.dense[f]) for f in DENSE_FIELDS})

    # ------------------------------------------------------------------ queries
    def _version(self) -> _Version:
        if self._live is None:
            raise IndexNotFoundError(f"no published version in {self.path}; build one first")
        return self._live

    @staticmethod
    def _search(
        version: _Version, field_name: str, query: np.ndarray, k: int, row_mask: np.ndarray | None
    ) -> tuple[np.ndarray, np.ndarray]:
        return version.indexes[field_name].search(query, k, row_mask)

    @staticmethod
    def _bullet_hits(version: _Version, rows: np.ndarray, scores: np.ndarray) -> Hits:
        columns = version.columns
        return Hits(version.ids[columns.bullet_paper[rows]], scores, columns.bullet_position[rows])

    def _top_bullets(self, query: np.ndarray, k: int, filters: Filters) -> Hits:
        version = self._version()
        columns = version.columns
        mask = columns.paper_mask(filters)
        rows, scores = self._search(
            version, "bullets", query, k, mask[columns.bullet_paper] if mask is not None else None
        )
        return self._bullet_hits(version, rows, scores)

    def _top_papers(self, query: np.ndarray, k: int, filters: Filters, field: PaperField) -> Hits:
        version = self._version()
        name = "centroids" if field == "centroid" else "titles"
        rows, scores = self._search(version, name, query, k, version.columns.paper_mask(filters))
        return Hits(version.ids[rows], scores)

    @staticmethod
    def _sparse_top(
        matrix: sp.csc_matrix, weights: dict[int, float], k: int, row_mask: np.ndarray | None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Rows with a positive score, best first (ties by row), at most `k`."""
        terms = np.array([t for t in weights if t < matrix.shape[1]], dtype=np.int64)
        if not len(terms) or not matrix.shape[0]:
            return np.zeros(0, np.int64), np.zeros(0, np.float32)
        query = np.array([weights[int(t)] for t in terms], dtype=np.float32)
        scores = np.asarray(matrix[:, terms] @ query, dtype=np.float32).reshape(-1)
        matched = scores > 0 if row_mask is None else (scores > 0) & row_mask
        rows = np.flatnonzero(matched)
        if len(rows) > k:
            rows = rows[np.argpartition(-scores[rows], k - 1)[:k]]
        rows = rows[np.lexsort((rows, -scores[rows]))]
        return rows, scores[rows]

    def _sparse_bullets(self, weights: dict[int, float], k: int, filters: Filters) -> Hits:
        version = self._version()
        columns = version.columns
        mask = columns.paper_mask(filters)
        row_mask = mask[columns.bullet_paper] if mask is not None else None
        rows, scores = self._sparse_top(version.by_term["bullets"], weights, k, row_mask)
        return self._bullet_hits(version, rows, scores)

    def _sparse_papers(
        self, weights: dict[int, float], k: int, filters: Filters, field: Literal["summary", "title"]
    ) -> Hits:
        version = self._version()
        rows, scores = self._sparse_top(version.by_term[field], weights, k, version.columns.paper_mask(filters))
        return Hits(version.ids[rows], scores)
