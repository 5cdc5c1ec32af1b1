#!/usr/bin/env python3
"""Lever: learned fusion weights (logistic regression) instead of the hand-tuned ones.

    python benchmarks/learned_fusion.py --index /tmp/levers-idx --features /tmp/levers/features.npz --c 1
    python benchmarks/learned_fusion.py --index /tmp/levers-idx --features /tmp/levers/features.npz --c 1 --test

The first command refits the `SearchSettings` fusion weights (it prints them, "as SearchSettings",
scaled so that weight_dense_max is 1) and measures them; `--test` also scores
benchmarks/queries/test.jsonl (run it once, for the final model only). `--length` adds query-length
interactions (measured, not kept). The features are cached in `--features` (delete it after the
index or the legs change).

Candidates: each query's top 50 papers under the hand-tuned weights (`HAND_TUNED`). Per
candidate: the per-query standardised score of every leg (dense best bullet, dense centroid,
dense title, BM25 summary, BM25 title/authors; legs a query does not search are 0), exactly as
`Searcher._fuse` adds them. The model is linear in the legs, each bullet leg's weight going
linearly with the query's Latin share `e` (a per-language scaling of the existing weights, which
`SearchSettings` holds as a Korean and an `_english` weight); the title legs get one weight each
and are seen only in the dev queries (the title task searches bullets only). Fitted pointwise
("is this the right paper") with scikit-learn's L2 logistic regression, the title and dev sources
weighing the same; a listwise variant (softmax per query) is printed for comparison.

Training: title task fold 0 (`evaluation.title_fold == 0`, bullets only, English corrections
fitted on fold 1) + every dev query. Measured: title fold 1 (corrections fitted on fold 0) and
dev by 6-fold cross-validation (each dev fold scored by a model fitted on title fold 0 and the
other five). Scores re-rank the 50 candidates only; `retrieval eval` gives the product's figures.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from retrieval.alignment import english_corrections  # noqa: E402
from retrieval.evaluation import load_query_file, title_fold, warm_query_vectors  # noqa: E402
from retrieval.hubness import latin_share  # noqa: E402
from retrieval.indexer import embed_with_cache  # noqa: E402
from retrieval.search import Searcher, SearchSettings, standardise  # noqa: E402
from retrieval.service import open_searcher  # noqa: E402
from retrieval.store import CACHE_FILE, EmbeddingCache  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
QUERIES = ROOT / "benchmarks" / "queries"
TOP = 50
LEGS = ("dense_max", "dense_centroid", "dense_title", "lexical_paper", "lexical_title")
CV_FOLDS = 6


@dataclass
class Block:
    """Candidates of a set of queries: z (queries, TOP, legs), label (queries, TOP), e, words, group."""

    z: np.ndarray
    label: np.ndarray
    english: np.ndarray
    words: np.ndarray
    group: np.ndarray


def leg_z(searcher: Searcher, text: str, qvec: np.ndarray, fields: tuple[str, ...]) -> np.ndarray:
    """(papers, legs) standardised leg scores as `Searcher._fuse` sees them (0 for legs not searched)."""
    english = latin_share(text)
    dense = searcher.dense_legs(qvec, english, fields)  # type: ignore[arg-type]
    lexical = searcher.lexical_legs(searcher.query_terms(text), english, fields)  # type: ignore[arg-type]
    out = np.zeros((len(searcher.papers), len(LEGS)), dtype=np.float32)
    for leg in dense + lexical:
        if np.isfinite(leg.scores).any():
            out[:, LEGS.index(LEG_FEATURE[leg.name])] = standardise(leg.scores, searcher.settings.z_depth)
    return out


# The searcher's leg names -> this script's feature names.
LEG_FEATURE = {
    "dense_best_bullet": "dense_max",
    "dense_centroid": "dense_centroid",
    "dense_title": "dense_title",
    "lexical_summary": "lexical_paper",
    "lexical_title": "lexical_title",
}


# The hand-tuned weights the lever replaces: candidates are drawn and the baseline is scored with them.
HAND_TUNED = SearchSettings(
    weight_dense_max=1.0, weight_dense_max_english=1.0, weight_dense_centroid=0.8, weight_dense_centroid_english=0.8,
    weight_dense_title=0.3, weight_lexical_paper=1.2, weight_lexical_paper_english=0.6, weight_lexical_title=0.3,
)  # fmt: skip


def settings_coef(s: SearchSettings) -> np.ndarray:
    """A `SearchSettings`' weights as coefficients of `design` (bullet legs, their e-slopes, title legs)."""
    korean = [s.weight_dense_max, s.weight_dense_centroid, s.weight_lexical_paper]
    english = [s.weight_dense_max_english, s.weight_dense_centroid_english, s.weight_lexical_paper_english]
    slopes = [en - ko for ko, en in zip(korean, english, strict=True)]
    coef = np.array([*korean, *slopes, s.weight_dense_title, s.weight_lexical_title])
    return np.concatenate([coef, np.zeros(len(FEATURES) - len(coef))])


