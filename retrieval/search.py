"""The query pipeline: dense and lexical legs, fusion, grouping bullets into papers, filters.

Scores are computed per bullet, then grouped per paper (bullets of a paper are contiguous rows
of the vector index). Each leg ranks papers; `hybrid` fuses the two rankings. Filters mask
papers after scoring, and the dense leg widens its candidate depth until a page can be filled,
so a filter never shrinks a page below `limit` while enough matching papers exist.
"""

from __future__ import annotations

import functools
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Concatenate, Literal, ParamSpec, TypeVar

import numpy as np

from retrieval.alignment import map_queries
from retrieval.backends.base import Backend, Hits
from retrieval.backends.embedded import EmbeddedBackend
from retrieval.corpus import Paper
from retrieval.embedding import Embedder
from retrieval.errors import IndexMismatchError, PaperNotFoundError, SearcherClosedError, UsageError
from retrieval.explain import Explainer
from retrieval.filtering import FilterColumns
from retrieval.highlight import QueryMarks
from retrieval.hubness import bullet_centroids, latin_share
from retrieval.ids import normalise_arxiv_id, split_arxiv_ids
from retrieval.lexical import STOPWORDS, BM25Index, KoreanEnglishTokenizer
from retrieval.mentions import NameMentions, title_name
from retrieval.models import Evidence, Filters, MatchedTerm, Mode, PaperDetail, PaperHit, PaperInfo, SearchResponse
from retrieval.names import NameIndex
from retrieval.query import AnalysedQuery
from retrieval.relevance import Calibration, QueryJudge, calibration_for
from retrieval.rerank import PaperTables, QueryLegs, Reranker, candidate_features
from retrieval.store import IndexData
from retrieval.termmap import TermMap

__all__ = ["ALL_FIELDS", "Facet", "Field_", "Filters", "Searcher", "SearchSettings"]

Field_ = Literal["bullets", "title"]
Facet = Literal["months"]
ALL_FIELDS: tuple[Field_, ...] = ("bullets", "title")


@dataclass
class SearchSettings:
    """Ranking knobs; the defaults are the best settings measured in EVALUATION.md.

    Every leg gives each paper a score; `hybrid` (and each single mode) standardises every leg
    per query (z-score against the leg's top `z_depth` papers) and adds them with these weights.
    """

    # Learned fusion (EVALUATION.md): a logistic regression over the legs' z-scores on the title
    # task's fold 0 and the dev queries. These are the fallback: an index built with
    # `--tuning-queries` stores its own fit (retrieval/learned.py), which the service uses instead
    # (`benchmarks/learned_fusion.py` prints a fit as these fields). The bullet legs' weights are for an
    # all-Korean query, the `_english` ones for an all-English one, in between by the query's
    # Latin share. Ranking depends only on their ratios. Hand-tuned before: 1.0, 0.8, 0.3, 1.2,
    # 0.6 (English), 0.3, with the dense weights the same for every language.
    weight_dense_max: float = 1.0
    weight_dense_max_english: float = 5.704
    weight_dense_centroid: float = 2.826
    weight_dense_centroid_english: float = 1.886
    weight_dense_title: float = 1.107
    weight_lexical_paper: float = 8.185
    weight_lexical_paper_english: float = 2.928
    weight_lexical_title: float = 0.668
    # Hubness correction of the dense bullet and centroid legs for English queries: the cosine
    # minus this times the vector's hub score times the query's share of Latin letters.
    hubness_bullets: float = 1.0
    hubness_centroid: float = 1.0
    # Exact-name leg (retrieval/names.py), on when "title" is searched: a paper whose short name
    # or whole title is the query gets weight x (the query's fused score range + 1) added, so at
    # 1 or more it ranks above every paper not so named. 0 turns the leg off.
    weight_name: float = 1.0
    z_depth: int = 100
    # Candidates asked of the backend: `candidate_depth` bullets for the best-bullet leg (more
    # when filters leave too few papers), `leg_depth` papers for every paper-level leg (centroid,
    # title, BM25 of summary and of title). A paper missing from a leg's candidates takes the
    # leg's floor (EVALUATION.md "Top-K legs" has the parity with scoring every paper).
    candidate_depth: int = 2000
    leg_depth: int = 1000
    max_candidate_depth: int = 1_000_000
    evidence_per_paper: int = 3
    expand_terms: bool = True
    # Dense legs only: append the English equivalents (corpus term map, retrieval/termmap.py) of
    # the query's Korean terms of at least `dense_english_min_ko` characters, at most
    # `dense_english_max` of them, to the text they embed: "query (term1, term2)". The lexical
    # legs, the evidence and the relevance keep the query as written. EVALUATION.md has the figures.
    dense_english_terms: bool = False
    dense_english_min_ko: int = 2
    dense_english_max: int = 100
    # Summary-name leg, on when "bullets" are searched: a title-shaped query ("Name: description",
    # the name at most 3 words) lifts the papers whose summary mentions that name as a word by
    # this share of the query's fused score range (1: above every paper not mentioning it). 0: off.
    summary_name_lift: float = 0.3
    mismatch_rank: int = 1000
    # Second stage (retrieval/rerank.py): an index built with tuning queries stores a LambdaRank
    # model that re-orders the first `depth` hits of a hybrid search; False keeps the fused order.
    # It learned mostly from English titles and re-orders only queries whose share of Latin letters
    # is at least `rerank_min_latin`: Korean and mixed queries lost with it (dev cross-validated
    # and test, EVALUATION.md round 4; 0.7-0.9 measure the same).
    rerank: bool = True
    rerank_min_latin: float = 0.8
    query_cache_size: int = 1024
    fields: tuple[Field_, ...] = field(default=ALL_FIELDS)


