"""The live `Searcher` of a running service, swapped atomically on reload and closed once unused."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from pydantic import BaseModel, Field

from retrieval.config import Settings
from retrieval.embedding import load_embedder
from retrieval.errors import RetrievalError
from retrieval.learned import without_learned
from retrieval.search import Searcher
from retrieval.service import open_searcher, search_settings, searcher_for
from retrieval.store import IndexDirectory, load_index

log = logging.getLogger("retrieval.api")


class ReloadResult(BaseModel):
    reloaded: bool = Field(description="false when CURRENT still names the version being served")
    version: str
    previous: str | None
    papers: int
    bullets: int
    took_ms: float


def warm_up(searcher: Searcher) -> None:
    """One query embedding and one tokenization, so the first real request is not slow."""
    searcher.embedder.embed_queries(["query warm-up 검색 준비"])
    searcher.tokenizer.tokenize("검색 준비 warm-up")


@dataclass
class _Slot:
    """A searcher with its count of open leases; `retired` once another took its place."""

    searcher: Searcher
    leases: int = 0
    retired: bool = False


class SearcherHolder:
    """Holds the live `Searcher`; `reload` swaps it atomically.

    Every reader takes a lease (`with holder.lease() as searcher:`) and keeps that searcher for
    the whole request, so a request in flight finishes on the searcher it started with while
    later requests see the new one. A replaced searcher is closed when its last lease ends (at
    once when it has none): the holder owns every searcher it holds, the one given to it too.
    """

    def __init__(self, settings: Settings, searcher: Searcher | None = None) -> None:
        self.settings = settings
        self._slot = _Slot(searcher) if searcher is not None else None
        self._given = searcher  # the caller's searcher: the caller closes it if it is never replaced
        self._lock = threading.Lock()  # guards _slot and every slot's counts
        self._reload_lock = threading.Lock()  # one load or reload at a time
        self.error: str | None = None

    @property
    def current(self) -> Searcher | None:
        """The live searcher, for a glance (version, counts); query it only under `lease()`."""
        slot = self._slot
        return slot.searcher if slot is not None else None

    @contextmanager
    def lease(self) -> Iterator[Searcher | None]:
        """The live searcher (None when no index is loaded), kept open until the block ends."""
        with self._lock:
            slot = self._slot
            if slot is not None:
                slot.leases += 1
        try:
            yield slot.searcher if slot is not None else None
        finally:
            if slot is not None:
                self._release(slot)

    def load(self) -> None:
        """Open the index if none is held; on a domain error stay unready and keep the message."""
        with self._reload_lock:
            if self._slot is None:
                try:
                    searcher = open_searcher(
                        self.settings.index_dir, settings=search_settings(self.settings), config=self.settings
                    )
                except RetrievalError as exc:
                    self.error = str(exc)
                    log.error("index not loaded: %s", exc)
                    return
                self._swap(searcher)
        with self.lease() as live:
            if live is not None:
                warm_up(live)

    def reload(self) -> ReloadResult:
        """Re-open the index directory's CURRENT version and swap it in; serialised; logs its outcome."""
        started = time.perf_counter()
        with self._reload_lock:
            old = self.current
            live = IndexDirectory(self.settings.index_dir).current_version()
            if old is not None and live is not None and live == old.index.path:
                result = _reload_result(False, old, old, started)
                log.info("index reload: %s is still current, nothing to do (%.0f ms)", result.version, result.took_ms)
                return result
            try:
                new = self._open(old)
            except RetrievalError as exc:
                serving = old.index.path.name if old is not None else "nothing"
                log.error("index reload failed after %.0f ms, still serving %s: %s", _ms_since(started), serving, exc)
                raise
            self._swap(new)
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

    def shutdown(self) -> None:
        """At the app's end: retire the live searcher the holder opened itself (closed now, or by its
        last lease); a searcher handed to the holder stays open for its owner."""
        with self._lock:
            slot = self._slot
            if slot is None or slot.searcher is self._given or slot.retired:
                return
            slot.retired = True
            idle = slot.leases == 0
        if idle:
            _close(slot)

    def _swap(self, searcher: Searcher) -> None:
        """Make `searcher` the live one; retire the previous one, closed now if idle, else by its last lease."""
        with self._lock:
            old, self._slot = self._slot, _Slot(searcher)
            if old is not None:
                old.retired = True
            idle = old is not None and old.leases == 0
        if idle:
            assert old is not None
            _close(old)

    def _release(self, slot: _Slot) -> None:
        with self._lock:
            slot.leases -= 1
            last = slot.retired and slot.leases == 0
        if last:
            _close(slot)

    def _open(self, previous: Searcher | None) -> Searcher:
        """Load the index and warm it up; keep the previous searcher's settings (less its index's learned
        weights: the new index brings its own), tokenizer and (same model) embedder."""
        index = load_index(self.settings.index_dir)
        if previous is None:
            embedder = load_embedder(index.manifest.model)
            searcher = searcher_for(index, embedder, search_settings(self.settings), config=self.settings)
        else:
            embedder = previous.embedder
            if embedder.name != index.manifest.model:
                embedder = load_embedder(index.manifest.model)
            settings = without_learned(previous.settings, previous.index.learned)
            searcher = searcher_for(index, embedder, settings, previous.tokenizer, config=self.settings)
        try:
            warm_up(searcher)
        except BaseException:
            searcher.close()  # never swapped in: nobody else will close it
            raise
        return searcher


def _close(slot: _Slot) -> None:
    version = slot.searcher.index.path.name
    slot.searcher.close()
    log.debug("closed the searcher of replaced version %s", version)


def _reload_result(reloaded: bool, new: Searcher, old: Searcher | None, started: float) -> ReloadResult:
    return ReloadResult(
        reloaded=reloaded,
        version=new.index.path.name,
        previous=old.index.path.name if old is not None else None,
        papers=new.index.manifest.papers,
        bullets=new.index.manifest.bullets,
        took_ms=_ms_since(started),
    )


def _ms_since(started: float) -> float:
    return round((time.perf_counter() - started) * 1000, 3)