def coef_settings(coef: np.ndarray) -> str:
    """The `SearchSettings` fields of fitted coefficients, scaled so that weight_dense_max is 1."""
    c = coef / coef[0]
    names = ["weight_dense_max", "weight_dense_centroid", "weight_lexical_paper"]
    values = {n: c[i] for i, n in enumerate(names)}
    values.update({f"{n}_english": c[i] + c[i + 3] for i, n in enumerate(names)})
    values.update(weight_dense_title=c[6], weight_lexical_title=c[7])
    return ", ".join(f"{n}={v:.3f}" for n, v in sorted(values.items()))


def current_weights(english: float) -> np.ndarray:
    """Per-leg weights (LEGS order) of the hand-tuned fusion for a query of Latin share `english`."""
    c = settings_coef(HAND_TUNED)
    return np.array([c[0] + c[3] * english, c[1] + c[4] * english, c[6], c[2] + c[5] * english, c[7]])


def collect(searcher: Searcher, queries: list[tuple[str, set[int], str]], vectors: dict[str, np.ndarray],
            fields: tuple[str, ...]) -> Block:  # fmt: skip
    """Top-`TOP` candidates of each query under the current weights, with their leg z-scores."""
    zs, labels, es, ws, gs = [], [], [], [], []
    for text, answers, group in queries:
        z = leg_z(searcher, text, vectors[text], fields)
        e = latin_share(text)
        fused = z @ current_weights(e)
        top = np.argsort(-fused, kind="stable")[:TOP]
        zs.append(z[top])
        labels.append(np.isin(top, list(answers)))
        es.append(e)
        ws.append(len(text.split()))
        gs.append(group)
    return Block(np.stack(zs), np.stack(labels), np.array(es), np.array(ws), np.array(gs))


def title_blocks(searcher: Searcher) -> dict[int, Block]:
    papers = searcher.papers
    titles = [p.title.strip() for p in papers]
    cache = EmbeddingCache(Path(searcher.index.path).parents[1] / CACHE_FILE)
    pool, embedded, _ = embed_with_cache(searcher.embedder, titles, cache, as_queries=True)
    cache.close()
    print(f"title vectors: {embedded} embedded, {len(titles) - embedded} from the cache", file=sys.stderr)
    vectors = dict(zip(titles, pool, strict=True))
    folds = np.array([title_fold(p.arxiv_id) for p in papers])
    live = searcher.english_corrections
    blocks: dict[int, Block] = {}
    try:
        for fold in (0, 1):
            others = np.flatnonzero(folds != fold)
            searcher.set_english_corrections(*english_corrections(searcher.bullet_matrix, searcher.bullet_offsets,
                                                                  pool, others))  # fmt: skip
            queries = [(titles[i], {i}, "title") for i in np.flatnonzero(folds == fold)]
            blocks[fold] = collect(searcher, queries, vectors, ("bullets",))
            print(f"title fold {fold}: {len(queries)} queries", file=sys.stderr, flush=True)
    finally:
        searcher.set_english_corrections(*live)
    return blocks


def file_block(searcher: Searcher, path: Path) -> Block:
    by_id = {p.arxiv_id: i for i, p in enumerate(searcher.papers)}
    loaded = load_query_file(path)
    vectors = warm_query_vectors(searcher, [q.q for q in loaded], "hybrid")
    queries = [(q.q, {by_id[i] for i in q.ids if i in by_id}, q.group) for q in loaded]
    return collect(searcher, queries, vectors, ("bullets", "title"))


# ----------------------------------------------------------------------------- model
def design(block: Block) -> np.ndarray:
    """(queries, TOP, features): every bullet leg and its product with e; the two title legs;
    with `WITH_LENGTH`, also the bullet legs times log(query words / 8)."""
    z, e = block.z, block.english[:, None, None]
    bullet = z[:, :, [0, 1, 3]]
    parts = [bullet, bullet * e, z[:, :, [2, 4]]]
    if WITH_LENGTH:
        parts.append(bullet * np.log(np.maximum(block.words, 1) / 8.0)[:, None, None])
    return np.concatenate(parts, axis=2)


