"""`build-index`: parse a corpus, embed what changed, write a new index version atomically."""

from __future__ import annotations

import hashlib
import json
import sys
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from retrieval.alignment import english_corrections
from retrieval.backends.base import Backend
from retrieval.backends.records import SPARSE_DIR, SparseDocuments, paper_records
from retrieval.backends.syncing import BACKEND_SYNC_FILE, backend_current, previous_sync, sync_to_backend
from retrieval.corpus import Corpus, Paper, load_corpus, text_hash
from retrieval.embedding import Embedder
from retrieval.errors import IndexCorruptError, IndexMismatchError
from retrieval.hubness import bullet_centroids, summary_ranks
from retrieval.learned import LearnOptions
from retrieval.learning import BuiltVersion, LearningStep
from retrieval.lexical import BM25Index, KoreanEnglishTokenizer
from retrieval.refit import refit_due
from retrieval.store import (
    CACHE_FILE,
    FORMAT_VERSION,
    QUERY_MAP_FILE,
    EmbeddingCache,
    IndexDirectory,
    Manifest,
    load_index,
    pause_point,
    read_manifest,
    write_version,
)
from retrieval.termmap import TermMap

ProgressFactory = Callable[[int, str], Any]


@dataclass
class BuildReport:
    """What a build did; `--json` prints it as is."""

    index: str
    model: str
    files: int
    files_skipped: list[dict[str, Any]]
    problems: list[dict[str, Any]]
    papers: int
    bullets: int
    embedded: int
    reused: int
    removed: int
    papers_removed: int
    seconds: float
    version: str
    unchanged: bool = False
    cleaned: list[str] = field(default_factory=list)
    backend: dict[str, Any] | None = None  # the external backend's sync (papers upserted, deleted, kept, seconds)
    learned: dict[str, Any] = field(default_factory=dict)  # action (fitted, carried, defaults), reason, seconds

    def to_json(self) -> dict[str, Any]:
        return dict(self.__dict__)


def corpus_fingerprint(corpus: Corpus) -> str:
    """Hash of what the index is built from: every parsed paper, in order."""
    digest = hashlib.sha256()
    for paper in corpus.papers:
        bullets = [[b.position, b.section, b.text] for b in paper.bullets]
        record: list[Any] = [paper.arxiv_id, paper.title, paper.dates, paper.votes, paper.authors, bullets]
        record.append(sorted(paper.positions.items()))  # a day's order is served by /days
        digest.update(json.dumps(record, ensure_ascii=False).encode("utf-8"))
    return digest.hexdigest()


def title_document(paper: Paper) -> str:
    return paper.title


def lexical_title_document(paper: Paper) -> str:
    return " ".join([paper.title, *paper.authors])


def _progress(total: int, desc: str, enabled: bool) -> Any:
    if not enabled or total == 0:
        return None
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="text", file=sys.stderr, leave=False)


def query_cache_key(embedder: Embedder) -> str:
    """Cache key of texts embedded as queries (the e5 family embeds them with another prefix)."""
    return f"{embedder.name}#query"


def embed_with_cache(
    embedder: Embedder,
    texts: Sequence[str],
    cache: EmbeddingCache,
    batch_size: int = 256,
    show_progress: bool = False,
    as_queries: bool = False,
) -> tuple[np.ndarray, int, int]:
    """Vectors for `texts` (passages, or queries with `as_queries`), embedding only what the cache lacks.

    Unique missing texts are embedded longest-first in batches of similar length, and every
    batch is committed to the cache at once, so a killed build loses at most one batch.
    Returns (vectors, embedded count, reused count).
    """
    hashes = [text_hash(t) for t in texts]
    model_key = query_cache_key(embedder) if as_queries else embedder.name
    embed = embedder.embed_queries if as_queries else embedder.embed_passages
    found = cache.get_vectors(model_key, hashes, embedder.dim)
    missing: dict[str, str] = {}
    for key, text in zip(hashes, texts, strict=True):
        if key not in found and key not in missing:
            missing[key] = text
    order = sorted(missing, key=lambda k: len(missing[k]), reverse=True)
    bar = _progress(len(order), "embedding", show_progress)
    for start in range(0, len(order), batch_size):
        keys = order[start : start + batch_size]
        vectors = embed([missing[k] for k in keys])
        batch = dict(zip(keys, vectors, strict=True))
        cache.put_vectors(model_key, batch)
        pause_point("embedding")
        found.update(batch)
        if bar is not None:
            bar.update(len(keys))
    if bar is not None:
        bar.close()
    reused = sum(1 for key in hashes if key not in missing)
    matrix = np.stack([found[k] for k in hashes]) if hashes else np.zeros((0, embedder.dim), dtype=np.float32)
    return matrix.astype(np.float32), len(missing), reused


