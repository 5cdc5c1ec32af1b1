"""Fitting the learned models of an index (retrieval/learned.py) from the index itself.

Training queries: the tuning queries (reader-style, every field, as users search) and a seeded
sample of the title task's fold 0 (`evaluation.title_fold == 0`: each paper's English title,
embedded as a query, finds its own paper; bullets only, with the query map and hub scores fitted
on fold 1's titles, so no query sees its own title). Fold 1 and the held-out test set stay for
measuring. Titles are English only and search bullets only, so without tuning queries nothing
is fitted (a fit on titles alone measured no better than the code defaults, EVALUATION.md).

Features: each query's top `TOP` papers under fixed hand-tuned weights (`HAND_TUNED`), each with
its per-query standardised score on every leg (exactly what `Searcher._fuse` adds; a leg a
query does not search is 0). The fusion model is linear in the legs, each bullet leg's weight a
straight line in the query's Latin share (`SearchSettings` holds a Korean and an `_english`
weight); fitted pointwise ("is this the right paper") by an L2 logistic regression, the title
and tuning sources weighing the same.

The re-ranker (retrieval/rerank.py) is fitted last, over the ranking the index will serve (the
fitted fusion weights): every fold-0 title up to `LearnOptions.rerank_title_sample` (bullets only,
fold-1 corrections) and the tuning queries (every field, the searcher's own corrections), each
query's top `rerank.DEPTH` papers with their features, LambdaRank, the tuning queries weighing
about half as much as the titles (`tuning_weight`).

The relevance calibration (retrieval/relevance.py) is a logistic regression over the absolute
signals of each training query's top 10 under the fitted fusion: right answers against the other
hits, both classes weighing the same and every source the same within a class. No off-topic
queries are needed: fitted with and without benchmarks/queries/offtopic.jsonl, the share of
off-topic queries whose top hit passes differed by at most one query of 60 (EVALUATION.md). The
weak threshold is the largest on a 0.05 grid that flags at most 5 % of the tuning queries' right
answers.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np

from retrieval.evaluation import EvalQuery, held_out_corrections, title_fold
from retrieval.hubness import latin_share
from retrieval.learned import FUSION_FIELDS, LearnedModels, LearnOptions, search_settings
from retrieval.lexical import KoreanEnglishTokenizer
from retrieval.relevance import Calibration
from retrieval.rerank import DEPTH, PaperTables, Reranker, candidate_features, fit_reranker
from retrieval.rerank import FEATURES as FEATURES_RERANK
from retrieval.search import ALL_FIELDS, Field_, Searcher, SearchSettings, standardise

TOP = 50
CUTOFF = 10
LEGS = ("dense_max", "dense_centroid", "dense_title", "lexical_paper", "lexical_title")
# The searcher's leg names -> the feature names above.
LEG_FEATURE = {
    "dense_best_bullet": "dense_max",
    "dense_centroid": "dense_centroid",
    "dense_title": "dense_title",
    "lexical_summary": "lexical_paper",
    "lexical_title": "lexical_title",
}
FEATURES = ("max", "centroid", "lex_paper", "max*e", "centroid*e", "lex_paper*e", "title_vec", "lex_title")
# Identifies what a fit reads: a change here (legs, candidates, features) makes every index refit;
# bump the last part when the legs themselves change.
FEATURES_ID = f"z-legs:{','.join(LEGS)};top{TOP};features:{','.join(FEATURES)};v2"
# The hand-tuned weights of 2026-11-21: they draw the candidates, whatever the code defaults are.
HAND_TUNED = SearchSettings(
    weight_dense_max=1.0, weight_dense_max_english=1.0, weight_dense_centroid=0.8, weight_dense_centroid_english=0.8,
    weight_dense_title=0.3, weight_lexical_paper=1.2, weight_lexical_paper_english=0.6, weight_lexical_title=0.3,
)  # fmt: skip
FUSION_C = 1.0  # inverse L2 strength of the fusion model (C = 0.1 and 10 measured the same)
CALIBRATION_L2 = 1.0
MAX_FLAGGED = 0.05
GRID = tuple(round(0.05 * i, 2) for i in range(1, 20))


@dataclass
class Block:
    """Candidates of a set of queries: z (queries, TOP, legs), label (queries, TOP), the Latin share
    and word count per query, its group, and (when collected) the relevance signals (queries, TOP, 3)."""

    z: np.ndarray
    label: np.ndarray
    english: np.ndarray
    words: np.ndarray
    group: np.ndarray
    signals: np.ndarray | None = None


TrainingQuery = tuple[str, set[int], str]  # text, indexes of its right papers, group


# ----------------------------------------------------------------------------- features
def leg_z(searcher: Searcher, text: str, qvec: np.ndarray, fields: tuple[Field_, ...]) -> np.ndarray:
    """(papers, legs) standardised leg scores as `Searcher._fuse` sees them (0 for legs not searched)."""
    english = latin_share(text)
    dense = searcher.dense_legs(qvec, english, fields)
    lexical = searcher.lexical_legs(searcher.query_terms(text), english, fields)
    out = np.zeros((len(searcher.papers), len(LEGS)), dtype=np.float32)
    for leg in dense + lexical:
        if np.isfinite(leg.scores).any():
            out[:, LEGS.index(LEG_FEATURE[leg.name])] = standardise(leg.scores, searcher.settings.z_depth)
    return out


def settings_coef(s: SearchSettings) -> np.ndarray:
    """A `SearchSettings`' weights as coefficients of `design` (bullet legs, their e-slopes, title legs)."""
    korean = [s.weight_dense_max, s.weight_dense_centroid, s.weight_lexical_paper]
    english = [s.weight_dense_max_english, s.weight_dense_centroid_english, s.weight_lexical_paper_english]
    slopes = [en - ko for ko, en in zip(korean, english, strict=True)]
    return np.array([*korean, *slopes, s.weight_dense_title, s.weight_lexical_title])


