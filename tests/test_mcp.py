"""The MCP server through the SDK's own client: in process, over streamable HTTP and over stdio."""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from conftest import ROOT
from fastapi import FastAPI
from fastapi.testclient import TestClient
from mcp import Client, StdioServerParameters
from mcp_types import CallToolResult

from retrieval.api import serve_in_thread
from retrieval.cli import main
from retrieval.errors import IndexNotFoundError
from retrieval.mcp_server import MountedMCP, SearchPapersResult, build_mcp, mount_mcp, search_result
from retrieval.models import Filters, PaperDetail
from retrieval.render import render_citations
from retrieval.search import Searcher

LORA = "2106.09685"
LORA_QUERY_KO = "사전 학습된 가중치는 고정하고 저랭크 행렬만 학습하는 미세 조정"


def text_of(result: CallToolResult) -> str:
    assert len(result.content) == 1
    block = result.content[0]
    assert block.type == "text"
    return block.text


def call(client_target: Any, tool: str, arguments: dict[str, Any], **client_options: Any) -> CallToolResult:
    """One tool call through a fresh SDK client."""

    async def go() -> CallToolResult:
        async with Client(client_target, **client_options) as client:
            return await client.call_tool(tool, arguments)

    return anyio.run(go)


def check_citations(result: CallToolResult) -> SearchPapersResult:
    """Structured content validates, citations run 1..n, and the text quotes each numbered bullet."""
    assert not result.is_error, text_of(result)
    structured = SearchPapersResult.model_validate(result.structured_content)
    numbers = [b.citation for paper in structured.results for b in paper.bullets]
    assert numbers == list(range(1, len(numbers) + 1))
    text = text_of(result)
    for paper in structured.results:
        assert f"{paper.rank}. {paper.title}" in text
        assert paper.url in text
        for bullet in paper.bullets:
            section = f"({bullet.section}) " if bullet.section else ""
            assert f"[{bullet.citation}] {section}{bullet.text}" in text
    assert [p.rank for p in structured.results] == list(range(1, len(structured.results) + 1))
    scores = [p.score for p in structured.results]
    assert scores == sorted(scores, reverse=True)
    return structured


# --------------------------------------------------------------------------- in process (fast)
@pytest.fixture(scope="module")
def fake_mcp(fake_searcher: Searcher) -> Any:
    return build_mcp(lambda: fake_searcher)


def test_tools_are_listed_with_descriptions_and_schemas(fake_mcp: Any) -> None:
    async def go() -> Any:
        async with Client(fake_mcp) as client:
            return (await client.list_tools()).tools

    tools = {tool.name: tool for tool in anyio.run(go)}
    assert set(tools) == {"search_papers", "get_paper"}
    search = tools["search_papers"]
    assert "Korean" in search.description and "English" in search.description
    assert "[1]" in search.description
    k_schema = search.input_schema["properties"]["k"]
    assert (k_schema["minimum"], k_schema["default"]) == (1, 5)
    assert "100" in k_schema["description"]  # the shared page-size limit, the same as the API's
    assert "author" in search.input_schema["properties"]
    assert search.input_schema["required"] == ["query"]
    assert "results" in search.output_schema["properties"]
    assert "bullets" in tools["get_paper"].output_schema["properties"]
    assert all(tool.annotations.read_only_hint for tool in tools.values())


def test_search_papers_returns_structured_results_and_numbered_citations(
    fake_mcp: Any, fake_searcher: Searcher
) -> None:
    result = call(fake_mcp, "search_papers", {"query": "LoRA low-rank adaptation", "k": 3})
    structured = check_citations(result)
    expected = fake_searcher.search("LoRA low-rank adaptation", limit=3, explain=True)
    assert [p.id for p in structured.results] == [h.paper.id for h in expected.results]
    assert structured.results[0].id == LORA
    assert structured == search_result(expected)
    assert text_of(result) == render_citations(expected)
    first = structured.results[0]
    assert first.url == f"https://arxiv.org/abs/{LORA}" and first.dates and first.bullets
    assert all(0 <= b.position < len(fake_searcher.get_paper(LORA).bullets) for b in first.bullets)


