"""Watch mode: file events become debounced builds (retrieval/watch.py), `serve --watch` and `retrieval watch`."""

from __future__ import annotations

import logging
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import watchfiles
from conftest import SAMPLE

from retrieval.api import create_app, serve_in_thread
from retrieval.api.app import first_build_if_missing
from retrieval.config import Settings
from retrieval.embedding import FakeEmbedder
from retrieval.errors import CorpusError, IndexLockedError, UsageError
from retrieval.indexer import BuildReport, build_index
from retrieval.lexical import KoreanEnglishTokenizer
from retrieval.service import open_searcher
from retrieval.store import IndexDirectory
from retrieval.watch import CorpusWatcher, digest_filter

QLORA, QLORA_TITLE = "2305.14314", "QLoRA: Efficient Finetuning of Quantized LLMs"  # only in 2024/11/05.md
DPO = "2305.18290"  # only in 2024/04/02.md
NEW_DAY = "2024/11/05.md"
FAST = {"watch_step_ms": 100, "watch_debounce_ms": 800}


def wait_for(check: Callable[[], Any], timeout: float = 30.0, what: str = "condition") -> Any:
    """Poll `check` until it returns something truthy; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def report(version: str = "v-test") -> BuildReport:
    return BuildReport(
        index="i", model="fake:64", files=1, files_skipped=[], problems=[], papers=1, bullets=1, embedded=0,
        reused=1, removed=0, papers_removed=0, seconds=0.0, version=version,
    )  # fmt: skip


class CountingBuild:
    """A stand-in build: counts calls, can hold the first one until released, can fail on cue."""

    def __init__(self, hold_first: bool = False, failures: list[Exception] | None = None) -> None:
        self.calls = 0
        self.started = threading.Event()
        self.release = threading.Event()
        if not hold_first:
            self.release.set()
        self.failures = list(failures or [])

    def __call__(self) -> BuildReport:
        self.calls += 1
        self.started.set()
        assert self.release.wait(20), "the test never released the build"
        if self.failures:
            raise self.failures.pop(0)
        return report(f"v-{self.calls}")


def started(watcher: CorpusWatcher) -> CorpusWatcher:
    watcher.start()
    assert watcher.ready.wait(10), "the watcher did not start"
    return watcher


def write_digest(folder: Path, name: str, source: str = "2023/12/01.md") -> Path:
    target = folder / name
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(SAMPLE / source, target)
    return target


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    """The sample corpus without its newest day (2024-11-05), to add back as the new day."""
    folder = tmp_path / "corpus"
    shutil.copytree(SAMPLE, folder)
    (folder / NEW_DAY).unlink()
    return folder


# --------------------------------------------------------------------------- the watcher alone
def test_a_burst_of_writes_makes_one_build(tmp_path: Path) -> None:
    build = CountingBuild()
    with started(CorpusWatcher(tmp_path, build, initial_build=False, step_ms=500)) as watcher:
        for day in range(1, 7):
            write_digest(tmp_path, f"2024/01/{day:02d}.md")
        wait_for(lambda: build.calls >= 1, 10, "a build")
        assert watcher.wait_idle(10)
        time.sleep(1.0)  # any late second build would have started by now
        assert build.calls == 1
        assert watcher.last_build is not None and watcher.last_build.ok


def test_changes_during_a_build_make_exactly_one_follow_up_build(tmp_path: Path) -> None:
    build = CountingBuild(hold_first=True)
    with started(CorpusWatcher(tmp_path, build, initial_build=False, step_ms=100)) as watcher:
        write_digest(tmp_path, "2024/01/01.md")
        assert build.started.wait(10)
        for day in (2, 3, 4):  # three separate batches while the first build runs
            write_digest(tmp_path, f"2024/01/{day:02d}.md")
            time.sleep(0.5)
        assert build.calls == 1
        build.release.set()
        wait_for(lambda: build.calls == 2, 10, "the follow-up build")
        assert watcher.wait_idle(10)
        time.sleep(1.0)
        assert build.calls == 2


def test_only_digests_and_folders_count(tmp_path: Path) -> None:
    index = tmp_path / "corpus" / "index"
    wanted = digest_filter(tmp_path / "corpus", ignore=index)
    root = tmp_path / "corpus"
    (root / "2024").mkdir(parents=True)
    added, deleted, modified = watchfiles.Change.added, watchfiles.Change.deleted, watchfiles.Change.modified
    assert wanted(added, str(root / "2024/11/05.md"))
    assert wanted(modified, str(root / "2024/11/05.MD"))
    assert wanted(deleted, str(root / "2024/11/05.md"))
    assert wanted(added, str(root / "2024")), "a folder moved in reports only itself"
    assert wanted(deleted, str(root / "2023")), "so does a folder removed"
    assert not wanted(modified, str(root / "README.md"))
    assert not wanted(added, str(root / "2024/.05.md.swp"))
    assert not wanted(added, str(root / "notes.txt"))
    assert not wanted(modified, str(root / ".git/FETCH_HEAD"))
    assert not wanted(added, str(root / ".git/objects/ab/cd.md"))
    assert not wanted(added, str(index / "versions/v-1/papers.json"))
    assert not wanted(modified, str(index / "CURRENT")), "the index's own writes must not trigger builds"


def test_files_that_are_not_digests_trigger_nothing(tmp_path: Path) -> None:
    build = CountingBuild()
    with started(CorpusWatcher(tmp_path, build, initial_build=False, step_ms=100)) as watcher:
        (tmp_path / "README.md").write_text("# about\n", encoding="utf-8")
        (tmp_path / "notes.txt").write_text("x", encoding="utf-8")
        time.sleep(1.5)
        assert build.calls == 0
        write_digest(tmp_path, "2024-01-01.md")
        wait_for(lambda: build.calls == 1, 10, "the digest's build")
        assert watcher.wait_idle(10)


def test_a_failed_build_is_logged_kept_and_the_watcher_goes_on(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    build = CountingBuild(failures=[CorpusError("no paper found under the corpus (1 files read: x.md: empty file)")])
    caplog.set_level(logging.INFO, logger="retrieval.watch")
    with started(CorpusWatcher(tmp_path, build, initial_build=False, step_ms=100)) as watcher:
        write_digest(tmp_path, "2024/01/01.md")
        wait_for(lambda: watcher.last_build is not None, 10, "the first build")
        assert watcher.wait_idle(10)
        failed = watcher.last_build
        assert failed is not None and not failed.ok
        assert failed.error is not None and "no paper found" in failed.error
        errors = [r for r in caplog.records if r.name == "retrieval.watch" and r.levelno == logging.ERROR]
        assert errors and "still serving the previous version" in errors[0].getMessage()
        assert "no paper found" in errors[0].getMessage()
        write_digest(tmp_path, "2024/01/02.md")
        wait_for(lambda: build.calls == 2, 10, "the next build")
        assert watcher.wait_idle(10)
        assert watcher.last_build is not None and watcher.last_build.ok and watcher.last_build.version == "v-2"


def test_a_crash_or_a_failed_callback_does_not_end_the_watcher(tmp_path: Path) -> None:
    build = CountingBuild(failures=[ValueError("unexpected")])
    calls: list[str] = []

    def on_built(built: BuildReport) -> None:
        calls.append(built.version)
        raise UsageError("the reload was refused")

    with started(CorpusWatcher(tmp_path, build, on_built, initial_build=False, step_ms=100)) as watcher:
        write_digest(tmp_path, "2024/01/01.md")
        wait_for(lambda: watcher.last_build is not None, 10, "the crashed build")
        assert watcher.last_build is not None and watcher.last_build.error == "ValueError: unexpected"
        write_digest(tmp_path, "2024/01/02.md")
        wait_for(lambda: calls, 10, "the callback")
        assert watcher.wait_idle(10)
        outcome = watcher.last_build
        assert outcome is not None and not outcome.ok and outcome.version == "v-2"
        assert outcome.error == "built v-2 but could not switch to it: the reload was refused"
        assert watcher.running


def test_a_build_refused_by_the_lock_is_tried_again(tmp_path: Path) -> None:
    build = CountingBuild(failures=[IndexLockedError("another build is running")])
    with started(CorpusWatcher(tmp_path, build, initial_build=False, step_ms=100, retry_locked_s=0.3)) as watcher:
        write_digest(tmp_path, "2024/01/01.md")
        wait_for(lambda: build.calls == 2, 10, "the retry")
        assert watcher.wait_idle(10)
        assert watcher.last_build is not None and watcher.last_build.ok


def test_the_initial_build_catches_up(tmp_path: Path) -> None:
    build = CountingBuild()
    with CorpusWatcher(tmp_path, build) as watcher:
        wait_for(lambda: build.calls == 1, 10, "the initial build")
        assert watcher.wait_idle(10)


def test_polling_when_forced(tmp_path: Path) -> None:
    build = CountingBuild()
    watcher = CorpusWatcher(tmp_path, build, initial_build=False, step_ms=100, force_polling=True, poll_delay_ms=50)
    with started(watcher):
        assert watcher.polling
        write_digest(tmp_path, "2024/01/01.md")
        wait_for(lambda: build.calls == 1, 10, "a build found by polling")


def test_polling_when_native_events_are_unavailable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    real_watch = watchfiles.watch
    modes: list[bool | None] = []

    def no_inotify(*paths: Any, **options: Any) -> Iterator[set[tuple[watchfiles.Change, str]]]:
        modes.append(options.get("force_polling"))
        if not options.get("force_polling"):
            raise OSError("OS file watch limit reached")
        yield from real_watch(*paths, **options)

    monkeypatch.setattr(watchfiles, "watch", no_inotify)
    caplog.set_level(logging.WARNING, logger="retrieval.watch")
    build = CountingBuild()
    watcher = CorpusWatcher(tmp_path, build, initial_build=False, step_ms=100, poll_delay_ms=50)
    with started(watcher):
        assert watcher.polling and modes == [None, True]
        assert "native file watching is unavailable (OS file watch limit reached); polling" in caplog.text
        write_digest(tmp_path, "2024/01/01.md")
        wait_for(lambda: build.calls == 1, 10, "a build found by polling")


def test_stopping_is_prompt_and_a_missing_folder_is_refused(tmp_path: Path) -> None:
    watcher = started(CorpusWatcher(tmp_path, CountingBuild(), initial_build=False))
    began = time.monotonic()
    watcher.stop()
    assert time.monotonic() - began < 3
    assert not watcher.running
    with pytest.raises(UsageError, match="not a folder"):
        CorpusWatcher(tmp_path / "missing", CountingBuild())


# --------------------------------------------------------------------------- serve --watch
@pytest.fixture
def watched(corpus: Path, tmp_path: Path, tokenizer: KoreanEnglishTokenizer) -> Iterator[tuple[str, Any, Path]]:
    """A running server (fake model) watching `corpus`: (base URL, its watcher, the index folder)."""
    index = tmp_path / "index"
    build_index(corpus, index, FakeEmbedder(64), tokenizer=tokenizer)
    app = create_app(Settings(index_dir=index, watch_corpus=corpus, **FAST), open_searcher(index, tokenizer=tokenizer))
    with serve_in_thread(app) as url:
        watcher = app.state.watcher
        assert watcher is not None and watcher.ready.wait(10)
        assert watcher.wait_idle(30), "the initial build did not finish"
        yield url, watcher, index


def found(url: str, query: str, arxiv_id: str) -> bool:
    response = httpx.get(f"{url}/search", params={"q": query, "mode": "lexical", "k": 5}, timeout=10)
    assert response.status_code == 200, response.text
    return arxiv_id in [hit["paper"]["id"] for hit in response.json()["results"]]


def test_a_new_day_becomes_searchable_and_a_deleted_one_disappears(
    watched: tuple[str, Any, Path], corpus: Path
) -> None:
    url, watcher, _index = watched
    before = httpx.get(f"{url}/readyz").json()
    assert before["watching"] == str(corpus)
    assert before["last_build"]["ok"] and before["last_build"]["unchanged"], "the initial build found nothing new"
    assert before["latest_day"] == "2024-04-02"
    assert not found(url, QLORA_TITLE, QLORA)

    write_digest(corpus, NEW_DAY, NEW_DAY)
    wait_for(lambda: found(url, QLORA_TITLE, QLORA), 30, "the new day's paper in search")
    after = httpx.get(f"{url}/readyz").json()
    assert after["version"] != before["version"] and after["papers"] == before["papers"] + 4
    assert after["latest_day"] == "2024-11-05"
    assert after["last_build"]["ok"] and after["last_build"]["version"] == after["version"]
    day = httpx.get(f"{url}/days/2024-11-05").json()
    assert [hit["paper"]["id"] for hit in day["papers"]][2] == QLORA

    (corpus / "2024/04/02.md").unlink()
    wait_for(lambda: httpx.get(f"{url}/papers/{DPO}").status_code == 404, 30, "the deleted day's paper to go")
    assert httpx.get(f"{url}/days/2024-04-02").status_code == 404
    assert httpx.get(f"{url}/readyz").json()["papers"] == after["papers"] - 4


def test_a_broken_corpus_keeps_the_old_version_serving(
    watched: tuple[str, Any, Path], corpus: Path, caplog: pytest.LogCaptureFixture
) -> None:
    url, watcher, _index = watched
    caplog.set_level(logging.INFO, logger="retrieval")
    version = httpx.get(f"{url}/readyz").json()["version"]

    (corpus / "2024/05").mkdir(parents=True)
    (corpus / "2024/05/01.md").write_bytes(
        b"## Daily Papers (2024-05-01)\n\n### [T](https://arxiv.org/abs/2405.00001)\n- \xff\xfe\n"
    )
    builds = watcher.builds
    wait_for(lambda: watcher.builds > builds, 10, "the build after the malformed digest")
    assert watcher.wait_idle(30)
    assert watcher.last_build.ok, "a malformed file is skipped, not fatal"
    assert "skipped 2024/05/01.md: invalid UTF-8" in caplog.text
    assert httpx.get(f"{url}/readyz").json()["version"] == version, "nothing else changed: same version"

    for digest in corpus.rglob("*.md"):
        if digest.name != "README.md":
            digest.unlink()
    wait_for(lambda: watcher.last_build is not None and not watcher.last_build.ok, 30, "the failed build")
    ready = httpx.get(f"{url}/readyz").json()
    assert ready["status"] == "ready" and ready["version"] == version
    assert not ready["last_build"]["ok"] and "no paper found" in ready["last_build"]["error"]
    assert "index build failed, still serving the previous version: no paper found" in caplog.text
    assert found(url, "Attention Is All You Need", "1706.03762"), "the old version still answers"

    write_digest(corpus, NEW_DAY, NEW_DAY)
    wait_for(lambda: found(url, QLORA_TITLE, QLORA), 30, "recovery after the corpus came back")
    ready = httpx.get(f"{url}/readyz").json()
    assert ready["last_build"]["ok"] and ready["papers"] == 4


def test_serve_watch_builds_a_missing_index_first(corpus: Path, tmp_path: Path) -> None:
    index = tmp_path / "new-index"
    first_build_if_missing(Settings(index_dir=index, watch_corpus=corpus, model="fake:64"))
    assert IndexDirectory(index).exists()
    with pytest.raises(UsageError, match="not a folder"):
        first_build_if_missing(Settings(index_dir=index, watch_corpus=corpus / "2023/12/01.md"))


# --------------------------------------------------------------------------- retrieval watch
def test_standalone_watch_builds_and_tells_the_server(
    corpus: Path, tmp_path: Path, tokenizer: KoreanEnglishTokenizer
) -> None:
    index = tmp_path / "index"
    build_index(corpus, index, FakeEmbedder(64), tokenizer=tokenizer)
    app = create_app(Settings(index_dir=index))  # no watcher of its own
    with serve_in_thread(app) as url:
        env = {k: v for k, v in os.environ.items() if not k.startswith("RETRIEVAL_")}
        env |= {"RETRIEVAL_WATCH_STEP_MS": "100"}
        command = [sys.executable, "-m", "retrieval.cli", "watch", str(corpus), "--index", str(index)]
        process = subprocess.Popen(
            [*command, "--reload-url", url], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
        )
        log: list[str] = []
        assert process.stderr is not None
        reader = threading.Thread(target=lambda: log.extend(process.stderr), daemon=True)  # type: ignore[arg-type]
        reader.start()
        try:
            assert process.stdout is not None
            assert process.stdout.readline().startswith(f"watching {corpus} for digest changes; building {index}")
            wait_for(lambda: any("(native file events)" in line for line in log), 30, "the watcher to start")
            wait_for(lambda: any("index build: unchanged" in line for line in log), 30, "the initial build")
            write_digest(corpus, NEW_DAY, NEW_DAY)
            wait_for(lambda: found(url, QLORA_TITLE, QLORA), 60, "the new day through --reload-url")
        finally:
            process.send_signal(signal.SIGTERM)
            out, _ = process.communicate(timeout=60)
            reader.join(10)
        err = "".join(log)
        assert process.returncode == 0, err
        assert "stopped watching" in out
        assert "index build: new version" in err and "(reloaded: True)" in err


# --------------------------------------------------------------------------- the real default model
@pytest.mark.slow
def test_a_new_day_appears_in_search_with_the_default_model(
    e5_sample_index: Path, corpus: Path, tmp_path: Path
) -> None:
    """serve --watch on a copy of the e5-small-q4 sample index: the new day's paper is found by meaning."""
    index = tmp_path / "index"
    shutil.copytree(e5_sample_index, index)
    query = {"q": "fine-tuning a 65B model on a single GPU with 4-bit quantization", "mode": "dense", "k": 3}
    app = create_app(Settings(index_dir=index, watch_corpus=corpus, **FAST))
    with serve_in_thread(app) as url:
        watcher = app.state.watcher
        assert watcher.ready.wait(10) and watcher.wait_idle(120), "the initial build (drops 2024-11-05)"
        ready = httpx.get(f"{url}/readyz").json()
        assert (ready["model"], ready["papers"], ready["latest_day"]) == ("e5-small-q4", 8, "2024-04-02")

        def top() -> list[str]:
            response = httpx.get(f"{url}/search", params=query, timeout=30)
            return [hit["paper"]["id"] for hit in response.json()["results"]]

        assert QLORA not in top()
        write_digest(corpus, NEW_DAY, NEW_DAY)
        wait_for(lambda: top()[:1] == [QLORA], 120, "QLoRA first for a description of it")
        ready = httpx.get(f"{url}/readyz").json()
        assert (ready["papers"], ready["latest_day"], ready["last_build"]["ok"]) == (12, "2024-11-05", True)
