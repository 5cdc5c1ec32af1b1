"""Second stage: a learned re-ranker (LightGBM LambdaRank) over the fused ranking's top `depth`.

The fused score is linear in the legs' z-scores; the re-ranker sees, per (query, candidate), what
that sum cannot use: each leg's raw score and rank besides its z-score, the fused score's rank and
gaps, the query's shape (Latin share, length, colon, name-like words, numbers), the candidate's
era, size and hub score, lexical coverage that BM25 sums away (IDF-weighted share of the query's
terms found in the summary, its short name and numbers found there, the best single bullet's BM25
against the summary's) and the spread of the bullets' corrected cosines. `FEATURES` names them.

`build-index --tuning-queries` fits it with the fusion weights (retrieval/training.py) and stores
it in learned.json (the LightGBM model as text, never pickle); the searcher re-orders the first
`depth` hits of a hybrid search with it (benchmarks/rerank.py and EVALUATION.md have the figures).
`summary_ranks` is deliberately not a feature: for a title query it is computed from the query.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from retrieval.alignment import map_queries
from retrieval.names import name_key, short_name

if TYPE_CHECKING:
    from retrieval.corpus import Paper
    from retrieval.search import Field_, Leg, Searcher

DEPTH = 50
LEGS = ("dense_best_bullet", "dense_centroid", "dense_title", "lexical_summary", "lexical_title")
ERA = {"plain": 0.0, "vote-authors": 1.0, "labelled": 2.0}
_NUMBER = re.compile(r"\d+(?:\.\d+)?")
_LATIN_TERM = re.compile(r"^[a-z0-9][a-z0-9.\-+]*$")
_NAME_LIKE = re.compile(r"^(?=.*[A-Za-z])(?:.*[a-z].*[A-Z]|.*[A-Z]{2}|.*\d)")  # LLaMA, GPT-4o, SDXL, Mamba2

LEG_FEATURES = [f"{leg}:{kind}" for leg in LEGS for kind in ("z", "raw", "log_rank")]
FUSED_FEATURES = ["fused", "fused_rank", "fused_gap_top", "fused_gap_next", "fused_gap_rel"]
QUERY_FEATURES = ["q_latin", "q_words", "q_colon", "q_name_like", "q_terms", "q_numbers"]
PAPER_FEATURES = ["p_era", "p_bullets", "p_hub"]
LEXICAL_FEATURES = ["cov_idf", "cov_latin_idf", "cov_count", "name_in_summary", "name_words_in_summary",
                    "numbers_matched", "best_bullet_bm25", "best_bullet_share"]  # fmt: skip
COSINE_FEATURES = ["cos_second", "cos_mean", "cos_gap12", "cos_plain_best"]
FEATURES = LEG_FEATURES + FUSED_FEATURES + QUERY_FEATURES + PAPER_FEATURES + LEXICAL_FEATURES + COSINE_FEATURES
FEATURES_ID = f"rerank-v1;depth{DEPTH};{','.join(FEATURES)}"
# LambdaRank settings (benchmarks/rerank.py measured them: 100 trees of 15 leaves score within 0.002
# MRR of 300 at a third of the fit and scoring time).
PARAMS: dict[str, Any] = dict(
    objective="lambdarank", lambdarank_truncation_level=20, n_estimators=100, learning_rate=0.05, num_leaves=15,
    min_child_samples=50, colsample_bytree=0.8, subsample=0.8, subsample_freq=1, reg_lambda=1.0, random_state=0,
    n_jobs=2, verbose=-1,
)  # fmt: skip


# ----------------------------------------------------------------------------- per-corpus tables
@dataclass(frozen=True)
class PaperTables:
    """What the features read per paper, computed once: summary text keys, numbers, era, size."""

    keys: list[str]  # name_key of the whole summary (bullets joined)
    numbers: list[frozenset[str]]
    era: np.ndarray
    bullets: np.ndarray

    @classmethod
    def of(cls, papers: Sequence[Paper]) -> PaperTables:
        from retrieval.evaluation import paper_era

        texts = [" ".join(b.text for b in p.bullets) for p in papers]
        return cls(
            keys=[name_key(t) for t in texts],
            numbers=[frozenset(_NUMBER.findall(t)) for t in texts],
            era=np.array([ERA[paper_era(p)] for p in papers], dtype=np.float64),
            bullets=np.array([len(p.bullets) for p in papers], dtype=np.float64),
        )


# ----------------------------------------------------------------------------- features
@dataclass(frozen=True)
class QueryLegs:
    """One query as the fusion saw it: its text, terms, Latin share and vector, every leg's raw
    scores, the z-scores the fusion added and the fused (name-boosted) score per paper."""

    text: str
    own_terms: Sequence[str]
    terms: Sequence[str]
    english: float
    vector: np.ndarray
    legs: Sequence[Leg]
    z: Mapping[str, np.ndarray]
    fused: np.ndarray


def leg_rank(scores: np.ndarray, top: np.ndarray) -> np.ndarray:
    """1-based rank of each candidate in a leg (NaN scores count as unscored: below every score)."""
    filled = np.nan_to_num(scores.astype(np.float64), nan=-np.inf)
    ascending = np.sort(filled)
    ranks = 1.0 + len(filled) - np.searchsorted(ascending, filled[top], side="right")
    return np.where(np.isfinite(filled[top]), ranks, len(scores) + 1.0)


def query_features(text: str, english: float, terms: Sequence[str]) -> list[float]:
    words = text.split()
    name_like = any(_NAME_LIKE.match(w) for w in words)
    numbers = len(_NUMBER.findall(text))
    colon = short_name(text) is not None
    return [english, float(len(words)), float(colon), float(name_like), float(len(terms)), float(numbers)]


def leg_columns(query: QueryLegs, top: np.ndarray) -> list[np.ndarray]:
    """LEG_FEATURES and FUSED_FEATURES of the candidates `top` (in fused order)."""
    size = len(query.fused)
    raw_of = {leg.name: leg.scores for leg in query.legs}
    columns: list[np.ndarray] = []
    for name in LEGS:
        if name in raw_of:
            raw = raw_of[name]
            z = query.z.get(name, np.zeros(size))
            columns += [z[top], np.nan_to_num(raw[top], nan=0.0), np.log(leg_rank(raw, top))]
        else:
            columns += [np.zeros(len(top)), np.zeros(len(top)), np.full(len(top), math.log(size + 1))]
    f = query.fused[top].astype(np.float64)
    gap_rel = (f[0] - f) / (f[0] - f[min(9, len(f) - 1)] + 1e-6)
    columns += [f, np.arange(len(top), dtype=np.float64), f[0] - f, np.r_[f[:-1] - f[1:], 0.0], gap_rel]
    return columns


def _spans(starts: np.ndarray, ends: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Every position of the ranges [starts[i], ends[i]) and the range each belongs to."""
    lengths = ends - starts
    owner = np.repeat(np.arange(len(starts)), lengths)
    first = np.repeat(starts - np.concatenate([[0], np.cumsum(lengths)[:-1]]), lengths)
    return first + np.arange(len(owner)), owner