def test_search_papers_applies_filters(fake_mcp: Any, fake_searcher: Searcher) -> None:
    everything = fake_searcher.search("language model", limit=20)

    def search(**filters: Any) -> SearchPapersResult:
        arguments = {"query": "language model", "k": 20, **filters}
        return SearchPapersResult.model_validate(call(fake_mcp, "search_papers", arguments).structured_content)

    recent = search(date_from="2024-01-01")
    assert recent.results and all(max(p.dates) >= "2024-01-01" for p in recent.results)
    old = search(date_to="2023-12-31")
    assert old.results and all(min(p.dates) <= "2023-12-31" for p in old.results)
    voted = search(min_votes=50)
    assert voted.results and all(p.votes is not None and p.votes >= 50 for p in voted.results)
    for filtered in (recent, old, voted):
        assert filtered.total < everything.total


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"query": ""}, "the query is empty"),
        ({"query": "   "}, "the query is empty"),
        ({"query": "x" * 1001}, "query: the query has 1001 characters; at most 1000 are allowed"),
        ({"query": "LoRA", "k": 0}, "k: must be at least 1, got 0"),
        ({"query": "LoRA", "k": 101}, "k: must be at most 100, got 101"),
        ({"query": "LoRA", "k": "many"}, "k: must be a whole number, got 'many'"),
        ({"query": "LoRA", "date_from": "2024-13-01"}, "date_from: must be a date YYYY-MM-DD"),
        ({"query": "LoRA", "date_to": "yesterday"}, "date_to: must be a date YYYY-MM-DD"),
        ({"query": "LoRA", "date_from": "2024-02-01", "date_to": "2024-01-01"}, "is after date_to"),
        ({"query": "LoRA", "min_votes": -1}, "min_votes: must be at least 0, got -1"),
        ({"query": "LoRA", "mode": "fuzzy"}, "mode: "),
        ({}, "query: is required"),
    ],
)
def test_bad_search_input_is_a_tool_error(fake_mcp: Any, arguments: dict[str, Any], message: str) -> None:
    result = call(fake_mcp, "search_papers", arguments)
    assert result.is_error
    assert message in text_of(result)
    assert len(text_of(result).splitlines()) == 1 and "pydantic" not in text_of(result)
    assert result.structured_content is None


def test_search_papers_takes_the_same_limits_and_filters_as_the_api(fake_mcp: Any, fake_searcher: Searcher) -> None:
    result = call(fake_mcp, "search_papers", {"query": "language model", "k": 50})
    assert not result.is_error, text_of(result)
    assert len(SearchPapersResult.model_validate(result.structured_content).results) == len(fake_searcher.papers)
    result = call(fake_mcp, "search_papers", {"query": "language model", "k": 20, "author": "hu"})
    papers = SearchPapersResult.model_validate(result.structured_content).results
    expected = fake_searcher.search("language model", limit=20, filters=Filters(author="hu"))
    assert [p.id for p in papers] == [h.paper.id for h in expected.results] and papers


def test_get_paper_takes_any_id_spelling(fake_mcp: Any) -> None:
    for spelling in (f"{LORA}v2", f"arXiv:{LORA}", f"https://arxiv.org/abs/{LORA}"):
        result = call(fake_mcp, "get_paper", {"arxiv_id": spelling})
        assert not result.is_error, text_of(result)
        assert PaperDetail.model_validate(result.structured_content).paper.id == LORA


def test_get_paper_returns_the_whole_summary(fake_mcp: Any, fake_searcher: Searcher) -> None:
    result = call(fake_mcp, "get_paper", {"arxiv_id": f" {LORA} "})
    assert not result.is_error, text_of(result)
    detail = PaperDetail.model_validate(result.structured_content)
    assert detail == fake_searcher.get_paper(LORA)
    assert len(detail.bullets) == 5
    text = text_of(result)
    assert text.startswith(f"{detail.paper.title} (arXiv {LORA})")
    for bullet in detail.bullets:
        assert f"#{bullet.position} {bullet.text}" in text


