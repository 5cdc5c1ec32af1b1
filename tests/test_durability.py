"""Crash safety of `retrieval build-index`, the build lock, and refusing to serve a damaged index.

Real subprocesses on copies of the sample corpus, with the fast fake embedder. A build is killed
with SIGKILL at named stages; to reach a stage deterministically the build is told to pause
there with the test hook `RETRIEVAL_TEST_PAUSE_AT=<stage>[:seconds]` (see
`retrieval.store.pause_point`), which prints `... paused at <stage>` on stderr and sleeps.
"""

from __future__ import annotations

import json
import os
import queue
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import FIXTURES, SAMPLE

from retrieval.cli import main as cli_main
from retrieval.corpus import load_corpus
from retrieval.embedding import FakeEmbedder
from retrieval.indexer import build_index, corpus_fingerprint
from retrieval.lexical import KoreanEnglishTokenizer
from retrieval.search import Searcher
from retrieval.store import (
    CACHE_FILE,
    CURRENT_FILE,
    LOCK_FILE,
    PAUSE_ENV,
    PAUSE_STAGES,
    TMP_PREFIX,
    VERSIONS_DIR,
    load_index,
    pause_point,
)

pytestmark = pytest.mark.slow

MODEL = "fake:64"
BATCH = 8
CLI = [sys.executable, "-m", "retrieval.cli"]
QUERIES = (
    "LoRA low-rank adaptation",
    "상태 공간 모델 Mamba",
    "1비트 언어 모델",
    "검색 증강 생성 retrieval",
    "전문가 혼합",
)


