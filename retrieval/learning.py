"""The build's learning step: refit the learned models or carry them forward, and write learned.json.

`build_index` plans the step before embedding (`LearningStep.plan`: read the tuning queries, fail
fast on a bad file, decide between refitting and carrying forward), embeds the tuning queries
with the rest (`embed_tuning`, cached like every text) and writes `learned.json` into the new
version before its manifest lists the files (`write`). `report` is what `BuildReport.learned` says.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Collection
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import faiss
import numpy as np

from retrieval.corpus import Paper, text_hash
from retrieval.embedding import Embedder
from retrieval.errors import IndexCorruptError, UsageError
from retrieval.evaluation import EvalQuery, load_query_file
from retrieval.ids import split_arxiv_ids
from retrieval.learned import (
    DEV_QUERIES,
    LEARNED_FILE,
    NO_TUNING,
    LearnedModels,
    LearnOptions,
    TuningChoice,
    carried,
    read_learned,
    refit_reason,
)
from retrieval.lexical import KoreanEnglishTokenizer
from retrieval.store import EmbeddingCache, IndexData, IndexDirectory, Manifest, read_lexical_parts


def choose_tuning(choice: TuningChoice, previous: LearnedModels | None) -> Path | None:
    """The tuning file a build fits on: the one chosen; when none was chosen, the one the live
    models were fitted on while it exists (an index keeps its tuning queries as it keeps its
    model: `watch` and a plain rebuild do not drop them), else the bundled dev set."""
    if choice == NO_TUNING:
        return None
    if choice is not None:
        return Path(choice)
    kept = str(previous.fitted_on.get("tuning_queries_path") or "") if previous is not None else ""
    if kept == NO_TUNING:
        return None
    return Path(kept) if kept and Path(kept).is_file() else DEV_QUERIES


def read_tuning(path: Path | None, paper_ids: Collection[str]) -> tuple[list[EvalQuery], str | None, str]:
    """The tuning queries that name a paper of the corpus (`paper_ids`), as the searcher embeds
    them (arXiv ids taken out); the file's sha256; why none are used, when none are."""
    if path is None:
        return [], None, f"no tuning queries (--tuning-queries {NO_TUNING})"
    if not path.is_file():
        raise UsageError(f"tuning queries file {path} not found (--tuning-queries, RETRIEVAL_TUNING_QUERIES)")
    queries, total = [], 0
    for query in load_query_file(path):
        total += 1
        rest = split_arxiv_ids(query.q)[1]
        if rest and any(i in paper_ids for i in query.ids):
            queries.append(replace(query, q=rest))
    why = "" if queries else f"none of the {total} tuning queries in {path.name} names a paper of this corpus"
    return queries, hashlib.sha256(path.read_bytes()).hexdigest(), why


@dataclass(frozen=True)
class BuiltVersion:
    """What the build computed for the version the models are fitted on: its manifest, papers,
    bullet and title vectors (passages), every title embedded as a query, and the English
    corrections (bullet hub scores, paper hub scores, query map)."""

    manifest: Manifest
    papers: list[Paper]
    bullet_vectors: np.ndarray
    title_vectors: np.ndarray
    title_queries: np.ndarray
    corrections: tuple[np.ndarray, np.ndarray, np.ndarray]


