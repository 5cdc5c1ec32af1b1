"""Retrieval quality on the real corpus: the title task and the query-file task.

* Title task: each paper's English title is a query and the paper itself is the answer. Only
  the bullets are searchable (no title vectors, no title or author terms), otherwise the task
  would measure nothing. Broken down by format era.
* Query-file task: JSON lines `{"q": ..., "ids": [...], "lang": ...}` searched against the index
  as users see it (every field). Broken down by `lang`.
* Known-item task: the user names the paper. Queries built from the corpus: each paper's short
  name (the part of its title before the colon) when it has at most `NAME_MAX_WORDS` words and
  no other paper has that name or title after normalising (retrieval/names.py), and every
  paper's arXiv id in four spellings. Searched like the query file (every field); the answer
  is the paper itself. Groups: name, id, id-v2, id-arxiv, id-url.

Metrics: Recall@1, Recall@10, MRR@10 and nDCG@10 (binary relevance).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import sys
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from retrieval.alignment import english_corrections
from retrieval.config import Settings
from retrieval.corpus import Paper
from retrieval.errors import QueryFileError
from retrieval.ids import split_arxiv_ids
from retrieval.models import Mode
from retrieval.names import NameIndex, short_name
from retrieval.search import Field_, Searcher

MODES: tuple[Mode, ...] = ("dense", "lexical", "hybrid")
DEFAULT_MODE: Mode = "hybrid"
CUTOFF = 10
# A title's head counts as a name when it has at most this many words ("Vision Mamba", "SeaLLMs
# 3"); longer heads are phrases ("Rethinking the Role of ... in ...") nobody types as a name.
NAME_MAX_WORDS = 5
ID_SPELLINGS: dict[str, str] = {
    "id": "{id}",
    "id-v2": "{id}v2",
    "id-arxiv": "arXiv:{id}",
    "id-url": "https://arxiv.org/abs/{id}",
}


@dataclass(frozen=True)
class EvalQuery:
    q: str
    ids: frozenset[str]
    group: str


@dataclass
class EvalResult:
    task: str
    mode: str
    queries: int
    metrics: dict[str, float]
    by_group: dict[str, dict[str, float]] = field(default_factory=dict)
    misses: list[dict[str, Any]] = field(default_factory=list)
    in_sample: str = ""  # why these queries are not held out from the index's learned models, if not

    def to_json(self, with_misses: bool = False) -> dict[str, Any]:
        data: dict[str, Any] = {
            "task": self.task,
            "mode": self.mode,
            "queries": self.queries,
            "metrics": self.metrics,
            "by_group": self.by_group,
            "in_sample": self.in_sample,
        }
        if with_misses:
            data["misses"] = self.misses
        return data


# ----------------------------------------------------------------------------- metrics
def recall_at(ranked: Sequence[str], relevant: Iterable[str], k: int) -> float:
    """1.0 when any relevant id is in the top k (a query has one answer, or interchangeable ones)."""
    wanted = set(relevant)
    return 1.0 if any(doc in wanted for doc in ranked[:k]) else 0.0


def mrr_at(ranked: Sequence[str], relevant: Iterable[str], k: int = CUTOFF) -> float:
    wanted = set(relevant)
    for rank, doc in enumerate(ranked[:k], start=1):
        if doc in wanted:
            return 1.0 / rank
    return 0.0


def ndcg_at(ranked: Sequence[str], relevant: Iterable[str], k: int = CUTOFF) -> float:
    wanted = set(relevant)
    if not wanted:
        return 0.0
    dcg = sum(1.0 / math.log2(rank + 1) for rank, doc in enumerate(ranked[:k], start=1) if doc in wanted)
    ideal = sum(1.0 / math.log2(rank + 1) for rank in range(1, min(len(wanted), k) + 1))
    return dcg / ideal


def score_ranking(ranked: Sequence[str], relevant: Iterable[str]) -> dict[str, float]:
    relevant = set(relevant)
    return {
        "recall@1": recall_at(ranked, relevant, 1),
        "recall@10": recall_at(ranked, relevant, CUTOFF),
        "mrr@10": mrr_at(ranked, relevant, CUTOFF),
        "ndcg@10": ndcg_at(ranked, relevant, CUTOFF),
    }


def mean_metrics(rows: Sequence[dict[str, float]]) -> dict[str, float]:
    if not rows:
        return {"recall@1": 0.0, "recall@10": 0.0, "mrr@10": 0.0, "ndcg@10": 0.0}
    return {key: round(sum(r[key] for r in rows) / len(rows), 4) for key in rows[0]}


# ----------------------------------------------------------------------------- tasks
def paper_era(paper: Paper) -> str:
    """Format era of a paper's summary: labelled bullets, vote/author lines, or plain."""
    if any(b.section for b in paper.bullets):
        return "labelled"
    if paper.votes is not None or paper.authors:
        return "vote-authors"
    return "plain"


