"""Soak: 200 rebuild-and-reload cycles under concurrent traffic; nothing may pile up.

A real server (uvicorn in a thread) over a copy of the sample corpus and the fake embedder.
Three client threads keep searching (GET and POST /search in every mode, a paper, the page)
while the main thread rebuilds the index (one vote count changes: a new version, nothing to
embed) and swaps it in through POST /admin/reload, 200 times. The test keeps a reference to
every searcher it has seen, as a forgotten reference somewhere would: memory and threads then
stay flat only if a replaced searcher really releases what it holds when it is closed.
"""

from __future__ import annotations

import os
import statistics
import tempfile
import threading
import time
import weakref
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from rebuild import BUMPED_PAPER, Rebuilder

from retrieval.api import SearcherHolder, create_app, serve_in_thread
from retrieval.config import Settings
from retrieval.lexical import KoreanEnglishTokenizer
from retrieval.search import Searcher
from retrieval.service import open_searcher

CYCLES = 200
WINDOW = 20  # cycles per measuring window: after the warm-up (cycles 20-39) and at the end (180-199)
CLIENTS = 3
PAUSE = 0.01  # seconds between a client's requests: traffic never stops, and the builds still get the GIL
QUERIES = ["LoRA", "저랭크 행렬", "state space", "선호 최적화", "quantized 4-bit", "검색 증강 생성"]
MODES = ("hybrid", "dense", "lexical")

# Tolerances between the two windows' medians, and why (figures measured with close() made a no-op):
# * threads: uvicorn runs sync routes and dependencies on anyio worker threads, created on demand
#   and retired after 10 s idle; at most CLIENTS + 1 requests run at once (the reloads are the +1).
#   A searcher that is never closed keeps its pool's worker threads: about +200 over the span.
# * file descriptors: each connection is two descriptors (client and server side) and httpx may be
#   reopening one at the moment of a sample; builds close their SQLite cache and lock file.
# * memory: a searcher over the sample holds about 0.4 MiB (papers, BM25, vectors, term map), so
#   never-closed ones add 66 MiB over the span. Closed ones keep only their manifest (15 KiB each);
#   with those, allocator noise and caches filling (uvicorn, httpx) RSS grew 5-7 MiB over the span.
THREAD_SLACK = CLIENTS + 1
FD_SLACK = 2 * (CLIENTS + 1)
RSS_SLACK_KIB = 16 * 1024

pytestmark = pytest.mark.skipif(not Path("/proc/self/status").is_file(), reason="reads /proc (Linux)")


@dataclass(frozen=True)
class Usage:
    threads: int  # threading.active_count()
    tasks: int  # /proc/self/task: every OS thread, native ones (FAISS, BLAS, Kiwi) too
    fds: int  # /proc/self/fd
    rss_kib: int  # VmRSS
    search_legs: int  # live threads of searcher pools


def usage() -> Usage:
    rss = next(line for line in Path("/proc/self/status").read_text().splitlines() if line.startswith("VmRSS:"))
    return Usage(
        threads=threading.active_count(),
        tasks=len(os.listdir("/proc/self/task")),
        fds=len(os.listdir("/proc/self/fd")),
        rss_kib=int(rss.split()[1]),
        search_legs=sum(t.name.startswith("search-leg") for t in threading.enumerate()),
    )


def median(samples: list[Usage], field: str) -> float:
    return statistics.median(getattr(s, field) for s in samples)


@pytest.fixture()
def scratch(tmp_path: Path) -> Iterator[Path]:
    """Memory-backed when possible: a build fsyncs every file (slow on a busy disk); durability is not tested here."""
    shm = Path("/dev/shm")
    if shm.is_dir() and os.access(shm, os.W_OK):
        with tempfile.TemporaryDirectory(dir=shm, prefix="retrieval-soak-") as path:
            yield Path(path)
    else:
        yield tmp_path


