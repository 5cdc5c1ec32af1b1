"""What a backend holds for one index version, made from the index's own files.

* `SparseDocuments`: the BM25 document weights of the three lexical document kinds (one row per
  bullet, per summary, per title + authors) and their encoders (vocabulary, document
  frequencies, average length). Written into every index version by `build-index`
  (``sparse/``), so every backend ranks lexical legs from the same weights.
* `paper_records`: every paper as a `PaperRecord` (vectors, hubness, sparse rows, filter
  fields), what `Backend.upsert` takes (Milvus). The default backend is built from the same
  arrays directly (`EmbeddedBackend.serving`).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from retrieval.backends.base import PaperRecord, SparseField, augment
from retrieval.backends.sparse import SparseEncoder, rows_to_csr
from retrieval.corpus import Paper
from retrieval.errors import IndexCorruptError
from retrieval.filtering import paper_filter_fields

__all__ = ["SPARSE_DIR", "SparseDocuments", "paper_records"]

SPARSE_DIR = "sparse"
SPARSE_FIELDS: tuple[SparseField, ...] = ("bullets", "summary", "title")
# A rebuild keeps the previous average document length while the new one is within this share
# of it: the stored document weights (and a Milvus collection's rows) then stay valid, so an
# incremental build re-writes only the papers that changed. BM25 moves by well under 1 % of a score.
AVG_LEN_TOLERANCE = 0.02


@dataclass(frozen=True, eq=False)
class SparseDocuments:
    """Per document kind: its encoder and its documents' weights (documents x vocabulary, CSR)."""

    encoders: dict[SparseField, SparseEncoder]
    matrices: dict[SparseField, sp.csr_matrix]

    @classmethod
    def fit(
        cls,
        bullets: Sequence[Sequence[str]],
        summaries: Sequence[Sequence[str]],
        titles: Sequence[Sequence[str]],
        previous: SparseDocuments | None = None,
    ) -> SparseDocuments:
        """Encode the three kinds of token lists; term ids and (within `AVG_LEN_TOLERANCE`) the
        average lengths carry over from `previous`, the live version's."""
        encoders: dict[SparseField, SparseEncoder] = {}
        matrices: dict[SparseField, sp.csr_matrix] = {}
        for kind, documents in zip(SPARSE_FIELDS, (bullets, summaries, titles), strict=True):
            old = previous.encoders.get(kind) if previous is not None else None
            encoder = SparseEncoder(vocab=dict(old.vocab) if old is not None else {}).fit(documents)
            if old is not None and abs(encoder.avg_len - old.avg_len) <= AVG_LEN_TOLERANCE * old.avg_len:
                encoder.avg_len = old.avg_len
            encoders[kind] = encoder
            matrix = rows_to_csr([encoder.encode_document(d) for d in documents])
            matrix.resize((matrix.shape[0], len(encoder.vocab)))
            matrices[kind] = matrix
        return cls(encoders, matrices)

    def query(self, kind: SparseField, terms: Sequence[str]) -> dict[int, float]:
        """The query side of BM25 for `kind`: `{term_id: idf x count}`."""
        return self.encoders[kind].encode_query(terms)

    def scores(self, kind: SparseField, terms: Sequence[str], rows: np.ndarray | None = None) -> np.ndarray:
        """BM25 of `terms` for every document of `kind` (or only `rows`), computed here."""
        matrix = self.matrices[kind] if rows is None else self.matrices[kind][rows]
        weights = self.query(kind, terms)
        if not weights or not matrix.shape[0]:
            return np.zeros(matrix.shape[0], dtype=np.float32)
        query = np.zeros(matrix.shape[1], dtype=np.float32)
        for term_id, weight in weights.items():
            query[term_id] = weight
        return np.asarray(matrix @ query, dtype=np.float32).reshape(-1)

    def save(self, folder: Path) -> None:
        """`<kind>.json` (encoder) and `<kind>.npz` (weights) per kind; no pickle."""
        folder.mkdir(parents=True, exist_ok=True)
        for kind in SPARSE_FIELDS:
            self.encoders[kind].save(folder / f"{kind}.json")
            sp.save_npz(folder / f"{kind}.npz", self.matrices[kind], compressed=False)

    @classmethod
    def load(cls, folder: Path) -> SparseDocuments:
        encoders: dict[SparseField, SparseEncoder] = {}
        matrices: dict[SparseField, sp.csr_matrix] = {}
        try:
            for kind in SPARSE_FIELDS:
                encoders[kind] = SparseEncoder.load(folder / f"{kind}.json")
                matrices[kind] = sp.csr_matrix(sp.load_npz(folder / f"{kind}.npz"), dtype=np.float32)
                if matrices[kind].shape[1] != len(encoders[kind].vocab):
                    raise ValueError(f"{kind}.npz is {matrices[kind].shape[1]} terms wide, the vocabulary has "
                                     f"{len(encoders[kind].vocab)}")  # fmt: skip
        except (OSError, ValueError, KeyError, TypeError, json.JSONDecodeError) as exc:
            raise IndexCorruptError(f"sparse weights in {folder} cannot be read ({exc}); rebuild the index") from exc
        return cls(encoders, matrices)

    def check_sizes(self, bullets: int, papers: int, where: Path) -> None:
        sizes: dict[SparseField, int] = {"bullets": bullets, "summary": papers, "title": papers}
        for kind, size in sizes.items():
            if self.matrices[kind].shape[0] != size:
                raise IndexCorruptError(
                    f"{where / SPARSE_DIR / kind}.npz has {self.matrices[kind].shape[0]} rows for {size} documents; "
                    "rebuild the index"
                )


def _csr_row(matrix: sp.csr_matrix, row: int) -> dict[int, float]:
    start, end = matrix.indptr[row], matrix.indptr[row + 1]
    return dict(zip(matrix.indices[start:end].tolist(), matrix.data[start:end].tolist(), strict=True))


def paper_records(
    papers: Sequence[Paper],
    bullet_vectors: np.ndarray,
    offsets: np.ndarray,
    centroids: np.ndarray,
    title_vectors: np.ndarray,
    hub_bullets: np.ndarray,
    hub_papers: np.ndarray,
    sparse: SparseDocuments,
) -> list[PaperRecord]:
    """Every paper as a `PaperRecord` (paper i owns bullet rows offsets[i]:offsets[i + 1])."""
    records = []
    for pi, paper in enumerate(papers):
        start, end = int(offsets[pi]), int(offsets[pi + 1])
        first, last, votes, authors = paper_filter_fields(paper)
        records.append(
            PaperRecord(
                paper_id=paper.arxiv_id,
                first_date=first,
                last_date=last,
                votes=votes,
                authors=authors,
                bullet_vectors=bullet_vectors[start:end],
                bullet_hubness=hub_bullets[start:end],
                centroid=centroids[pi],
                centroid_hubness=float(hub_papers[pi]),
                title_vector=title_vectors[pi],
                sparse_bullets=tuple(_csr_row(sparse.matrices["bullets"], r) for r in range(start, end)),
                sparse_summary=_csr_row(sparse.matrices["summary"], pi),
                sparse_title=_csr_row(sparse.matrices["title"], pi),
            )
        )
    return records


def dense_rows(vectors: np.ndarray, hubness: np.ndarray) -> np.ndarray:
    """`[v, hub(v)]` rows, as the backends store bullets and centroids."""
    return augment(vectors, hubness)