@dataclass
class LearningStep:
    options: LearnOptions
    embedder: Embedder
    tokenizer: KoreanEnglishTokenizer
    inputs: dict[str, Any]
    previous: LearnedModels | None
    changed: int
    reason: str | None  # why the models are refitted; None: carried forward
    tuning: list[EvalQuery]
    no_tuning: str  # why no tuning query is used ("" when some are)
    tuning_vectors: np.ndarray | None = None
    outcome: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def plan(
        cls,
        options: LearnOptions,
        directory: IndexDirectory,
        embedder: Embedder,
        tokenizer: KoreanEnglishTokenizer,
        changed: int,
        paper_ids: Collection[str],
    ) -> LearningStep:
        """`changed`: papers this build adds, removes or changes; `paper_ids`: the corpus's papers
        (the tuning queries that name none of them are left out). `choose_tuning` picks the file."""
        from retrieval.rerank import FEATURES_ID as RERANK_FEATURES_ID
        from retrieval.training import FEATURES_ID

        try:
            version = directory.current_version()
        except IndexCorruptError:
            version = None
        previous = read_learned(version) if version is not None and version.is_dir() else None
        chosen = choose_tuning(options.tuning_queries, previous)
        options = replace(options, tuning_queries=chosen)
        tuning, sha, why = read_tuning(chosen, paper_ids)
        inputs = {
            "features": FEATURES_ID,
            "model": embedder.name,
            "tokenizer": tokenizer.name,
            "tuning_queries_sha256": sha,
            "title_sample": options.title_sample,
            "title_fold": options.title_fold,
            "seed": options.seed,
            "min_queries": options.min_queries,
            "reranker": RERANK_FEATURES_ID if options.rerank else None,
            "rerank_title_sample": options.rerank_title_sample if options.rerank else None,
        }
        reason = "first build" if version is None else refit_reason(previous, inputs, changed, options.refit_percent)
        return cls(options, embedder, tokenizer, inputs, previous, changed, reason, tuning, why)

    @property
    def carries(self) -> bool:
        return self.reason is None

    def embed_tuning(self, cache: EmbeddingCache, batch_size: int) -> None:
        """Embed the tuning queries (only when refitting; the cache keeps them between builds)."""
        if self.carries or not self.tuning:
            return
        from retrieval.indexer import embed_with_cache

        texts = [q.q for q in self.tuning]
        self.tuning_vectors, _, _ = embed_with_cache(self.embedder, texts, cache, batch_size, as_queries=True)

    def cached_hashes(self) -> set[str]:
        """Text hashes the cache must keep for this step (the tuning queries)."""
        return {text_hash(q.q) for q in self.tuning}

    def write(self, target: Path, built: BuiltVersion) -> None:
        """Write `learned.json` into the version directory `target` (its other files are written)."""
        started = time.perf_counter()
        if self.carries:
            assert self.previous is not None
            models = carried(self.previous, self.changed)
            action = "carried"
        else:
            models = self._fit(target, built)
            action = "fitted" if models.fitted else "defaults"
        (target / LEARNED_FILE).write_text(models.to_json(), encoding="utf-8")
        self.outcome = {
            "action": action,
            "reason": self.reason or f"{self.changed} papers changed (drift {models.drift} since the fit)",
            "seconds": round(time.perf_counter() - started, 3),
            "note": models.note,
        }

    def _fit(self, target: Path, built: BuiltVersion) -> LearnedModels:
        from retrieval.search import Searcher
        from retrieval.training import fit_learned

        chosen = self.options.tuning_queries
        where = {"tuning_queries_path": str(Path(chosen).resolve()) if chosen is not None else NO_TUNING}
        if not self.tuning:  # nothing to fit on: no need for a searcher
            models = fit_learned(None, built.title_queries, self.options, self.inputs)
            return replace(models, fitted_on={**models.fitted_on, **where}, note=self.no_tuning)
        hub_bullets, hub_papers, query_map = built.corrections
        sparse, term_map, summary_ranks = read_lexical_parts(target)
        manifest = built.manifest
        data = IndexData(
            manifest=manifest,
            papers=built.papers,
            bullet_vectors=_flat(built.bullet_vectors, manifest.dim),
            title_vectors=_flat(built.title_vectors, manifest.dim),
            bm25_dirs={p.name: p for p in target.iterdir() if p.is_dir() and p.name.startswith("bm25_")},
            path=target,
            hub_bullets=hub_bullets,
            hub_papers=hub_papers,
            query_map=query_map,
            sparse=sparse,
            term_map=term_map,
            summary_ranks=summary_ranks,
        )
        searcher = Searcher(data, self.embedder, tokenizer=self.tokenizer)
        try:
            assert self.tuning_vectors is not None
            models = fit_learned(
                searcher, built.title_queries, self.options, self.inputs, self.tuning, list(self.tuning_vectors)
            )
            return replace(models, fitted_on={**models.fitted_on, **where})
        finally:
            searcher.close()

    def report(self) -> dict[str, Any]:
        """`BuildReport.learned`: what happened to the learned models, why, and how long it took."""
        if self.outcome:
            return self.outcome
        note = self.previous.note if self.previous is not None else ""
        return {"action": "carried", "reason": "corpus and training inputs unchanged", "seconds": 0.0, "note": note}


def _flat(vectors: np.ndarray, dim: int) -> faiss.Index:
    index = faiss.IndexFlatIP(dim)
    if len(vectors):
        index.add(np.ascontiguousarray(vectors, dtype=np.float32))
    return index
