"""Searcher.close() and the holder's leases: a replaced searcher is closed once its last user is done."""

from __future__ import annotations

import logging
import re
import threading
import time
import weakref
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import anyio
import pytest
from fastapi.testclient import TestClient
from mcp import Client
from rebuild import BUMPED_PAPER, Rebuilder

from retrieval.api import SearcherHolder, create_app
from retrieval.api import holder as holder_module
from retrieval.config import Settings
from retrieval.errors import EmbedderError, IndexCorruptError, SearcherClosedError
from retrieval.lexical import KoreanEnglishTokenizer
from retrieval.mcp_server import build_mcp
from retrieval.search import Searcher
from retrieval.service import open_searcher

LORA = "2106.09685"


@pytest.fixture()
def rebuilder(tmp_path: Path, tokenizer: KoreanEnglishTokenizer) -> Rebuilder:
    return Rebuilder(tmp_path, tokenizer)


@pytest.fixture()
def holder(rebuilder: Rebuilder, tokenizer: KoreanEnglishTokenizer) -> SearcherHolder:
    return SearcherHolder(Settings(index_dir=rebuilder.index), open_searcher(rebuilder.index, tokenizer=tokenizer))


def live(holder: SearcherHolder) -> Searcher:
    searcher = holder.current
    assert searcher is not None
    return searcher


