#!/usr/bin/env python3
"""The build's learned models (retrieval/training.py): how many titles to fit on, and whether the
calibration needs off-topic queries.

    cp -r /work/idx/daily /tmp/learned-idx      # any full-corpus index; its cache has the titles
    python benchmarks/learned_build.py --index /tmp/learned-idx --features /tmp/learned/blocks.npz

1. Title sample: the fusion is fitted on N title-task queries of fold 0 (seeds 0-4) plus
   retrieval/data/dev.jsonl, and re-ranks the candidates of title fold 1 (all 2,730; English
   corrections fitted on fold 0) and of benchmarks/queries/test.jsonl; with the time
   `training.fit_learned` takes for that N on this machine (features, fusion and calibration).
2. Calibration: fitted on dev + 300 fold-0 titles, with and without the odd lines of
   benchmarks/queries/offtopic.jsonl, against the code default (`relevance.E5_SMALL_Q4`): right
   answers flagged weak (dev, test, title fold 1) and off-topic top hits passing (odd, even lines).

Candidates and features are the build's (`training.collect`), cached in `--features`.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from retrieval import training as T  # noqa: E402
from retrieval.evaluation import EvalQuery, held_out_corrections, load_query_file, title_fold  # noqa: E402
from retrieval.indexer import embed_with_cache  # noqa: E402
from retrieval.learned import LearnOptions  # noqa: E402
from retrieval.relevance import E5_SMALL_Q4, Calibration  # noqa: E402
from retrieval.search import SearchSettings  # noqa: E402
from retrieval.service import open_searcher  # noqa: E402
from retrieval.store import CACHE_FILE, EmbeddingCache  # noqa: E402

QUERIES = Path(__file__).resolve().parent / "queries"
FIELDS = ("z", "label", "english", "words", "group", "signals")
CAPS = (100, 300, 1000, 2757)
SEEDS = 5


def queries_of(name: str) -> list[EvalQuery]:
    path = QUERIES / f"{name}.jsonl"
    if name != "offtopic":
        return load_query_file(path)
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    return [EvalQuery(str(r["q"]).strip(), frozenset(), str(r["lang"])) for r in rows]


def collect_all(index: Path) -> tuple[dict[str, T.Block], dict[str, float]]:
    """Blocks of title folds 0 and 1, dev, test and off-topic; the timing of fit_learned per cap."""
    searcher = open_searcher(index)
    searcher.tokenizer.tokenize("준비 warm-up")
    cache = EmbeddingCache(index / CACHE_FILE)
    titles, _, _ = embed_with_cache(searcher.embedder, [p.title for p in searcher.papers], cache, as_queries=True)
    blocks: dict[str, T.Block] = {}
    vectors = {}
    for name in ("dev", "test", "offtopic"):
        qs = queries_of(name)
        vectors[name] = list(embed_with_cache(searcher.embedder, [q.q for q in qs], cache, as_queries=True)[0])
        blocks[name] = T.tuning_block(searcher, qs, vectors[name])
    cache.close()
    timing = {}
    for cap in CAPS:
        started = time.perf_counter()
        T.fit_learned(searcher, titles, LearnOptions(title_sample=cap), {}, queries_of("dev"), vectors["dev"])
        timing[f"fit {cap}"] = time.perf_counter() - started
    folds = np.array([title_fold(p.arxiv_id) for p in searcher.papers])
    for fold in (0, 1):
        papers = np.flatnonzero(folds == fold)
        corrections = held_out_corrections(searcher, titles, fold)
        blocks[f"title{fold}"] = T.title_block(searcher, titles, papers, corrections)
    return blocks, timing


def subset(block: T.Block, keep: np.ndarray) -> T.Block:
    assert block.signals is not None
    return T.Block(*(getattr(block, f)[keep] for f in FIELDS))


def by_group(block: T.Block, coef: np.ndarray) -> str:
    r = T.ranks(block, coef)
    parts = [f"all {T.summary(r)[2]:.3f}"] + [
        f"{g} {T.summary(r[block.group == g])[2]:.3f}" for g in sorted(set(block.group))
    ]
    return ", ".join(parts)


def cap_table(blocks: dict[str, T.Block], timing: dict[str, float]) -> None:
    t0, t1, dev, test = blocks["title0"], blocks["title1"], blocks["dev"], blocks["test"]
    print("| weights | title fold 1 R@1 / MRR@10 | test MRR@10 | fit_learned on this machine |\n|---|---|---|---:|")
    for name, s in (("hand-tuned", T.HAND_TUNED), ("code defaults", SearchSettings())):
        r1 = T.summary(T.ranks(t1, T.settings_coef(s)))
        print(f"| {name} | {r1[0]:.4f} / {r1[2]:.4f} | {by_group(test, T.settings_coef(s))} | |")
    for cap in CAPS:
        rows = []
        for seed in range(SEEDS if cap < len(t0.z) else 1):
            keep = np.sort(np.random.default_rng(seed).choice(len(t0.z), size=min(cap, len(t0.z)), replace=False))
            coef = T.fit_fusion([subset(t0, keep), dev])
            r1 = T.summary(T.ranks(t1, coef))
            rows.append((r1[0], r1[2], T.summary(T.ranks(test, coef))[2]))
        a = np.array(rows)
        print(
            f"| fitted, {cap} titles ({len(rows)} seeds) | {a[:, 0].mean():.4f} +- {a[:, 0].std():.4f} / "
            f"{a[:, 1].mean():.4f} +- {a[:, 1].std():.4f} | {a[:, 2].mean():.4f} +- {a[:, 2].std():.4f} | "
            f"{timing.get(f'fit {cap}', float('nan')):.1f} s |"
        )


def calibration_table(blocks: dict[str, T.Block]) -> None:
    t0, t1, dev, test, off = (blocks[n] for n in ("title0", "title1", "dev", "test", "offtopic"))
    odd = np.arange(len(off.z)) % 2 == 0  # lines 1, 3, 5, ... (the calibration script's fitting half)
    print("\n| calibration | seed | threshold | flagged: dev / test / title fold 1 | off-topic passing: odd / even |")
    print("|---|---:|---:|---|---|")
    for seed in range(3):
        keep = np.sort(np.random.default_rng(seed).choice(len(t0.z), size=300, replace=False))
        sample = subset(t0, keep)
        coef = T.fit_fusion([sample, dev])
        with_offtopic = {"tuning": dev, "title": sample, "offtopic": subset(off, odd)}
        variants = {
            "dev + titles (the build's)": T.calibration_of_blocks({"tuning": dev, "title": sample}, coef),
            "dev + titles + off-topic odd lines": T.calibration_of_blocks(with_offtopic, coef),
            "code default": E5_SMALL_Q4,
        }
        for name, c in variants.items():

            def flagged(block: T.Block, c: Calibration = c, coef: np.ndarray = coef) -> float:
                x, y, _ = T.top_hits(block, coef)
                return float((T.relevance(c, x[y]) < c.threshold).mean())

            def passing(block: T.Block, c: Calibration = c, coef: np.ndarray = coef) -> float:
                x, _, rank = T.top_hits(block, coef)
                return float((T.relevance(c, x[rank == 0]) >= c.threshold).mean())

            print(
                f"| {name} | {seed} | {c.threshold:.2f} | {flagged(dev):.3f} / {flagged(test):.3f} / "
                f"{flagged(t1):.3f} | {passing(subset(off, odd)):.3f} / {passing(subset(off, ~odd)):.3f} |"
            )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--index", type=Path, required=True)
    parser.add_argument("--features", type=Path, required=True, help="cache of the blocks (.npz)")
    args = parser.parse_args()
    if args.features.exists():
        data = np.load(args.features, allow_pickle=False)
        names = {k.split(".")[0] for k in data.files if not k.startswith("timing.")}
        blocks = {n: T.Block(*(data[f"{n}.{f}"] for f in FIELDS)) for n in names}
        timing = {k[len("timing.") :]: float(data[k]) for k in data.files if k.startswith("timing.")}
    else:
        blocks, timing = collect_all(args.index)
        arrays = {f"{n}.{f}": getattr(b, f) for n, b in blocks.items() for f in FIELDS}
        np.savez(args.features, **arrays, **{f"timing.{k}": np.array(v) for k, v in timing.items()})
    cap_table(blocks, timing)
    calibration_table(blocks)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