class Traffic:
    """Client threads that keep the server busy and record every failed request."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.stop = threading.Event()
        self.failures: list[str] = []
        self.counts = [0] * CLIENTS
        self.threads = [threading.Thread(target=self._client, args=(i,), name=f"client-{i}") for i in range(CLIENTS)]

    def __enter__(self) -> Traffic:
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(60)

    def _client(self, slot: int) -> None:
        last_votes = 0
        with httpx.Client(base_url=self.url, timeout=30) as http:
            while not self.stop.is_set():
                n = self.counts[slot]
                q, mode = QUERIES[(n + slot) % len(QUERIES)], MODES[n % len(MODES)]
                try:
                    kind = n % 4
                    if kind == 0:
                        response = http.get("/search", params={"q": q, "mode": mode, "k": 5})
                        ok = response.status_code == 200 and bool(response.json()["results"])
                    elif kind == 1:
                        response = http.post("/search", json={"q": q, "mode": mode, "k": 3, "offset": 1})
                        ok = response.status_code == 200 and bool(response.json()["results"])
                    elif kind == 2:
                        response = http.get(f"/papers/{BUMPED_PAPER}")
                        votes = response.json()["paper"]["votes"] if response.status_code == 200 else -1
                        # a client never sees an older version after a newer one
                        ok, last_votes = votes >= last_votes, max(votes, last_votes)
                    else:
                        response = http.get("/", params={"q": q, "mode": mode})
                        ok = response.status_code == 200 and 'class="hit"' in response.text
                    if not ok:
                        self.failures.append(
                            f"{response.request.method} {response.request.url}: "
                            f"{response.status_code} {response.text[:200]}"
                        )
                except (httpx.HTTPError, ValueError, KeyError) as exc:
                    self.failures.append(f"client {slot} request {n}: {exc!r}")
                self.counts[slot] += 1
                time.sleep(PAUSE)


def test_reload_soak_leaves_threads_descriptors_and_memory_flat(
    scratch: Path, tokenizer: KoreanEnglishTokenizer
) -> None:
    started = time.monotonic()
    # Searchers of earlier tests in the same session may still hold pools: count only new ones.
    legs_before = usage().search_legs
    rebuilder = Rebuilder(scratch, tokenizer)
    app = create_app(Settings(index_dir=rebuilder.index), open_searcher(rebuilder.index, tokenizer=tokenizer))
    holder: SearcherHolder = app.state.holder
    seen: list[Searcher] = []  # kept on purpose (see the module docstring)
    data: list[weakref.ref[object]] = []
    samples: list[Usage] = []
    building = 0.0
    busy_cycles = 0  # cycles during which some client request was answered
    with serve_in_thread(app) as url, Traffic(url) as traffic, httpx.Client(base_url=url, timeout=60) as admin:
        for _ in range(CYCLES):
            requests_before = sum(traffic.counts)
            build_started = time.monotonic()
            report = rebuilder.rebuild()
            building += time.monotonic() - build_started
            reload = admin.post("/admin/reload")
            assert reload.status_code == 200, reload.text
            assert reload.json()["reloaded"] and reload.json()["version"] == report.version
            paper = admin.get(f"/papers/{BUMPED_PAPER}")
            assert paper.json()["paper"]["votes"] == rebuilder.votes, "the new version is served"
            with holder.lease() as current:
                assert current is not None
                assert current.search("LoRA", mode="hybrid").results  # every searcher starts its pool
            seen.append(current)
            data.append(weakref.ref(current.index))
            samples.append(usage())
            busy_cycles += sum(traffic.counts) > requests_before
        served = sum(traffic.counts)
    final = usage()
    elapsed = time.monotonic() - started

    assert traffic.failures == [], f"{len(traffic.failures)} of {served} requests failed: {traffic.failures[:5]}"
    assert served >= 4 * CYCLES, f"only {served} requests in {CYCLES} cycles"
    assert busy_cycles >= 0.95 * CYCLES, f"only {busy_cycles} of {CYCLES} cycles ran under traffic"
    assert len({s.index.path.name for s in seen}) == CYCLES
    # every replaced searcher is closed, and the last one too: the app's end releases what its holder opened
    assert all(s.closed for s in seen), "every searcher is closed"
    assert sum(ref() is not None for ref in data[:-1]) == 0, "no replaced version's index data is still alive"
    new_legs = final.search_legs - legs_before
    assert new_legs <= 2, f"{new_legs} new search pool threads: only the live searcher may have some"

    warm, end = samples[WINDOW : 2 * WINDOW], samples[-WINDOW:]
    fields = ("threads", "tasks", "fds", "rss_kib")
    summary = (
        f"{CYCLES} cycles ({busy_cycles} under traffic), {served} requests in {elapsed:.0f} s "
        f"(builds {building:.0f} s); medians warm -> end: "
        + ", ".join(f"{f} {median(warm, f):.0f} -> {median(end, f):.0f}" for f in fields)
    )
    print(summary)
    assert median(end, "threads") <= median(warm, "threads") + THREAD_SLACK, summary
    assert median(end, "tasks") <= median(warm, "tasks") + THREAD_SLACK, summary
    assert median(end, "fds") <= median(warm, "fds") + FD_SLACK, summary
    assert median(end, "rss_kib") <= median(warm, "rss_kib") + RSS_SLACK_KIB, summary
    most = max(s.search_legs for s in samples) - legs_before
    assert most <= 4, "at most the live searcher's pool and one being drained"
