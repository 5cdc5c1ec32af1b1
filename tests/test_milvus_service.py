"""The product on Milvus end to end: build-index syncs it (incrementally), the searcher answers from
it exactly as from the embedded backend, and the service survives Milvus going away and coming back.

Milvus here is the real Milvus engine: Milvus Lite's server binary, served over TCP by
scripts/milvus_lite_server.py (so it can be stopped and started like a server), or the server
named by `RETRIEVAL_TEST_MILVUS_URI` (then the outage test is left out: it needs to stop Milvus).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from retrieval.api.app import create_app
from retrieval.backends.choice import connect_backend
from retrieval.config import Settings
from retrieval.embedding import FakeEmbedder
from retrieval.errors import BackendUnavailableError
from retrieval.indexer import build_index
from retrieval.lexical import KoreanEnglishTokenizer
from retrieval.models import Filters
from retrieval.search import Searcher
from retrieval.service import open_searcher
from retrieval.store import load_index

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "examples" / "sample"
SERVER_ENV = "RETRIEVAL_TEST_MILVUS_URI"
QUERIES = ["low-rank adaptation of large language models", "저랭크 행렬 미세조정", "diffusion video 생성", "attention"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class LiteServer:
    """Milvus Lite's server on a TCP port, stoppable and restartable on the same file and port."""

    db_file: Path
    port: int
    process: subprocess.Popen[bytes] | None = None

    @property
    def uri(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        script = ROOT / "scripts" / "milvus_lite_server.py"
        address = f"127.0.0.1:{self.port}"
        self.process = subprocess.Popen([sys.executable, str(script), str(self.db_file), "--address", address])
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            with socket.socket() as sock:
                if sock.connect_ex(("127.0.0.1", self.port)) == 0:
                    return
            if self.process.poll() is not None:
                raise RuntimeError(f"milvus_lite_server exited with {self.process.returncode}")
            time.sleep(0.2)
        raise RuntimeError(f"Milvus Lite did not listen on {address} within 60 s")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=30)


@pytest.fixture(scope="module")
def milvus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiteServer | str]:
    if os.environ.get(SERVER_ENV):
        yield os.environ[SERVER_ENV]
        return
    server = LiteServer(tmp_path_factory.mktemp("milvus") / "svc.db", free_port())
    server.start()
    try:
        yield server
    finally:
        server.stop()


def uri_of(milvus: LiteServer | str) -> str:
    return milvus if isinstance(milvus, str) else milvus.uri


def settings_for(milvus: LiteServer | str, index: Path, prefix: str) -> Settings:
    return Settings(
        index_dir=index, backend="milvus", milvus_uri=uri_of(milvus), milvus_prefix=prefix, milvus_timeout=3.0
    )


def build(corpus: Path, settings: Settings, tokenizer: KoreanEnglishTokenizer) -> dict[str, object]:
    backend = connect_backend(settings, 64)
    assert backend is not None
    try:
        report = build_index(corpus, settings.index_dir, FakeEmbedder(64), tokenizer=tokenizer, backend=backend)
    finally:
        backend.close()
    assert report.backend is not None
    return report.backend


def same_answers(on_milvus: Searcher, embedded: Searcher) -> None:
    cases = [(q, {}) for q in QUERIES] + [
        (QUERIES[0], {"mode": "lexical"}),
        (QUERIES[1], {"mode": "dense", "limit": 3, "offset": 2}),
        (QUERIES[2], {"filters": Filters(date_from="2024-01-01", min_votes=1)}),
        (QUERIES[3], {"fields": ("title",)}),
    ]
    for query, options in cases:
        a, b = on_milvus.search(query, **options), embedded.search(query, **options)  # type: ignore[arg-type]
        assert [h.paper.id for h in a.results] == [h.paper.id for h in b.results], (query, options)
        assert [h.score for h in a.results] == pytest.approx([h.score for h in b.results], abs=2e-4)
        assert [[e.position for e in h.evidence] for h in a.results] == [
            [e.position for e in h.evidence] for h in b.results
        ]
        assert a.total == b.total
    assert [h.paper.id for h in on_milvus.similar("2106.09685", limit=4).results] == [
        h.paper.id for h in embedded.similar("2106.09685", limit=4).results
    ]


def test_build_syncs_milvus_and_the_searcher_answers_like_the_embedded_backend(
    milvus: LiteServer | str, tmp_path: Path, tokenizer: KoreanEnglishTokenizer
) -> None:
    corpus = tmp_path / "corpus"
    shutil.copytree(SAMPLE, corpus)
    settings = settings_for(milvus, tmp_path / "index", f"t{uuid.uuid4().hex[:8]}")
    first = build(corpus, settings, tokenizer)
    assert first["full"] is True and first["upserted"] == len(load_index(settings.index_dir).papers)

    def compare() -> None:
        on_milvus = open_searcher(settings.index_dir, config=settings)
        embedded = Searcher(load_index(settings.index_dir), FakeEmbedder(64), tokenizer=tokenizer)
        try:
            assert type(on_milvus.backend).__name__ == "MilvusBackend"
            same_answers(on_milvus, embedded)
        finally:
            on_milvus.close()
            embedded.close()

    compare()
    # An incremental build: one bullet edited. Only that paper's record changes (its BM25 rows
    # keep the frozen average length), so only it is upserted.
    digest = next(p for p in sorted(corpus.rglob("*.md")) if "2106.09685" in p.read_text(encoding="utf-8"))
    text = digest.read_text(encoding="utf-8")
    at = text.index("\n- ", text.index("2106.09685")) + 3
    digest.write_text(text[:at] + "수정된 요약 문장: " + text[at:], encoding="utf-8")
    second = build(corpus, settings, tokenizer)
    assert second["full"] is False
    assert second["upserted"] == 1 and second["deleted"] == 0
    compare()


