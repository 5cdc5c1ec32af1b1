#!/usr/bin/env python3
"""Lever: a learned second-stage re-ranker (LambdaRank / GBDT) over the default ranking's top N.

    python benchmarks/rerank.py --index /tmp/rerank-idx --features /tmp/rerank/features.npz
    python benchmarks/rerank.py --index /tmp/rerank-idx --features /tmp/rerank/features.npz --test VARIANT

The first command collects (once, cached in `--features`) each query's top `DEPTH` papers under
the index's default ranking with a feature row per (query, candidate), fits every variant on the
training queries and prints title fold 1 and dev (cross-validated) figures next to the default
ranking on exactly the same queries. `--test VARIANT` (repeatable) also scores
benchmarks/queries/test.jsonl with the named finished variants, overall and per language.

Honesty (as retrieval/training.py and `evaluation.evaluate_title_task`): the title queries of
fold f are searched bullets only with the query map and hub scores fitted on the other fold's
titles, so no title query sees its own title; the candidates' hub scores come from those
corrections too. `summary_ranks` (how far a paper's summary is from its *own* title) is not a
feature: for a title query it is computed from the query itself. Training: title fold 0 and
retrieval/data/dev.jsonl; held out: title fold 1 and test. Dev figures are 6-fold
cross-validated (each dev fold scored by a model fitted on fold 0 and the other five).

Features per candidate (`retrieval/rerank.py`, the one definition the build and the searcher
use too): every leg's z-score (what `_fuse` adds), raw score and rank in the leg; the fused score,
its rank and gap to the top; the query's Latin share, word count, colon, name-likeness; the
candidate's era, bullet count and hub score; lexical coverage that BM25 sums away (IDF-weighted
share of the query's terms and of its Latin stems found in the summary, the short name or
name-like words found in the summary, numbers matched, the best single bullet's BM25 against the
summary's) and the bullets' corrected cosines (second best, mean, the uncorrected best). The
LightGBM settings are `rerank.PARAMS` with the variant's number of trees (the product: 100).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from title_misses import cached_vectors  # noqa: E402  (titles embedded through the index's cache)

from retrieval import rerank  # noqa: E402
from retrieval.evaluation import held_out_corrections, load_query_file, title_fold, warm_query_vectors  # noqa: E402
from retrieval.learned import DEV_QUERIES  # noqa: E402
from retrieval.rerank import PaperTables, candidate_features  # noqa: E402
from retrieval.search import ALL_FIELDS, Field_, Searcher  # noqa: E402
from retrieval.service import open_searcher  # noqa: E402
from retrieval.training import summary  # noqa: E402  (R@1, R@10, MRR@10 of ranks)

ROOT = Path(__file__).resolve().parents[1]
QUERIES = ROOT / "benchmarks" / "queries"
DEPTH = rerank.DEPTH  # candidates collected per query; N = 30 uses the first 30 of them
CV_FOLDS = 6
FEATURES = rerank.FEATURES
# Feature groups for the variants ("legs" is what the linear fusion already sees, in other forms).
GROUPS = {
    "legs": rerank.LEG_FEATURES + rerank.FUSED_FEATURES,
    "query": rerank.QUERY_FEATURES,
    "paper": rerank.PAPER_FEATURES,
    "lexical": rerank.LEXICAL_FEATURES,
    "cosine": rerank.COSINE_FEATURES,
}


@dataclass
class Candidates:
    """One query's top candidates (paper indexes, default order) and their feature rows."""

    top: np.ndarray
    x: np.ndarray  # (len(top), len(FEATURES)) float32
    seconds_search: float  # legs + fusion (what the default ranking costs anyway)
    seconds_features: float  # the features on top


