"""The query pipeline: dense and lexical legs, fusion, grouping bullets into papers, filters.

Scores are computed per bullet, then grouped per paper (bullets of a paper are contiguous rows
of the vector index). Each leg ranks papers; `hybrid` fuses the two rankings. Filters mask
papers after scoring, and the dense leg widens its candidate depth until a page can be filled,
so a filter never shrinks a page below `limit` while enough matching papers exist.
"""

from __future__ import annotations

import re
import threading
import time
from collections import OrderedDict
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from retrieval.corpus import Paper
from retrieval.embedding import Embedder
from retrieval.errors import IndexMismatchError, PaperNotFoundError
from retrieval.lexical import BM25Index, KoreanEnglishTokenizer
from retrieval.models import Evidence, Mode, PaperDetail, PaperHit, PaperInfo, SearchResponse
from retrieval.store import IndexData
from retrieval.termmap import TermMap

Field_ = Literal["bullets", "title"]
ALL_FIELDS: tuple[Field_, ...] = ("bullets", "title")


@dataclass(frozen=True)
class Filters:
    """Paper filters; all optional. Dates are ISO `YYYY-MM-DD` strings, inclusive."""

    date_from: str | None = None
    date_to: str | None = None
    min_votes: int | None = None
    author: str | None = None

    def active(self) -> bool:
        return any(v is not None and v != "" for v in (self.date_from, self.date_to, self.min_votes, self.author))


@dataclass
class SearchSettings:
    """Ranking knobs; the defaults are the best settings measured in EVALUATION.md."""

    rrf_k: float = 60.0
    dense_weight: float = 1.0
    lexical_weight: float = 1.0
    title_weight: float = 1.0
    second_bullet_weight: float = 0.0
    lexical_paper: Literal["max", "sum", "paper"] = "paper"
    candidate_depth: int = 2000
    max_candidate_depth: int = 1_000_000
    evidence_per_paper: int = 3
    expand_terms: bool = True
    mismatch_threshold: float = 0.80
    query_cache_size: int = 1024
    fields: tuple[Field_, ...] = field(default=ALL_FIELDS)


_WORD = re.compile(r"[0-9A-Za-z][0-9A-Za-z\-\.]*[0-9A-Za-z]|[가-힣]{2,}|[0-9A-Za-z]")