def lexical_features(searcher: Searcher, tables: PaperTables, query: QueryLegs, top: np.ndarray,
                     fields: tuple[Field_, ...]) -> np.ndarray:  # fmt: skip
    """(candidates, LEXICAL_FEATURES): coverage of the query's terms in each candidate's summary,
    its name and numbers found there, and the best single bullet's BM25 against the summary's."""
    sparse = searcher.index.sparse
    encoder = sparse.encoders["summary"]
    out = np.zeros((len(top), len(LEXICAL_FEATURES)))
    known = {t: encoder.vocab[t] for t in dict.fromkeys(query.own_terms) if t in encoder.vocab}
    if known:
        ids = np.array(list(known.values()), dtype=np.int64)
        df = np.array([encoder.doc_freq.get(int(i), 0) for i in ids], dtype=np.float64)
        idf = np.log(1 + (encoder.n_docs - df + 0.5) / (df + 0.5))
        matrix = sparse.matrices["summary"]
        nnz, row = _spans(matrix.indptr[top], matrix.indptr[top + 1])
        terms = matrix.indices[nnz]
        order = np.argsort(ids, kind="stable")
        at = np.minimum(np.searchsorted(ids[order], terms), len(ids) - 1)
        hit = ids[order][at] == terms
        present = np.zeros((len(top), len(ids)), dtype=bool)
        present[row[hit], order[at[hit]]] = True
        latin = np.array([bool(_LATIN_TERM.match(t)) for t in known])
        out[:, 0] = present @ idf / idf.sum()
        out[:, 1] = (present[:, latin] @ idf[latin] / idf[latin].sum()) if latin.any() else -1.0
        out[:, 2] = present.sum(axis=1) / len(ids)
    name = short_name(query.text)
    key = name_key(name) if name else ""
    name_words = [w for w in (name_key(w) for w in query.text.split() if _NAME_LIKE.match(w)) if len(w) >= 2]
    numbers = set(_NUMBER.findall(query.text))
    out[:, 3:6] = -1.0  # not applicable unless the query has a name, name-like words or numbers
    for row_, pi in enumerate(top if key or name_words or numbers else []):
        summary = tables.keys[pi]
        out[row_, 3] = float(key in summary) if key else -1.0
        out[row_, 4] = (sum(w in summary for w in name_words) / len(name_words)) if name_words else -1.0
        out[row_, 5] = (len(numbers & tables.numbers[pi]) / len(numbers)) if numbers else -1.0
    weights = sparse.query("bullets", list(query.terms)) if "bullets" in fields and query.terms else {}
    if weights:
        matrix, offsets = sparse.matrices["bullets"], searcher.bullet_offsets
        vector = np.zeros(matrix.shape[1], dtype=np.float32)
        vector[list(weights)] = list(weights.values())
        bullets, paper = _spans(offsets[top], offsets[top + 1])  # a paper's bullets are contiguous rows
        nnz, bullet = _spans(matrix.indptr[bullets], matrix.indptr[bullets + 1])
        per_bullet = np.bincount(bullet, weights=matrix.data[nnz] * vector[matrix.indices[nnz]], minlength=len(bullets))
        best = np.zeros(len(top))  # BM25 is never negative; a paper without bullets keeps 0
        np.maximum.at(best, paper, per_bullet)
        summary_raw = {leg.name: leg.scores for leg in query.legs}.get("lexical_summary")
        summary_bm25 = np.nan_to_num(summary_raw[top], nan=0.0) if summary_raw is not None else np.zeros(len(top))
        out[:, 6] = best
        out[:, 7] = best / (summary_bm25 + 1e-6)
    return out


