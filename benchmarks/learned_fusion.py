#!/usr/bin/env python3
"""Lever: learned fusion weights (logistic regression) instead of the hand-tuned ones.

    python benchmarks/learned_fusion.py --index /tmp/levers-idx --features /tmp/levers/features.npz --c 1
    python benchmarks/learned_fusion.py --index /tmp/levers-idx --features /tmp/levers/features.npz --c 1 --test

The first command fits the fusion weights on the whole title fold 0 (it prints them, "as
SearchSettings", scaled so that weight_dense_max is 1) and measures them against the hand-tuned
weights and the code defaults; `--test` also scores benchmarks/queries/test.jsonl (run it once,
for the final model only). `--length` adds query-length interactions (measured, not kept). The
features are cached in `--features` (delete it after the index or the legs change). The served
weights are fitted by `retrieval build-index --tuning-queries ...` and stored in the index
(retrieval/learned.py); the features, the model and its fit are retrieval/training.py's, which
this script imports, so the lever and the build measure the same thing.

Candidates: each query's top 50 papers under the hand-tuned weights (`HAND_TUNED`). Per
candidate: the per-query standardised score of every leg (dense best bullet, dense centroid,
dense title, BM25 summary, BM25 title/authors; legs a query does not search are 0), exactly as
`Searcher._fuse` adds them. The model is linear in the legs, each bullet leg's weight going
linearly with the query's Latin share `e` (a per-language scaling of the existing weights, which
`SearchSettings` holds as a Korean and an `_english` weight); the title legs get one weight each
and are seen only in the dev queries (the title task searches bullets only). Fitted pointwise
("is this the right paper") by an L2 logistic regression (Newton's method, the optimum of
scikit-learn's), the title and dev sources weighing the same; a listwise variant (softmax per
query) is printed for comparison.

Training: title task fold 0 (`evaluation.title_fold == 0`, bullets only, English corrections
fitted on fold 1) + every dev query. Measured: title fold 1 (corrections fitted on fold 0) and
dev by 6-fold cross-validation (each dev fold scored by a model fitted on title fold 0 and the
other five). Scores re-rank the 50 candidates only; `retrieval eval` gives the product's figures.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from title_misses import cached_vectors  # noqa: E402  (titles embedded through the index's cache)

from retrieval.evaluation import held_out_corrections, load_query_file, title_fold, warm_query_vectors  # noqa: E402
from retrieval.learned import DEV_QUERIES  # noqa: E402
from retrieval.search import Searcher, SearchSettings  # noqa: E402
from retrieval.service import open_searcher  # noqa: E402
from retrieval.training import (  # noqa: E402  (the one definition of the features and the fit)
    FEATURES,
    HAND_TUNED,
    LEGS,
    TOP,
    Block,
    coef_weights,
    collect,
    fit_fusion,
    logistic,
    rank_scores,
    settings_coef,
    summary,
)
from retrieval.training import design as base_design  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
QUERIES = ROOT / "benchmarks" / "queries"
CV_FOLDS = 6
__all__ = ["LEGS", "TOP", "Block", "settings_coef", "summary"]  # used by tests/test_learned_fusion.py


def coef_settings(coef: np.ndarray) -> str:
    """The `SearchSettings` fields of fitted coefficients, scaled so that weight_dense_max is 1."""
    return ", ".join(f"{n}={v:.3f}" for n, v in sorted(coef_weights(coef).items()))


def title_blocks(searcher: Searcher) -> dict[int, Block]:
    papers = searcher.papers
    titles = [p.title.strip() for p in papers]
    pool = cached_vectors(searcher, titles, as_queries=True)
    vectors = dict(zip(titles, pool, strict=True))
    folds = np.array([title_fold(p.arxiv_id) for p in papers])
    live = searcher.english_corrections
    blocks: dict[int, Block] = {}
    try:
        for fold in (0, 1):
            searcher.set_english_corrections(*held_out_corrections(searcher, pool, fold))
            queries = [(titles[i], {int(i)}, "title") for i in np.flatnonzero(folds == fold)]
            blocks[fold] = collect(searcher, queries, [vectors[q] for q, _, _ in queries], ("bullets",), False)
            print(f"title fold {fold}: {len(queries)} queries", file=sys.stderr, flush=True)
    finally:
        searcher.set_english_corrections(*live)
    return blocks


def file_block(searcher: Searcher, path: Path) -> Block:
    by_id = {p.arxiv_id: i for i, p in enumerate(searcher.papers)}
    loaded = load_query_file(path)
    vectors = warm_query_vectors(searcher, [q.q for q in loaded], "hybrid")
    queries = [(q.q, {by_id[i] for i in q.ids if i in by_id}, q.group) for q in loaded]
    return collect(searcher, queries, [vectors[q] for q, _, _ in queries], ("bullets", "title"), False)


# ----------------------------------------------------------------------------- model
LENGTH_FEATURES = ["max*len", "centroid*len", "lex_paper*len"]
WITH_LENGTH = False


def design(block: Block) -> np.ndarray:
    """The package's features (retrieval/training.py); with `WITH_LENGTH`, also the bullet legs
    times log(query words / 8)."""
    parts = [base_design(block)]
    if WITH_LENGTH:
        bullet = block.z[:, :, [0, 1, 3]]
        parts.append(bullet * np.log(np.maximum(block.words, 1) / 8.0)[:, None, None])
    return np.concatenate(parts, axis=2)


def width() -> int:
    return len(FEATURES) + (len(LENGTH_FEATURES) if WITH_LENGTH else 0)


def fit(blocks: list[Block], c: float) -> np.ndarray:
    """The package's fit (`training.fit_fusion`); with `WITH_LENGTH`, the same fit over the longer design."""
    if not WITH_LENGTH:
        return fit_fusion(blocks, c)
    xs = [design(b).reshape(-1, width()) for b in blocks]
    ws = [np.full(len(x), 1.0 / len(x)) for x in xs]
    x, y, w = np.concatenate(xs), np.concatenate([b.label.reshape(-1) for b in blocks]), np.concatenate(ws)
    return logistic(x, y.astype(np.float64), w * len(x) / len(blocks), 1.0 / c)[1]


