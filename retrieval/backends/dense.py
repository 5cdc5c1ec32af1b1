"""Top-K inner-product search over float32 rows, with an optional row mask: exact or approximate.

* "flat" (default): an exact scan, one einsum over every row and an argpartition. At today's
  size (21k x 385) this takes ~2.5 ms on one core; FAISS's IndexFlatIP answers a single query
  in ~16 ms on this 2-core machine, because its OpenMP threads wait on busy cores (measured in
  README "Backends").
* "hnsw" / "ivf-sq8": FAISS indexes for large corpora. Graph and k-means indexes work poorly on
  raw inner products of rows of unequal norm (the hubness column makes norms unequal), so rows
  get one more column `sqrt(M^2 - |r|^2)` (M the largest norm) and the index searches by L2 with
  the query `[q, 0]`: `|q' - r'|^2 = |q|^2 + M^2 - 2 q.r`, the same order as `q.r`. The
  candidates are then scored exactly from the stored rows. Masks become an `IDSelectorBitmap`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import faiss
import numpy as np

from retrieval.errors import UsageError

__all__ = ["DenseIndex", "DenseIndexConfig", "IndexType"]

IndexType = Literal["flat", "hnsw", "ivf-sq8"]


@dataclass(frozen=True)
class DenseIndexConfig:
    """Which index new versions get; a stored version keeps the type it was built with."""

    index_type: IndexType = "flat"
    hnsw_m: int = 32
    hnsw_ef_construction: int = 80
    hnsw_ef_search: int = 256
    ivf_nlist: int | None = None  # default: 4 * sqrt(rows), at most rows / 39
    ivf_nprobe: int = 64

    def __post_init__(self) -> None:
        if self.index_type not in ("flat", "hnsw", "ivf-sq8"):
            raise UsageError(f"index_type: must be 'flat', 'hnsw' or 'ivf-sq8', got {self.index_type!r}")

    def build(self, rows: np.ndarray) -> DenseIndex:
        """An index of this type over `rows` (n, d); flat when there are no rows."""
        if self.index_type == "flat" or not len(rows):
            return DenseIndex(rows, self)
        bound = float(np.linalg.norm(rows, axis=1).max())
        lifted = _lift(rows, bound)
        dim = lifted.shape[1]
        index: faiss.Index
        if self.index_type == "hnsw":
            index = faiss.IndexHNSWFlat(dim, self.hnsw_m, faiss.METRIC_L2)
            index.hnsw.efConstruction = self.hnsw_ef_construction
        else:
            nlist = max(1, min(self.ivf_nlist or int(4 * np.sqrt(len(rows))), len(rows) // 39))
            index = faiss.IndexIVFScalarQuantizer(
                faiss.IndexFlatL2(dim), dim, nlist, faiss.ScalarQuantizer.QT_8bit, faiss.METRIC_L2
            )
            index.train(lifted)
        index.add(lifted)
        return DenseIndex(rows, self, index, bound)


def _lift(rows: np.ndarray, bound: float) -> np.ndarray:
    extra = np.sqrt(np.maximum(bound**2 - np.einsum("ij,ij->i", rows, rows), 0.0))
    return np.ascontiguousarray(np.hstack([rows, extra[:, None]]), dtype=np.float32)


class DenseIndex:
    """Rows and, for the approximate types, the FAISS index over their lifted copies."""

    def __init__(
        self, rows: np.ndarray, config: DenseIndexConfig, index: faiss.Index | None = None, bound: float = 0.0
    ) -> None:
        self.rows = rows
        self.config = config
        self.index = index
        self.bound = bound

    @property
    def kind(self) -> str:
        if self.index is None:
            return "flat"
        return "hnsw" if isinstance(self.index, faiss.IndexHNSW) else "ivf-sq8"

    def search(self, query: np.ndarray, k: int, mask: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        """Up to `k` (row, exact inner product) of the rows where `mask` holds, best first, ties by row."""
        n = len(self.rows)
        if not n or (mask is not None and not mask.any()):
            return np.zeros(0, np.int64), np.zeros(0, np.float32)
        if self.index is None:
            scores = np.einsum("ij,j->i", self.rows, query)
            rows = np.flatnonzero(mask) if mask is not None else np.arange(n)
            if k < len(rows):
                rows = rows[np.argpartition(-scores[rows], k - 1)[:k]]
        else:
            rows = self._candidates(query, k, mask)
            scores = np.zeros(n, np.float32)
            scores[rows] = self.rows[rows] @ query
        rows = rows[np.lexsort((rows, -scores[rows]))]
        return rows.astype(np.int64), scores[rows].astype(np.float32)

    def _candidates(self, query: np.ndarray, k: int, mask: np.ndarray | None) -> np.ndarray:
        assert self.index is not None
        lib: Any = faiss  # the bundled stubs lack the SearchParameters* keywords
        selector = None
        if mask is not None:
            bits = np.packbits(mask, bitorder="little")  # must outlive the search
            selector = lib.IDSelectorBitmap(len(mask), lib.swig_ptr(bits))
        if isinstance(self.index, faiss.IndexHNSW):
            params = lib.SearchParametersHNSW(sel=selector, efSearch=max(self.config.hnsw_ef_search, k))
        else:
            params = lib.SearchParametersIVF(sel=selector, nprobe=self.config.ivf_nprobe)
        lifted = np.ascontiguousarray(np.append(query, np.float32(0.0))[None, :], dtype=np.float32)
        _, found = self.index.search(lifted, min(k, self.index.ntotal), params=params)
        return found[0][found[0] >= 0]

    def save(self, path: Path) -> dict[str, Any]:
        """Write the FAISS index (approximate types only) to `path`; what `load` needs back."""
        if self.index is not None:
            faiss.write_index(self.index, str(path))
        return {"kind": self.kind, "bound": self.bound}

    @classmethod
    def load(cls, rows: np.ndarray, meta: dict[str, Any], path: Path, config: DenseIndexConfig) -> DenseIndex:
        if meta["kind"] == "flat":
            return cls(rows, config)
        index = faiss.read_index(str(path))
        if index.ntotal != len(rows):
            raise ValueError(f"{path} holds {index.ntotal} vectors for {len(rows)} rows")
        return cls(rows, config, index, float(meta["bound"]))