def cosine_features(searcher: Searcher, query: QueryLegs, top: np.ndarray, fields: tuple[Field_, ...]) -> np.ndarray:
    """(candidates, COSINE_FEATURES): the bullets' corrected cosines as the best-bullet leg scores
    them (second best, mean, best minus second) and the best cosine without any correction."""
    out = np.zeros((len(top), len(COSINE_FEATURES)))
    if "bullets" not in fields:
        return out
    query_map, hub_bullets, _ = searcher.english_corrections
    qvec = query.vector.astype(np.float32)
    towards = map_queries(qvec, query_map, query.english)[0] if query.english > 0 else qvec
    offsets = searcher.bullet_offsets
    rows, paper = _spans(offsets[top], offsets[top + 1])
    block = searcher.bullet_matrix[rows]
    corrected = (block @ towards - (query.english * searcher.settings.hubness_bullets) * hub_bullets[rows]).astype(
        np.float64
    )
    counts = np.bincount(paper, minlength=len(top))
    has = counts > 0  # (a paper without bullets keeps zeros)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])[has]
    ranked = corrected[np.lexsort((-corrected, paper))]  # each paper's bullets, best first
    best, second = ranked[starts], ranked[starts + (counts[has] > 1)]
    plain = np.full(len(top), -np.inf)
    np.maximum.at(plain, paper, (block @ qvec).astype(np.float64))
    out[has, 0] = second
    out[has, 1] = np.bincount(paper, weights=corrected, minlength=len(top))[has] / counts[has]
    out[has, 2] = best - second
    out[has, 3] = plain[has]
    return out