@pytest.mark.parametrize(
    ("arxiv_id", "message"),
    [("9999.99999", "no paper with arXiv id '9999.99999'"), ("  ", "arxiv_id is empty")],
)
def test_get_paper_errors(fake_mcp: Any, arxiv_id: str, message: str) -> None:
    result = call(fake_mcp, "get_paper", {"arxiv_id": arxiv_id})
    assert result.is_error and message in text_of(result)


def test_the_searcher_is_looked_up_on_every_call(fake_searcher: Searcher) -> None:
    current: list[Searcher | None] = [None]

    def get_searcher() -> Searcher | None:
        if isinstance(current[0], Exception):
            raise current[0]
        return current[0]

    server = build_mcp(get_searcher)
    arguments = {"query": "Mamba state space", "k": 1}
    not_loaded = call(server, "search_papers", arguments)
    assert not_loaded.is_error and "not loaded yet" in text_of(not_loaded)
    current[0] = IndexNotFoundError("no index at /nowhere")  # type: ignore[assignment]
    broken = call(server, "get_paper", {"arxiv_id": LORA})
    assert broken.is_error and "not available: no index at /nowhere" in text_of(broken)
    current[0] = fake_searcher
    assert not call(server, "search_papers", arguments).is_error


# --------------------------------------------------------------------------- streamable HTTP
def app_with_mcp(get_searcher: Callable[[], Searcher | None]) -> FastAPI:
    """A small FastAPI app of its own, with the MCP endpoint mounted the way the service mounts it."""
    mounted: list[MountedMCP] = []

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        async with mounted[0]:
            yield

    app = FastAPI(lifespan=lifespan)

    @app.get("/ping")
    def ping() -> dict[str, bool]:
        return {"ok": True}

    mounted.append(mount_mcp(app, get_searcher))
    return app


@pytest.fixture(scope="module")
def mcp_url(fake_searcher: Searcher) -> Iterator[str]:
    with serve_in_thread(app_with_mcp(lambda: fake_searcher)) as base:
        yield base


def test_streamable_http_lists_and_calls_both_tools(mcp_url: str, fake_searcher: Searcher) -> None:
    async def go() -> tuple[list[str], CallToolResult, CallToolResult, CallToolResult]:
        async with Client(f"{mcp_url}/mcp") as client:
            names = [tool.name for tool in (await client.list_tools()).tools]
            found = await client.call_tool("search_papers", {"query": "Mamba selective state space", "k": 4})
            paper = await client.call_tool("get_paper", {"arxiv_id": "2312.00752"})
            missing = await client.call_tool("get_paper", {"arxiv_id": "0000.00000"})
            return names, found, paper, missing

    names, found, paper, missing = anyio.run(go)
    assert sorted(names) == ["get_paper", "search_papers"]
    structured = check_citations(found)
    assert len(structured.results) == 4 and structured.results[0].id == "2312.00752"
    detail = PaperDetail.model_validate(paper.structured_content)
    assert [b.text for b in detail.bullets] == [b.text for b in fake_searcher.get_paper("2312.00752").bullets]
    assert missing.is_error and "no paper with arXiv id '0000.00000'" in text_of(missing)
    assert httpx.get(f"{mcp_url}/ping").json() == {"ok": True}


def test_streamable_http_serves_handshake_era_clients(mcp_url: str) -> None:
    result = call(f"{mcp_url}/mcp", "search_papers", {"query": "BitNet 1.58 bit", "k": 2}, mode="legacy")
    assert check_citations(result).results[0].id == "2402.17764"


