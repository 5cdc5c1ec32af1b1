"""MCP server: lets LLM assistants search the Daily Papers index and read whole summaries.

Two tools, built by `build_mcp` over a callable that returns the current `Searcher` (the HTTP
app swaps searchers on reload, so the tools look it up on every call):

* `search_papers(query, k, date_from, date_to, min_votes)`: papers with their cited bullets,
  as structured content and as text with numbered citations [1], [2], ...
* `get_paper(arxiv_id)`: one paper's whole summary.

Transports: stdio (`retrieval mcp --index DIR`, see `run_stdio`) and streamable HTTP mounted
at `/mcp` in a FastAPI app (`mount_mcp`, whose result runs in the app's lifespan). Bad input
comes back as a tool error (`isError`), never as a crash of the server.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from contextlib import AsyncExitStack
from typing import Annotated

from fastapi import FastAPI
from fastapi.responses import JSONResponse
from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp_types import CallToolResult, TextContent, ToolAnnotations
from pydantic import BaseModel, Field
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from retrieval import __version__
from retrieval.config import Settings
from retrieval.errors import PaperNotFoundError, RetrievalError
from retrieval.models import Mode, PaperDetail, SearchResponse
from retrieval.render import citation_numbers, render_citations, render_paper
from retrieval.search import Filters, Searcher, SearchSettings

SERVER_NAME = "daily-papers"
MAX_K = 20
DEFAULT_K = 5

INSTRUCTIONS = (
    "Search Korean summaries of Hugging Face Daily Papers (AI/ML research papers). "
    "Call search_papers with a description of what a paper does, in Korean or English; cite the "
    "bullets you use by their [n] numbers and link papers by their arXiv URL. "
    "Call get_paper with an arXiv id for a paper's whole summary."
)

SEARCH_DESCRIPTION = (
    "Find AI/ML research papers from Hugging Face Daily Papers by meaning. The query may be Korean "
    "or English: a topic, a method, a claim or a paper title (e.g. '저랭크 행렬로 LLM 미세 조정' or "
    "'low-rank adaptation of language models'). The summaries are in Korean. Returns the best papers "
    "first, each with arXiv id, title, arXiv URL, digest dates, votes, score and the summary bullets "
    "that matched, numbered [1], [2], ... across the whole answer so they can be cited; "
    "structured content carries the same data. Optional filters: digest date range, minimum votes."
)

PAPER_DESCRIPTION = (
    "Get the whole Korean summary of one paper by its arXiv id (e.g. '2106.09685'): title, arXiv URL, "
    "digest dates, votes, authors and every bullet with its position and section. Use it after "
    "search_papers to read more than the cited bullets."
)

READ_ONLY = ToolAnnotations(read_only_hint=True, idempotent_hint=True, open_world_hint=False)


# --------------------------------------------------------------------------- structured output
class CitedBullet(BaseModel):
    """A summary bullet that made the paper match."""

    citation: int = Field(description="the number [n] of this bullet in the text rendering")
    position: int = Field(description="0-based position of the bullet in the paper's summary")
    section: str | None = Field(description="what's new, technical details, performance highlights, or null")
    text: str


class PaperResult(BaseModel):
    """One paper found by `search_papers`."""

    rank: int
    id: str = Field(description="arXiv id")
    title: str
    url: str = Field(description="arXiv URL")
    dates: list[str] = Field(description="digest dates (YYYY-MM-DD) the paper appeared on")
    votes: int | None
    score: float
    warning: str | None = Field(default=None, description="set when the summary may not describe this paper")
    bullets: list[CitedBullet]


class SearchPapersResult(BaseModel):
    """What `search_papers` returns as structured content."""

    query: str
    mode: Mode
    total: int = Field(description="papers matching the filters among the ranked candidates")
    results: list[PaperResult]


def search_result(response: SearchResponse) -> SearchPapersResult:
    """The structured form of a response, numbered exactly as `render_citations` numbers it."""
    papers = []
    for rank, (hit, numbers) in enumerate(zip(response.results, citation_numbers(response), strict=True), start=1):
        bullets = [
            CitedBullet(citation=n, position=ev.position, section=ev.section, text=ev.text)
            for n, ev in zip(numbers, hit.evidence, strict=True)
        ]
        papers.append(
            PaperResult(
                rank=rank,
                id=hit.paper.id,
                title=hit.paper.title,
                url=hit.paper.url,
                dates=hit.paper.dates,
                votes=hit.paper.votes,
                score=hit.score,
                warning=hit.warning,
                bullets=bullets,
            )
        )
    return SearchPapersResult(query=response.query, mode=response.mode, total=response.total, results=papers)


# --------------------------------------------------------------------------- input checks
def _check_query(query: str, max_chars: int) -> str:
    query = query.strip()
    if not query:
        raise ToolError("the query is empty: describe the paper you are looking for, in Korean or English")
    if len(query) > max_chars:
        raise ToolError(f"the query is {len(query)} characters long; the limit is {max_chars}")
    return query


def _check_date(name: str, value: str | None) -> str | None:
    if value is None or not value.strip():
        return None
    try:
        return dt.date.fromisoformat(value.strip()).isoformat()
    except ValueError:
        raise ToolError(f"{name} must be a date written YYYY-MM-DD, got {value!r}") from None


def _filters(date_from: str | None, date_to: str | None, min_votes: int | None) -> Filters:
    start, end = _check_date("date_from", date_from), _check_date("date_to", date_to)
    if start and end and start > end:
        raise ToolError(f"date_from {start} is after date_to {end}")
    return Filters(date_from=start, date_to=end, min_votes=min_votes)


def _current(get_searcher: Callable[[], Searcher | None]) -> Searcher:
    try:
        searcher = get_searcher()
    except RetrievalError as exc:
        raise ToolError(f"the search index is not available: {exc}") from exc
    if searcher is None:
        raise ToolError("the search index is not loaded yet; try again shortly")
    return searcher


# --------------------------------------------------------------------------- server
def build_mcp(get_searcher: Callable[[], Searcher | None], max_query_chars: int = 1000) -> MCPServer:
    """An MCP server with the `search_papers` and `get_paper` tools over `get_searcher()`."""
    # The SDK calls logging.basicConfig at construction: at INFO, every library's logs would be echoed.
    server: MCPServer = MCPServer(SERVER_NAME, version=__version__, instructions=INSTRUCTIONS, log_level="WARNING")

    @server.tool(title="Search Daily Papers", description=SEARCH_DESCRIPTION, annotations=READ_ONLY)
    def search_papers(
        query: Annotated[str, Field(description="what to look for, in Korean or English")],
        k: Annotated[int, Field(ge=1, le=MAX_K, description=f"how many papers to return (1-{MAX_K})")] = DEFAULT_K,
        date_from: Annotated[
            str | None, Field(description="only papers in digests on or after this date (YYYY-MM-DD)")
        ] = None,
        date_to: Annotated[
            str | None, Field(description="only papers in digests on or before this date (YYYY-MM-DD)")
        ] = None,
        min_votes: Annotated[int | None, Field(ge=0, description="only papers with at least this many votes")] = None,
    ) -> Annotated[CallToolResult, SearchPapersResult]:
        text = _check_query(query, max_query_chars)
        filters = _filters(date_from, date_to, min_votes)
        response = _current(get_searcher).search(text, mode="hybrid", limit=k, filters=filters)
        return CallToolResult(
            content=[TextContent(type="text", text=render_citations(response))],
            structured_content=search_result(response).model_dump(mode="json"),
        )

    @server.tool(title="Get a paper summary", description=PAPER_DESCRIPTION, annotations=READ_ONLY)
    def get_paper(
        arxiv_id: Annotated[str, Field(description="arXiv id, e.g. 2106.09685")],
    ) -> Annotated[CallToolResult, PaperDetail]:
        if not arxiv_id.strip():
            raise ToolError("arxiv_id is empty: give an arXiv id such as 2106.09685")
        try:
            detail = _current(get_searcher).get_paper(arxiv_id)
        except PaperNotFoundError as exc:
            raise ToolError(f"{exc}; search_papers finds papers by topic") from exc
        return CallToolResult(
            content=[TextContent(type="text", text=render_paper(detail))],
            structured_content=detail.model_dump(mode="json"),
        )

    return server


def run_stdio(settings: Settings) -> None:
    """Serve the index at `settings.index_dir` over stdio until the client disconnects.

    The index is opened (and the model loaded) before the server starts, so a bad index fails
    with its domain error, which the CLI prints as one line.
    """
    from retrieval.service import open_searcher

    searcher = open_searcher(settings.index_dir, settings=SearchSettings(candidate_depth=settings.candidate_depth))
    searcher.search("warm-up 검색 준비", limit=1)  # loads the model and the Korean tokenizer now
    try:
        build_mcp(lambda: searcher, max_query_chars=settings.max_query_chars).run("stdio")
    finally:
        searcher.close()


class MountedMCP:
    """The `/mcp` endpoint of a FastAPI app, and the context that runs it in the app's lifespan.

    Each time the context is entered (once per lifespan, so a restarted app works too) it starts a
    fresh SDK session manager; outside it the endpoint answers 503.
    """

    def __init__(self, server: MCPServer, path: str, host: str) -> None:
        self.server = server
        self.path = path
        self.host = host
        self._app: ASGIApp | None = None
        self._stack: AsyncExitStack | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self._app is None:
            response = JSONResponse({"detail": "the MCP endpoint is not running"}, status_code=503)
            await response(scope, receive, send)
            return
        await self._app(scope, receive, send)

    async def __aenter__(self) -> MountedMCP:
        if self._stack is not None:
            raise RuntimeError("the MCP endpoint is already running")
        # Stateless and JSON: no per-client session to keep, and plain JSON answers for simple clients.
        app = self.server.streamable_http_app(
            streamable_http_path=self.path, stateless_http=True, json_response=True, host=self.host
        )
        stack = AsyncExitStack()
        await stack.enter_async_context(self.server.session_manager.run())
        self._app, self._stack = app, stack
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        stack, self._stack, self._app = self._stack, None, None
        if stack is not None:
            await stack.aclose()


def mount_mcp(
    app: FastAPI,
    get_searcher: Callable[[], Searcher | None],
    *,
    path: str = "/mcp",
    host: str = "127.0.0.1",
    max_query_chars: int = 1000,
) -> MountedMCP:
    """Serve the MCP tools over streamable HTTP at `path` of `app`.

    Returns an async context manager that must be entered in the app's lifespan
    (`async with mcp: yield`). `host` is the address the app listens on: for a loopback address
    the SDK's DNS-rebinding protection only accepts loopback Host and Origin headers.
    """
    endpoint = MountedMCP(build_mcp(get_searcher, max_query_chars=max_query_chars), path, host)
    app.router.routes.append(Route(path, endpoint=endpoint))
    return endpoint