def title_queries(papers: Sequence[Paper]) -> list[EvalQuery]:
    return [EvalQuery(q=p.title, ids=frozenset({p.arxiv_id}), group=paper_era(p)) for p in papers]


def known_item_queries(papers: Sequence[Paper], max_words: int = NAME_MAX_WORDS) -> list[EvalQuery]:
    """Name queries (short, unambiguous title heads) and id queries in every `ID_SPELLINGS` spelling."""
    names = NameIndex([p.title for p in papers])
    queries: list[EvalQuery] = []
    for index, paper in enumerate(papers):
        name = short_name(paper.title)
        if name and len(name.split()) <= max_words and names.lookup(name) == (index,):
            queries.append(EvalQuery(q=name, ids=frozenset({paper.arxiv_id}), group="name"))
    for group, spelling in ID_SPELLINGS.items():
        queries += [
            EvalQuery(q=spelling.format(id=p.arxiv_id), ids=frozenset({p.arxiv_id}), group=group) for p in papers
        ]
    return queries


def load_query_file(path: Path) -> list[EvalQuery]:
    queries: list[EvalQuery] = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            data = json.loads(line)
            q = str(data["q"]).strip()
            ids = data["ids"]
            if not q or not isinstance(ids, list) or not ids:
                raise ValueError("needs a non-empty 'q' and a non-empty list 'ids'")
        except (ValueError, KeyError, TypeError) as exc:
            raise QueryFileError(f"{path}:{number}: not a query line ({exc})") from exc
        queries.append(EvalQuery(q=q, ids=frozenset(str(i) for i in ids), group=str(data.get("lang", "all"))))
    if not queries:
        raise QueryFileError(f"{path} holds no queries")
    return queries


def evaluate(
    searcher: Searcher,
    queries: Sequence[EvalQuery],
    mode: Mode,
    task: str,
    fields: Sequence[Field_] | None = None,
) -> EvalResult:
    """Run every query and average the metrics, overall and per group."""
    warm_query_vectors(searcher, [q.q for q in queries], mode)
    return summarise(run_queries(searcher, queries, mode, fields), mode, task)


Ranked = tuple[EvalQuery, list[str]]


def run_queries(
    searcher: Searcher, queries: Sequence[EvalQuery], mode: Mode, fields: Sequence[Field_] | None = None
) -> list[Ranked]:
    """Each query with the ids of its first `CUTOFF` results."""
    out: list[Ranked] = []
    for query in queries:
        response = searcher.search(query.q, mode=mode, limit=CUTOFF, fields=fields)
        out.append((query, [hit.paper.id for hit in response.results]))
    return out


def summarise(ranked_queries: Sequence[Ranked], mode: Mode, task: str) -> EvalResult:
    """Average the metrics of ranked queries, overall and per group, and list the misses."""
    per_query: list[dict[str, float]] = []
    groups: dict[str, list[dict[str, float]]] = defaultdict(list)
    misses: list[dict[str, Any]] = []
    for query, ranked in ranked_queries:
        scores = score_ranking(ranked, query.ids)
        per_query.append(scores)
        groups[query.group].append(scores)
        if scores["recall@1"] < 1.0:
            misses.append({"q": query.q, "ids": sorted(query.ids), "got": ranked[:3], "group": query.group})
    queries = [query for query, _ in ranked_queries]
    return EvalResult(
        task=task,
        mode=mode,
        queries=len(queries),
        metrics=mean_metrics(per_query),
        by_group={name: mean_metrics(rows) for name, rows in sorted(groups.items())},
        misses=misses,
    )