def fit_listwise(blocks: list[Block], c: float) -> np.ndarray:
    """Conditional logit: per query, a softmax over its candidates, maximising the answers' share;
    L2 penalty |w|^2 / (2 c); each block weighs the same. Queries with no answer among the
    candidates are left out."""
    from scipy.optimize import minimize

    parts = []
    for block in blocks:
        keep = block.label.any(axis=1)
        parts.append((design(block)[keep], block.label[keep], 1.0 / max(1, int(keep.sum()))))

    def loss(w: np.ndarray) -> tuple[float, np.ndarray]:
        total, grad = float(w @ w) / (2 * c), w / c
        for x, y, weight in parts:
            s = x @ w
            s -= s.max(axis=1, keepdims=True)
            p = np.exp(s)
            p /= p.sum(axis=1, keepdims=True)
            answer = (p * y).sum(axis=1)
            total -= weight * float(np.log(answer).sum())
            target = p * y / answer[:, None]
            grad += weight * np.einsum("qk,qkf->f", p - target, x)
        return total / len(parts), grad / len(parts)

    return minimize(loss, np.ones(width()), jac=True, method="L-BFGS-B").x


def ranks(block: Block, coef: np.ndarray) -> np.ndarray:
    """`training.ranks` over this script's design (longer with `WITH_LENGTH`)."""
    return rank_scores(design(block) @ coef, block.label)


def coefficients(s: SearchSettings) -> np.ndarray:
    """`training.settings_coef`, padded with zeros for the length features."""
    coef = settings_coef(s)
    return np.concatenate([coef, np.zeros(width() - len(coef))])


def feature_names() -> list[str]:
    return [*FEATURES, *(LENGTH_FEATURES if WITH_LENGTH else [])]


def by_group(block: Block, r: np.ndarray) -> str:
    parts = [f"all {summary(r)[2]:.3f}"]
    for g in sorted(set(block.group)):
        parts.append(f"{g} {summary(r[block.group == g])[2]:.3f}")
    return ", ".join(parts)


