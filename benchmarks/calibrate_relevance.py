#!/usr/bin/env python3
"""Fit the relevance model (retrieval/relevance.py) and measure its weak threshold.

    cp -r /work/idx/daily /tmp/relevance-idx      # any full-corpus index; a writable copy lets the
    python benchmarks/calibrate_relevance.py --index /tmp/relevance-idx [--json FILE]
                                                  # titles' query vectors come from its cache

Tuning queries: retrieval/data/dev.jsonl (hybrid, every field, as users search) and a fixed
sample of the title task (each paper's English title finds the paper; bullets only, with the
English corrections fitted on the other half of the titles, as in `retrieval eval`). Off-topic
queries: benchmarks/queries/offtopic.jsonl, odd lines to fit, even lines held out.
benchmarks/queries/test.jsonl is never read.

Rows are the top 10 hits of every query with their relevance signals; a row is positive when it
is a right answer. Positives and negatives weigh the same in total, and within each class every
source (dev, title sample, off-topic) weighs the same. The model is an L2-regularised logistic
regression on standardised signals (Newton's method, numpy only), printed back on the raw scale:
`training.fit_calibration`, the fit `build-index --tuning-queries` runs, which needs no off-topic
queries (EVALUATION.md); this script keeps them to measure how the weak flag treats them.

The threshold is the largest on a 0.05 grid that flags at most 5 % of the dev right answers found
in the top 10. The table shows, per threshold, the share of right answers flagged (dev; a second,
disjoint title sample not used for fitting) and the share of off-topic queries whose top hit is
not weak (fitting half; held-out half).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from retrieval.alignment import english_corrections  # noqa: E402
from retrieval.corpus import Paper  # noqa: E402
from retrieval.evaluation import CUTOFF, load_query_file, title_fold, warm_query_vectors  # noqa: E402
from retrieval.learned import DEV_QUERIES  # noqa: E402
from retrieval.relevance import Calibration  # noqa: E402
from retrieval.search import Field_, Searcher  # noqa: E402
from retrieval.service import open_searcher  # noqa: E402
from retrieval.training import GRID, choose_threshold, fit_calibration  # noqa: E402

QUERIES = Path(__file__).resolve().parent / "queries"
SIGNALS = ("cosine", "term_share", "latin")
TITLE_SAMPLE = 18  # one paper in 18 to fit (~300), another one in 18 to check


@dataclass
class Row:
    source: str  # dev | title | title-check | offtopic-fit | offtopic-held
    query: str
    lang: str
    rank: int
    positive: bool
    line: int  # 0-based query number within its file (dev: the cross-fit halves), -1 for titles
    cosine: float
    term_share: float
    latin: float


# ----------------------------------------------------------------------------- queries
def load_offtopic(path: Path) -> list[tuple[str, str, bool]]:
    """(query, lang, for fitting) per line; odd lines (1-based) fit, even lines are held out."""
    out = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if line.strip():
            data = json.loads(line)
            out.append((str(data["q"]).strip(), str(data["lang"]), number % 2 == 1))
    return out


def title_sample(papers: Sequence[Paper], remainder: int) -> list[Paper]:
    """A fixed sample of papers: hash of the id modulo TITLE_SAMPLE equals `remainder`."""
    digest = lambda p: int(hashlib.sha256(f"relevance:{p.arxiv_id}".encode()).hexdigest(), 16)  # noqa: E731
    return [p for p in papers if digest(p) % TITLE_SAMPLE == remainder]


# ----------------------------------------------------------------------------- rows
def hit_rows(
    searcher: Searcher,
    query: str,
    right: set[str],
    source: str,
    lang: str,
    line: int = -1,
    fields: Sequence[Field_] | None = None,
) -> list[Row]:
    response = searcher.search(query, limit=CUTOFF, fields=fields)
    judge = searcher.relevance_judge(query, fields)
    position = {paper.arxiv_id: i for i, paper in enumerate(searcher.papers)}
    rows = []
    for rank, hit in enumerate(response.results):
        signals = judge.signals(position[hit.paper.id])
        rows.append(Row(source, query, lang, rank, hit.paper.id in right, line, **asdict(signals)))
    return rows


def title_query_vectors(searcher: Searcher, index: Path) -> dict[str, np.ndarray]:
    """Every title embedded as a query: from the index's cache when it is writable, else embedded."""
    titles = [p.title.strip() for p in searcher.papers]
    cache_path = index / "cache.sqlite"
    if cache_path.is_file() and os.access(cache_path, os.W_OK) and os.access(index, os.W_OK):
        from retrieval.indexer import embed_with_cache
        from retrieval.store import EmbeddingCache

        cache = EmbeddingCache(cache_path)
        try:
            vectors, _, _ = embed_with_cache(searcher.embedder, titles, cache, as_queries=True)
        finally:
            cache.close()
        embedded = dict(zip(titles, vectors, strict=True))
        searcher.settings.query_cache_size = max(searcher.settings.query_cache_size, len(titles) + 1)
        searcher.remember_query_vectors(embedded)
        return embedded
    print("embedding every title as a query (no writable cache): this takes minutes", file=sys.stderr)
    return warm_query_vectors(searcher, titles, "hybrid")