def test_the_endpoint_runs_only_inside_the_lifespan_and_survives_a_restart(fake_searcher: Searcher) -> None:
    app = app_with_mcp(lambda: fake_searcher)
    body = {"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {}}

    def post_without_lifespan() -> httpx.Response:
        return TestClient(app, base_url="http://127.0.0.1").post("/mcp", json=body)

    assert post_without_lifespan().status_code == 503
    for _ in range(2):  # each start of the app gets a fresh SDK session manager
        with serve_in_thread(app) as base:
            result = call(f"{base}/mcp", "search_papers", {"query": "CLIP 이미지 텍스트 대조 학습", "k": 1})
            assert check_citations(result).results[0].id == "2103.00020"
    stopped = post_without_lifespan()
    assert stopped.status_code == 503 and stopped.json() == {"detail": "the MCP endpoint is not running"}


def test_streamable_http_rejects_a_foreign_host_header(mcp_url: str) -> None:
    body = {"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {}}
    headers = {"Host": "evil.example", "Accept": "application/json, text/event-stream"}
    response = httpx.post(f"{mcp_url}/mcp", json=body, headers=headers)
    assert response.status_code in (400, 403, 421)


# --------------------------------------------------------------------------- stdio, real model
@pytest.mark.slow
def test_stdio_server_with_the_real_model(e5_sample_index: Path, e5_searcher: Searcher) -> None:
    params = StdioServerParameters(
        command=sys.executable, args=["-m", "retrieval.cli", "mcp", "--index", str(e5_sample_index)], cwd=ROOT
    )

    async def go() -> tuple[list[str], CallToolResult, CallToolResult, CallToolResult, CallToolResult]:
        async with Client(params) as client:
            names = [tool.name for tool in (await client.list_tools()).tools]
            korean = await client.call_tool("search_papers", {"query": LORA_QUERY_KO, "k": 3})
            paper = await client.call_tool("get_paper", {"arxiv_id": LORA})
            missing = await client.call_tool("get_paper", {"arxiv_id": "1234.56789"})
            empty = await client.call_tool("search_papers", {"query": ""})
            return names, korean, paper, missing, empty

    names, korean, paper, missing, empty = anyio.run(go)
    assert sorted(names) == ["get_paper", "search_papers"]
    structured = check_citations(korean)
    assert structured.results[0].id == LORA
    assert [p.id for p in structured.results] == [
        h.paper.id for h in e5_searcher.search(LORA_QUERY_KO, limit=3).results
    ]
    assert "[1] " in text_of(korean) and "저랭크" in text_of(korean)
    detail = PaperDetail.model_validate(paper.structured_content)
    assert detail == e5_searcher.get_paper(LORA) and len(detail.bullets) == 5
    assert missing.is_error and "1234.56789" in text_of(missing)
    assert empty.is_error and "the query is empty" in text_of(empty)


@pytest.mark.parametrize(
    ("make_index", "code", "message"),
    [
        (lambda root: root / "missing", 4, "no index at"),
        (lambda root: _dangling_current(root), 5, "which is missing; rebuild the index"),
    ],
)
def test_cli_mcp_refuses_a_bad_index_with_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], make_index: Callable[[Path], Path], code: int, message: str
) -> None:
    assert main(["mcp", "--index", str(make_index(tmp_path))]) == code
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0]


def _dangling_current(root: Path) -> Path:
    index = root / "index"
    index.mkdir()
    (index / "CURRENT").write_text("v999\n")
    return index


def test_the_service_app_serves_mcp_with_the_same_index(fake_searcher: Searcher) -> None:
    """`create_app` mounts /mcp in the same process, over the same loaded searcher, and the
    bearer token protects it like every other route."""
    from retrieval.api import create_app
    from retrieval.config import Settings

    settings = Settings(index_dir=fake_searcher.index.path.parent.parent, api_token="s3cret")
    with serve_in_thread(create_app(settings, fake_searcher)) as base:
        refused = httpx.post(f"{base}/mcp", json={"jsonrpc": "2.0", "id": 1, "method": "tools/list"})
        assert refused.status_code == 401
        headers = {"Authorization": "Bearer s3cret"}

        async def go() -> CallToolResult:
            import httpx2
            from mcp import ClientSession
            from mcp.client.streamable_http import streamable_http_client

            async with (
                httpx2.AsyncClient(headers=headers) as http,
                streamable_http_client(f"{base}/mcp", http_client=http) as (read, write, *_),
                ClientSession(read, write) as session,
            ):
                await session.initialize()
                return await session.call_tool("search_papers", {"query": "Mamba selective state space", "k": 2})

        result = anyio.run(go)
        assert check_citations(result).results[0].id == "2312.00752"
        assert httpx.get(f"{base}/search", params={"q": "Mamba"}, headers=headers).status_code == 200