_HANGUL = re.compile(r"[가-힣]")
_LATIN_WORD = re.compile(r"[0-9a-z\+]+")


@dataclass(frozen=True)
class Leg:
    """One ranking leg for one query: a score per paper (NaN: not scored) and its weight."""

    name: str
    scores: np.ndarray
    weight: float


@dataclass(frozen=True)
class Fusion:
    """The fused score per paper (NaN: no leg scored it) and each used leg's standardised scores."""

    fused: np.ndarray
    parts: list[tuple[Leg, np.ndarray]]


@dataclass(frozen=True)
class DenseLegs:
    legs: list[Leg]
    towards_bullets: np.ndarray | None  # the query as the bullet legs search it (None: not searched)


# What a closed searcher keeps: light and shared with the searcher that replaced it (the holder
# reuses the embedder and tokenizer); every other attribute is dropped by `close`.
_KEPT_AFTER_CLOSE = frozenset({"embedder", "tokenizer", "settings", "_closed", "_close_lock"})

_P = ParamSpec("_P")
_R = TypeVar("_R")


def _open_only(method: Callable[Concatenate[Searcher, _P], _R]) -> Callable[Concatenate[Searcher, _P], _R]:
    """Refuse the call with `SearcherClosedError` once the searcher is closed."""

    @functools.wraps(method)
    def guarded(self: Searcher, *args: _P.args, **kwargs: _P.kwargs) -> _R:
        if self._closed:
            raise SearcherClosedError(
                f"the searcher of index version {self.index.path.name} is closed; "
                "query the service's current searcher instead"
            )
        return method(self, *args, **kwargs)

    return guarded