def title_rows(searcher: Searcher, index: Path, samples: dict[str, list[Paper]]) -> list[Row]:
    """Title-task rows: each half's titles searched with corrections fitted on the other half."""
    vectors = title_query_vectors(searcher, index)
    folds = np.array([title_fold(p.arxiv_id) for p in searcher.papers])
    pool = np.stack([vectors[p.title.strip()] for p in searcher.papers])
    live = searcher.english_corrections
    rows: list[Row] = []
    try:
        for fold in (0, 1):
            fitted = english_corrections(
                searcher.bullet_matrix, searcher.bullet_offsets, pool, np.flatnonzero(folds != fold)
            )
            searcher.set_english_corrections(*fitted)
            for source, papers in samples.items():
                for p in papers:
                    if title_fold(p.arxiv_id) == fold:
                        rows += hit_rows(searcher, p.title.strip(), {p.arxiv_id}, source, "en", fields=("bullets",))
    finally:
        searcher.set_english_corrections(*live)
    return rows


def collect(searcher: Searcher, index: Path) -> list[Row]:
    dev = load_query_file(DEV_QUERIES)
    offtopic = load_offtopic(QUERIES / "offtopic.jsonl")
    warm_query_vectors(searcher, [q.q for q in dev] + [q for q, _, _ in offtopic], "hybrid")
    rows: list[Row] = []
    for line, query in enumerate(dev):
        rows += hit_rows(searcher, query.q, set(query.ids), "dev", query.group, line)
    for line, (text, lang, fit) in enumerate(offtopic):
        rows += hit_rows(searcher, text, set(), "offtopic-fit" if fit else "offtopic-held", lang, line)
    samples = {"title": title_sample(searcher.papers, 0), "title-check": title_sample(searcher.papers, 1)}
    return rows + title_rows(searcher, index, samples)


# ----------------------------------------------------------------------------- fit
def fit(rows: Sequence[Row]) -> Calibration:
    """The package's fit (retrieval/training.py, what `build-index` runs) on the fitting rows."""
    fitting = [r for r in rows if r.source in ("dev", "title", "offtopic-fit")]
    x = np.array([[getattr(r, s) for s in SIGNALS] for r in fitting])
    y = np.array([r.positive for r in fitting])
    return fit_calibration(x, y, np.array([r.source for r in fitting]))


# ----------------------------------------------------------------------------- threshold
def relevance_of(rows: Sequence[Row], calibration: Calibration) -> np.ndarray:
    from retrieval.relevance import Signals

    return np.array([calibration.relevance(Signals(r.cosine, r.term_share, r.latin)) for r in rows])