def tokens_with_cache(
    tokenizer: KoreanEnglishTokenizer, texts: Sequence[str], cache: EmbeddingCache, batch_size: int = 512
) -> list[list[str]]:
    hashes = [text_hash(t) for t in texts]
    found = cache.get_tokens(tokenizer.name, hashes)
    missing = {k: t for k, t in zip(hashes, texts, strict=True) if k not in found}
    keys = list(missing)
    for start in range(0, len(keys), batch_size):
        chunk = keys[start : start + batch_size]
        batch = dict(zip(chunk, tokenizer.tokenize_many([missing[k] for k in chunk]), strict=True))
        cache.put_tokens(tokenizer.name, batch)
        found.update(batch)
    return [found[k] for k in hashes]


def _bullet_offsets(papers: Sequence[Paper]) -> list[int]:
    """Row of each paper's first bullet in the flattened bullet list."""
    offsets, row = [], 0
    for paper in papers:
        offsets.append(row)
        row += len(paper.bullets)
    return offsets


def _previous_state(directory: IndexDirectory) -> tuple[Manifest | None, set[tuple[str, str]], set[str]]:
    """The live version's manifest and bullet keys, or nothing when it is absent or unreadable."""
    try:
        version = directory.current_version()
        if version is None or not version.is_dir():
            return None, set(), set()
        manifest = read_manifest(version)
        papers = json.loads((version / "papers.json").read_text(encoding="utf-8"))
    except (IndexCorruptError, IndexMismatchError, OSError, ValueError):
        return None, set(), set()
    keys = {(p["arxiv_id"], text_hash(b["text"])) for p in papers for b in p["bullets"]}
    return manifest, keys, {p["arxiv_id"] for p in papers}