def candidates_of(searcher: Searcher, tables: PaperTables, text: str, qvec: np.ndarray,
                  fields: tuple[Field_, ...], depth: int = DEPTH) -> Candidates:  # fmt: skip
    """The query's top `depth` papers under the searcher's default hybrid ranking (as `search`
    ranks them: legs, fusion, exact-name boost, ties by paper order) and their features."""
    started = time.perf_counter()
    query = searcher.query_legs(text, qvec, fields)
    finite = np.flatnonzero(np.isfinite(query.fused))
    top = finite[np.lexsort((finite, -query.fused[finite]))][:depth]
    searched = time.perf_counter()
    x = candidate_features(searcher, tables, query, top, fields)
    return Candidates(top, x, searched - started, time.perf_counter() - searched)


# ----------------------------------------------------------------------------- collecting the query sets
@dataclass
class Block:
    """Candidates of a query set: x (queries, DEPTH, features), label (queries, DEPTH), group per
    query, per query the seconds of the default ranking and of the features, and the candidates'
    paper indexes (queries, DEPTH)."""

    x: np.ndarray
    label: np.ndarray
    group: np.ndarray
    seconds_search: np.ndarray
    seconds_features: np.ndarray
    top: np.ndarray

    def subset(self, keep: np.ndarray) -> Block:
        return Block(self.x[keep], self.label[keep], self.group[keep], self.seconds_search[keep],
                     self.seconds_features[keep], self.top[keep])  # fmt: skip


FieldsT = tuple[Field_, ...]
BLOCK_FIELDS = ("x", "label", "group", "seconds_search", "seconds_features", "top")


def collect(searcher: Searcher, tables: PaperTables, queries: Sequence[tuple[str, set[int], str]],
            vectors: Sequence[np.ndarray], fields: FieldsT, label: str) -> Block:  # fmt: skip
    xs, labels, groups, t_search, t_features, tops = [], [], [], [], [], []
    for number, ((text, answers, group), vector) in enumerate(zip(queries, vectors, strict=True), start=1):
        c = candidates_of(searcher, tables, text, vector, fields)
        xs.append(c.x)
        labels.append(np.isin(c.top, list(answers)))
        groups.append(group)
        t_search.append(c.seconds_search)
        t_features.append(c.seconds_features)
        tops.append(c.top)
        if number % 500 == 0:
            print(f"{label}: {number} of {len(queries)} queries", file=sys.stderr, flush=True)
    return Block(np.stack(xs), np.stack(labels), np.array(groups, dtype=str), np.array(t_search),
                 np.array(t_features), np.stack(tops))  # fmt: skip


def title_blocks(searcher: Searcher, tables: PaperTables) -> dict[str, Block]:
    """Title folds 0 and 1, bullets only, each with the corrections fitted on the other fold's titles."""
    titles = [p.title.strip() for p in searcher.papers]
    pool = cached_vectors(searcher, titles, as_queries=True)
    folds = np.array([title_fold(p.arxiv_id) for p in searcher.papers])
    live = searcher.english_corrections
    blocks: dict[str, Block] = {}
    try:
        for fold in (0, 1):
            searcher.set_english_corrections(*held_out_corrections(searcher, pool, fold))
            chosen = np.flatnonzero(folds == fold)
            queries = [(titles[i], {int(i)}, "title") for i in chosen]
            blocks[f"title{fold}"] = collect(searcher, tables, queries, [pool[i] for i in chosen], ("bullets",),
                                             f"title fold {fold}")  # fmt: skip
    finally:
        searcher.set_english_corrections(*live)
    return blocks


def file_block(searcher: Searcher, tables: PaperTables, path: Path) -> Block:
    """A query file searched as users do (every field), with the index's own corrections."""
    by_id = {p.arxiv_id: i for i, p in enumerate(searcher.papers)}
    loaded = load_query_file(path)
    vectors = warm_query_vectors(searcher, [q.q for q in loaded], "hybrid")
    queries = [(q.q, {by_id[i] for i in q.ids if i in by_id}, q.group) for q in loaded]
    return collect(searcher, tables, queries, [vectors[q.q] for q in loaded], ALL_FIELDS, path.name)