def threshold_table(rows: Sequence[Row], calibration: Calibration) -> list[dict[str, float]]:
    """Per grid threshold: right answers flagged weak, off-topic top hits passing (not weak)."""
    groups = {
        "dev_right_flagged": [r for r in rows if r.source == "dev" and r.positive],
        "title_check_right_flagged": [r for r in rows if r.source == "title-check" and r.positive],
        "offtopic_fit_top_passing": [r for r in rows if r.source == "offtopic-fit" and r.rank == 0],
        "offtopic_held_top_passing": [r for r in rows if r.source == "offtopic-held" and r.rank == 0],
    }
    values = {name: relevance_of(members, calibration) for name, members in groups.items()}
    table = []
    for threshold in GRID:
        line: dict[str, float] = {"threshold": threshold}
        for name, v in values.items():
            share = (v < threshold).mean() if name.endswith("flagged") else (v >= threshold).mean()
            line[name] = round(float(share), 4) if len(v) else float("nan")
        table.append(line)
    return table


def cross_fitted_flagged(rows: Sequence[Row], threshold: float) -> float:
    """Dev right answers flagged at `threshold` when each half of dev (by line parity) is scored by
    a model fitted without it: the in-sample share's out-of-sample check."""
    flagged, total = 0, 0
    for parity in (0, 1):
        model = fit([r for r in rows if not (r.source == "dev" and r.line % 2 == parity)])
        held = [r for r in rows if r.source == "dev" and r.positive and r.line % 2 == parity]
        flagged += int((relevance_of(held, model) < threshold).sum())
        total += len(held)
    return flagged / total if total else float("nan")


def median_relevance(rows: Sequence[Row], calibration: Calibration) -> dict[str, float]:
    groups = {
        "dev right answers": [r for r in rows if r.source == "dev" and r.positive],
        "dev other top-10 hits": [r for r in rows if r.source == "dev" and not r.positive],
        "off-topic top hits (held-out)": [r for r in rows if r.source == "offtopic-held" and r.rank == 0],
    }
    return {name: round(float(np.median(relevance_of(g, calibration))), 3) for name, g in groups.items() if g}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--index", type=Path, required=True, help="a full-corpus index (a writable copy is faster)")
    parser.add_argument("--json", type=Path, default=None, help="also write the rows, model and table here")
    args = parser.parse_args()
    searcher = open_searcher(args.index)
    rows = collect(searcher, args.index)
    fitted = fit(rows)
    table = threshold_table(rows, fitted)
    dev_right = relevance_of([r for r in rows if r.source == "dev" and r.positive], fitted)
    calibration = Calibration(**{**asdict(fitted), "threshold": choose_threshold(dev_right)})
    counts = {s: sum(r.source == s for r in rows if r.rank == 0) for s in sorted({r.source for r in rows})}
    found = {s: sum(r.positive for r in rows if r.source == s) for s in ("dev", "title", "title-check")}
    print(f"queries per source: {counts}; right answers in the top {CUTOFF}: {found}")
    columns = ("threshold", "dev right flagged", "title-check right flagged", "off-topic fit passing")
    print("| " + " | ".join((*columns, "off-topic held-out passing")) + " |")
    print("|---:|---:|---:|---:|---:|")
    for line in table:
        print(
            f"| {line['threshold']:.2f} | {line['dev_right_flagged']:.3f} | {line['title_check_right_flagged']:.3f} | "
            f"{line['offtopic_fit_top_passing']:.3f} | {line['offtopic_held_top_passing']:.3f} |"
        )
    crossed = cross_fitted_flagged(rows, calibration.threshold)
    print(f"\ndev right answers flagged at {calibration.threshold:.2f}, cross-fitted by line parity: {crossed:.3f}")
    print(f"median relevance: {median_relevance(rows, calibration)}")
    print(f"\nmodel {searcher.index.manifest.model}:\n{calibration!r}")
    if args.json is not None:
        payload = {"calibration": asdict(calibration), "table": table, "rows": [asdict(r) for r in rows]}
        args.json.write_text(json.dumps(payload, ensure_ascii=False), encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