def child_env(pause: str | None = None) -> dict[str, str]:
    """The test's environment without RETRIEVAL_* settings, plus the pause hook when asked."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RETRIEVAL_")}
    if pause is not None:
        env[PAUSE_ENV] = pause
    return env


class BuildProcess:
    """A `retrieval build-index` subprocess whose stderr is read line by line in the background."""

    def __init__(self, corpus: Path, index: Path, pause: str | None = None) -> None:
        command = [*CLI, "build-index", str(corpus), "--index", str(index), "--model", MODEL]
        command += ["--batch-size", str(BATCH), "--json"]
        self.proc = subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=child_env(pause)
        )
        self.stderr: list[str] = []
        self._lines: queue.Queue[str] = queue.Queue()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.stderr.append(line)
            self._lines.put(line)

    def wait_for_pause(self, stage: str, timeout: float = 120.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = self._lines.get(timeout=0.2)
            except queue.Empty:
                assert self.proc.poll() is None, f"build exited ({self.proc.returncode}): {''.join(self.stderr)}"
                continue
            if f"paused at {stage}" in line:
                return
        raise AssertionError(f"build never paused at {stage}: {''.join(self.stderr)}")

    def wait_until(self, condition: Callable[[], bool], timeout: float = 120.0) -> None:
        deadline = time.monotonic() + timeout
        while not condition():
            assert self.proc.poll() is None, f"build exited ({self.proc.returncode}): {''.join(self.stderr)}"
            assert time.monotonic() < deadline, "condition never met"
            time.sleep(0.01)

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        assert self.proc.wait(timeout=30) == -signal.SIGKILL

    def finish(self, timeout: float = 180.0) -> tuple[int, str, str]:
        assert self.proc.stdout is not None
        out = self.proc.stdout.read()
        code = self.proc.wait(timeout=timeout)
        self._reader.join(timeout=10)
        return code, out, "".join(self.stderr)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=30)


@dataclass(frozen=True)
class Snapshot:
    """What a reader of the index sees: version, fingerprint and the results of a few searches."""

    version: str
    fingerprint: str
    results: tuple[tuple[str, tuple[tuple[str, float, tuple[int, ...]], ...]], ...]


def snapshot(index: Path, tokenizer: KoreanEnglishTokenizer) -> Snapshot:
    data = load_index(index, expected_model=MODEL)
    searcher = Searcher(data, FakeEmbedder(64), tokenizer=tokenizer)
    try:
        results = tuple(
            (
                f"{mode}:{query}",
                tuple(
                    (hit.paper.id, hit.score, tuple(e.position for e in hit.evidence))
                    for hit in searcher.search(query, mode=mode, limit=5).results
                ),
            )
            for query in QUERIES
            for mode in ("dense", "lexical", "hybrid")
        )
    finally:
        searcher.close()
    assert any(hits for _, hits in results)
    return Snapshot(data.path.name, data.manifest.corpus_fingerprint, results)


def leftovers(index: Path, live: str) -> set[str]:
    """Entries a build may leave behind: versions other than the live one, CURRENT temp files."""
    stale = {p.name for p in (index / VERSIONS_DIR).iterdir() if p.name != live}
    return stale | {p.name for p in index.glob(f"{CURRENT_FILE}{TMP_PREFIX}*")}


def cached_vectors(index: Path) -> int:
    with sqlite3.connect(f"file:{index / CACHE_FILE}?mode=ro", uri=True) as db:
        return int(db.execute("SELECT count(*) FROM vectors WHERE model = ?", [MODEL]).fetchone()[0])


def change_corpus(corpus: Path) -> None:
    """Add the hand-made fixture digests (9 new papers) to a copy of the sample corpus."""
    extra = corpus / "extra"
    extra.mkdir()
    for name in ("era_plain.md", "era_vote_authors.md", "era_labelled.md"):
        shutil.copy(FIXTURES / name, extra / name)
    shutil.copytree(FIXTURES / "repeated_paper", extra / "repeated_paper")


@dataclass
class Setup:
    corpus: Path
    index: Path
    before: Snapshot
    new_bullets: int  # distinct bullet texts the changed corpus adds

    def new_build(self, pause: str | None = None) -> BuildProcess:
        return BuildProcess(self.corpus, self.index, pause)


@pytest.fixture
def setup(tmp_path: Path, tokenizer: KoreanEnglishTokenizer) -> Setup:
    """Version A built from the sample, then the corpus changed on disk (not yet rebuilt)."""
    corpus, index = tmp_path / "corpus", tmp_path / "index"
    shutil.copytree(SAMPLE, corpus)
    build_index(corpus, index, FakeEmbedder(64), tokenizer=tokenizer)
    before = snapshot(index, tokenizer)
    old = {b.text_hash for p in load_corpus(corpus).papers for b in p.bullets}
    change_corpus(corpus)
    new = {b.text_hash for p in load_corpus(corpus).papers for b in p.bullets}
    assert len(new - old) > 2 * BATCH
    return Setup(corpus, index, before, len(new - old))


def check_previous_live(setup: Setup, tokenizer: KoreanEnglishTokenizer) -> None:
    assert (setup.index / CURRENT_FILE).read_text(encoding="utf-8").strip() == setup.before.version
    assert snapshot(setup.index, tokenizer) == setup.before


def check_next_build(setup: Setup, tokenizer: KoreanEnglishTokenizer, stale: set[str]) -> dict[str, object]:
    """The next build completes, removes what the killed one left, and publishes the changed corpus."""
    build = setup.new_build()
    code, out, err = build.finish()
    assert code == 0, err
    report = json.loads(out)
    assert report["version"] != setup.before.version and not report["unchanged"]
    assert stale <= set(report["cleaned"]) | {n for n in stale if n.startswith(CURRENT_FILE)}
    assert [p.name for p in (setup.index / VERSIONS_DIR).iterdir()] == [report["version"]]
    assert not list(setup.index.glob(f"{CURRENT_FILE}{TMP_PREFIX}*"))
    after = snapshot(setup.index, tokenizer)
    assert after.version == report["version"]
    assert after.fingerprint == corpus_fingerprint(load_corpus(setup.corpus)) != setup.before.fingerprint
    assert report["papers"] == len(load_corpus(setup.corpus).papers)
    return report


def test_pause_hook_is_inert_unless_it_names_the_stage(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv(PAUSE_ENV, raising=False)
    for stage in PAUSE_STAGES:
        pause_point(stage)
    monkeypatch.setenv(PAUSE_ENV, "write:0")
    pause_point("embedding")
    pause_point("publish")
    assert capsys.readouterr().err == ""
    pause_point("write")
    assert f"{PAUSE_ENV}: paused at write" in capsys.readouterr().err


def test_kill_right_after_start(setup: Setup, tokenizer: KoreanEnglishTokenizer) -> None:
    """Killed as soon as it holds the build lock: nothing changes, the lock is free again."""
    build = setup.new_build()
    try:
        lock = setup.index / LOCK_FILE
        build.wait_until(lambda: lock.read_text(encoding="utf-8").strip() == str(build.proc.pid))
        build.kill()
    finally:
        build.close()
    check_previous_live(setup, tokenizer)
    check_next_build(setup, tokenizer, leftovers(setup.index, setup.before.version))


def test_kill_during_embedding_keeps_committed_batches(setup: Setup, tokenizer: KoreanEnglishTokenizer) -> None:
    """Killed after the first embedding batch: the old index is intact and the batch is reused."""
    cached_before = cached_vectors(setup.index)
    build = setup.new_build(pause="embedding")
    try:
        build.wait_for_pause("embedding")
        build.kill()
    finally:
        build.close()
    check_previous_live(setup, tokenizer)
    assert leftovers(setup.index, setup.before.version) == set()
    assert cached_vectors(setup.index) == cached_before + BATCH
    report = check_next_build(setup, tokenizer, set())
    assert report["embedded"] == setup.new_bullets - BATCH


def test_kill_while_writing_the_new_version(setup: Setup, tokenizer: KoreanEnglishTokenizer) -> None:
    """Killed with half of the new version's files written: readers never see them."""
    build = setup.new_build(pause="write")
    try:
        build.wait_for_pause("write")
        build.kill()
    finally:
        build.close()
    check_previous_live(setup, tokenizer)
    stale = leftovers(setup.index, setup.before.version)
    assert len(stale) == 1 and next(iter(stale)).startswith(TMP_PREFIX)
    tmp = setup.index / VERSIONS_DIR / next(iter(stale))
    assert (tmp / "papers.json").is_file() and not (tmp / "manifest.json").exists()
    report = check_next_build(setup, tokenizer, stale)
    assert set(report["cleaned"]) == stale


