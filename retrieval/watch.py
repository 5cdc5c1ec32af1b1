"""Turn changes of a corpus folder into debounced index builds, each followed by a callback.

`CorpusWatcher` runs two threads. The watching thread takes batches of file events from
`watchfiles` (which groups a burst: a batch is yielded once no new event came for `step_ms`, or
after `debounce_ms` at most) and marks a build as wanted. The building thread runs one build at a
time; whatever arrives while a build runs, however many batches, makes exactly one follow-up build.
A failed build (a `RetrievalError` such as an empty corpus, or anything unexpected) is logged and
recorded in `last_build`; the watcher keeps watching, and a build refused because another one
holds the index lock is tried again after `retry_locked_s`.

Native file notifications are used where the system offers them; `force_polling` polls instead,
and a watcher that cannot start natively (no inotify, too many watches) falls back to polling.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import watchfiles

from retrieval.errors import IndexLockedError, RetrievalError, UsageError
from retrieval.indexer import BuildReport

log = logging.getLogger("retrieval.watch")

IGNORED_DIRS = frozenset({".git", ".hg", ".svn", "__pycache__", "node_modules"})


@dataclass(frozen=True)
class BuildOutcome:
    """How the last build went: when it ended, whether it worked and why not."""

    at: str  # ISO 8601 UTC time the build ended
    ok: bool
    error: str | None = None
    version: str | None = None
    unchanged: bool | None = None
    seconds: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def digest_filter(corpus_dir: Path, ignore: Path | None = None) -> Callable[[watchfiles.Change, str], bool]:
    """Which events matter: `*.md` digests (README excluded) and folders, outside `ignore` and VCS folders.

    A folder's own event counts because moving a whole folder in or out reports only the folder.
    """
    root = corpus_dir.resolve()
    skip = ignore.resolve() if ignore is not None else None

    def wanted(change: watchfiles.Change, raw: str) -> bool:
        path = Path(raw)
        if skip is not None and (path == skip or skip in path.parents):
            return False
        try:
            parts = path.relative_to(root).parts
        except ValueError:
            parts = path.parts
        if any(part in IGNORED_DIRS or part.startswith(".") for part in parts):
            return False
        name = path.name.lower()
        if name.endswith(".md"):
            return name != "readme.md"
        if change == watchfiles.Change.deleted:
            return "." not in name  # a removed folder (its files may not be reported one by one)
        return path.is_dir()

    return wanted


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


class CorpusWatcher:
    """Watch `corpus_dir`; run `build` after changes (debounced, one at a time); call `on_built` after each success.

    `on_built(report)` runs in the building thread (e.g. a hot reload); if it raises, the build
    counts as failed. With `initial_build` one build runs at start, to catch up with changes made
    while nothing watched.
    """

    def __init__(
        self,
        corpus_dir: Path | str,
        build: Callable[[], BuildReport],
        on_built: Callable[[BuildReport], object] | None = None,
        *,
        ignore: Path | None = None,
        debounce_ms: int = 1600,
        step_ms: int = 200,
        force_polling: bool = False,
        poll_delay_ms: int = 300,
        initial_build: bool = True,
        retry_locked_s: float = 5.0,
    ) -> None:
        self.corpus_dir = Path(corpus_dir)
        if not self.corpus_dir.is_dir():
            raise UsageError(f"cannot watch {self.corpus_dir}: not a folder (give the folder of the *.md digests)")
        self._build = build
        self._on_built = on_built
        self._filter = digest_filter(self.corpus_dir, ignore)
        self.debounce_ms, self.step_ms, self.poll_delay_ms = debounce_ms, step_ms, poll_delay_ms
        self.polling = force_polling
        self.retry_locked_s = retry_locked_s
        self.ready = threading.Event()  # set once file events are being collected
        self.builds = 0  # builds started
        self.last_build: BuildOutcome | None = None
        self._stop = threading.Event()
        self._cond = threading.Condition()
        self._pending = initial_build
        self._building = False
        self._threads: list[threading.Thread] = []

    # ----------------------------------------------------------------- control
    def start(self) -> CorpusWatcher:
        """Start the watching and building threads (once; a second call does nothing)."""
        if self._threads:
            return self
        for target, name in ((self._watch_loop, "corpus-watch"), (self._build_loop, "corpus-build")):
            thread = threading.Thread(target=target, name=name, daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    def stop(self, timeout: float = 30.0) -> None:
        """Stop watching; wait up to `timeout` s for a build in progress (a build is never cut off)."""
        self._stop.set()
        with self._cond:
            self._cond.notify_all()
            if self._building:
                log.info("waiting for the running index build to finish")
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
            if thread.is_alive():
                log.warning("%s did not stop within %.0f s; leaving it to end with the process", thread.name, timeout)

    def __enter__(self) -> CorpusWatcher:
        return self.start()

    def __exit__(self, *_exc: object) -> None:
        self.stop()

    def request_build(self) -> None:
        """Ask for a build, as a file event does."""
        with self._cond:
            self._pending = True
            self._cond.notify_all()

    def wait_idle(self, timeout: float) -> bool:
        """Block until no build is wanted or running; False on timeout."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while self._pending or self._building:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(left)
        return True

    @property
    def running(self) -> bool:
        return any(t.is_alive() for t in self._threads) and not self._stop.is_set()

    # ----------------------------------------------------------------- threads
    def _watch_loop(self) -> None:
        while not self._stop.is_set():
            try:
                for changes in watchfiles.watch(
                    self.corpus_dir,
                    watch_filter=self._filter,
                    debounce=self.debounce_ms,
                    step=self.step_ms,
                    stop_event=self._stop,
                    rust_timeout=500,
                    yield_on_timeout=True,  # an empty batch: the watcher is up (sets `ready`)
                    force_polling=True if self.polling else None,  # None: native unless WATCHFILES_FORCE_POLLING
                    poll_delay_ms=self.poll_delay_ms,
                    raise_interrupt=False,
                ):
                    if not self.ready.is_set():
                        how = f"polling every {self.poll_delay_ms} ms" if self.polling else "native file events"
                        log.info("watching %s for digest changes (%s)", self.corpus_dir, how)
                        self.ready.set()
                    if changes:
                        log.info("%d change(s) under %s: %s", len(changes), self.corpus_dir, _sample(changes))
                        self.request_build()
                return  # the stop event ended the generator
            except FileNotFoundError as exc:
                log.error("cannot watch %s (%s); trying again in 5 s", self.corpus_dir, exc)
            except (OSError, RuntimeError) as exc:
                if not self.polling and not self.ready.is_set():
                    log.warning(
                        "native file watching is unavailable (%s); polling %s every %d ms instead",
                        exc,
                        self.corpus_dir,
                        self.poll_delay_ms,
                    )
                    self.polling = True
                    continue
                log.error("watching %s failed (%s); trying again in 5 s", self.corpus_dir, exc)
            self._stop.wait(5.0)

    def _build_loop(self) -> None:
        while True:
            with self._cond:
                while not self._pending and not self._stop.is_set():
                    self._cond.wait()
                if self._stop.is_set():
                    return
                self._pending, self._building = False, True
                self.builds += 1
            try:
                retry = self._run_build()
            finally:
                with self._cond:
                    self._building = False
                    self._cond.notify_all()
            if retry and not self._stop.wait(self.retry_locked_s):
                self.request_build()

    def _run_build(self) -> bool:
        """One build and its callback; records `last_build`. True when it should be tried again later."""
        started = time.perf_counter()

        def outcome(ok: bool, error: str | None = None, report: BuildReport | None = None, retry: bool = False) -> bool:
            self.last_build = BuildOutcome(
                at=_now(),
                ok=ok,
                error=error,
                version=report.version if report else None,
                unchanged=report.unchanged if report else None,
                seconds=round(time.perf_counter() - started, 3),
            )
            return retry

        try:
            report = self._build()
        except IndexLockedError as exc:
            log.warning("index build postponed for %.0f s: %s", self.retry_locked_s, exc)
            return outcome(False, str(exc), retry=True)
        except RetrievalError as exc:
            log.error("index build failed, still serving the previous version: %s", exc)
            return outcome(False, str(exc))
        except Exception as exc:  # an unexpected failure must not end the watcher
            log.exception("index build crashed, still serving the previous version")
            return outcome(False, f"{type(exc).__name__}: {exc}")
        for skipped in report.files_skipped:
            log.warning("skipped %s: %s", skipped["path"], skipped["reason"])
        for problem in report.problems:
            log.warning("%s:%s: %s", problem["path"], problem["line"], problem["reason"])
        state = "unchanged" if report.unchanged else f"new version {report.version}"
        log.info(
            "index build: %s (%d papers, %d bullets; embedded %d) in %.1f s",
            state,
            report.papers,
            report.bullets,
            report.embedded,
            report.seconds,
        )
        if self._on_built is not None:
            try:
                self._on_built(report)
            except RetrievalError as exc:
                log.error("built %s but could not switch to it: %s", report.version, exc)
                return outcome(False, f"built {report.version} but could not switch to it: {exc}", report)
            except Exception as exc:
                log.exception("built %s but the callback after the build failed", report.version)
                return outcome(False, f"{type(exc).__name__}: {exc}", report)
        return outcome(True, None, report)


def _sample(changes: set[tuple[watchfiles.Change, str]], limit: int = 3) -> str:
    shown = sorted(changes, key=lambda c: c[1])[:limit]
    text = ", ".join(f"{change.name} {os.path.basename(path)}" for change, path in shown)
    return text + (f" and {len(changes) - limit} more" if len(changes) > limit else "")