def coef_weights(coef: np.ndarray) -> dict[str, float]:
    """The `SearchSettings` weight fields of `design` coefficients, scaled so that weight_dense_max is 1."""
    c = coef[: len(FEATURES)] / coef[0]
    names = ["weight_dense_max", "weight_dense_centroid", "weight_lexical_paper"]
    values = {n: float(c[i]) for i, n in enumerate(names)}
    values.update({f"{n}_english": float(c[i] + c[i + 3]) for i, n in enumerate(names)})
    values.update(weight_dense_title=float(c[6]), weight_lexical_title=float(c[7]))
    return {name: round(values[name], 4) for name in FUSION_FIELDS}


def hand_tuned_weights(english: float) -> np.ndarray:
    """Per-leg weights (LEGS order) of `HAND_TUNED` for a query of Latin share `english`."""
    c = settings_coef(HAND_TUNED)
    return np.array([c[0] + c[3] * english, c[1] + c[4] * english, c[6], c[2] + c[5] * english, c[7]])


def collect(searcher: Searcher, queries: Sequence[TrainingQuery], vectors: Sequence[np.ndarray],
            fields: tuple[Field_, ...], with_signals: bool = True) -> Block:  # fmt: skip
    """Top-`TOP` candidates of each query under `HAND_TUNED`, with their leg z-scores (and signals)."""
    zs, labels, es, ws, gs, ss = [], [], [], [], [], []
    for (text, answers, group), vector in zip(queries, vectors, strict=True):
        z = leg_z(searcher, text, vector, fields)
        e = latin_share(text)
        top = np.argsort(-(z @ hand_tuned_weights(e)), kind="stable")[:TOP]
        zs.append(z[top])
        labels.append(np.isin(top, list(answers)))
        es.append(e)
        ws.append(len(text.split()))
        gs.append(group)
        if with_signals:
            ss.append(searcher.relevance_judge(text, fields, vector).signal_rows(top))
    width = min(TOP, len(searcher.papers))
    return Block(
        np.stack(zs) if zs else np.zeros((0, width, len(LEGS)), np.float32),
        np.stack(labels) if labels else np.zeros((0, width), bool),
        np.array(es, dtype=np.float64),
        np.array(ws, dtype=np.int64),
        np.array(gs, dtype=str),
        (np.array(ss, dtype=np.float64).reshape(len(zs), width, 3) if with_signals else None),
    )