def test_serve_refuses_to_start_when_milvus_is_unreachable(tmp_path: Path, tokenizer: KoreanEnglishTokenizer) -> None:
    index = tmp_path / "index"
    build_index(SAMPLE, index, FakeEmbedder(64), tokenizer=tokenizer)
    dead = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(BackendUnavailableError, match=dead.replace(".", r"\.")):
        open_searcher(index, config=Settings(index_dir=index, backend="milvus", milvus_uri=dead))
    run = subprocess.run(
        [sys.executable, "-m", "retrieval.cli", "search", "attention", "--index", str(index), "--backend", "milvus",
         "--milvus-uri", dead],
        capture_output=True, text=True, timeout=120, cwd=ROOT,
    )  # fmt: skip
    assert run.returncode == 13
    assert "Traceback" not in run.stderr and len(run.stderr.strip().splitlines()) == 1 and dead in run.stderr


def test_the_service_answers_503_while_milvus_is_away_and_recovers_without_a_restart(
    milvus: LiteServer | str, tmp_path: Path, tokenizer: KoreanEnglishTokenizer
) -> None:
    if isinstance(milvus, str):
        pytest.skip("needs to stop and start Milvus: runs against the Milvus Lite server this module starts")
    settings = settings_for(milvus, tmp_path / "index", f"t{uuid.uuid4().hex[:8]}")
    build(SAMPLE, settings, tokenizer)
    searcher = open_searcher(settings.index_dir, config=settings)
    with TestClient(create_app(settings, searcher)) as client:
        assert client.get("/search", params={"q": "attention"}).status_code == 200
        assert client.get("/readyz").json()["backend"] == f"milvus {milvus.uri}"
        milvus.stop()
        try:
            started = time.monotonic()
            down = client.get("/search", params={"q": "attention"})
            assert time.monotonic() - started < 30  # milvus_timeout bounds the wait, retries included
            assert down.status_code == 503 and milvus.uri in down.json()["detail"]
            ready = client.get("/readyz")
            assert ready.status_code == 503 and milvus.uri in ready.json()["detail"]
        finally:
            milvus.start()
        deadline = time.monotonic() + 60
        while client.get("/readyz").status_code != 200 and time.monotonic() < deadline:
            time.sleep(0.5)
        assert client.get("/readyz").status_code == 200
        back = client.get("/search", params={"q": "attention"})
        assert back.status_code == 200 and back.json()["results"]
    searcher.close()


def test_page_mcp_and_retrievers_answer_from_milvus_as_from_the_embedded_backend(
    milvus: LiteServer | str, tmp_path: Path, tokenizer: KoreanEnglishTokenizer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every front end opens the searcher the settings choose: the page, the MCP tools and the
    LangChain / LlamaIndex retrievers (these read RETRIEVAL_BACKEND from the environment)."""
    import anyio
    from mcp import Client

    from retrieval.integrations.langchain import DailyPapersRetriever
    from retrieval.integrations.llamaindex import DailyPapersLlamaRetriever
    from retrieval.mcp_server import SearchPapersResult, build_mcp

    settings = settings_for(milvus, tmp_path / "index", f"t{uuid.uuid4().hex[:8]}")
    build(SAMPLE, settings, tokenizer)
    embedded = Searcher(load_index(settings.index_dir), FakeEmbedder(64), tokenizer=tokenizer)
    query = QUERIES[1]
    expected = [h.paper.id for h in embedded.search(query, limit=3).results]
    on_milvus = open_searcher(settings.index_dir, config=settings)
    try:
        with TestClient(create_app(settings, on_milvus)) as client:
            page = client.get("/", params={"q": query, "k": 3})
            assert page.status_code == 200
            assert all(f"arxiv.org/abs/{pid}" in page.text for pid in expected)

        async def mcp_search() -> object:
            async with Client(build_mcp(lambda: on_milvus)) as session:
                return await session.call_tool("search_papers", {"query": query, "k": 3})

        result = anyio.run(mcp_search)
        structured = SearchPapersResult.model_validate(result.structured_content)  # type: ignore[attr-defined]
        assert [p.id for p in structured.results] == expected
    finally:
        on_milvus.close()
        embedded.close()
    for name, value in (
        ("BACKEND", "milvus"),
        ("MILVUS_URI", settings.milvus_uri),
        ("MILVUS_PREFIX", settings.milvus_prefix),
    ):
        monkeypatch.setenv(f"RETRIEVAL_{name}", str(value))
    docs = DailyPapersRetriever.from_index(settings.index_dir, k=3).invoke(query)
    assert [d.metadata["id"] for d in docs] == expected
    nodes = DailyPapersLlamaRetriever.from_index(settings.index_dir, k=3).retrieve(query)
    assert [n.node.node_id for n in nodes] == expected