def build_index(
    corpus_dir: Path | str,
    index_dir: Path | str,
    embedder: Embedder,
    tokenizer: KoreanEnglishTokenizer | None = None,
    show_progress: bool = False,
    batch_size: int = 256,
    after_embedding: Callable[[], None] | None = None,
    backend: Backend | None = None,
    learning: LearnOptions | None = None,
) -> BuildReport:
    """Build or incrementally rebuild the index at `index_dir` from the digests in `corpus_dir`.

    With an external `backend` (Milvus) the new version is synced into it first (only the papers
    whose records changed), then published here; a failed sync leaves both at the old version.
    `learning`: what the learned models are fitted on and when they are refitted (retrieval/learned.py).
    Holds the directory's build lock for the whole run. Raises `CorpusError` when no paper is
    found (the previous index stays live), `IndexLockedError` when another build runs.
    """
    started = time.perf_counter()
    tokenizer = tokenizer or KoreanEnglishTokenizer()
    directory = IndexDirectory(index_dir)
    with directory.build_lock():
        directory.clean_pointer_temps()
        cleaned = directory.clean_stale()
        corpus = load_corpus(corpus_dir)
        fingerprint = corpus_fingerprint(corpus)
        previous, previous_keys, previous_ids = _previous_state(directory)
        bullet_texts = [b.text for p in corpus.papers for b in p.bullets]
        keys = {(p.arxiv_id, b.text_hash) for p in corpus.papers for b in p.bullets}
        changed = len({arxiv_id for arxiv_id, _ in previous_keys ^ keys})  # papers added, removed or changed
        step = LearningStep.plan(
            learning or LearnOptions(), directory, embedder, tokenizer, changed, {p.arxiv_id for p in corpus.papers}
        )
        common = dict(
            index=str(directory.path),
            model=embedder.name,
            files=len(corpus.files),
            files_skipped=[{"path": s.path, "line": s.line, "reason": s.reason} for s in corpus.files_skipped],
            problems=[{"path": s.path, "line": s.line, "reason": s.reason} for s in corpus.problems],
            papers=len(corpus.papers),
            bullets=len(bullet_texts),
            removed=len(previous_keys - keys),
            papers_removed=len(previous_ids - {p.arxiv_id for p in corpus.papers}),
            cleaned=cleaned,
        )
        unchanged = _is_unchanged(directory, previous, embedder, tokenizer, fingerprint)
        if unchanged and _backend_current(directory, backend) and step.carries:
            assert previous is not None
            current = directory.current_version()
            return BuildReport(
                **common,  # type: ignore[arg-type]
                embedded=0,
                reused=len(bullet_texts),
                seconds=round(time.perf_counter() - started, 3),
                version=current.name if current else "",
                unchanged=True,
                learned=step.report(),
            )

        cache = EmbeddingCache(directory.path / CACHE_FILE)
        try:
            bullet_vectors, embedded, reused = embed_with_cache(
                embedder, bullet_texts, cache, batch_size=batch_size, show_progress=show_progress
            )
            titles = [title_document(p) for p in corpus.papers]
            title_vectors, _, _ = embed_with_cache(embedder, titles, cache, batch_size=batch_size)
            # Every title embedded as a query: trains the query map and is the hubness pool.
            title_queries, _, _ = embed_with_cache(embedder, titles, cache, batch_size=batch_size, as_queries=True)
            step.embed_tuning(cache, batch_size)
            if after_embedding is not None:
                after_embedding()
            offsets = np.array([*_bullet_offsets(corpus.papers), len(bullet_texts)], dtype=np.int64)
            # FAISS and BLAS release the GIL: the query map and hub scores are computed while Kiwi
            # tokenises and BM25 indexes.
            hub_worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="hubness")
            kept_map, drift = _kept_query_map(directory, previous, embedder, changed, len(corpus.papers))
            hub_future = hub_worker.submit(
                english_corrections, bullet_vectors, offsets, title_queries, np.arange(len(corpus.papers)), kept_map
            )
            hub_worker.shutdown(wait=False)
            bullet_terms = tokens_with_cache(tokenizer, bullet_texts, cache)
            title_terms = tokens_with_cache(tokenizer, [lexical_title_document(p) for p in corpus.papers], cache)
            paper_terms = [
                [term for row in range(start, start + len(p.bullets)) for term in bullet_terms[row]]
                for p, start in zip(corpus.papers, _bullet_offsets(corpus.papers), strict=True)
            ]
            bm25 = {
                "bm25_bullets": BM25Index.build(bullet_terms),
                "bm25_papers": BM25Index.build(paper_terms),
                "bm25_titles": BM25Index.build(title_terms),
            }
            sparse = SparseDocuments.fit(bullet_terms, paper_terms, title_terms, _previous_sparse(directory))
            term_map = TermMap.from_papers(corpus.papers)
            query_map, hub_bullets, hub_papers = hub_future.result()
            centroids = bullet_centroids(bullet_vectors, offsets)
            manifest = Manifest(
                format_version=FORMAT_VERSION,
                model=embedder.name,
                dim=int(bullet_vectors.shape[1]) if len(bullet_vectors) else embedder.dim,
                tokenizer=tokenizer.name,
                papers=len(corpus.papers),
                bullets=len(bullet_texts),
                corpus_fingerprint=fingerprint,
                created=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                build={"corpus": str(corpus_dir), "files": len(corpus.files), QUERY_MAP_DRIFT: drift},
            )
            name = directory.new_version_name()
            synced = None
            if backend is not None:
                records = paper_records(
                    corpus.papers, bullet_vectors, offsets, centroids, title_vectors,
                    hub_bullets, hub_papers, sparse,
                )  # fmt: skip
                synced = sync_to_backend(backend, records, name, _previous_sync(directory))
            tmp = directory.new_version_dir()
            if synced is not None:
                (tmp / BACKEND_SYNC_FILE).write_text(json.dumps(synced.state), encoding="utf-8")
            write_version(
                tmp,
                corpus.papers,
                bullet_vectors,
                title_vectors,
                {name: index.save for name, index in bm25.items()},
                manifest,
                hub_bullets,
                hub_papers,
                query_map,
                sparse,
                term_map,
                summary_ranks(title_vectors, centroids),
                before_manifest=lambda target: step.write(
                    target,
                    BuiltVersion(
                        manifest,
                        corpus.papers,
                        bullet_vectors,
                        title_vectors,
                        title_queries,
                        (hub_bullets, hub_papers, query_map),
                    ),
                ),  # fmt: skip
            )
            final = directory.publish(tmp, name)
            directory.clean_stale()
            live_hashes = {text_hash(t) for t in bullet_texts} | {text_hash(t) for t in titles}
            live_hashes |= {text_hash(lexical_title_document(p)) for p in corpus.papers} | step.cached_hashes()
            cache.prune([embedder.name, query_cache_key(embedder)], tokenizer.name, live_hashes)
        finally:
            cache.close()
        return BuildReport(
            **common,  # type: ignore[arg-type]
            embedded=embedded,
            reused=reused,
            seconds=round(time.perf_counter() - started, 3),
            version=final.name,
            backend=synced.report if synced is not None else None,
            learned=step.report(),
        )