def design(block: Block) -> np.ndarray:
    """(queries, TOP, features): every bullet leg and its product with e; the two title legs."""
    z, e = block.z, block.english[:, None, None]
    bullet = z[:, :, [0, 1, 3]]
    return np.concatenate([bullet, bullet * e, z[:, :, [2, 4]]], axis=2)


# ----------------------------------------------------------------------------- models
def logistic(x: np.ndarray, y: np.ndarray, weights: np.ndarray, l2: float) -> tuple[float, np.ndarray]:
    """Minimise sum(weights * logloss) + l2 / 2 * |coef|^2 (intercept not penalised), Newton's
    method with step halving. Returns (intercept, coefficients)."""
    design_ = np.hstack([np.ones((len(x), 1)), x])
    penalty = np.full(design_.shape[1], l2)
    penalty[0] = 0.0

    def loss(beta: np.ndarray) -> float:
        s = design_ @ beta
        return float(weights @ (np.logaddexp(0.0, s) - y * s) + 0.5 * (penalty * beta) @ beta)

    beta = np.zeros(design_.shape[1])
    current = loss(beta)
    for _ in range(50):
        p = 1.0 / (1.0 + np.exp(-np.clip(design_ @ beta, -500, 500)))
        gradient = design_.T @ (weights * (p - y)) + penalty * beta
        hessian = (design_ * (weights * p * (1 - p))[:, None]).T @ design_ + np.diag(penalty)
        step = np.linalg.solve(hessian + 1e-12 * np.eye(len(beta)), gradient)
        scale = 1.0
        while scale > 1e-6 and loss(beta - scale * step) > current:
            scale /= 2
        beta = beta - scale * step
        current = loss(beta)
        if np.abs(scale * step).max() < 1e-8 * (1.0 + np.abs(beta).max()):
            break
    return float(beta[0]), beta[1:]


def fit_fusion(blocks: Sequence[Block], c: float = FUSION_C) -> np.ndarray:
    """Coefficients of `design` (the intercept does not matter for ranking); each block weighs the
    same; `c` is the inverse L2 strength, as scikit-learn's C (same optimum, measured)."""
    xs, ys, ws = [], [], []
    for block in blocks:
        x = design(block).reshape(-1, len(FEATURES))
        xs.append(x)
        ys.append(block.label.reshape(-1))
        ws.append(np.full(len(x), 1.0 / max(len(x), 1)))
    x, y, w = np.concatenate(xs), np.concatenate(ys).astype(np.float64), np.concatenate(ws)
    return logistic(x, y, w * len(x) / len(blocks), 1.0 / c)[1]


def ranks(block: Block, coef: np.ndarray) -> np.ndarray:
    """1-based rank of the best answer among the candidates (inf when none is a candidate)."""
    return rank_scores(design(block) @ coef, block.label)


def rank_scores(scores: np.ndarray, label: np.ndarray) -> np.ndarray:
    """`ranks` from (queries, candidates) scores and labels."""
    out = np.full(len(scores), np.inf)
    for qi in range(len(scores)):
        hits = np.flatnonzero(label[qi])
        if len(hits):
            order = np.argsort(-scores[qi], kind="stable")
            out[qi] = 1 + min(int(np.flatnonzero(order == h)[0]) for h in hits)
    return out


def summary(r: np.ndarray) -> tuple[float, float, float]:
    """(R@1, R@10, MRR@10) of `ranks`."""
    if not len(r):
        return 0.0, 0.0, 0.0
    return float(np.mean(r <= 1)), float(np.mean(r <= 10)), float(np.mean(np.where(r <= 10, 1.0 / r, 0.0)))


def top_hits(block: Block, coef: np.ndarray, k: int = CUTOFF) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The signals (rows, 3), labels and ranks of each query's first `k` candidates under `coef`."""
    assert block.signals is not None
    order = np.argsort(-(design(block) @ coef), axis=1, kind="stable")[:, :k]
    rows = np.arange(len(order))[:, None]
    rank = np.broadcast_to(np.arange(order.shape[1]), order.shape)
    return block.signals[rows, order].reshape(-1, 3), block.label[rows, order].reshape(-1), rank.reshape(-1)