FEATURES = ["max", "centroid", "lex_paper", "max*e", "centroid*e", "lex_paper*e", "title_vec", "lex_title"]
LENGTH_FEATURES = ["max*len", "centroid*len", "lex_paper*len"]
WITH_LENGTH = False


def fit(blocks: list[Block], c: float) -> np.ndarray:
    """Logistic regression coefficients (no intercept needed for ranking); each block weighs the same."""
    from sklearn.linear_model import LogisticRegression

    xs, ys, ws = [], [], []
    for block in blocks:
        x = design(block).reshape(-1, len(FEATURES))
        xs.append(x)
        ys.append(block.label.reshape(-1))
        ws.append(np.full(len(x), 1.0 / len(x)))
    x, y, w = np.concatenate(xs), np.concatenate(ys), np.concatenate(ws)
    model = LogisticRegression(C=c, max_iter=2000)
    model.fit(x, y, sample_weight=w * len(x) / len(blocks))
    return model.coef_[0]


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

    return minimize(loss, np.ones(len(FEATURES)), jac=True, method="L-BFGS-B").x


def ranks(block: Block, coef: np.ndarray) -> np.ndarray:
    """1-based rank of the best answer among the candidates (inf when none is a candidate)."""
    scores = design(block) @ coef
    out = np.full(len(scores), np.inf)
    for qi in range(len(scores)):
        hits = np.flatnonzero(block.label[qi])
        if len(hits):
            order = np.argsort(-scores[qi], kind="stable")
            out[qi] = 1 + min(int(np.flatnonzero(order == h)[0]) for h in hits)
    return out


def summary(r: np.ndarray) -> tuple[float, float, float]:
    return float(np.mean(r <= 1)), float(np.mean(r <= 10)), float(np.mean(np.where(r <= 10, 1.0 / r, 0.0)))


def by_group(block: Block, r: np.ndarray) -> str:
    parts = [f"all {summary(r)[2]:.3f}"]
    for g in sorted(set(block.group)):
        parts.append(f"{g} {summary(r[block.group == g])[2]:.3f}")
    return ", ".join(parts)


def subset(block: Block, keep: np.ndarray) -> Block:
    return Block(block.z[keep], block.label[keep], block.english[keep], block.words[keep], block.group[keep])


def save(path: Path, blocks: dict[str, Block]) -> None:
    arrays = {f"{n}.{f}": getattr(b, f) for n, b in blocks.items() for f in ("z", "label", "english", "words", "group")}
    np.savez(path, **arrays)


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
    if args.length:
        WITH_LENGTH = True
        FEATURES.extend(LENGTH_FEATURES)
    searcher = open_searcher(args.index)
    defaults = searcher.settings
    searcher.settings = replace(defaults, **{f: getattr(HAND_TUNED, f) for f in HAND_TUNED.__dataclass_fields__
                                             if f.startswith("weight_") and f != "weight_name"})  # fmt: skip
    if args.features.exists():
        blocks = load(args.features)
    else:
        titles = title_blocks(searcher)
        blocks = {"title0": titles[0], "title1": titles[1], "dev": file_block(searcher, QUERIES / "dev.jsonl")}
        save(args.features, blocks)
    base = settings_coef(HAND_TUNED)
    t0, t1, dev = blocks["title0"], blocks["title1"], blocks["dev"]
    print("| model | title fold 1 R@1 / R@10 / MRR@10 | dev MRR@10 (cross-validated) |\n|---|---|---|")
    r1 = ranks(t1, base)
    print(f"| hand-tuned weights | {' / '.join(f'{v:.3f}' for v in summary(r1))} | {by_group(dev, ranks(dev, base))} |")
    stored = settings_coef(defaults)
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
        named = ", ".join(f"{n} {v:.3f}" for n, v in zip(FEATURES, scaled, strict=True))
        print(f"  coefficients / max-leg coefficient: {named}")
        if len(FEATURES) == 8:
            print(f"  as SearchSettings: {coef_settings(coef)}")
    if args.test:
        test = file_block(searcher, QUERIES / "test.jsonl")
        coef = fit([t0, dev], (args.c or [1.0])[-1])
        print(f"test, hand-tuned weights: {by_group(test, ranks(test, base))}")
        print(f"test, logistic C={(args.c or [1.0])[-1]:g}: {by_group(test, ranks(test, coef))}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