# The query map (and with it every hubness offset) is carried by an incremental build until the
# papers changed since its fit make a refit due (retrieval/refit.py, the rule the learned models
# share).
QUERY_MAP_DRIFT = "query_map_drift"  # manifest.build: papers changed since the map was fitted


def _kept_query_map(
    directory: IndexDirectory,
    previous: Manifest | None,
    embedder: Embedder,
    changed: int,
    papers: int,
) -> tuple[np.ndarray | None, int]:
    """The live version's query map to keep (None: fit a new one) and the drift to record;
    `changed`: papers added, removed or changed by this build."""
    if previous is None or previous.model != embedder.name:
        return None, 0
    drift = int(previous.build.get(QUERY_MAP_DRIFT, 0)) + changed
    if refit_due(drift, papers):
        return None, 0
    version = directory.current_version()
    try:
        kept = np.load(version / QUERY_MAP_FILE, allow_pickle=False) if version is not None else None
    except (OSError, ValueError):
        return None, 0
    if kept is None or kept.shape != (embedder.dim, embedder.dim):
        return None, 0
    return kept.astype(np.float32), drift


def _previous_sparse(directory: IndexDirectory) -> SparseDocuments | None:
    """The live version's sparse encoders (their term ids and lengths carry over), if readable."""
    version = directory.current_version()
    if version is None or not (version / SPARSE_DIR).is_dir():
        return None
    try:
        return SparseDocuments.load(version / SPARSE_DIR)
    except IndexCorruptError:
        return None


def _previous_sync(directory: IndexDirectory) -> dict[str, Any] | None:
    version = directory.current_version()
    return previous_sync(version) if version is not None else None


def _backend_current(directory: IndexDirectory, backend: Backend | None) -> bool:
    """True without an external backend, or when it serves the live version already."""
    version = directory.current_version()
    return backend is None or (version is not None and backend_current(backend, version.name))


def _is_unchanged(
    directory: IndexDirectory,
    previous: Manifest | None,
    embedder: Embedder,
    tokenizer: KoreanEnglishTokenizer,
    fingerprint: str,
) -> bool:
    """True when the live version was built from the same corpus and settings and is intact."""
    if previous is None:
        return False
    if (previous.corpus_fingerprint, previous.model, previous.tokenizer) != (
        fingerprint,
        embedder.name,
        tokenizer.name,
    ):
        return False
    try:
        load_index(directory.path, expected_model=embedder.name)
    except (IndexCorruptError, IndexMismatchError):
        return False
    return True