def class_source_weights(positive: np.ndarray, source: np.ndarray) -> np.ndarray:
    """Each class weighs 1 in total; within a class every source weighs the same."""
    weights = np.zeros(len(positive))
    for cls in (True, False):
        members = positive == cls
        sources = np.unique(source[members])
        for name in sources:
            chosen = members & (source == name)
            weights[chosen] = 1.0 / (len(sources) * chosen.sum())
    return weights


def fit_calibration(signals: np.ndarray, positive: np.ndarray, source: np.ndarray,
                    l2: float = CALIBRATION_L2) -> Calibration:  # fmt: skip
    """Logistic regression of "right answer" on standardised (cosine, term share, Latin share),
    returned on the raw scale with a placeholder threshold of 0.5."""
    mean, std = signals.mean(axis=0), signals.std(axis=0)
    std = np.where(std > 1e-9, std, 1.0)  # a constant signal (one language only) gets no weight
    weights = class_source_weights(positive, source)
    intercept, beta = logistic((signals - mean) / std, positive.astype(np.float64), weights / weights.sum(),
                               l2 / len(signals))  # fmt: skip
    beta = np.where(signals.std(axis=0) > 1e-9, beta / std, 0.0)
    cosine, term_share, latin = (round(float(v), 3) for v in beta)
    raw_intercept = round(float(intercept - (beta * mean).sum()), 3)
    return Calibration(intercept=raw_intercept, cosine=cosine, term_share=term_share, latin=latin, threshold=0.5)


def relevance(calibration: Calibration, signals: np.ndarray) -> np.ndarray:
    z = calibration.intercept + signals @ np.array([calibration.cosine, calibration.term_share, calibration.latin])
    return 1.0 / (1.0 + np.exp(-np.clip(z, -700, 700)))


def choose_threshold(right_answers: np.ndarray) -> float:
    """The largest grid threshold flagging at most `MAX_FLAGGED` of these right answers' relevance."""
    allowed = [t for t in GRID if len(right_answers) and (right_answers < t).mean() <= MAX_FLAGGED]
    return max(allowed) if allowed else GRID[0]


# ----------------------------------------------------------------------------- the build's fit
def title_sample(searcher: Searcher, cap: int, seed: int, fold: int = 0) -> np.ndarray:
    """Indexes of at most `cap` papers of title fold `fold`, drawn with `seed` (sorted)."""
    papers = np.flatnonzero([title_fold(p.arxiv_id) == fold for p in searcher.papers])
    if len(papers) <= cap:
        return papers
    return np.sort(np.random.default_rng(seed).choice(papers, size=cap, replace=False))


def title_block(
    searcher: Searcher,
    title_vectors: np.ndarray,
    papers: np.ndarray,
    corrections: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None,
) -> Block:
    """Title queries of `papers` (fold 0), bullets only, with `corrections` (default: those held
    out from fold 0). Leaves the searcher with those corrections: use a searcher of its own."""
    searcher.set_english_corrections(*(corrections or held_out_corrections(searcher, title_vectors, 0)))
    queries = [(searcher.papers[i].title.strip(), {int(i)}, "title") for i in papers]
    return collect(searcher, queries, [title_vectors[i] for i in papers], ("bullets",))


def tuning_block(searcher: Searcher, queries: Sequence[EvalQuery], vectors: Sequence[np.ndarray]) -> Block:
    """Tuning queries searched as users do (every field), with the searcher's own corrections."""
    position = {p.arxiv_id: i for i, p in enumerate(searcher.papers)}
    items = [(q.q, {position[i] for i in q.ids if i in position}, q.group) for q in queries]
    return collect(searcher, items, vectors, ALL_FIELDS)


class PrimedTokenizer(KoreanEnglishTokenizer):
    """A tokenizer that analyses known texts in one batch up front (Kiwi is several times faster
    per text in a batch) and answers them from memory; other texts go to `inner`."""

    def __init__(self, inner: KoreanEnglishTokenizer, texts: Sequence[str]) -> None:
        super().__init__()
        self._inner = inner
        unique = list(dict.fromkeys(texts))
        self._memo = dict(zip(unique, inner.tokenize_many(unique), strict=True))

    def stem(self, word: str) -> str:
        return self._inner.stem(word)

    def tokenize_many(self, texts: Sequence[str]) -> list[list[str]]:
        missing = [t for t in dict.fromkeys(texts) if t not in self._memo]
        found = dict(zip(missing, self._inner.tokenize_many(missing), strict=True)) if missing else {}
        return [list(self._memo[t]) if t in self._memo else found[t] for t in texts]