def warm_query_vectors(searcher: Searcher, texts: Sequence[str], mode: Mode, batch: int = 256) -> dict[str, np.ndarray]:
    """Embed all queries in batches up front (same vectors, far fewer engine calls).

    What is embedded is what the searcher embeds: the query without its arXiv ids (nothing for
    a query that is only an id). Returns the vectors keyed by the stripped query as given.
    """
    if mode == "lexical":
        return {}
    rests = {text: split_arxiv_ids(text)[1] for text in (t.strip() for t in texts)}
    unique = list(dict.fromkeys(rest for rest in rests.values() if rest))
    searcher.settings.query_cache_size = max(searcher.settings.query_cache_size, len(unique) + 1)
    embedded: dict[str, np.ndarray] = {}
    for start in range(0, len(unique), batch):
        chunk = unique[start : start + batch]
        vectors = searcher.embedder.embed_queries(chunk)
        embedded.update(zip(chunk, vectors, strict=True))
    searcher.remember_query_vectors(embedded)
    return {text: embedded[rest] for text, rest in rests.items() if rest}


def title_fold(arxiv_id: str) -> int:
    """Fixed half (0 or 1) of the title task a paper belongs to."""
    return int(hashlib.sha256(arxiv_id.encode("utf-8")).hexdigest(), 16) % 2