def wait_until(condition: Callable[[], bool], timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


# --------------------------------------------------------------------------- Searcher.close
def test_close_stops_the_pool_drops_the_data_and_is_idempotent(
    fake_sample_index: Path, tokenizer: KoreanEnglishTokenizer
) -> None:
    searcher = open_searcher(fake_sample_index, tokenizer=tokenizer)
    before = set(threading.enumerate())
    assert searcher.search("LoRA", mode="hybrid").results  # the dense leg starts a pool worker
    workers = [t for t in set(threading.enumerate()) - before if t.name.startswith("search-leg")]
    assert workers and all(t.is_alive() for t in workers)
    data, matrix = weakref.ref(searcher.index), weakref.ref(searcher.bullet_matrix)
    version = searcher.index.path

    searcher.close()
    searcher.close()

    assert searcher.closed
    assert not any(t.is_alive() for t in workers), "close() waits for its pool's threads to end"
    assert data() is None and matrix() is None, "the index data and the vectors are released"
    assert (searcher.index.path, searcher.index.manifest.papers) == (version, 12), "what it was stays readable"
    calls: list[Callable[[], object]] = [
        lambda: searcher.search("LoRA"),
        lambda: searcher.search("LoRA", mode="lexical"),
        lambda: searcher.get_paper(LORA),
        lambda: searcher.similar(LORA),
    ]
    for call in calls:
        with pytest.raises(SearcherClosedError, match=f"version {version.name} is closed"):
            call()


# --------------------------------------------------------------------------- leases
def test_a_replaced_searcher_is_closed_only_after_its_in_flight_lease_ends(
    holder: SearcherHolder, rebuilder: Rebuilder
) -> None:
    first = live(holder)
    first_data = weakref.ref(first.index)
    leased, proceed = threading.Event(), threading.Event()
    seen: dict[str, Any] = {}

    def request() -> None:
        with holder.lease() as searcher:
            assert searcher is not None
            leased.set()
            assert proceed.wait(30)
            seen["searcher"] = searcher
            seen["votes"] = searcher.get_paper(BUMPED_PAPER).paper.votes
            seen["hits"] = len(searcher.search("LLaMA 언어 모델", limit=3).results)

    thread = threading.Thread(target=request)
    thread.start()
    try:
        assert leased.wait(30)
        rebuilder.rebuild()
        result = holder.reload()
        assert result.reloaded and result.previous == first.index.path.name != result.version
        second = live(holder)
        assert second is not first and not first.closed, "in flight: the replaced searcher stays open"
        with holder.lease() as later:
            assert later is second, "new requests get the new searcher"
            assert later.get_paper(BUMPED_PAPER).paper.votes == rebuilder.votes
        assert not first.closed
    finally:
        proceed.set()
        thread.join(30)
    assert seen == {"searcher": first, "votes": 95, "hits": 3}, "the request finished on its own searcher"
    assert first.closed and first_data() is None, "closed (and its data released) once the lease ended"
    assert not second.closed


def test_an_idle_searcher_is_closed_at_once_and_a_busy_one_by_its_last_lease(
    holder: SearcherHolder, rebuilder: Rebuilder
) -> None:
    first = live(holder)
    rebuilder.rebuild()
    holder.reload()
    assert first.closed, "no lease: closed during the reload"

    second = live(holder)
    with ExitStack() as outer:
        assert outer.enter_context(holder.lease()) is second
        with pytest.raises(RuntimeError), holder.lease() as inner:
            assert inner is second
            rebuilder.rebuild()
            holder.reload()
            raise RuntimeError("a request that fails still gives its lease back")
        assert not second.closed, "one lease is still open"
    assert second.closed


def test_a_reload_that_swaps_nothing_closes_nothing(holder: SearcherHolder, rebuilder: Rebuilder) -> None:
    first = live(holder)
    assert holder.reload().reloaded is False
    (rebuilder.index / "CURRENT").write_text("v-missing\n", encoding="utf-8")
    with pytest.raises(IndexCorruptError):
        holder.reload()
    assert live(holder) is first and not first.closed
    with holder.lease() as searcher:
        assert searcher is first and searcher.search("LoRA").results


def test_a_searcher_that_fails_its_warm_up_is_closed_and_the_old_one_kept(
    holder: SearcherHolder, rebuilder: Rebuilder, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = live(holder)
    opened: list[Searcher] = []

    def failing_warm_up(searcher: Searcher) -> None:
        opened.append(searcher)
        raise EmbedderError("the model could not be loaded")

    monkeypatch.setattr(holder_module, "warm_up", failing_warm_up)
    rebuilder.rebuild()
    with pytest.raises(EmbedderError):
        holder.reload()
    assert len(opened) == 1 and opened[0] is not first and opened[0].closed
    assert live(holder) is first and not first.closed


def test_without_an_index_the_lease_is_empty(tmp_path: Path) -> None:
    holder = SearcherHolder(Settings(index_dir=tmp_path / "none"))
    holder.load()
    assert holder.error is not None and "no index" in holder.error
    with holder.lease() as searcher:
        assert searcher is None


def test_concurrent_leases_and_reloads_close_every_replaced_searcher_once(
    holder: SearcherHolder, rebuilder: Rebuilder
) -> None:
    """Readers lease in a loop while the main thread reloads; each replaced searcher ends closed."""
    stop = threading.Event()
    errors: list[Exception] = []
    closes: dict[int, int] = {}
    original_close = Searcher.close

    def counting_close(self: Searcher) -> None:
        closes[id(self)] = closes.get(id(self), 0) + 1
        original_close(self)

    def reader() -> None:
        while not stop.is_set():
            try:
                with holder.lease() as searcher:
                    assert searcher is not None and not searcher.closed
                    searcher.search("LoRA", mode=("lexical", "hybrid")[len(seen) % 2], limit=2)
            except Exception as exc:  # reported below
                errors.append(exc)
                return

    seen = [live(holder)]
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(Searcher, "close", counting_close)
        threads = [threading.Thread(target=reader) for _ in range(3)]
        for thread in threads:
            thread.start()
        for _ in range(6):
            rebuilder.rebuild()
            holder.reload()
            seen.append(live(holder))
        stop.set()
        for thread in threads:
            thread.join(30)
    assert errors == []
    assert all(s.closed for s in seen[:-1]) and not seen[-1].closed
    assert [closes.get(id(s), 0) for s in seen] == [1] * 6 + [0], "each replaced searcher closed exactly once"


# --------------------------------------------------------------------------- front ends hold a lease
@pytest.mark.parametrize("path", ["/search?q=LoRA", f"/papers/{LORA}", "/?q=LoRA"])
def test_a_request_in_flight_keeps_its_searcher_open_across_a_reload(
    rebuilder: Rebuilder, tokenizer: KoreanEnglishTokenizer, path: str
) -> None:
    first = open_searcher(rebuilder.index, tokenizer=tokenizer)
    entered, proceed = threading.Event(), threading.Event()
    for name in ("search", "get_paper"):
        original = getattr(first, name)

        def blocking(*args: Any, _original: Any = original, **kwargs: Any) -> Any:
            entered.set()
            assert proceed.wait(30)
            return _original(*args, **kwargs)

        setattr(first, name, blocking)  # on this instance only; close() drops it with the rest
    app = create_app(Settings(index_dir=rebuilder.index), first)
    holder: SearcherHolder = app.state.holder
    responses: list[Any] = []
    with TestClient(app) as client:
        thread = threading.Thread(target=lambda: responses.append(client.get(path)))
        thread.start()
        try:
            assert entered.wait(30)
            rebuilder.rebuild()
            assert holder.reload().reloaded
            assert not first.closed, "the request still runs on it"
        finally:
            proceed.set()  # a failed check must not leave the request blocked
            thread.join(30)
        assert responses[0].status_code == 200, responses[0].text
        assert wait_until(lambda: first.closed), "closed after the request's lease ended"
        assert client.get(path).status_code == 200, "later requests run on the new searcher"
    assert live(holder).closed  # the app's end releases the searcher the holder opened


def test_mcp_tools_hold_a_lease_for_the_whole_call(holder: SearcherHolder, monkeypatch: pytest.MonkeyPatch) -> None:
    events: list[str] = []
    first = live(holder)
    original = first.search

    def recording_search(*args: Any, **kwargs: Any) -> Any:
        events.append("search")
        return original(*args, **kwargs)

    monkeypatch.setattr(first, "search", recording_search)

    @contextmanager
    def source() -> Iterator[Searcher | None]:
        with holder.lease() as searcher:
            events.append("lease")
            yield searcher
            events.append("release")

    async def go() -> Any:
        async with Client(build_mcp(source)) as client:
            return await client.call_tool("search_papers", {"query": "LoRA", "k": 2})

    result = anyio.run(go)
    assert not result.is_error
    assert events == ["lease", "search", "release"]


# --------------------------------------------------------------------------- reload log
RELOADED = re.compile(r"index reloaded: (\S+) -> (\S+) \((\d+) papers, (\d+) bullets\) in (\d+) ms")


def test_every_reload_logs_its_versions_and_time(
    holder: SearcherHolder, rebuilder: Rebuilder, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="retrieval.api")
    old = live(holder).index.path.name
    rebuilder.rebuild()
    result = holder.reload()
    assert holder.reload().reloaded is False
    (rebuilder.index / "CURRENT").write_text("v-missing\n", encoding="utf-8")
    with pytest.raises(IndexCorruptError):
        holder.reload()

    records = [r for r in caplog.records if r.name == "retrieval.api"]
    assert [r.levelno for r in records] == [logging.INFO, logging.INFO, logging.ERROR]
    swapped = RELOADED.fullmatch(records[0].getMessage())
    assert swapped is not None, records[0].getMessage()
    assert (swapped[1], swapped[2]) == (old, result.version) and old != result.version
    assert (int(swapped[3]), int(swapped[4])) == (12, 52)
    assert abs(int(swapped[5]) - result.took_ms) <= 1
    assert re.fullmatch(
        rf"index reload: {result.version} is still current, nothing to do \(\d+ ms\)", records[1].getMessage()
    )
    failed = records[2].getMessage()
    assert failed.startswith("index reload failed after ") and f"still serving {result.version}: " in failed
    assert "v-missing" in failed


def test_an_app_releases_the_searcher_it_opened_but_not_one_handed_to_it(
    fake_sample_index: Path, fake_searcher: Searcher
) -> None:
    from fastapi.testclient import TestClient

    from retrieval.api import create_app
    from retrieval.config import Settings

    app = create_app(Settings(index_dir=fake_sample_index))
    with TestClient(app, client=("127.0.0.1", 50000)) as client:
        assert client.get("/readyz").status_code == 200
        opened = app.state.holder.current
    assert opened is not None and opened.closed
    handed = create_app(Settings(index_dir=fake_sample_index), fake_searcher)
    with TestClient(handed, client=("127.0.0.1", 50000)) as client:
        assert client.get("/search", params={"q": "LoRA"}).status_code == 200
    assert not fake_searcher.closed