def subset(block: Block, keep: np.ndarray) -> Block:
    return Block(block.z[keep], block.label[keep], block.english[keep], block.words[keep], block.group[keep])


def save(path: Path, blocks: dict[str, Block]) -> None:
    arrays = {f"{n}.{f}": getattr(b, f) for n, b in blocks.items() for f in ("z", "label", "english", "words", "group")}
    np.savez(path, **arrays)  # (the package's Block also has signals: not needed here)


def load(path: Path) -> dict[str, Block]:
    data = np.load(path, allow_pickle=False)
    names = {k.split(".")[0] for k in data.files}
    return {n: Block(*(data[f"{n}.{f}"] for f in ("z", "label", "english", "words", "group"))) for n in names}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--index", type=Path, required=True)
    parser.add_argument("--features", type=Path, required=True, help="cache of the candidates' features (.npz)")
    parser.add_argument("--c", type=float, action="append", help="inverse L2 strength(s); default 1")
    parser.add_argument("--test", action="store_true", help="score test.jsonl once with the model fitted on all")
    parser.add_argument("--length", action="store_true", help="add the query-length interactions")
    args = parser.parse_args(argv)
    global WITH_LENGTH
    WITH_LENGTH = args.length
    searcher = open_searcher(args.index)
    defaults = SearchSettings()  # the code defaults (the index's learned weights are scored by `retrieval eval`)
    searcher.settings = replace(searcher.settings, **{f: getattr(HAND_TUNED, f) for f in HAND_TUNED.__dataclass_fields__
                                                      if f.startswith("weight_") and f != "weight_name"})  # fmt: skip
    if args.features.exists():
        blocks = load(args.features)
    else:
        titles = title_blocks(searcher)
        blocks = {"title0": titles[0], "title1": titles[1], "dev": file_block(searcher, DEV_QUERIES)}
        save(args.features, blocks)
    base = coefficients(HAND_TUNED)
    t0, t1, dev = blocks["title0"], blocks["title1"], blocks["dev"]
    print("| model | title fold 1 R@1 / R@10 / MRR@10 | dev MRR@10 (cross-validated) |\n|---|---|---|")
    r1 = ranks(t1, base)
    print(f"| hand-tuned weights | {' / '.join(f'{v:.3f}' for v in summary(r1))} | {by_group(dev, ranks(dev, base))} |")
    stored = coefficients(defaults)
    stored_title = " / ".join(f"{v:.3f}" for v in summary(ranks(t1, stored)))
    print(f"| SearchSettings defaults (trained on dev) | {stored_title} | {by_group(dev, ranks(dev, stored))} |")
    fold_of = np.arange(len(dev.z)) % CV_FOLDS
    fitters = {"logistic": fit, "listwise": fit_listwise}
    for (kind, fitter), c in ((f, c) for f in fitters.items() for c in args.c or [1.0]):
        coef = fitter([t0, dev], c)
        r1 = ranks(t1, coef)
        cv = np.zeros(len(dev.z))
        for k in range(CV_FOLDS):
            held = fold_of == k
            cv[held] = ranks(subset(dev, held), fitter([t0, subset(dev, ~held)], c))
        print(f"| {kind} C={c:g} | {' / '.join(f'{v:.3f}' for v in summary(r1))} | {by_group(dev, cv)} |")
        scaled = coef / coef[0]
        named = ", ".join(f"{n} {v:.3f}" for n, v in zip(feature_names(), scaled, strict=True))
        print(f"  coefficients / max-leg coefficient: {named}")
        if not WITH_LENGTH:
            print(f"  as SearchSettings: {coef_settings(coef)}")
    if args.test:
        test = file_block(searcher, QUERIES / "test.jsonl")
        coef = fit([t0, dev], (args.c or [1.0])[-1])
        print(f"test, hand-tuned weights: {by_group(test, ranks(test, base))}")
        print(f"test, logistic C={(args.c or [1.0])[-1]:g}: {by_group(test, ranks(test, coef))}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
