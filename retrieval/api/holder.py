"""The live `Searcher` of a running service, swapped atomically on reload."""

from __future__ import annotations

import logging
import threading
import time

from pydantic import BaseModel, Field

from retrieval.config import Settings
from retrieval.embedding import load_embedder
from retrieval.errors import RetrievalError
from retrieval.search import Searcher, SearchSettings
from retrieval.service import open_searcher
from retrieval.store import IndexDirectory, load_index

log = logging.getLogger("retrieval.api")


class ReloadResult(BaseModel):
    reloaded: bool = Field(description="false when CURRENT still names the version being served")
    version: str
    previous: str | None
    papers: int
    bullets: int
    took_ms: float


def search_settings(settings: Settings) -> SearchSettings:
    return SearchSettings(candidate_depth=settings.candidate_depth)


def warm_up(searcher: Searcher) -> None:
    """One query embedding and one tokenization, so the first real request is not slow."""
    searcher.embedder.embed_queries(["query warm-up 검색 준비"])
    searcher.tokenizer.tokenize("검색 준비 warm-up")


class SearcherHolder:
    """Holds the live `Searcher`; `reload` swaps it atomically.

    Requests read `current` once and keep that reference, so a request in flight finishes on
    the searcher it started with while later requests see the new one.
    """

    def __init__(self, settings: Settings, searcher: Searcher | None = None) -> None:
        self.settings = settings
        self._searcher = searcher
        self._reload_lock = threading.Lock()
        self.error: str | None = None

    @property
    def current(self) -> Searcher | None:
        return self._searcher

    def load(self) -> None:
        """Open the index if none is held; on a domain error stay unready and keep the message."""
        if self._searcher is None:
            try:
                self._searcher = open_searcher(self.settings.index_dir, settings=search_settings(self.settings))
            except RetrievalError as exc:
                self.error = str(exc)
                log.error("index not loaded: %s", exc)
                return
        warm_up(self._searcher)

    def reload(self) -> ReloadResult:
        """Re-open the index directory's CURRENT version and swap it in; serialised."""
        started = time.perf_counter()
        with self._reload_lock:
            old = self._searcher
            live = IndexDirectory(self.settings.index_dir).current_version()
            if old is not None and live is not None and live == old.index.path:
                log.info("index reload: %s is still the current version; nothing to do", live.name)
                return _reload_result(False, old, old, started)
            new = self._open(old)
            warm_up(new)
            self._searcher = new
            self.error = None
        result = _reload_result(True, new, old, started)
        log.info(
            "index reloaded: %s -> %s (%d papers, %d bullets) in %.0f ms",
            result.previous,
            result.version,
            result.papers,
            result.bullets,
            result.took_ms,
        )
        return result

    def _open(self, previous: Searcher | None) -> Searcher:
        """Load the index; keep the previous searcher's settings, tokenizer and (same model) embedder."""
        index = load_index(self.settings.index_dir)
        if previous is None:
            return Searcher(index, load_embedder(index.manifest.model), settings=search_settings(self.settings))
        embedder = previous.embedder
        if embedder.name != index.manifest.model:
            embedder = load_embedder(index.manifest.model)
        return Searcher(index, embedder, tokenizer=previous.tokenizer, settings=previous.settings)


def _reload_result(reloaded: bool, new: Searcher, old: Searcher | None, started: float) -> ReloadResult:
    return ReloadResult(
        reloaded=reloaded,
        version=new.index.path.name,
        previous=old.index.path.name if old is not None else None,
        papers=new.index.manifest.papers,
        bullets=new.index.manifest.bullets,
        took_ms=round((time.perf_counter() - started) * 1000, 3),
    )
