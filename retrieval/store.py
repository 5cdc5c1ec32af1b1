"""The persisted index: FAISS vectors, paper metadata, BM25 data and a manifest.

Layout of an index directory::

    <index>/CURRENT                 name of the live version (replaced atomically)
    <index>/versions/<version>/     manifest.json, bullets.faiss, titles.faiss, papers.json,
                                    bm25_bullets/, bm25_titles/, learned.json (retrieval/learned.py)
    <index>/cache.sqlite            embedding and token cache keyed by (model, text hash)
    <index>/build.lock              held by the one build allowed at a time

A build writes a new version under a temporary name, renames it into place and only then
points CURRENT at it, so a reader never sees a half-written index and a crash at any moment
leaves the previous version live. Nothing here uses pickle: vectors are FAISS files, metadata
is JSON, BM25 arrays are `.npy` loaded with ``allow_pickle=False``.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import sqlite3
import sys
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import faiss
import numpy as np

from retrieval.backends.records import SPARSE_DIR, SparseDocuments
from retrieval.corpus import Bullet, Paper
from retrieval.errors import IndexCorruptError, IndexLockedError, IndexMismatchError, IndexNotFoundError, UsageError
from retrieval.learned import LEARNED_FILE, LearnedModels
from retrieval.termmap import TermMap

FORMAT_VERSION = 5
CURRENT_FILE = "CURRENT"
VERSIONS_DIR = "versions"
CACHE_FILE = "cache.sqlite"
LOCK_FILE = "build.lock"
TMP_PREFIX = ".tmp-"
MANIFEST_FILE = "manifest.json"
PAPERS_FILE = "papers.json"
BULLETS_FAISS = "bullets.faiss"
TITLES_FAISS = "titles.faiss"
HUB_BULLETS_FILE = "hub_bullets.npy"
HUB_PAPERS_FILE = "hub_papers.npy"
QUERY_MAP_FILE = "query_map.npy"
TERM_MAP_FILE = "term_map.json"
SUMMARY_RANKS_FILE = "summary_ranks.npy"
PAUSE_ENV = "RETRIEVAL_TEST_PAUSE_AT"
PAUSE_STAGES = ("embedding", "write", "publish")


def pause_point(stage: str) -> None:
    """Test hook for crash tests; does nothing unless `RETRIEVAL_TEST_PAUSE_AT` names `stage`.

    Stages: ``embedding`` (after each embedding batch is committed to the cache),
    ``write`` (half of a version's files written to its temporary directory), ``publish``
    (version renamed into place, CURRENT not yet replaced). The value is ``STAGE`` (sleep
    an hour, for a test to SIGKILL the build) or ``STAGE:SECONDS``. A line ``paused at STAGE``
    goes to stderr first so the test knows where the build is; a stage reached again pauses again.
    """
    value = os.environ.get(PAUSE_ENV)
    if not value:
        return
    name, _, seconds = value.partition(":")
    if name != stage:
        return
    print(f"{PAUSE_ENV}: paused at {stage} (pid {os.getpid()})", file=sys.stderr, flush=True)
    time.sleep(float(seconds) if seconds else 3600.0)


@dataclass
class Manifest:
    """Build metadata saved beside the index and checked on every load."""

    format_version: int
    model: str
    dim: int
    tokenizer: str
    papers: int
    bullets: int
    corpus_fingerprint: str
    created: str
    files: dict[str, dict[str, Any]] = field(default_factory=dict)
    build: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Manifest:
        if not isinstance(data, dict):
            raise TypeError(f"expected a JSON object, found {type(data).__name__}")
        known = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in data.items() if k in known})


@dataclass
class IndexData:
    """Everything a version holds, in memory."""

    manifest: Manifest
    papers: list[Paper]
    bullet_vectors: faiss.Index
    title_vectors: faiss.Index
    bm25_dirs: dict[str, Path]
    path: Path
    hub_bullets: np.ndarray  # hubness of each bullet vector (retrieval/hubness.py)
    hub_papers: np.ndarray  # hubness of each paper's bullet centroid
    query_map: np.ndarray  # (dim, dim) map of English queries towards the bullets (retrieval/alignment.py)
    sparse: SparseDocuments  # BM25 weights of bullets, summaries and titles (retrieval/backends/records.py)
    term_map: TermMap  # English <-> Korean phrases mined from the bullets (retrieval/termmap.py)
    summary_ranks: np.ndarray  # per paper: other summaries nearer to its title than its own (hubness.summary_ranks)
    learned: LearnedModels | None = None  # fusion weights and calibration (None: built before learned.json)

    def released(self) -> IndexData:
        """A copy that keeps only the manifest and path: what a closed searcher still tells about itself."""
        empty = np.empty(0, dtype=np.float32)
        return replace(
            self,
            papers=[],
            bullet_vectors=faiss.IndexFlatIP(self.manifest.dim),
            title_vectors=faiss.IndexFlatIP(self.manifest.dim),
            bm25_dirs={},
            hub_bullets=empty,
            hub_papers=empty,
            query_map=np.empty((0, 0), dtype=np.float32),
            sparse=SparseDocuments({}, {}),
            term_map=TermMap(),
            summary_ranks=np.empty(0, dtype=np.int32),
        )

    @property
    def bullet_rows(self) -> list[tuple[int, int]]:
        """(paper index, bullet position) for every row of `bullet_vectors`, in order."""
        return [(pi, b.position) for pi, paper in enumerate(self.papers) for b in paper.bullets]


def paper_to_json(paper: Paper) -> dict[str, Any]:
    # Spelled out rather than dataclasses.asdict: that deep-copies every field and costs about
    # a second per build on the full corpus.
    return {
        "arxiv_id": paper.arxiv_id,
        "title": paper.title,
        "url": paper.url,
        "dates": list(paper.dates),
        "votes": paper.votes,
        "authors": list(paper.authors),
        "bullets": [{"position": b.position, "section": b.section, "text": b.text} for b in paper.bullets],
        "sources": list(paper.sources),
        "positions": dict(paper.positions),
    }


def paper_from_json(data: dict[str, Any]) -> Paper:
    bullets = [Bullet(**b) for b in data["bullets"]]
    return Paper(
        arxiv_id=data["arxiv_id"],
        title=data["title"],
        url=data["url"],
        dates=list(data["dates"]),
        votes=data["votes"],
        authors=list(data["authors"]),
        bullets=bullets,
        sources=list(data.get("sources", [])),
        positions=dict(data.get("positions", {})),  # absent in indexes built before it existed
    )


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_tree(root: Path) -> None:
    for path in sorted(root.rglob("*")):
        if path.is_file():
            with path.open("rb") as handle:
                os.fsync(handle.fileno())
    for path in sorted([root, *[p for p in root.rglob("*") if p.is_dir()]]):
        _fsync_dir(path)


def _flat_index(vectors: np.ndarray, dim: int) -> faiss.Index:
    index = faiss.IndexFlatIP(dim)
    if len(vectors):
        index.add(np.ascontiguousarray(vectors, dtype=np.float32))
    return index


class IndexDirectory:
    """One index directory: its versions, its cache and its build lock."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        _refuse_non_directory(self.path)

    @property
    def versions(self) -> Path:
        return self.path / VERSIONS_DIR

    def current_version(self) -> Path | None:
        pointer = self.path / CURRENT_FILE
        try:
            name = pointer.read_text(encoding="utf-8").strip()
        except FileNotFoundError:
            return None
        if not name or "/" in name or name.startswith("."):
            raise IndexCorruptError(f"{pointer} is damaged (holds {name!r}); rebuild with `retrieval build-index`")
        return self.versions / name

    def exists(self) -> bool:
        return (self.path / CURRENT_FILE).exists()

    @contextmanager
    def build_lock(self) -> Iterator[None]:
        """Hold the exclusive build lock; raise `IndexLockedError` if another build has it.

        When the build fails before any version was published, the lock file (and the directory,
        if this build created it and left nothing else) is removed again.
        """
        created = not self.path.exists()
        self.path.mkdir(parents=True, exist_ok=True)
        handle = (self.path / LOCK_FILE).open("a+")
        locked = False
        try:
            try:
                fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError as exc:
                raise IndexLockedError(
                    f"another build is running on {self.path} (it holds {self.path / LOCK_FILE}); "
                    "wait for it to finish and run again"
                ) from exc
            locked = True
            handle.seek(0)
            handle.truncate()
            handle.write(f"{os.getpid()}\n")
            handle.flush()
            yield
        except BaseException:
            if locked and not self.exists():
                self._remove_failed_first_build(created)
            raise
        finally:
            handle.close()

    def _remove_failed_first_build(self, created: bool) -> None:
        (self.path / LOCK_FILE).unlink(missing_ok=True)
        if self.versions.is_dir() and not any(self.versions.iterdir()):
            self.versions.rmdir()
        if created and not any(self.path.iterdir()):
            self.path.rmdir()

    def clean_stale(self) -> list[str]:
        """Remove temporary and superseded versions. Call only while holding the build lock."""
        removed: list[str] = []
        if not self.versions.is_dir():
            return removed
        current = self.current_version()
        for child in self.versions.iterdir():
            if current is not None and child.name == current.name:
                continue
            shutil.rmtree(child, ignore_errors=True)
            removed.append(child.name)
        return removed

    def new_version_dir(self) -> Path:
        self.versions.mkdir(parents=True, exist_ok=True)
        tmp = self.versions / f"{TMP_PREFIX}{uuid.uuid4().hex[:12]}"
        tmp.mkdir()
        return tmp

    @staticmethod
    def new_version_name() -> str:
        """A fresh, time-ordered version name (`v-20261201T102133-74c507`)."""
        return time.strftime("v-%Y%m%dT%H%M%S", time.gmtime()) + f"-{uuid.uuid4().hex[:6]}"

    def publish(self, tmp: Path, name: str | None = None) -> Path:
        """Make a fully written temporary version the live one, atomically (named `name`, or a new name)."""
        _fsync_tree(tmp)
        name = name or self.new_version_name()
        final = self.versions / name
        os.rename(tmp, final)
        _fsync_dir(self.versions)
        pointer_tmp = self.path / f"{CURRENT_FILE}{TMP_PREFIX}{uuid.uuid4().hex[:6]}"
        with pointer_tmp.open("w", encoding="utf-8") as handle:
            handle.write(name + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        pause_point("publish")
        os.replace(pointer_tmp, self.path / CURRENT_FILE)
        _fsync_dir(self.path)
        return final

    def clean_pointer_temps(self) -> None:
        for child in self.path.glob(f"{CURRENT_FILE}{TMP_PREFIX}*"):
            child.unlink(missing_ok=True)


def write_version(
    target: Path,
    papers: list[Paper],
    bullet_vectors: np.ndarray,
    title_vectors: np.ndarray,
    bm25_writers: dict[str, Any],
    manifest: Manifest,
    hub_bullets: np.ndarray,
    hub_papers: np.ndarray,
    query_map: np.ndarray,
    sparse: SparseDocuments,
    term_map: TermMap,
    summary_ranks: np.ndarray,
    before_manifest: Callable[[Path], None] | None = None,
) -> None:
    """Write all files of a version into `target` (a fresh temporary directory); `before_manifest`
    may add files (the learned models, fitted on the written version) before they are listed."""
    dim = manifest.dim
    faiss.write_index(_flat_index(bullet_vectors, dim), str(target / BULLETS_FAISS))
    faiss.write_index(_flat_index(title_vectors, dim), str(target / TITLES_FAISS))
    np.save(target / HUB_BULLETS_FILE, np.asarray(hub_bullets, dtype=np.float32), allow_pickle=False)
    np.save(target / HUB_PAPERS_FILE, np.asarray(hub_papers, dtype=np.float32), allow_pickle=False)
    np.save(target / QUERY_MAP_FILE, np.asarray(query_map, dtype=np.float32), allow_pickle=False)
    with (target / PAPERS_FILE).open("w", encoding="utf-8") as handle:
        json.dump([paper_to_json(p) for p in papers], handle, ensure_ascii=False)
    pause_point("write")
    sparse.save(target / SPARSE_DIR)
    (target / TERM_MAP_FILE).write_text(json.dumps(term_map.to_json(), ensure_ascii=False), encoding="utf-8")
    np.save(target / SUMMARY_RANKS_FILE, np.asarray(summary_ranks, dtype=np.int32), allow_pickle=False)
    for name, writer in bm25_writers.items():
        writer(target / name)
    if before_manifest is not None:
        before_manifest(target)
    files: dict[str, dict[str, Any]] = {}
    for path in sorted(p for p in target.rglob("*") if p.is_file()):
        rel = path.relative_to(target).as_posix()
        files[rel] = {"sha256": file_sha256(path), "bytes": path.stat().st_size}
    manifest.files = files
    with (target / MANIFEST_FILE).open("w", encoding="utf-8") as handle:
        json.dump(asdict(manifest), handle, ensure_ascii=False, indent=2)


def read_manifest(version: Path) -> Manifest:
    path = version / MANIFEST_FILE
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        manifest = Manifest.from_json(data)
    except FileNotFoundError as exc:
        raise IndexCorruptError(f"{path} is missing; rebuild the index with `retrieval build-index`") from exc
    except (ValueError, TypeError) as exc:
        raise IndexCorruptError(f"{path} is damaged ({exc}); rebuild the index with `retrieval build-index`") from exc
    if manifest.format_version != FORMAT_VERSION:
        raise IndexMismatchError(
            f"{path} has format version {manifest.format_version}, this program reads {FORMAT_VERSION}; "
            "rebuild the index with `retrieval build-index`"
        )
    return manifest


def verify_files(version: Path, manifest: Manifest) -> None:
    """Check that every file listed in the manifest is present, of the right size and checksum."""
    if not manifest.files:
        raise IndexCorruptError(f"{version / MANIFEST_FILE} lists no files; rebuild the index")
    for rel, meta in manifest.files.items():
        path = version / rel
        if not path.is_file():
            raise IndexCorruptError(f"index file {path} is missing; rebuild the index with `retrieval build-index`")
        if path.stat().st_size != meta.get("bytes"):
            raise IndexCorruptError(
                f"index file {path} has {path.stat().st_size} bytes, the manifest says {meta.get('bytes')} "
                "(truncated or altered); rebuild the index with `retrieval build-index`"
            )
        if file_sha256(path) != meta.get("sha256"):
            raise IndexCorruptError(
                f"index file {path} does not match its checksum (altered or damaged); "
                "rebuild the index with `retrieval build-index`"
            )


def _refuse_non_directory(path: Path) -> None:
    """`UsageError` when `path`, or the nearest part of it that exists, is not a directory."""
    existing = path
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if existing.exists() and not existing.is_dir():
        what = "is" if existing == path else f"is inside {existing}, which is"
        raise UsageError(f"index path {path} {what} a file, not a directory; choose a directory for --index")


def _not_found_message(path: Path) -> str:
    """Why there is no index at `path`, naming the indexes that do exist beside it."""
    why = "a build started there did not finish" if path.is_dir() and any(path.iterdir()) else f"no {CURRENT_FILE}"
    message = f"no index at {path} ({why}); build one with `retrieval build-index CORPUS_DIR --index {path}`"
    siblings = (
        sorted(p for p in path.parent.glob(f"*/{CURRENT_FILE}") if p.parent != path) if path.parent.is_dir() else []
    )
    if siblings:
        names = ", ".join(str(p.parent) for p in siblings[:5])
        message += f", or use an existing one with --index or RETRIEVAL_INDEX_DIR: {names}"
    return message


def read_lexical_parts(version: Path) -> tuple[SparseDocuments, TermMap, np.ndarray]:
    """A version's BM25 weights, term map and summary ranks (`load_index`'s reading of them; the
    build's learning step reads them from the version it is writing)."""
    sparse = SparseDocuments.load(version / SPARSE_DIR)
    term_map = TermMap.from_json(json.loads((version / TERM_MAP_FILE).read_text(encoding="utf-8")))
    return sparse, term_map, np.load(version / SUMMARY_RANKS_FILE, allow_pickle=False)


def load_index(path: Path | str, expected_model: str | None = None) -> IndexData:
    """Load and validate the live version of an index directory.

    Raises `IndexNotFoundError`, `IndexCorruptError` or `IndexMismatchError`, each with a
    message that names the file and says what to do.
    """
    directory = IndexDirectory(path)
    version = directory.current_version()
    if version is None:
        raise IndexNotFoundError(_not_found_message(directory.path))
    if not version.is_dir():
        raise IndexCorruptError(
            f"{directory.path / CURRENT_FILE} points at {version}, which is missing; rebuild the index"
        )
    manifest = read_manifest(version)
    if expected_model is not None and expected_model != manifest.model:
        raise IndexMismatchError(
            f"index {directory.path} was built with model {manifest.model!r}, not {expected_model!r}; "
            f"use --model {manifest.model} or rebuild with --model {expected_model}"
        )
    verify_files(version, manifest)
    try:
        bullets = faiss.read_index(str(version / BULLETS_FAISS))
        titles = faiss.read_index(str(version / TITLES_FAISS))
        papers = [paper_from_json(p) for p in json.loads((version / PAPERS_FILE).read_text(encoding="utf-8"))]
        hub_bullets = np.load(version / HUB_BULLETS_FILE, allow_pickle=False)
        hub_papers = np.load(version / HUB_PAPERS_FILE, allow_pickle=False)
        query_map = np.load(version / QUERY_MAP_FILE, allow_pickle=False)
        sparse, term_map, summary_ranks = read_lexical_parts(version)
        learned_text = (version / LEARNED_FILE).read_text(encoding="utf-8") if LEARNED_FILE in manifest.files else None
    except (RuntimeError, ValueError, KeyError, TypeError, OSError) as exc:
        raise IndexCorruptError(
            f"index {version} cannot be read ({exc}); rebuild it with `retrieval build-index`"
        ) from exc
    bullet_count = sum(len(p.bullets) for p in papers)
    if bullets.d != manifest.dim or titles.d != manifest.dim:
        raise IndexCorruptError(
            f"vectors in {version} have dim {bullets.d}, the manifest says {manifest.dim}; rebuild the index"
        )
    if bullets.ntotal != bullet_count or bullets.ntotal != manifest.bullets or titles.ntotal != len(papers):
        raise IndexCorruptError(
            f"index {version} is inconsistent ({bullets.ntotal} bullet vectors, {bullet_count} bullets in "
            f"{PAPERS_FILE}, {titles.ntotal} title vectors for {len(papers)} papers); rebuild the index"
        )
    dim = manifest.dim
    if hub_bullets.shape != (bullet_count,) or hub_papers.shape != (len(papers),) or query_map.shape != (dim, dim):
        raise IndexCorruptError(
            f"index {version} is inconsistent ({HUB_BULLETS_FILE} has shape {hub_bullets.shape}, "
            f"{HUB_PAPERS_FILE} {hub_papers.shape}, {QUERY_MAP_FILE} {query_map.shape}, for "
            f"{bullet_count} bullets of {len(papers)} papers of dim {dim}); rebuild the index"
        )
    sparse.check_sizes(bullet_count, len(papers), version)
    if summary_ranks.shape != (len(papers),):
        raise IndexCorruptError(
            f"{version / SUMMARY_RANKS_FILE} has shape {summary_ranks.shape} for {len(papers)} papers; "
            "rebuild the index"
        )
    try:
        learned = LearnedModels.from_json(learned_text) if learned_text is not None else None
    except ValueError as exc:
        raise IndexCorruptError(
            f"{version / LEARNED_FILE} is damaged ({exc}); rebuild the index with `retrieval build-index`"
        ) from exc
    bm25_dirs = {p.name: p for p in version.iterdir() if p.is_dir() and p.name.startswith("bm25_")}
    return IndexData(
        manifest,
        papers,
        bullets,
        titles,
        bm25_dirs,
        version,
        hub_bullets.astype(np.float32),
        hub_papers.astype(np.float32),
        query_map.astype(np.float32),
        sparse,
        term_map,
        summary_ranks.astype(np.int32),
        learned,
    )


class EmbeddingCache:
    """Vectors and token lists keyed by (model or tokenizer, text hash), in SQLite.

    Commits after every `put`, so a killed build keeps everything embedded before the kill.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(str(path), timeout=30)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS vectors (model TEXT, hash TEXT, vector BLOB, PRIMARY KEY (model, hash))"
        )
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS tokens (tokenizer TEXT, hash TEXT, tokens TEXT, PRIMARY KEY (tokenizer, hash))"
        )
        self._db.commit()

    def close(self) -> None:
        self._db.close()

    def get_vectors(self, model: str, hashes: Iterable[str], dim: int) -> dict[str, np.ndarray]:
        found: dict[str, np.ndarray] = {}
        wanted = list(dict.fromkeys(hashes))
        for start in range(0, len(wanted), 500):
            chunk = wanted[start : start + 500]
            marks = ",".join("?" * len(chunk))
            rows = self._db.execute(
                f"SELECT hash, vector FROM vectors WHERE model = ? AND hash IN ({marks})", [model, *chunk]
            )
            for key, blob in rows:
                vector = np.frombuffer(blob, dtype=np.float32)
                if vector.shape == (dim,):
                    found[key] = vector
        return found

    def put_vectors(self, model: str, items: dict[str, np.ndarray]) -> None:
        self._db.executemany(
            "INSERT OR REPLACE INTO vectors VALUES (?, ?, ?)",
            [(model, key, np.asarray(vec, dtype=np.float32).tobytes()) for key, vec in items.items()],
        )
        self._db.commit()

    def get_tokens(self, tokenizer: str, hashes: Iterable[str]) -> dict[str, list[str]]:
        found: dict[str, list[str]] = {}
        wanted = list(dict.fromkeys(hashes))
        for start in range(0, len(wanted), 500):
            chunk = wanted[start : start + 500]
            marks = ",".join("?" * len(chunk))
            rows = self._db.execute(
                f"SELECT hash, tokens FROM tokens WHERE tokenizer = ? AND hash IN ({marks})", [tokenizer, *chunk]
            )
            for key, text in rows:
                found[key] = json.loads(text)
        return found

    def put_tokens(self, tokenizer: str, items: dict[str, list[str]]) -> None:
        self._db.executemany(
            "INSERT OR REPLACE INTO tokens VALUES (?, ?, ?)",
            [(tokenizer, key, json.dumps(tokens, ensure_ascii=False)) for key, tokens in items.items()],
        )
        self._db.commit()

    def prune(self, models: Iterable[str], tokenizer: str, keep: set[str]) -> int:
        """Drop entries of these model keys and this tokenizer whose text is no longer in the index."""
        removed = 0
        targets = [("vectors", "model", model) for model in models] + [("tokens", "tokenizer", tokenizer)]
        for table, column, name in targets:
            stale = [
                row[0]
                for row in self._db.execute(f"SELECT hash FROM {table} WHERE {column} = ?", [name])
                if row[0] not in keep
            ]
            self._db.executemany(f"DELETE FROM {table} WHERE {column} = ? AND hash = ?", [(name, key) for key in stale])
            removed += len(stale)
        self._db.commit()
        return removed