class Searcher:
    """Answers queries over one loaded index. Thread-safe for concurrent searches.

    `close()` releases what it holds; `SearcherHolder` calls it once a replaced searcher's last
    query has finished.
    """

    def __init__(
        self,
        index: IndexData,
        embedder: Embedder,
        tokenizer: KoreanEnglishTokenizer | None = None,
        settings: SearchSettings | None = None,
        term_map: TermMap | None = None,
        backend: Backend | None = None,
        calibration: Calibration | None = None,
        reranker: Reranker | None = None,
    ) -> None:
        """`backend` answers the legs' top-K questions; by default an in-memory `EmbeddedBackend`
        over this index's arrays. Another backend must hold this index's version (build-index
        syncs it). `reranker` re-orders the head of hybrid rankings (`SearchSettings.rerank`)."""
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
        ids = np.array([p.arxiv_id for p in self.papers], dtype=str)
        self._sorted_rows = np.argsort(ids, kind="stable").astype(np.int64)
        self._sorted_ids = ids[self._sorted_rows]  # backends name papers by id: mapped back in bulk
        counts = np.array([len(p.bullets) for p in self.papers], dtype=np.int64)
        self._offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        self._row_paper = np.repeat(np.arange(len(self.papers)), counts)
        self._filters = FilterColumns.of_papers(self.papers)
        self._names = NameIndex([p.title for p in self.papers])
        self._bullet_matrix = index.bullet_vectors.reconstruct_n(0, index.bullet_vectors.ntotal)
        self._title_matrix = index.title_vectors.reconstruct_n(0, index.title_vectors.ntotal)
        self._bm25_bullets = BM25Index.load(index.bm25_dirs["bm25_bullets"])
        self._bm25_titles = BM25Index.load(index.bm25_dirs["bm25_titles"])
        self._bm25_papers = BM25Index.load(index.bm25_dirs["bm25_papers"])
        self._centroids = bullet_centroids(self._bullet_matrix, self._offsets)
        self._query_map = index.query_map
        self._hub_bullets = index.hub_bullets
        self._hub_papers = index.hub_papers
        self._sparse = index.sparse
        self.backend = backend if backend is not None else self._embedded_backend()
        self.term_map = term_map if term_map is not None else index.term_map
        self._warnings = self._summary_warnings()
        if self.settings.summary_name_lift > 0:
            _ = self._mentions  # built here (under a second), not on the first title-shaped query
        self.relevance_calibration = calibration or calibration_for(index.manifest.model)
        self.reranker = reranker
        self._rerank_tables = PaperTables.of(self.papers) if reranker is not None else None
        self._query_cache: OrderedDict[str, np.ndarray] = OrderedDict()
        self._cache_lock = threading.Lock()
        self._pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="search-leg")
        self._closed = False
        self._close_lock = threading.Lock()

    # ----------------------------------------------------------------- public API
    @_open_only
    def search(
        self,
        query: str,
        mode: Mode = "hybrid",
        limit: int = 10,
        offset: int = 0,
        filters: Filters | None = None,
        fields: Sequence[Field_] | None = None,
        explain: bool = False,
        facets: Sequence[Facet] = (),
    ) -> SearchResponse:
        """Rank papers for `query` and return one page of hits with their cited bullets.

        `explain` adds each hit's score breakdown (`PaperHit.explain`, retrieval/explain.py);
        `facets=("months",)` counts the papers that match well (not weak) per month of first digest date.

        Papers the query names by arXiv id come first, in the order named; the rest of the query
        (without the ids) is ranked as usual, with the exact-name leg added to the fused scores.
        """
        started = time.perf_counter()
        filters = filters or Filters()
        fields = tuple(fields or self.settings.fields)
        analysed = self.analyse(query)
        query, text, terms, english = analysed.raw, analysed.text, analysed.terms, analysed.english
        mask = self._filter_mask(filters)
        first = self._named_by_id(analysed.ids, mask)
        want = offset + limit - len(first)

        # The query vector (of the query without its ids) feeds the dense legs and, in every mode,
        # the hits' relevance.
        vector_future = self._pool.submit(self._embed_query, text) if text else None
        dense_text = analysed.dense_text
        dense_future = vector_future if dense_text == text else self._pool.submit(self._embed_query, dense_text)
        dense_future = dense_future if mode in ("dense", "hybrid") else None
        lexical_legs: list[Leg] = []
        if text and mode in ("lexical", "hybrid"):
            lexical_legs = self._lexical_legs(terms, english, fields, filters)
        dense = DenseLegs([], None)
        qvec = None
        named, mentioned = self._names_of(text, fields), self._mentioned(text, fields)
        depth = self.settings.candidate_depth
        while True:
            if dense_future is not None and vector_future is not None:
                qvec = vector_future.result()  # the query as written: evidence cosines
                dense = self._dense_legs(dense_future.result(), english, fields, depth, filters)
            fusion = self._fuse(mode, dense.legs, lexical_legs)
            lifted, fused = self._name_legs(fusion.fused, named, mentioned)
            fused[first] = np.nan  # placed in front below
            candidates = np.flatnonzero(np.isfinite(fused) & mask)
            exhausted = dense_future is None or depth >= len(self._row_paper)
            if len(candidates) >= want or exhausted or depth >= self.settings.max_candidate_depth:
                break
            depth *= 4
        ranked = candidates[np.lexsort((candidates, -fused[candidates]))]
        shown = fused  # the score each hit reports
        if mode == "hybrid" and qvec is not None and self.reranks(english):
            legs = QueryLegs(text, analysed.own_terms, terms, english, qvec, dense.legs + lexical_legs,
                             {leg.name: z for leg, z in fusion.parts}, fused)  # fmt: skip
            # A paper the query names exactly stays in front: the re-ranker learned from titles
            # searched without the title field, where that leg never fires.
            lead = next((i for i, pi in enumerate(ranked) if int(pi) not in named), len(ranked))
            rest, shown = self._rerank(legs, ranked[lead:], fields)
            ranked = np.concatenate([ranked[:lead], rest])
        order = np.concatenate([np.array(first, dtype=np.int64), ranked])
        page = order[offset : offset + limit]
        # Per-bullet BM25 (evidence, explain) only for the bullets of the page's papers.
        lexical_rows = self._bullet_bm25(terms, page) if mode != "dense" and "bullets" in fields else None
        marks = analysed.marks
        cite_by = qvec if "bullets" in fields else None  # evidence cosines: the query as the user wrote it
        judge = (
            self.relevance_judge(text, fields, vector_future.result(), own_terms=analysed.own_terms)
            if vector_future is not None
            else None
        )
        top = float(np.nanmax(fused)) if np.isfinite(fused).any() else 0.0
        scores = {pi: top + len(first) - rank for rank, pi in enumerate(first)}  # above every other score
        exact = set(first) | set(named)  # the papers the query names: relevance 1
        results = [
            self._hit(int(pi), scores.get(int(pi), float(shown[pi])), cite_by, lexical_rows, marks, mode, judge,
                      exact=int(pi) in exact)
            for pi in page
        ]  # fmt: skip
        if explain:
            explainer = Explainer(
                legs=[(leg.name, leg.scores, leg.weight, z) for leg, z in fusion.parts],
                fused=fusion.fused,
                boosted=fused,
                lifted=lifted,
                offsets=self._offsets,
                dense_rows=self._corrected_rows(dense.towards_bullets, english, page) if mode != "lexical" else None,
                lexical_rows=lexical_rows if mode != "dense" else None,
                term_hits=self._term_hits(analysed, fields) if mode != "dense" else {},
            )
            for pi, hit in zip(page, results, strict=True):
                hit.explain = explainer.explain(int(pi), hit.score, by_id=int(pi) in scores)
        counts = None
        if "months" in facets:
            strong = np.zeros(len(self.papers), dtype=bool)
            if judge is not None:
                strong = judge.relevance_of_all() >= judge.calibration.threshold
            strong[list(exact)] = True
            strong &= np.isfinite(fused) & mask
            strong[first] = True
            counts = {"months": month_counts(self._filters.first[strong])}
        return SearchResponse(
            query=query,
            mode=mode,
            total=int(len(order)),
            offset=offset,
            limit=limit,
            results=results,
            weak=all(hit.weak for hit in results),
            facets=counts,
            took_ms=round((time.perf_counter() - started) * 1000, 3),
        )

    def reranks(self, english: float) -> bool:
        """Whether a hybrid search of a query with this share of Latin letters is re-ranked."""
        return self.reranker is not None and self.settings.rerank and english >= self.settings.rerank_min_latin

    def _rerank(
        self, query: QueryLegs, ranked: np.ndarray, fields: tuple[Field_, ...]
    ) -> tuple[np.ndarray, np.ndarray]:
        """`ranked` with its first `depth` papers in the re-ranker's order, and the scores to show:
        those papers take the fused scores of the positions they now hold (scores stay descending)."""
        assert self.reranker is not None and self._rerank_tables is not None
        head = ranked[: self.reranker.depth]
        if len(head) < 2:
            return ranked, query.fused
        x = candidate_features(self, self._rerank_tables, query, head, fields)
        new = head[self.reranker.order(x)]
        shown = query.fused.copy()
        shown[new] = query.fused[head]
        return np.concatenate([new, ranked[len(head) :]]), shown

    @_open_only
    def query_legs(self, text: str, qvec: np.ndarray, fields: Sequence[Field_] = ALL_FIELDS) -> QueryLegs:
        """A query's legs and fused scores exactly as a hybrid `search` without filters fuses them,
        name legs included (the re-ranker's training reads them; `text` holds no arXiv ids)."""
        analysed = self.analyse(text)
        fields = tuple(fields)
        dense = self.dense_legs(qvec, analysed.english, fields)
        lexical = self.lexical_legs(analysed.terms, analysed.english, fields)
        fusion = self._fuse("hybrid", dense, lexical)
        legs = dense + lexical
        named, mentioned = self._names_of(analysed.text, fields), self._mentioned(analysed.text, fields)
        _, fused = self._name_legs(fusion.fused, named, mentioned)
        return QueryLegs(analysed.text, analysed.own_terms, analysed.terms, analysed.english, qvec, legs,
                         {leg.name: z for leg, z in fusion.parts}, fused)  # fmt: skip

    def relevance_judge(
        self,
        query: str,
        fields: Sequence[Field_] | None = None,
        vector: np.ndarray | None = None,
        own_terms: Sequence[str] | None = None,
    ) -> QueryJudge:
        """The relevance scale of `query`'s hits (retrieval/relevance.py) over the searched `fields`;
        `vector` is the query's embedding (embedded, or taken from the cache, when not given),
        `own_terms` its lexical terms without expansions (tokenised here when not given)."""
        query = query.strip()
        fields = tuple(fields or self.settings.fields)
        searched = [self._bm25_papers] if "bullets" in fields else []
        searched += [self._bm25_titles] if "title" in fields else []
        terms = list(own_terms) if own_terms is not None else (self.tokenizer.tokenize(query) if query else [])
        vector = self._embed_query(query) if vector is None else vector
        return QueryJudge.build(
            vector, terms, searched, self._bm25_papers, latin_share(query), self._bullet_matrix, self._offsets,
            self.relevance_calibration,
        )  # fmt: skip

    def _term_hits(self, analysed: AnalysedQuery, fields: Sequence[Field_]) -> dict[MatchedTerm, np.ndarray]:
        """For each lexical term of the query (term-map expansions with the English phrase they
        translate), the papers whose summary or title it was found in."""
        own, extra = list(analysed.own_terms), list(analysed.expansions)
        sources = self.term_map.sources(analysed.text, extra, self.tokenizer) if extra else {}
        searched = [self._bm25_papers] if "bullets" in fields else []
        searched += [self._bm25_titles] if "title" in fields else []
        hits: dict[MatchedTerm, np.ndarray] = {}
        for term in dict.fromkeys([*own, *extra]):
            found = np.zeros(len(self.papers), dtype=bool)
            for bm25 in searched:
                found |= bm25.scores([term]) > 0
            hits[MatchedTerm(term=term, via=sources.get(term))] = found
        return hits

    def _named_by_id(self, ids: Sequence[str], mask: np.ndarray) -> list[int]:
        """Indexes of the papers named by these canonical arXiv ids that are indexed and pass the filters."""
        found = (self._by_id.get(arxiv_id) for arxiv_id in ids)
        return [pi for pi in found if pi is not None and mask[pi]]

    def _names_of(self, text: str, fields: Sequence[Field_]) -> list[int]:
        """The papers whose short name or title is `text`, when titles are searched and the leg is on."""
        if "title" not in fields or self.settings.weight_name <= 0 or not text:
            return []
        return list(self._names.lookup(text))

    def _name_legs(
        self, fused: np.ndarray, named: Sequence[int], mentioned: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """`fused` after the summary-name leg (the papers whose summary mentions the name a
        title-shaped query starts with, by `summary_name_lift` x the score range; EVALUATION.md
        "Query views and lexical feedback") and after the exact-name leg too (the papers the
        query names, above every other paper)."""
        lifted = lift_rows(fused, mentioned, self.settings.summary_name_lift, pad=1e-6)
        return lifted, lift_rows(lifted, named, self.settings.weight_name, pad=1.0)

    @functools.cached_property
    def _mentions(self) -> NameMentions:
        return NameMentions(["\n".join(b.text for b in p.bullets) for p in self.papers])

    def _mentioned(self, text: str, fields: Sequence[Field_]) -> np.ndarray:
        """The papers whose summary mentions the name a title-shaped `text` starts with (bullets
        searched, the summary-name leg on)."""
        name = title_name(text) if self.settings.summary_name_lift > 0 and "bullets" in fields else None
        return self._mentions.papers(name) if name else np.zeros(0, dtype=np.int64)

    @_open_only
    def get_paper(self, arxiv_id: str) -> PaperDetail:
        pi = self._paper_index(arxiv_id)
        paper = self.papers[pi]
        bullets = [Evidence(position=b.position, section=b.section, text=b.text, score=0.0) for b in paper.bullets]
        return PaperDetail(paper=PaperInfo.from_paper(paper), bullets=bullets, warning=self._warnings.get(pi))

    @_open_only
    def similar(self, arxiv_id: str, limit: int = 10, filters: Filters | None = None) -> SearchResponse:
        """Nearest other papers to a paper, by the centroid of its bullet vectors."""
        started = time.perf_counter()
        pi = self._paper_index(arxiv_id)
        filters = filters or Filters()
        mask = self._filter_mask(filters)
        mask[pi] = False
        candidates = np.flatnonzero(mask)
        # The backend's best bullets by the paper's centroid, widened until `limit` other papers.
        depth = max(64, 8 * (limit + 1))
        while True:
            hits = self.backend.top_bullets(self._centroids[pi], depth, filters)
            paper_scores = np.full(len(self.papers), -np.inf, dtype=np.float32)
            if len(hits):
                np.maximum.at(paper_scores, self._paper_indexes(hits.paper_ids), hits.scores)
            found = np.flatnonzero(np.isfinite(paper_scores) & mask)
            if len(found) >= limit or len(hits) < depth:
                break
            depth *= 4
        order = found[np.lexsort((found, -paper_scores[found]))][:limit]
        centroid = self._centroids[pi]
        no_marks = QueryMarks.build("", [], self.tokenizer.stem, STOPWORDS)
        results = [self._hit(int(p), float(paper_scores[p]), centroid, None, no_marks, "dense") for p in order]
        return SearchResponse(
            query=f"similar:{arxiv_id}",
            mode="dense",
            total=len(candidates),
            offset=0,
            limit=limit,
            results=results,
            took_ms=round((time.perf_counter() - started) * 1000, 3),
        )

    def analyse(self, query: str) -> AnalysedQuery:
        """The query analysed once: its arXiv ids, the rest's lexical terms and term-map
        expansions, Latin share, the text the dense legs embed and the highlight marks."""
        raw = query.strip()
        ids, text = split_arxiv_ids(raw)
        own = tuple(self.tokenizer.tokenize(text)) if text else ()
        expand = self.settings.expand_terms and text
        extra = tuple(self.term_map.expand(text, list(own), self.tokenizer)) if expand else ()
        marks = QueryMarks.build(text, [*own, *extra], self.tokenizer.stem, STOPWORDS)
        return AnalysedQuery(raw, tuple(ids), text, own, extra, latin_share(text), self.dense_query_text(text), marks)

    @_open_only
    def query_terms(self, query: str) -> list[str]:
        """Lexical terms of a query, expanded with the corpus term map when enabled."""
        return self.analyse(query).terms

    def dense_query_text(self, text: str) -> str:
        """What the dense legs embed: `text`, with the English equivalents of its Korean terms
        appended in parentheses when `dense_english_terms` is on (terms the query has are skipped)."""
        settings = self.settings
        if not settings.dense_english_terms or not _HANGUL.search(text):
            return text
        have = set(_LATIN_WORD.findall(text.lower()))
        found = self.term_map.translations(text, ko_to_en=True, min_ko_length=settings.dense_english_min_ko)
        extra = [t for t in found if not _HANGUL.search(t) and not set(t.split()) <= have]
        extra = extra[: settings.dense_english_max]
        return f"{text} ({', '.join(extra)})" if extra else text

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

    def set_english_corrections(
        self, query_map: np.ndarray, bullets: np.ndarray, papers: np.ndarray, *, in_backend: bool = False
    ) -> None:
        """Replace the query map and hub scores (the title task swaps in ones fitted without its
        queries). The embedded backend takes the new hub offsets at once; another backend must
        have been given them already (a version upserted with them: `in_backend=True`)."""
        if (
            bullets.shape != self._hub_bullets.shape
            or papers.shape != self._hub_papers.shape
            or query_map.shape != self._query_map.shape
        ):
            raise ValueError("need a (dim, dim) query map, one hub score per bullet and one per paper")
        if not in_backend and not isinstance(self.backend, EmbeddedBackend):
            raise UsageError(
                f"{type(self.backend).__name__} holds the hubness offsets it was synced with; upsert a version "
                "with the new ones first and pass in_backend=True (benchmarks/backend_parity.py does)"
            )
        self._query_map = query_map.astype(np.float32)
        self._hub_bullets = bullets.astype(np.float32)
        self._hub_papers = papers.astype(np.float32)
        if not in_backend and isinstance(self.backend, EmbeddedBackend):
            self.backend.replace_hubness(self._hub_bullets, self._hub_papers)

    @property
    def english_corrections(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return self._query_map, self._hub_bullets, self._hub_papers

    @property
    def bullet_matrix(self) -> np.ndarray:
        """Every bullet vector, in paper order (read-only use)."""
        return self._bullet_matrix

    @property
    def centroids(self) -> np.ndarray:
        """Each paper's bullet centroid (read-only use)."""
        return self._centroids

    @property
    def bullet_offsets(self) -> np.ndarray:
        """Paper i owns rows bullet_offsets[i]:bullet_offsets[i + 1] of `bullet_matrix` (read-only use)."""
        return self._offsets

    def remember_query_vectors(self, vectors: dict[str, np.ndarray]) -> None:
        """Seed the query-vector cache (used by the evaluation to embed queries in batches)."""
        with self._cache_lock:
            for text, vector in vectors.items():
                self._query_cache[text] = np.asarray(vector, dtype=np.float32)
            while len(self._query_cache) > self.settings.query_cache_size:
                self._query_cache.popitem(last=False)

    @_open_only
    def dense_legs(
        self,
        qvec: np.ndarray,
        english: float,
        fields: Sequence[Field_] = ALL_FIELDS,
        depth: int | None = None,
        filters: Filters | None = None,
    ) -> list[Leg]:
        """The dense legs of a query vector with this Latin share (what `search` fuses)."""
        depth = depth or self.settings.candidate_depth
        return self._dense_legs(qvec, english, tuple(fields), depth, filters or Filters()).legs

    @_open_only
    def lexical_legs(
        self, terms: list[str], english: float, fields: Sequence[Field_] = ALL_FIELDS, filters: Filters | None = None
    ) -> list[Leg]:
        """The lexical legs of these query terms (`query_terms`) with this Latin share."""
        return self._lexical_legs(terms, english, tuple(fields), filters or Filters())

    def _dense_legs(
        self,
        qvec: np.ndarray,
        english: float,
        fields: tuple[Field_, ...],
        depth: int,
        filters: Filters,
    ) -> DenseLegs:
        """Dense legs per paper from the backend's top candidates: best bullet among the top
        `depth` bullets, bullet centroid, title. `english` (0-1) scales the query map and the
        hubness correction (the backend subtracts weight x the stored hub offset)."""
        s = self.settings
        legs: list[Leg] = []
        towards = None
        qvec = qvec.astype(np.float32)
        if "bullets" in fields and len(self._row_paper):
            # English queries move towards the Korean bullets (retrieval/alignment.py); the title
            # leg compares English with English and keeps the query as it is.
            towards = map_queries(qvec, self._query_map, english)[0] if english > 0 else qvec
            bullets = self.backend.top_bullets(towards, depth, filters, hubness_weight=english * s.hubness_bullets)
            weight = by_language(s.weight_dense_max, s.weight_dense_max_english, english)
            legs.append(Leg("dense_best_bullet", self._best_per_paper(bullets), weight))
            centroids = self.backend.top_papers(
                towards, s.leg_depth, filters, field="centroid", hubness_weight=english * s.hubness_centroid
            )
            weight = by_language(s.weight_dense_centroid, s.weight_dense_centroid_english, english)
            legs.append(Leg("dense_centroid", self._floored(centroids), weight))
        if "title" in fields and len(self.papers):
            titles = self.backend.top_papers(qvec, s.leg_depth, filters, field="title")
            legs.append(Leg("dense_title", self._floored(titles), s.weight_dense_title))
        return DenseLegs(legs, towards)

    def _paper_indexes(self, paper_ids: np.ndarray) -> np.ndarray:
        """Our row of each paper the backend named, vectorised (a paper unknown here is an error:
        the backend holds another version of the index)."""
        if not len(paper_ids):
            return np.zeros(0, dtype=np.int64)
        at = np.minimum(np.searchsorted(self._sorted_ids, paper_ids), len(self._sorted_ids) - 1)
        known = self._sorted_ids[at] == paper_ids
        if not known.all():
            missing = str(paper_ids[np.flatnonzero(~known)[0]])
            raise IndexMismatchError(
                f"the backend returned paper {missing}, which index version {self.index.path.name} lacks; "
                "rebuild with `retrieval build-index` so both hold the same version"
            )
        return self._sorted_rows[at]

    def _best_per_paper(self, hits: Hits) -> np.ndarray:
        """Each paper's best candidate bullet; papers without one score the weakest candidate (not
        NaN: standardise() reads NaN as 0, and corrected cosines can be negative)."""
        best = np.full(len(self.papers), -np.inf, dtype=np.float32)
        if not len(hits):
            best[:] = 0.0
            return best
        np.maximum.at(best, self._paper_indexes(hits.paper_ids), hits.scores)
        best[~np.isfinite(best)] = hits.scores.min()
        return best

    def _floored(self, hits: Hits) -> np.ndarray:
        """A paper-level dense leg: candidates keep their score, every other paper the weakest one's."""
        if not len(hits):
            return np.zeros(len(self.papers), dtype=np.float32)
        leg = np.full(len(self.papers), hits.scores.min(), dtype=np.float32)
        leg[self._paper_indexes(hits.paper_ids)] = hits.scores
        return leg

    def _lexical_legs(
        self, terms: list[str], english: float, fields: tuple[Field_, ...], filters: Filters
    ) -> list[Leg]:
        """Lexical legs per paper (BM25 over the whole summary, over title and authors) from the
        backend's top `leg_depth` documents; papers not among them are unscored (NaN, read as 0)."""
        s = self.settings
        legs: list[Leg] = []
        if "bullets" in fields and len(self._row_paper):
            hits = self.backend.top_sparse(self._sparse.query("summary", terms), s.leg_depth, filters, field="summary")
            weight = by_language(s.weight_lexical_paper, s.weight_lexical_paper_english, english)
            legs.append(Leg("lexical_summary", self._matched(hits), weight))
        if "title" in fields:
            hits = self.backend.top_sparse(self._sparse.query("title", terms), s.leg_depth, filters, field="title")
            legs.append(Leg("lexical_title", self._matched(hits), s.weight_lexical_title))
        return legs

    def _matched(self, hits: Hits) -> np.ndarray:
        leg = np.full(len(self.papers), np.nan, dtype=np.float32)
        if len(hits):
            leg[self._paper_indexes(hits.paper_ids)] = hits.scores
        return leg

    def _page_rows(self, page: Sequence[int] | np.ndarray) -> np.ndarray:
        """The bullet rows of these papers."""
        spans = [np.arange(self._offsets[pi], self._offsets[pi + 1]) for pi in page]
        return np.concatenate(spans).astype(np.int64) if spans else np.zeros(0, dtype=np.int64)

    def _bullet_bm25(self, terms: list[str], page: Sequence[int] | np.ndarray) -> np.ndarray:
        """BM25 of every bullet of the page's papers (0 elsewhere), for evidence and explain."""
        rows = np.zeros(len(self._row_paper), dtype=np.float32)
        picked = self._page_rows(page)
        if len(picked) and terms:
            rows[picked] = self._sparse.scores("bullets", terms, picked)
        return rows

    def _corrected_rows(
        self, towards: np.ndarray | None, english: float, page: Sequence[int] | np.ndarray
    ) -> np.ndarray | None:
        """The corrected cosine of every bullet of the page's papers (-inf elsewhere), as the
        best-bullet leg scored them; None when bullets were not searched."""
        if towards is None:
            return None
        rows = np.full(len(self._row_paper), -np.inf, dtype=np.float32)
        picked = self._page_rows(page)
        hub = (english * self.settings.hubness_bullets) * self._hub_bullets[picked]
        rows[picked] = self._bullet_matrix[picked] @ towards - hub
        return rows

    def _embedded_backend(self) -> EmbeddedBackend:
        """The default backend: this index's arrays, searched in memory."""
        return EmbeddedBackend.serving(
            self.index.manifest.dim, self.papers, self._bullet_matrix, self._offsets, self._centroids,
            self._title_matrix, self._hub_bullets, self._hub_papers, self._sparse, filters=self._filters,
        )  # fmt: skip

    def _fuse(self, mode: Mode, dense: list[Leg], lexical: list[Leg]) -> Fusion:
        """Weighted sum of per-query standardised leg scores; NaN for papers no leg scored."""
        return fuse((dense if mode != "lexical" else []) + (lexical if mode != "dense" else []), len(self.papers),
                    self.settings.z_depth)  # fmt: skip

    # ----------------------------------------------------------------- grouping and evidence
    def _group_max(self, rows: np.ndarray) -> np.ndarray:
        if not len(rows):
            return np.full(len(self.papers), -np.inf, dtype=np.float32)
        return np.maximum.reduceat(rows, self._offsets[:-1]).astype(np.float32)

    def _filter_mask(self, filters: Filters) -> np.ndarray:
        return self._filters.passing(filters)

    def _hit(
        self,
        pi: int,
        score: float,
        cite_by: np.ndarray | None,
        lexical_rows: np.ndarray | None,
        marks: QueryMarks,
        mode: Mode,
        judge: QueryJudge | None = None,
        exact: bool = False,
    ) -> PaperHit:
        """One result with its evidence: bullets ranked by cosine to `cite_by` (the query vector;
        None: no dense scores) and, outside dense mode, by BM25 (`lexical_rows`, every bullet);
        relevance and weak from `judge` (None: not a text query, relevance is null); a paper the
        query names (`exact`: by arXiv id or by its name) has relevance 1."""
        paper = self.papers[pi]
        start = int(self._offsets[pi])
        rows = self._bullet_matrix[start : int(self._offsets[pi + 1])]
        cosines = rows @ cite_by.astype(np.float32) if cite_by is not None else None
        scored: list[tuple[float, float, int]] = []
        for b in paper.bullets:
            row = start + b.position
            dense = float(cosines[b.position]) if cosines is not None else None
            lexical = float(lexical_rows[row]) if lexical_rows is not None else 0.0
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
                    highlights=marks.spans(bullet.text, self.tokenizer.stem),
                )
            )
        relevance, weak = judge.judge(pi) if judge is not None else (None, False)
        if exact:
            relevance, weak = 1.0, False
        return PaperHit(
            paper=PaperInfo.from_paper(paper),
            score=round(score, 6),
            relevance=relevance,
            weak=weak,
            evidence=evidence,
            warning=self._warnings.get(pi),
        )

    def _summary_warnings(self) -> dict[int, str]:
        """Flag summaries that are probably about another paper (or generic filler).

        A paper's own title, used as a query, should find its summary among the first few; when
        more than `mismatch_rank` other summaries are nearer to the title than its own (counted
        by build-index: `hubness.summary_ranks`), the summarising model most likely wrote about
        something else (EVALUATION.md has the counts).
        """
        flagged = np.flatnonzero(self.index.summary_ranks > self.settings.mismatch_rank)
        text = "this summary may describe a different paper: it is far from the paper's own title"
        return {int(pi): text for pi in flagged}

    def _paper_index(self, arxiv_id: str) -> int:
        """The paper named by `arxiv_id` in any usual spelling (vN, arXiv:, its URL)."""
        pi = self._by_id.get(normalise_arxiv_id(arxiv_id) or arxiv_id.strip())
        if pi is None:
            raise PaperNotFoundError(f"no paper with arXiv id {arxiv_id!r} in the index")
        return pi

    @property
    def summary_warnings(self) -> dict[str, str]:
        return {self.papers[pi].arxiv_id: text for pi, text in self._warnings.items()}

    @property
    def closed(self) -> bool:
        return self._closed

    def close(self) -> None:
        """Release everything this searcher holds; idempotent; later queries raise `SearcherClosedError`.

        Waits for running query legs and stops the thread pool, then drops the index data and
        every array and table built from it (attributes added later too: only the few light
        ones named in `_KEPT_AFTER_CLOSE` stay, and `index` keeps just its manifest and path).
        Call it only when no query is running on this searcher; the holder's leases see to that.
        """
        with self._close_lock:
            if self._closed:
                return
            self._closed = True
        self._pool.shutdown(wait=True)
        self.backend.close()
        state = vars(self)
        kept = {name: value for name, value in state.items() if name in _KEPT_AFTER_CLOSE}
        kept["index"] = self.index.released()
        state.clear()
        state.update(kept)