def answered(block: Block) -> int:
    """Queries with a right answer among their candidates."""
    return int(block.label.any(axis=1).sum())


def fit_learned(
    searcher: Searcher | None,
    title_vectors: np.ndarray,
    options: LearnOptions,
    inputs: dict[str, Any],
    tuning: Sequence[EvalQuery] = (),
    tuning_vectors: Sequence[np.ndarray] = (),
) -> LearnedModels:
    """Fit the fusion weights and the calibration on `searcher`'s index (a searcher of the version
    being built, used for nothing else: its English corrections are replaced).

    `title_vectors`: every paper's title embedded as a query (the build has them); `tuning`: the
    tuning queries with their vectors (none: no searcher is needed, and nothing is fitted);
    `inputs`: what identifies the fit (stored for refit checks).
    Without tuning queries nothing is fitted: titles are English only and search bullets only,
    and a fit on them alone measured no better than the code defaults (EVALUATION.md).
    """
    started = time.perf_counter()
    fitted_on: dict[str, Any] = {"inputs": inputs, "papers": len(title_vectors), "title_fold": options.title_fold,
                                 "seed": options.seed}  # fmt: skip
    if not tuning or searcher is None:
        note = "no tuning queries (--tuning-queries, RETRIEVAL_TUNING_QUERIES)"
        return LearnedModels(None, None, _stamp(fitted_on, started), note=note)
    fold = options.title_fold
    sample = title_sample(searcher, options.title_sample, options.seed, fold)
    rerank_sample = (
        title_sample(searcher, options.rerank_title_sample, options.seed, fold) if options.rerank else sample
    )
    titles = [searcher.papers[i].title.strip() for i in np.union1d(sample, rerank_sample)]
    searcher.tokenizer = PrimedTokenizer(searcher.tokenizer, [q.q for q in tuning] + titles)
    live = searcher.english_corrections  # title_block replaces them
    with ThreadPoolExecutor(max_workers=1) as worker:  # FAISS releases the GIL: overlap with the tuning queries
        corrections = worker.submit(held_out_corrections, searcher, title_vectors, fold)
        blocks = {"tuning": tuning_block(searcher, tuning, tuning_vectors)}  # with the searcher's own corrections
        blocks["title"] = title_block(searcher, title_vectors, sample, corrections.result())
    counts = {name: answered(block) for name, block in blocks.items()}
    fitted_on |= {"title_queries": len(sample), "tuning_queries": len(tuning), "answered": counts}
    if sum(counts.values()) < options.min_queries or not counts["tuning"]:
        note = (f"{counts['tuning']} tuning and {counts['title']} title queries have their answer among the "
                f"candidates, fewer than {options.min_queries}")  # fmt: skip
        return LearnedModels(None, None, _stamp(fitted_on, started), note=note)
    coef = fit_fusion(list(blocks.values()))
    fusion = coef_weights(coef) if coef[0] > 1e-6 else None  # the weights are scaled by the best-bullet one
    note = "" if fusion is not None else "the best-bullet leg got no positive weight: fusion not kept"
    calibration = calibration_of_blocks(blocks, coef if fusion is not None else settings_coef(HAND_TUNED))
    reranker = None
    if options.rerank:
        rerank_started = time.perf_counter()
        served = search_settings(LearnedModels(fusion, None), searcher.settings)
        reranker = fit_rerank(searcher, served, rerank_sample, title_vectors, corrections.result(), live, tuning,
                              tuning_vectors)  # fmt: skip
        fitted_on |= {"rerank_title_queries": len(rerank_sample), "rerank_seconds": _since(rerank_started)}
    return LearnedModels(fusion, calibration, _stamp(fitted_on, started), note=note, reranker=reranker)