def save(path: Path, blocks: dict[str, Block], paper_fold: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    arrays = {f"{n}.{f}": getattr(b, f) for n, b in blocks.items() for f in BLOCK_FIELDS}
    np.savez(path, features=np.array(FEATURES), paper_fold=paper_fold, **arrays)


def load(path: Path) -> tuple[dict[str, Block], np.ndarray]:
    """The cached blocks and every paper's title fold."""
    data = np.load(path, allow_pickle=False)
    if list(data["features"]) != FEATURES:
        raise SystemExit(f"{path} holds other features than this script computes; delete it to recollect")
    names = {k.split(".")[0] for k in data.files if "." in k}
    return {n: Block(*(data[f"{n}.{f}"] for f in BLOCK_FIELDS)) for n in names}, data["paper_fold"]


# ----------------------------------------------------------------------------- models
@dataclass(frozen=True)
class Variant:
    name: str
    model: str  # lambdarank | binary (LightGBM pointwise) | hgb (scikit-learn pointwise) | linear
    depth: int  # N: candidates re-ranked
    groups: tuple[str, ...]  # feature groups (GROUPS)
    dev_weight: int = 10  # each dev query counts this many times (126 dev against 2,757 titles)
    trees: int = 300
    titles: int | None = None  # a seeded sample of this many fold-0 titles (None: all), as a build would use
    min_latin: float = 0.0  # queries with a smaller share of Latin letters keep the default order (the product: 0.8)
    seeds: int = 1  # a bag of this many LambdaRank models (random_state 0..seeds-1), scores averaged
    relative: str = ""  # list-relative copies of the raw features (RELATIVE): "max", "rank", "mean" (measured, dropped)

    @property
    def columns(self) -> list[int]:
        return [FEATURES.index(f) for g in self.groups for f in GROUPS[g]]

    def rows(self, x: np.ndarray) -> np.ndarray:
        """(queries, N, features) of this variant from the collected (queries, >= N, FEATURES)."""
        x = x[:, : self.depth]
        chosen = [x[:, :, self.columns]]
        raw = x[:, :, [FEATURES.index(f) for f in RELATIVE]]
        if "max" in self.relative:  # how far below the list's best candidate
            chosen.append(raw - raw.max(axis=1, keepdims=True))
        if "rank" in self.relative:  # the candidate's rank in the list by that feature
            chosen.append(np.log1p(np.argsort(np.argsort(-raw, axis=1), axis=1)).astype(np.float32))
        if "mean" in self.relative:  # against the mean of the list's first 10
            chosen.append(raw - raw[:, :10].mean(axis=1, keepdims=True))
        return np.concatenate(chosen, axis=2)


ALL = ("legs", "query", "paper", "lexical", "cosine")
# Features whose raw value means different things from query to query (a list-relative copy may help).
RELATIVE = [f for f in FEATURES if f.endswith(":raw")] + rerank.LEXICAL_FEATURES + rerank.COSINE_FEATURES
VARIANTS = [
    Variant("rank-all-50", "lambdarank", 50, ALL),
    Variant("rank-all-30", "lambdarank", 30, ALL),
    Variant("rank-all-50-dev1", "lambdarank", 50, ALL, dev_weight=1),
    Variant("rank-all-50-dev22", "lambdarank", 50, ALL, dev_weight=22),
    Variant("rank-legs-50", "lambdarank", 50, ("legs", "query")),
    Variant("rank-legs+lexical-50", "lambdarank", 50, ("legs", "query", "lexical")),
    Variant("rank-legs+cosine-50", "lambdarank", 50, ("legs", "query", "cosine")),
    Variant("rank-all-50-100trees", "lambdarank", 50, ALL, trees=100),
    Variant("binary-all-50", "binary", 50, ALL),
    Variant("hgb-all-50", "hgb", 50, ALL),
    Variant("linear-all-50", "linear", 50, ALL),
    Variant("rank-all-50-t300", "lambdarank", 50, ALL, titles=300, dev_weight=1),
    Variant("rank-all-50-t1000", "lambdarank", 50, ALL, titles=1000, dev_weight=4),
    Variant("rank-all-50-100trees-t1000", "lambdarank", 50, ALL, trees=100, titles=1000, dev_weight=4),
    Variant("rank-all-50-100trees-t300", "lambdarank", 50, ALL, trees=100, titles=300, dev_weight=1),
    Variant("rank-all-50-100trees-latin0.5", "lambdarank", 50, ALL, trees=100, min_latin=0.5),
    Variant("rank-all-50-100trees-latin0.8", "lambdarank", 50, ALL, trees=100, min_latin=0.8),
    Variant("rank-all-50-100trees-bag5", "lambdarank", 50, ALL, trees=100, seeds=5),
    Variant("rank-all-50-100trees-rel-max", "lambdarank", 50, ALL, trees=100, relative="max"),
    Variant("rank-all-50-100trees-rel-rank", "lambdarank", 50, ALL, trees=100, relative="rank"),
    Variant("rank-all-50-100trees-rel-mean", "lambdarank", 50, ALL, trees=100, relative="mean"),
]
BY_NAME = {v.name: v for v in VARIANTS}

Scorer = Callable[[np.ndarray], np.ndarray]


def training_rows(blocks: Sequence[tuple[Block, int]], variant: Variant) -> tuple[np.ndarray, np.ndarray, list[int]]:
    """Stacked rows of every query with an answer among its first N candidates, each block's
    queries repeated by its weight; with the group sizes (all N)."""
    xs, ys = [], []
    for block, weight in blocks:
        keep = block.label[:, : variant.depth].any(axis=1)
        x = variant.rows(block.x[keep])
        y = block.label[keep, : variant.depth]
        xs += [x] * weight
        ys += [y] * weight
    x, y = np.concatenate(xs), np.concatenate(ys)
    return x.reshape(-1, x.shape[2]), y.reshape(-1).astype(np.int32), [variant.depth] * len(x)


def titles_of(variant: Variant, title0: Block) -> Block:
    """Title fold 0, or the variant's seeded sample of it."""
    if variant.titles is None or variant.titles >= len(title0.label):
        return title0
    keep = np.sort(np.random.default_rng(0).choice(len(title0.label), size=variant.titles, replace=False))
    return title0.subset(keep)


def fit(variant: Variant, blocks: Sequence[tuple[Block, int]]) -> Scorer:
    """The variant's model fitted on these (block, weight) pairs; returns rows -> scores."""
    x, y, groups = training_rows(blocks, variant)
    if variant.model in ("lambdarank", "binary"):
        import lightgbm as lgb

        params = {**rerank.PARAMS, "n_estimators": variant.trees}  # the product's settings (retrieval/rerank.py)
        if variant.model == "lambdarank":
            bag = [lgb.LGBMRanker(**{**params, "random_state": seed}) for seed in range(variant.seeds)]
            for ranker in bag:
                ranker.fit(x, y, group=groups)
            return lambda rows: np.mean([r.booster_.predict(rows, num_threads=1) for r in bag], axis=0)
        del params["objective"], params["lambdarank_truncation_level"]
        classifier = lgb.LGBMClassifier(objective="binary", **params)
        classifier.fit(x, y)
        return lambda rows: classifier.booster_.predict(rows, raw_score=True, num_threads=1)
    if variant.model == "hgb":
        from sklearn.ensemble import HistGradientBoostingClassifier

        hgb = HistGradientBoostingClassifier(max_iter=variant.trees, learning_rate=0.05, max_leaf_nodes=15,
                                             min_samples_leaf=50, l2_regularization=1.0, random_state=0)  # fmt: skip
        hgb.fit(x, y)
        return lambda rows: hgb.decision_function(rows)
    from retrieval.training import logistic

    mean, std = x.mean(axis=0), x.std(axis=0) + 1e-9
    _, beta = logistic((x - mean) / std, y.astype(np.float64), np.full(len(x), 1.0 / len(x)), 1e-3)
    return lambda rows: ((rows - mean) / std) @ beta


def reranked_order(block: Block, variant: Variant, scorer: Scorer) -> np.ndarray:
    """(queries, N): the positions of the first N candidates in their new order (ties keep the default)."""
    x = variant.rows(block.x)
    scores = scorer(x.reshape(-1, x.shape[2])).reshape(len(x), variant.depth)
    order = np.argsort(-scores, axis=1, kind="stable")
    kept = block.x[:, 0, FEATURES.index("q_latin")] < variant.min_latin
    order[kept] = np.arange(variant.depth)
    return order


def order_ranks(label: np.ndarray, order: np.ndarray) -> np.ndarray:
    """1-based rank of the first answer in each query's `order` of its candidates (inf: none)."""
    hits = [np.flatnonzero(row[o]) for row, o in zip(label, order, strict=True)]
    return np.array([1.0 + h[0] if len(h) else np.inf for h in hits])


def reranked_ranks(block: Block, variant: Variant, scorer: Scorer) -> np.ndarray:
    """1-based rank of the first answer after re-ranking the first N candidates (inf: not among them)."""
    return order_ranks(block.label[:, : variant.depth], reranked_order(block, variant, scorer))


def same_fold_share(block: Block, order: np.ndarray, paper_fold: np.ndarray, fold: int, k: int = 10) -> float:
    """Share of the top-k papers (answers left out) from the queries' own title fold.

    The query map and hub scores of fold f's queries are fitted on the other fold's titles, so
    those papers are the map's training targets; a re-ranker that learns to tell the targets
    apart (a fold artifact the product does not have) moves this share."""
    rows = np.arange(len(order))[:, None]
    top = block.top[rows, order[:, :k]]
    wrong = ~block.label[rows, order[:, :k]]
    return float((paper_fold[top][wrong] == fold).mean())


def default_ranks(block: Block) -> np.ndarray:
    hits = [np.flatnonzero(row) for row in block.label]
    return np.array([1.0 + h[0] if len(h) else np.inf for h in hits])


def inner_half_a(count: int) -> np.ndarray:
    """The seeded half A of `count` fold-0 titles (a mask; half B is the rest): `--inner` fits on
    A and scores B, so tuning leaves fold 1 alone (benchmarks/title_translation.py scores B too)."""
    return np.random.default_rng(1).permutation(count) % 2 == 0


def fmt(r: np.ndarray) -> str:
    return " / ".join(f"{v:.3f}" for v in summary(r))


def by_lang(block: Block, r: np.ndarray) -> str:
    return " / ".join(f"{summary(r[block.group == g])[2]:.3f}" for g in ("en", "ko", "mixed"))


def cross_validated(variant: Variant, title0: Block, dev: Block) -> np.ndarray:
    """Dev ranks, each dev fold scored by a model fitted on title fold 0 and the other dev folds."""
    fold_of = np.arange(len(dev.label)) % CV_FOLDS
    out = np.zeros(len(dev.label))
    for k in range(CV_FOLDS):
        held = fold_of == k
        scorer = fit(variant, [(titles_of(variant, title0), 1), (dev.subset(~held), variant.dev_weight)])
        out[held] = reranked_ranks(dev.subset(held), variant, scorer)
    return out


def scoring_ms(variant: Variant, scorer: Scorer, block: Block, queries: int = 200) -> float:
    """Milliseconds to score one query's N candidates (one call per query, as a searcher would)."""
    rows = variant.rows(block.x[:queries])
    started = time.perf_counter()
    for x in rows:
        scorer(x)
    return 1000 * (time.perf_counter() - started) / len(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--index", type=Path, required=True)
    parser.add_argument("--features", type=Path, required=True, help="cache of the candidates' features (.npz)")
    parser.add_argument("--variant", action="append", choices=sorted(BY_NAME), help="only these variants")
    parser.add_argument("--no-cv", action="store_true", help="skip the dev cross-validation")
    parser.add_argument(
        "--inner",
        action="store_true",
        help="tuning without touching fold 1: fit on a seeded half of fold 0 (and dev), score the other half",
    )
    parser.add_argument(
        "--test",
        action="append",
        choices=sorted(BY_NAME),
        default=[],
        help="score test.jsonl with this finished variant (fitted on all training data)",
    )
    args = parser.parse_args(argv)
    if args.features.exists():
        blocks, paper_fold = load(args.features)
    else:
        searcher = open_searcher(args.index)
        from retrieval.training import PrimedTokenizer

        texts = [p.title.strip() for p in searcher.papers]
        texts += [q.q for path in (DEV_QUERIES, QUERIES / "test.jsonl") for q in load_query_file(path)]
        searcher.tokenizer = PrimedTokenizer(searcher.tokenizer, texts)
        tables = PaperTables.of(searcher.papers)
        blocks = title_blocks(searcher, tables)
        blocks["dev"] = file_block(searcher, tables, DEV_QUERIES)
        blocks["test"] = file_block(searcher, tables, QUERIES / "test.jsonl")  # scored only with --test
        paper_fold = np.array([title_fold(p.arxiv_id) for p in searcher.papers])
        save(args.features, blocks, paper_fold)
    t0, t1, dev = blocks["title0"], blocks["title1"], blocks["dev"]
    held_name, held_fold = "title fold 1", 1
    if args.inner:  # the "fold 1" column becomes the held-out half of fold 0; the dev weight halves with it
        half = inner_half_a(len(t0.label))
        t0, t1, held_name, held_fold = t0.subset(half), t0.subset(~half), "fold 0, inner half B", 0
        VARIANTS[:] = [v if v.titles else replace(v, dev_weight=max(1, v.dev_weight // 2)) for v in VARIANTS]
        BY_NAME.update({v.name: v for v in VARIANTS})
    for name, block in blocks.items():
        among = f"{block.label[:, :30].any(axis=1).mean():.3f} / {block.label.any(axis=1).mean():.3f}"
        print(f"{name}: {len(block.label)} queries; default ranking {1000 * np.median(block.seconds_search):.1f} ms, "
              f"features {1000 * np.median(block.seconds_features):.1f} ms (median per query); answer among the "
              f"top 30 / 50: {among}")  # fmt: skip
    print(f"\n| variant | {held_name} R@1 / R@10 / MRR@10 | dev (CV) R@1 / R@10 / MRR@10 | dev MRR en / ko / mixed "
          "| fit s | score ms/query | fold-1 top 10: same-fold share |\n|---|---|---|---|---:|---:|---:|")  # fmt: skip
    identity = np.broadcast_to(np.arange(DEPTH), t1.top.shape)
    share = same_fold_share(t1, identity, paper_fold, held_fold)
    print(f"| default ranking | {fmt(default_ranks(t1))} | {fmt(default_ranks(dev))} | "
          f"{by_lang(dev, default_ranks(dev))} | | | {share:.3f} |")  # fmt: skip
    chosen = [BY_NAME[n] for n in args.variant] if args.variant else VARIANTS
    for variant in chosen:
        started = time.perf_counter()
        scorer = fit(variant, [(titles_of(variant, t0), 1), (dev, variant.dev_weight)])
        seconds = time.perf_counter() - started
        order = reranked_order(t1, variant, scorer)
        r1 = order_ranks(t1.label[:, : variant.depth], order)
        share = same_fold_share(t1, order, paper_fold, held_fold)
        cv = cross_validated(variant, t0, dev) if not args.no_cv else None
        dev_cells = f"{fmt(cv)} | {by_lang(dev, cv)}" if cv is not None else "not run | "
        cost = scoring_ms(variant, scorer, t1)
        print(f"| {variant.name} | {fmt(r1)} | {dev_cells} | {seconds:.1f} | {cost:.2f} | {share:.3f} |", flush=True)
    if args.test:
        test = blocks["test"]
        base = default_ranks(test)
        print(f"\ntest ({len(test.label)} queries) R@1 / R@10 / MRR@10 | MRR en / ko / mixed")
        print(f"default ranking: {fmt(base)} | {by_lang(test, base)}")
        for name in args.test:
            variant = BY_NAME[name]
            r = reranked_ranks(test, variant, fit(variant, [(titles_of(variant, t0), 1), (dev, variant.dev_weight)]))
            print(f"{name}: {fmt(r)} | {by_lang(test, r)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