def held_out_corrections(
    searcher: Searcher, title_vectors: np.ndarray, fold: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The English corrections (query map, bullet and paper hub scores) fitted on the titles of
    every paper outside title fold `fold`: all that fold `fold`'s title queries may use.
    `title_vectors`: every paper's title embedded as a query."""
    others = np.flatnonzero([title_fold(p.arxiv_id) != fold for p in searcher.papers])
    return english_corrections(searcher.bullet_matrix, searcher.bullet_offsets, title_vectors, others)


def evaluate_title_task(
    searcher: Searcher,
    mode: Mode,
    only_fold: int | None = None,
    *,
    swap: Callable[[tuple[np.ndarray, np.ndarray, np.ndarray]], None] | None = None,
) -> EvalResult:
    """Every title as a query, bullets only (`only_fold`: the titles of that half only; the learned
    models of an index are fitted on fold 0, so fold 1 is their held-out half).

    The query map (retrieval/alignment.py) is fitted on titles and the hubness correction
    (retrieval/hubness.py) compares bullets with a pool of titles; here neither may use the
    query's own title, or the query would reach its own text. So the papers are split into two
    fixed halves and each half's titles are searched with a map and hub scores computed from the
    other half's titles only. `swap(corrections)` installs a fold's (query map, bullet hubs,
    paper hubs); by default `searcher.set_english_corrections` (an external backend's caller
    upserts them first, see benchmarks/backend_parity.py).
    """
    swap = swap or (lambda fitted: searcher.set_english_corrections(*fitted))
    queries = title_queries(searcher.papers)
    vectors = warm_query_vectors(searcher, [q.q for q in queries], mode)
    task = "title" if only_fold is None else f"title fold {only_fold}"
    folds = np.array([title_fold(p.arxiv_id) for p in searcher.papers])
    if mode == "lexical" or not searcher.papers:
        kept = [q for q, f in zip(queries, folds, strict=True) if only_fold is None or f == only_fold]
        return summarise(run_queries(searcher, kept, mode, ("bullets",)), mode, task)
    pool = np.stack([vectors[p.title.strip()] for p in searcher.papers])
    live = searcher.english_corrections
    ranked: list[Ranked] = []
    try:
        for fold in (0, 1) if only_fold is None else (only_fold,):
            swap(held_out_corrections(searcher, pool, fold))
            in_fold = [q for q, f in zip(queries, folds, strict=True) if f == fold]
            ranked += run_queries(searcher, in_fold, mode, ("bullets",))
    finally:
        swap(live)
    return summarise(ranked, mode, task)


def evaluate_query_file(searcher: Searcher, path: Path, mode: Mode) -> EvalResult:
    return evaluate(searcher, load_query_file(path), mode, task=f"queries:{path.name}")


def evaluate_known_items(searcher: Searcher, mode: Mode, max_words: int = NAME_MAX_WORDS) -> EvalResult:
    """Names and arXiv ids of the indexed papers as queries; each one's answer is its own paper."""
    return evaluate(searcher, known_item_queries(searcher.papers, max_words), mode, task="known-items")


# ----------------------------------------------------------------------------- CLI
def in_sample_note(searcher: Searcher, query_file: Path | None = None, only_fold: int | None = None) -> str:
    """Why a task's queries are not held out from the index's learned models ("" when they are):
    a query file the build fitted on, or the title fold it fitted on."""
    learned = searcher.index.learned
    if learned is None or not learned.fitted:
        return ""
    fitted_on = learned.fitted_on
    if query_file is not None:
        fitted_sha = fitted_on.get("inputs", {}).get("tuning_queries_sha256")
        if fitted_sha is not None and hashlib.sha256(query_file.read_bytes()).hexdigest() == fitted_sha:
            return f"the index's learned models were fitted on {query_file.name}: in-sample"
        return ""
    fold = int(fitted_on.get("title_fold", 0))
    if only_fold is None or only_fold == fold:
        return f"the index's learned models were fitted on title fold {fold}; held out: --title-fold {1 - fold}"
    return ""


def format_table(results: Sequence[EvalResult]) -> str:
    """A markdown table: one row per (task, mode, group)."""
    lines = [
        "| task | mode | group | queries | R@1 | R@10 | MRR@10 | nDCG@10 |",
        "|---|---|---|---:|---:|---:|---:|---:|",
    ]
    for result in results:
        rows = [("all", result.queries, result.metrics)]
        rows += [(name, 0, metrics) for name, metrics in result.by_group.items()]
        for group, count, m in rows:
            lines.append(
                f"| {result.task} | {result.mode} | {group} | {count or ''} | {m['recall@1']:.3f} | "
                f"{m['recall@10']:.3f} | {m['mrr@10']:.3f} | {m['ndcg@10']:.3f} |"
            )
    return "\n".join(lines)


def run_cli(args: argparse.Namespace, config: Settings | None = None) -> int:
    """`retrieval eval`: build or reuse the index, run the task(s), print a table or JSON;
    `config` chooses the backend (as the service would: the environment when not given)."""
    from retrieval.service import open_searcher

    if args.corpus is not None:
        from retrieval.backends.choice import connect_backend
        from retrieval.embedding import DEFAULT_MODEL, load_embedder
        from retrieval.indexer import build_index

        embedder = load_embedder(DEFAULT_MODEL)
        backend = connect_backend(config if config is not None else Settings(), embedder.dim)
        try:
            report = build_index(args.corpus, args.index, embedder, show_progress=sys.stderr.isatty(), backend=backend)
        finally:
            if backend is not None:
                backend.close()
        print(f"index {report.index}: {report.papers} papers, embedded {report.embedded}", file=sys.stderr)
    searcher = open_searcher(args.index, config=config)
    modes: Sequence[Mode] = MODES if args.all_modes else ((args.mode or DEFAULT_MODE),)
    results: list[EvalResult] = []
    for mode in modes:
        if args.queries is not None:
            result = evaluate_query_file(searcher, args.queries, mode)
            results.append(replace(result, in_sample=in_sample_note(searcher, query_file=args.queries)))
        if args.known_items:
            results.append(evaluate_known_items(searcher, mode, args.name_max_words or NAME_MAX_WORDS))
        if args.queries is None and not args.known_items:
            result = evaluate_title_task(searcher, mode, only_fold=args.title_fold)
            results.append(replace(result, in_sample=in_sample_note(searcher, only_fold=args.title_fold)))
    if args.json:
        payload = [r.to_json(with_misses=args.misses) for r in results]
        print(json.dumps(payload[0] if len(payload) == 1 else payload, ensure_ascii=False))
    else:
        print(format_table(results))
        for note in dict.fromkeys(r.in_sample for r in results if r.in_sample):
            print(f"\nnote: {note}")
        flagged = len(searcher.summary_warnings)
        print(f"\nsummaries flagged as not matching their paper: {flagged} of {len(searcher.papers)}")
    return 0