# ----------------------------------------------------------------------------- the re-ranker
def tuning_weight(titles: int, tuning: int) -> int:
    """How many times each tuning query counts beside `titles` title queries: together about half
    as much as the titles (benchmarks/rerank.py: 10 beside 2,757 titles, 4 beside 1,000, 1 beside 300)."""
    return max(1, round(0.5 * titles / max(tuning, 1)))


def rerank_rows(searcher: Searcher, tables: PaperTables, queries: Sequence[TrainingQuery],
                vectors: Sequence[np.ndarray], fields: tuple[Field_, ...],
                depth: int = DEPTH) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """(x (queries, depth, features), label (queries, depth)): each query's first `depth` papers
    under the searcher's hybrid ranking with their re-ranker features (padded when fewer)."""
    width = min(depth, len(searcher.papers))
    xs, labels = [], []
    for (text, answers, _), vector in zip(queries, vectors, strict=True):
        query = searcher.query_legs(text, vector, fields)
        finite = np.flatnonzero(np.isfinite(query.fused))
        top = finite[np.lexsort((finite, -query.fused[finite]))][:width]
        x = np.zeros((width, len(FEATURES_RERANK)), dtype=np.float32)
        x[: len(top)] = candidate_features(searcher, tables, query, top, fields)
        label = np.zeros(width, dtype=bool)
        label[: len(top)] = np.isin(top, list(answers))
        xs.append(x)
        labels.append(label)
    if not xs:
        return np.zeros((0, width, len(FEATURES_RERANK)), np.float32), np.zeros((0, width), bool)
    return np.stack(xs), np.stack(labels)


def fit_rerank(searcher: Searcher, served: SearchSettings, sample: np.ndarray, title_vectors: np.ndarray,
               corrections: tuple[np.ndarray, np.ndarray, np.ndarray],
               live: tuple[np.ndarray, np.ndarray, np.ndarray], tuning: Sequence[EvalQuery],
               tuning_vectors: Sequence[np.ndarray]) -> Reranker | None:  # fmt: skip
    """The re-ranker fitted over the served ranking (`served`: the fitted fusion weights): the
    title sample of fold 0 with `corrections` (fitted on fold 1's titles) and the tuning queries
    with the searcher's own corrections (`live`). Leaves the searcher with `served` and `live`."""
    searcher.settings = served
    tables = PaperTables.of(searcher.papers)
    searcher.set_english_corrections(*corrections)
    titles = [(searcher.papers[i].title.strip(), {int(i)}, "title") for i in sample]
    title_rows = rerank_rows(searcher, tables, titles, [title_vectors[i] for i in sample], ("bullets",))
    searcher.set_english_corrections(*live)
    position = {p.arxiv_id: i for i, p in enumerate(searcher.papers)}
    items = [(q.q, {position[i] for i in q.ids if i in position}, q.group) for q in tuning]
    tuning_rows = rerank_rows(searcher, tables, items, tuning_vectors, ALL_FIELDS)
    return fit_reranker([(*title_rows, 1), (*tuning_rows, tuning_weight(len(sample), len(tuning)))])


def _stamp(fitted_on: dict[str, Any], started: float) -> dict[str, Any]:
    return {**fitted_on, "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "seconds": _since(started)}


def calibration_of_blocks(blocks: dict[str, Block], coef: np.ndarray) -> Calibration:
    """The calibration fitted on each block's top 10 under `coef` (every block a source; the
    threshold from the "tuning" block's right answers)."""
    parts = {name: top_hits(block, coef) for name, block in blocks.items()}
    signals = np.concatenate([p[0] for p in parts.values()])
    positive = np.concatenate([p[1] for p in parts.values()])
    source = np.concatenate([np.full(len(p[0]), name) for name, p in parts.items()])
    fitted = fit_calibration(signals, positive, source)
    tuning_signals, tuning_positive, _ = parts["tuning"]  # the threshold rule is about readers' queries
    threshold = choose_threshold(relevance(fitted, tuning_signals[tuning_positive]))
    return Calibration(fitted.intercept, fitted.cosine, fitted.term_share, fitted.latin, threshold)


def _since(started: float) -> float:
    return round(time.perf_counter() - started, 3)