def test_kill_while_publishing(setup: Setup, tokenizer: KoreanEnglishTokenizer) -> None:
    """Killed after the new version is renamed into place but before CURRENT moves: CURRENT wins."""
    build = setup.new_build(pause="publish")
    try:
        build.wait_for_pause("publish")
        build.kill()
    finally:
        build.close()
    check_previous_live(setup, tokenizer)
    stale = leftovers(setup.index, setup.before.version)
    orphans = {n for n in stale if n.startswith("v-")}
    pointers = {n for n in stale if n.startswith(f"{CURRENT_FILE}{TMP_PREFIX}")}
    assert len(orphans) == 1 and len(pointers) == 1 and stale == orphans | pointers
    assert (setup.index / VERSIONS_DIR / next(iter(orphans)) / "manifest.json").is_file()
    report = check_next_build(setup, tokenizer, stale)
    assert orphans <= set(report["cleaned"])


def test_second_build_is_refused_while_one_runs(
    setup: Setup, tokenizer: KoreanEnglishTokenizer, capsys: pytest.CaptureFixture[str]
) -> None:
    """Another process's build holds the lock: a second build exits 7 naming the lock, the first completes."""
    first = setup.new_build(pause="embedding:2")  # 2 s after each of its 7 embedding batches
    try:
        first.wait_for_pause("embedding")
        capsys.readouterr()
        code = cli_main(["build-index", str(setup.corpus), "--index", str(setup.index), "--model", MODEL])
        captured = capsys.readouterr()
        assert first.proc.poll() is None, "the first build must still be running"
        assert code == 7
        message = captured.err.strip()
        assert message.startswith("error: ") and "\n" not in message
        assert str(setup.index / LOCK_FILE) in message and "another build is running" in message
        assert captured.out == ""
        check_previous_live(setup, tokenizer)
        code, out, err = first.finish()
    finally:
        first.close()
    assert code == 0, err
    report = json.loads(out)
    assert report["embedded"] == setup.new_bullets
    assert [p.name for p in (setup.index / VERSIONS_DIR).iterdir()] == [report["version"]]
    after = snapshot(setup.index, tokenizer)
    assert after.version == report["version"]
    assert after.fingerprint == corpus_fingerprint(load_corpus(setup.corpus))