def candidate_features(searcher: Searcher, tables: PaperTables, query: QueryLegs, top: np.ndarray,
                       fields: tuple[Field_, ...]) -> np.ndarray:  # fmt: skip
    """(len(top), len(FEATURES)) float32: the feature rows of the candidates `top`, in fused order."""
    top = np.asarray(top, dtype=np.int64)
    if not len(top):
        return np.zeros((0, len(FEATURES)), dtype=np.float32)
    columns = leg_columns(query, top)
    columns += [np.full(len(top), v) for v in query_features(query.text, query.english, query.own_terms)]
    _, _, hub_papers = searcher.english_corrections
    columns += [tables.era[top], tables.bullets[top], hub_papers[top].astype(np.float64)]
    x = np.hstack([np.column_stack(columns), lexical_features(searcher, tables, query, top, fields),
                   cosine_features(searcher, query, top, fields)])  # fmt: skip
    return x.astype(np.float32)


# ----------------------------------------------------------------------------- the model
@dataclass(frozen=True)
class Reranker:
    """A fitted LambdaRank model over `FEATURES`, re-ordering the first `depth` candidates.
    Stored as LightGBM's text format (`model`) inside learned.json."""

    model: str
    depth: int = DEPTH
    features: str = FEATURES_ID
    _booster: Any = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        """Parse the model text once (`ValueError` when it is not a LightGBM model of `FEATURES`)."""
        import lightgbm as lgb

        if self.depth < 2:
            raise ValueError(f"reranker depth {self.depth} is below 2")
        try:
            booster = lgb.Booster(model_str=self.model)
        except lgb.basic.LightGBMError as exc:
            raise ValueError(f"reranker model cannot be read ({str(exc).splitlines()[0]})") from exc
        if booster.num_feature() != len(FEATURES):
            raise ValueError(f"reranker model reads {booster.num_feature()} features, this program has {len(FEATURES)}")
        object.__setattr__(self, "_booster", booster)

    def scores(self, x: np.ndarray) -> np.ndarray:
        """The model's score of each feature row (higher: nearer the top)."""
        return np.asarray(self._booster.predict(x, num_threads=1), dtype=np.float64)

    def order(self, x: np.ndarray) -> np.ndarray:
        """Positions of the rows in their new order (ties keep the given order)."""
        return np.argsort(-self.scores(x), kind="stable")

    def to_dict(self) -> dict[str, Any]:
        return {"model": self.model, "depth": self.depth, "features": self.features}

    @classmethod
    def from_dict(cls, data: object) -> Reranker:
        """Parse learned.json's `reranker`; `ValueError` naming what is wrong."""
        if not isinstance(data, dict) or set(data) != {"model", "depth", "features"}:
            raise ValueError("'reranker' must have exactly model, depth, features")
        model, depth, features = data["model"], data["depth"], data["features"]
        if not isinstance(model, str) or not isinstance(depth, int) or isinstance(depth, bool):
            raise ValueError("'reranker' needs a model text and an integer depth")
        if features != FEATURES_ID:
            raise ValueError("'reranker' was fitted on other features than this program computes; rebuild the index")
        return cls(model, depth, features)


def fit_reranker(blocks: Sequence[tuple[np.ndarray, np.ndarray, int]], depth: int = DEPTH) -> Reranker | None:
    """Fit LambdaRank on (x (queries, candidates, FEATURES), label (queries, candidates), weight)
    blocks: each block's queries with an answer among their first `depth` candidates, repeated
    `weight` times. None when no query has its answer among its candidates."""
    import lightgbm as lgb

    xs, ys = [], []
    for x, label, weight in blocks:
        keep = label[:, :depth].any(axis=1)
        xs += [x[keep, :depth]] * weight
        ys += [label[keep, :depth]] * weight
    if not xs or not sum(len(x) for x in xs):
        return None
    x, y = np.concatenate(xs), np.concatenate(ys)
    ranker = lgb.LGBMRanker(**PARAMS)
    ranker.fit(x.reshape(-1, len(FEATURES)), y.reshape(-1).astype(np.int32), group=[x.shape[1]] * len(x))
    return Reranker(ranker.booster_.model_to_string(), depth)