class Searcher:
    """Answers queries over one loaded index. Thread-safe for concurrent searches."""

    def __init__(
        self,
        index: IndexData,
        embedder: Embedder,
        tokenizer: KoreanEnglishTokenizer | None = None,
        settings: SearchSettings | None = None,
        term_map: TermMap | None = None,
    ) -> None:
        if embedder.dim != index.manifest.dim:
            raise IndexMismatchError(
                f"model {embedder.name!r} gives {embedder.dim}-dim vectors, but {index.path / 'manifest.json'} "
                f"names {index.manifest.model!r} over {index.manifest.dim}-dim vectors; "
                "rebuild the index with `retrieval build-index`"
            )
        self.index = index
        self.embedder = embedder
        self.tokenizer = tokenizer or KoreanEnglishTokenizer()
        self.settings = settings or SearchSettings()
        self.papers: list[Paper] = index.papers
        self._by_id = {p.arxiv_id: i for i, p in enumerate(self.papers)}
        counts = np.array([len(p.bullets) for p in self.papers], dtype=np.int64)
        self._offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        self._row_paper = np.repeat(np.arange(len(self.papers)), counts)
        self._votes = np.array([p.votes if p.votes is not None else -1 for p in self.papers], dtype=np.int64)
        self._first_date = np.array([min(p.dates) if p.dates else "" for p in self.papers])
        self._last_date = np.array([max(p.dates) if p.dates else "" for p in self.papers])
        self._authors = [" | ".join(p.authors).lower() for p in self.papers]
        self._bullet_matrix = index.bullet_vectors.reconstruct_n(0, index.bullet_vectors.ntotal)
        self._title_matrix = index.title_vectors.reconstruct_n(0, index.title_vectors.ntotal)
        self._bm25_bullets = BM25Index.load(index.bm25_dirs["bm25_bullets"])
        self._bm25_titles = BM25Index.load(index.bm25_dirs["bm25_titles"])
        papers_dir = index.bm25_dirs.get("bm25_papers")
        self._bm25_papers = BM25Index.load(papers_dir) if papers_dir is not None else None
        self.term_map = term_map if term_map is not None else TermMap.from_papers(self.papers)
        self._warnings = self._summary_warnings()
        self._query_cache: OrderedDict[str, np.ndarray] = OrderedDict()
        self._cache_lock = threading.Lock()
        self._pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="search-leg")

    # ----------------------------------------------------------------- public API
    def search(
        self,
        query: str,
        mode: Mode = "hybrid",
        limit: int = 10,
        offset: int = 0,
        filters: Filters | None = None,
        fields: Sequence[Field_] | None = None,
    ) -> SearchResponse:
        """Rank papers for `query` and return one page of hits with their cited bullets."""
        started = time.perf_counter()
        filters = filters or Filters()
        fields = tuple(fields or self.settings.fields)
        query = query.strip()
        terms = self.query_terms(query)
        mask = self._filter_mask(filters)
        want = offset + limit

        dense_future = None
        if mode in ("dense", "hybrid"):
            dense_future = self._pool.submit(self._embed_query, query)
        lexical_paper, lexical_rows = (None, None)
        if mode in ("lexical", "hybrid"):
            lexical_paper, lexical_rows = self._lexical_scores(terms, fields)
        dense_paper = dense_rows = None
        depth = self.settings.candidate_depth
        while True:
            if dense_future is not None:
                qvec = dense_future.result()
                dense_paper, dense_rows = self._dense_scores(qvec, fields, depth)
            fused = self._fuse(mode, dense_paper, lexical_paper)
            candidates = np.flatnonzero(np.isfinite(fused) & mask)
            exhausted = dense_future is None or depth >= len(self._row_paper)
            if len(candidates) >= want or exhausted or depth >= self.settings.max_candidate_depth:
                break
            depth *= 4
        order = candidates[np.lexsort((candidates, -fused[candidates]))]
        page = order[offset : offset + limit]
        results = [
            self._hit(int(pi), float(fused[pi]), dense_rows, lexical_rows, terms, mode) for pi in page
        ]
        return SearchResponse(
            query=query,
            mode=mode,
            total=int(len(candidates)),
            offset=offset,
            limit=limit,
            results=results,
            took_ms=round((time.perf_counter() - started) * 1000, 3),
        )

    def get_paper(self, arxiv_id: str) -> PaperDetail:
        pi = self._paper_index(arxiv_id)
        paper = self.papers[pi]
        bullets = [Evidence(position=b.position, section=b.section, text=b.text, score=0.0) for b in paper.bullets]
        return PaperDetail(paper=PaperInfo.from_paper(paper), bullets=bullets, warning=self._warnings.get(pi))

    def similar(self, arxiv_id: str, limit: int = 10, filters: Filters | None = None) -> SearchResponse:
        """Nearest other papers to a paper, by the centroid of its bullet vectors."""
        started = time.perf_counter()
        pi = self._paper_index(arxiv_id)
        start, end = self._offsets[pi], self._offsets[pi + 1]
        centroid = self._bullet_matrix[start:end].mean(axis=0)
        centroid /= max(float(np.linalg.norm(centroid)), 1e-12)
        row_scores = self._bullet_matrix @ centroid
        paper_scores = self._group_max(row_scores)
        mask = self._filter_mask(filters or Filters())
        mask[pi] = False
        candidates = np.flatnonzero(mask)
        order = candidates[np.argsort(-paper_scores[candidates], kind="stable")][:limit]
        rows = np.full(len(self._row_paper), -np.inf, dtype=np.float32)
        rows[:] = row_scores
        results = [self._hit(int(p), float(paper_scores[p]), rows, None, [], "dense") for p in order]
        return SearchResponse(
            query=f"similar:{arxiv_id}",
            mode="dense",
            total=len(candidates),
            offset=0,
            limit=limit,
            results=results,
            took_ms=round((time.perf_counter() - started) * 1000, 3),
        )

    def query_terms(self, query: str) -> list[str]:
        """Lexical terms of a query, expanded with the corpus term map when enabled."""
        terms = self.tokenizer.tokenize(query) if query else []
        if self.settings.expand_terms:
            terms = terms + self.term_map.expand(query, terms, self.tokenizer)
        return terms

    # ----------------------------------------------------------------- legs
    def _embed_query(self, query: str) -> np.ndarray:
        with self._cache_lock:
            cached = self._query_cache.get(query)
            if cached is not None:
                self._query_cache.move_to_end(query)
                return cached
        vector = self.embedder.embed_queries([query])[0]
        with self._cache_lock:
            self._query_cache[query] = vector
            while len(self._query_cache) > self.settings.query_cache_size:
                self._query_cache.popitem(last=False)
        return vector

    def remember_query_vectors(self, vectors: dict[str, np.ndarray]) -> None:
        """Seed the query-vector cache (used by the evaluation to embed queries in batches)."""
        with self._cache_lock:
            for text, vector in vectors.items():
                self._query_cache[text] = np.asarray(vector, dtype=np.float32)
            while len(self._query_cache) > self.settings.query_cache_size:
                self._query_cache.popitem(last=False)

    def _dense_scores(self, qvec: np.ndarray, fields: tuple[Field_, ...], depth: int) -> tuple[np.ndarray, np.ndarray]:
        """Per-paper dense score (NaN outside the candidates) and per-row cosine (-inf if unseen)."""
        total = self.index.bullet_vectors.ntotal
        rows = np.full(total, -np.inf, dtype=np.float32)
        paper = np.full(len(self.papers), -np.inf, dtype=np.float32)
        if "bullets" in fields and total:
            # Exact inner products on one thread: at this size a single-threaded einsum (~2 ms for
            # 21k x 384) beats FAISS's and BLAS's thread pools, which cost a scheduler slice each
            # call when the cores are busy (e.g. embedding another query).
            scores = np.einsum("ij,j->i", self._bullet_matrix, qvec.astype(np.float32))
            k = min(depth, total)
            top = np.argpartition(scores, total - k)[total - k :] if k < total else np.arange(total)
            rows[top] = scores[top]
            paper = self._group_max(rows)
            if self.settings.second_bullet_weight:
                paper = paper + self.settings.second_bullet_weight * self._group_second(rows)
        if "title" in fields and len(self._title_matrix):
            titles = np.einsum("ij,j->i", self._title_matrix, qvec.astype(np.float32))
            paper = np.maximum(paper, self.settings.title_weight * titles) if "bullets" in fields else titles
        paper[~np.isfinite(paper)] = np.nan
        return paper, rows

    def _lexical_scores(self, terms: list[str], fields: tuple[Field_, ...]) -> tuple[np.ndarray, np.ndarray]:
        rows = np.zeros(len(self._row_paper), dtype=np.float32)
        paper = np.zeros(len(self.papers), dtype=np.float32)
        if "bullets" in fields and len(rows):
            rows = self._bm25_bullets.scores(terms)
            if self.settings.lexical_paper == "paper" and self._bm25_papers is not None:
                paper = self._bm25_papers.scores(terms)
            elif self.settings.lexical_paper == "sum":
                paper = np.add.reduceat(rows, self._offsets[:-1]).astype(np.float32)
            else:
                paper = self._group_max(rows)
        if "title" in fields:
            paper = paper + self._bm25_titles.scores(terms)
        paper = paper.astype(np.float32)
        paper[paper <= 0] = np.nan
        return paper, rows

    def _fuse(self, mode: Mode, dense: np.ndarray | None, lexical: np.ndarray | None) -> np.ndarray:
        if mode == "dense":
            assert dense is not None
            return dense
        if mode == "lexical":
            assert lexical is not None
            return lexical
        assert dense is not None and lexical is not None
        k = self.settings.rrf_k
        fused = np.zeros(len(self.papers), dtype=np.float64)
        seen = np.zeros(len(self.papers), dtype=bool)
        for scores, weight in ((dense, self.settings.dense_weight), (lexical, self.settings.lexical_weight)):
            valid = np.flatnonzero(np.isfinite(scores))
            if not len(valid):
                continue
            order = valid[np.argsort(-scores[valid], kind="stable")]
            ranks = np.empty(len(order), dtype=np.float64)
            ranks[:] = np.arange(1, len(order) + 1)
            fused[order] += weight / (k + ranks)
            seen[order] = True
        fused[~seen] = np.nan
        return fused

    # ----------------------------------------------------------------- grouping and evidence
    def _group_max(self, rows: np.ndarray) -> np.ndarray:
        if not len(rows):
            return np.full(len(self.papers), -np.inf, dtype=np.float32)
        return np.maximum.reduceat(rows, self._offsets[:-1]).astype(np.float32)

    def _group_second(self, rows: np.ndarray) -> np.ndarray:
        second = np.zeros(len(self.papers), dtype=np.float32)
        best = self._group_max(rows)
        for pi in np.flatnonzero(np.isfinite(best)):
            chunk = rows[self._offsets[pi] : self._offsets[pi + 1]]
            if len(chunk) > 1:
                value = np.partition(chunk, -2)[-2]
                second[pi] = value if np.isfinite(value) else 0.0
        return second

    def _filter_mask(self, filters: Filters) -> np.ndarray:
        mask = np.ones(len(self.papers), dtype=bool)
        if filters.date_from:
            mask &= self._last_date >= filters.date_from
        if filters.date_to:
            mask &= self._first_date <= filters.date_to
        if filters.min_votes is not None:
            mask &= self._votes >= filters.min_votes
        if filters.author:
            needle = filters.author.strip().lower()
            mask &= np.array([needle in a for a in self._authors], dtype=bool)
        return mask

    def _hit(
        self,
        pi: int,
        score: float,
        dense_rows: np.ndarray | None,
        lexical_rows: np.ndarray | None,
        terms: list[str],
        mode: Mode,
    ) -> PaperHit:
        paper = self.papers[pi]
        start = int(self._offsets[pi])
        scored: list[tuple[float, float, int]] = []
        for b in paper.bullets:
            row = start + b.position
            dense = float(dense_rows[row]) if dense_rows is not None and np.isfinite(dense_rows[row]) else None
            lexical = float(lexical_rows[row]) if lexical_rows is not None else 0.0
            if dense is None and dense_rows is not None:
                dense = float(self._bullet_matrix[row] @ self._bullet_matrix[row]) * 0.0
            primary = dense if mode != "lexical" and dense is not None else lexical
            scored.append((primary, lexical, b.position))
        scored.sort(key=lambda item: (-(item[0] + (0.01 * item[1] if mode == "hybrid" else 0.0)), item[2]))
        picked = scored[: self.settings.evidence_per_paper]
        if mode != "dense":
            extra = [s for s in scored[self.settings.evidence_per_paper :] if s[1] > 0][:1]
            picked += extra
        evidence = []
        for primary, _lex, position in picked:
            bullet = paper.bullets[position]
            evidence.append(
                Evidence(
                    position=position,
                    section=bullet.section,
                    text=bullet.text,
                    score=round(primary, 6),
                    highlights=highlight_spans(bullet.text, terms),
                )
            )
        return PaperHit(paper=PaperInfo.from_paper(paper), score=round(score, 6), evidence=evidence, warning=self._warnings.get(pi))

    def _summary_warnings(self) -> dict[int, str]:
        """Flag papers whose bullets are far from their own title in embedding space."""
        warnings: dict[int, str] = {}
        if not len(self._title_matrix) or not len(self._bullet_matrix):
            return warnings
        sums = np.add.reduceat(self._bullet_matrix, self._offsets[:-1], axis=0)
        sums /= np.maximum(np.linalg.norm(sums, axis=1, keepdims=True), 1e-12)
        agreement = np.einsum("ij,ij->i", sums, self._title_matrix)
        for pi in np.flatnonzero(agreement < self.settings.mismatch_threshold):
            warnings[int(pi)] = "the summary may not describe this paper (its bullets are far from its title)"
        return warnings

    def _paper_index(self, arxiv_id: str) -> int:
        pi = self._by_id.get(arxiv_id.strip())
        if pi is None:
            raise PaperNotFoundError(f"no paper with arXiv id {arxiv_id!r} in the index")
        return pi

    @property
    def summary_warnings(self) -> dict[str, str]:
        return {self.papers[pi].arxiv_id: text for pi, text in self._warnings.items()}

    def close(self) -> None:
        self._pool.shutdown(wait=False)


def highlight_spans(text: str, terms: Sequence[str]) -> list[tuple[int, int]]:
    """[start, end) spans where any query term occurs in `text`, case-insensitive, merged."""
    lowered = text.lower()
    spans: list[tuple[int, int]] = []
    for term in set(terms):
        term = term.lower()
        if len(term) < 2 and not ("\uac00" <= term <= "\ud7a3"):
            continue
        start = lowered.find(term)
        while start != -1:
            spans.append((start, start + len(term)))
            start = lowered.find(term, start + len(term))
    spans.sort()
    merged: list[tuple[int, int]] = []
    for start, end in spans:
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(end, merged[-1][1]))
        else:
            merged.append((start, end))
    return merged