# --------------------------------------------------------------------------- damaged index


def _version(index: Path) -> Path:
    return index / VERSIONS_DIR / (index / CURRENT_FILE).read_text(encoding="utf-8").strip()


def truncate(index: Path, _tmp: Path) -> str:
    path = _version(index) / "bullets.faiss"
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    return "bullets.faiss"


def alter_byte(index: Path, _tmp: Path) -> str:
    path = _version(index) / "papers.json"
    data = bytearray(path.read_bytes())
    middle = len(data) // 2
    data[middle] = ord("x") if data[middle] != ord("x") else ord("y")
    path.write_bytes(bytes(data))
    return "papers.json"


def remove_file(index: Path, _tmp: Path) -> str:
    (_version(index) / "titles.faiss").unlink()
    return "titles.faiss"


def remove_bm25_array(index: Path, _tmp: Path) -> str:
    (_version(index) / "bm25_bullets" / "data.csc.index.npy").unlink()
    return "data.csc.index.npy"


def manifest_of_other_model(index: Path, tmp: Path) -> str:
    """The manifest of the same corpus indexed with a 32-dim model, over the 64-dim files."""
    other = tmp / "other-index"
    build_index(SAMPLE, other, FakeEmbedder(32))
    shutil.copy(_version(other) / "manifest.json", _version(index) / "manifest.json")
    return "bullets.faiss"


def manifest_names_other_model(index: Path, _tmp: Path) -> str:
    """Only the model name changed: the files check out, but the model gives 384-dim queries."""
    path = _version(index) / "manifest.json"
    manifest = json.loads(path.read_text(encoding="utf-8"))
    manifest["model"] = "e5-small-q4"
    path.write_text(json.dumps(manifest), encoding="utf-8")
    return "manifest.json"


def damage_current(index: Path, _tmp: Path) -> str:
    (index / CURRENT_FILE).write_text("../../elsewhere\n", encoding="utf-8")
    return CURRENT_FILE


DAMAGE = {
    "truncated file": (truncate, 5),
    "altered byte": (alter_byte, 5),
    "missing file": (remove_file, 5),
    "missing bm25 array": (remove_bm25_array, 5),
    "manifest of another model": (manifest_of_other_model, 5),
    "manifest names another model": (manifest_names_other_model, 6),
    "damaged CURRENT": (damage_current, 5),
}


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.parametrize("kind", sorted(DAMAGE))
def test_serve_refuses_a_damaged_index(kind: str, tmp_path: Path, tokenizer: KoreanEnglishTokenizer) -> None:
    damage, expected_code = DAMAGE[kind]
    index = tmp_path / "index"
    build_index(SAMPLE, index, FakeEmbedder(64), tokenizer=tokenizer)
    named = damage(index, tmp_path)
    command = [*CLI, "serve", "--index", str(index), "--host", "127.0.0.1", "--port", str(free_port())]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120, env=child_env())
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert done.returncode == expected_code, done.stderr
    assert "Traceback" not in done.stderr
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("error: ") and named in lines[0], lines[0]
    assert str(index) in lines[0] and ("retrieval build-index" in lines[0] or "rebuild" in lines[0]), lines[0]
    assert done.stdout == ""