def by_language(korean: float, english: float, share: float) -> float:
    """A leg weight for a query with this share of Latin letters: `korean` at 0, `english` at 1."""
    return korean + (english - korean) * share


def lift_rows(fused: np.ndarray, rows: Sequence[int] | np.ndarray, share: float, pad: float) -> np.ndarray:
    """`fused` with `rows` raised by `share` x (the finite scores' range + `pad`); a row no leg
    scored starts at the lowest score. The name legs' one mechanism."""
    if not len(rows) or share <= 0:
        return fused
    finite = fused[np.isfinite(fused)]
    low, high = (float(finite.min()), float(finite.max())) if len(finite) else (0.0, 0.0)
    lifted = fused.copy()
    lifted[rows] = np.nan_to_num(fused[rows], nan=low) + share * (high - low + pad)
    return lifted


def month_counts(dates: np.ndarray) -> dict[str, int]:
    """`YYYY-MM` -> how many of these `YYYY-MM-DD` dates fall in it, oldest month first."""
    months: dict[str, int] = {}
    for date in sorted(str(d) for d in dates if d):
        months[date[:7]] = months.get(date[:7], 0) + 1
    return months


def fuse(legs: Sequence[Leg], size: int, z_depth: int) -> Fusion:
    """The weighted sum of the legs' standardised scores (a pure function); NaN where no leg scored."""
    fused = np.zeros(size, dtype=np.float64)
    seen = np.zeros(size, dtype=bool)
    parts: list[tuple[Leg, np.ndarray]] = []
    for leg in legs:
        finite = np.isfinite(leg.scores)
        if not finite.any() or leg.weight == 0:
            continue
        seen |= finite
        z = standardise(leg.scores, z_depth)
        fused += leg.weight * z
        parts.append((leg, z))
    fused[~seen] = np.nan
    return Fusion(fused, parts)


def standardise(scores: np.ndarray, depth: int) -> np.ndarray:
    """Z-score of every paper's score against the mean and spread of the leg's top `depth`.

    Unscored papers (NaN) count as 0, the floor of every leg. Standardising on the head of the
    ranking puts legs with different scales (cosine, BM25) on one footing per query.
    """
    filled = np.nan_to_num(scores.astype(np.float64), nan=0.0)
    depth = max(1, min(depth, len(filled) - 1))
    head = np.partition(filled, len(filled) - depth)[len(filled) - depth :] if len(filled) > 1 else filled
    return (filled - head.mean()) / (head.std() + 1e-6)
