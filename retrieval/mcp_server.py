"""MCP server: lets LLM assistants search the Daily Papers index and read whole summaries.

Two tools, built by `build_mcp` over a callable that returns the current `Searcher`, or a lease
on it (the HTTP app passes `SearcherHolder.lease`: it swaps searchers on reload, so the tools look
it up on every call and hold the lease until the call is answered):

* `search_papers(query, k, date_from, date_to, min_votes, author, mode)`: papers with their cited bullets,
  as structured content and as text with numbered citations [1], [2], ...
* `get_paper(arxiv_id)`: one paper's whole summary.

Transports: stdio (`retrieval mcp --index DIR`, see `run_stdio`) and streamable HTTP mounted
at `/mcp` in a FastAPI app (`mount_mcp`, whose result runs in the app's lifespan). Bad input
comes back as a one-line tool error (`isError`), never as a crash of the server: the arguments are
checked by the same `parse_search_request` as every other front end.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, AsyncExitStack, contextmanager, nullcontext
from typing import Annotated, Any

from fastapi import FastAPI
from fastapi.responses import JSONResponse
from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp_types import CallToolResult, TextContent, ToolAnnotations
from pydantic import BaseModel, Field, ValidationError
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from retrieval import __version__
from retrieval.config import Settings
from retrieval.errors import PaperNotFoundError, RetrievalError
from retrieval.models import Mode, PaperDetail, SearchResponse
from retrieval.render import citation_numbers, render_citations, render_paper
from retrieval.requests import InvalidRequest, RequestLimits, parse_search_request
from retrieval.search import Searcher

SERVER_NAME = "daily-papers"
DEFAULT_K = 5
K_DESCRIPTION = f"how many papers to return: 1 to the server's max_limit (100 unless configured); default {DEFAULT_K}"

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
    "first, each with arXiv id, title, arXiv URL, digest dates, votes, relevance (0-1, comparable across "
    "queries; 'weak' when the paper probably does not answer the query) and the summary bullets "
    "that matched, numbered [1], [2], ... across the whole answer so they can be cited; "
    "when every result is weak the first line says that no paper in the index answers the query well. "
    "Structured content carries the same data. Optional filters: digest date range, minimum votes, "
    "author."
)

PAPER_DESCRIPTION = (
    "Get the whole Korean summary of one paper by its arXiv id (e.g. '2106.09685', also '2106.09685v2', "
    "'arXiv:2106.09685' or its arxiv.org URL): title, arXiv URL, "
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
    score: float = Field(description="the ranking's fused score: orders this answer, not comparable across queries")
    relevance: float | None = Field(
        description="0-1, how likely the paper answers the query; comparable across queries"
    )
    weak: bool = Field(description="relevance below the measured threshold: probably not what was asked")
    warning: str | None = Field(default=None, description="set when the summary may not describe this paper")
    legs: dict[str, float] = Field(
        default_factory=dict,
        description="each ranking leg's contribution to `score` (they add up to it): dense_best_bullet, "
        "dense_centroid, dense_title, lexical_summary, lexical_title, exact_name, arxiv_id, reranker",
    )
    bullets: list[CitedBullet]


class SearchPapersResult(BaseModel):
    """What `search_papers` returns as structured content."""

    query: str
    mode: Mode
    total: int = Field(description="papers matching the filters among the ranked candidates")
    weak: bool = Field(description="every result is weak: no paper in the index answers the query well")
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
                relevance=hit.relevance,
                weak=hit.weak,
                warning=hit.warning,
                legs={leg.leg: leg.contribution for leg in hit.explain.legs} if hit.explain else {},
                bullets=bullets,
            )
        )
    return SearchPapersResult(
        query=response.query, mode=response.mode, total=response.total, weak=response.weak, results=papers
    )


# --------------------------------------------------------------------------- input checks
class OneLineErrors(MCPServer):
    """An MCP server whose argument-type errors are one line, like every other tool error."""

    async def call_tool(self, name: str, arguments: dict[str, Any], context: Any = None) -> Any:
        try:
            return await super().call_tool(name, arguments, context)
        except ToolError as exc:
            if isinstance(exc.__cause__, ValidationError):
                raise ToolError(f"invalid arguments: {InvalidRequest.from_validation(exc.__cause__)}") from None
            raise


# A searcher (None while none is loaded), or a context manager that leases one for a call.
SearcherSource = Callable[[], AbstractContextManager[Searcher | None] | Searcher | None]


@contextmanager
def _current(get_searcher: SearcherSource) -> Iterator[Searcher]:
    """The searcher for one tool call, leased for the call when the source hands out leases."""
    try:
        found = get_searcher()
    except RetrievalError as exc:
        raise ToolError(f"the search index is not available: {exc}") from exc
    with found if isinstance(found, AbstractContextManager) else nullcontext(found) as searcher:
        if searcher is None:
            raise ToolError("the search index is not loaded yet; try again shortly")
        yield searcher


# --------------------------------------------------------------------------- server
def build_mcp(get_searcher: SearcherSource, limits: RequestLimits | None = None) -> MCPServer:
    """An MCP server with the `search_papers` and `get_paper` tools over `get_searcher()`."""
    limits = limits or RequestLimits()
    # The SDK calls logging.basicConfig at construction: at INFO, every library's logs would be echoed.
    server: MCPServer = OneLineErrors(SERVER_NAME, version=__version__, instructions=INSTRUCTIONS, log_level="WARNING")

    @server.tool(title="Search Daily Papers", description=SEARCH_DESCRIPTION, annotations=READ_ONLY)
    def search_papers(
        query: Annotated[str, Field(description="what to look for, in Korean or English")],
        k: Annotated[int, Field(ge=1, description=K_DESCRIPTION)] = DEFAULT_K,
        date_from: Annotated[
            str | None, Field(description="only papers in digests on or after this date (YYYY-MM-DD)")
        ] = None,
        date_to: Annotated[
            str | None, Field(description="only papers in digests on or before this date (YYYY-MM-DD)")
        ] = None,
        min_votes: Annotated[int | None, Field(ge=0, description="only papers with at least this many votes")] = None,
        author: Annotated[str | None, Field(description="only papers with an author containing this text")] = None,
        mode: Annotated[Mode, Field(description="hybrid (default), dense (meaning) or lexical (keywords)")] = "hybrid",
    ) -> Annotated[CallToolResult, SearchPapersResult]:
        arguments = {"q": query, "k": k, "date_from": date_from, "date_to": date_to}
        arguments |= {"min_votes": min_votes, "author": author, "mode": mode}
        try:
            request = parse_search_request(arguments, limits)
        except InvalidRequest as exc:
            raise ToolError(f"invalid arguments: {exc}".replace("q: ", "query: ", 1)) from None
        with _current(get_searcher) as searcher:
            response = searcher.search(
                request.q.strip(), mode=request.mode, limit=request.k, filters=request.filters(), explain=True
            )
        return CallToolResult(
            content=[TextContent(type="text", text=render_citations(response))],
            structured_content=search_result(response).model_dump(mode="json"),
        )

    @server.tool(title="Get a paper summary", description=PAPER_DESCRIPTION, annotations=READ_ONLY)
    def get_paper(
        arxiv_id: Annotated[str, Field(description="arXiv id in any usual spelling, e.g. 2106.09685")],
    ) -> Annotated[CallToolResult, PaperDetail]:
        if not arxiv_id.strip():
            raise ToolError("arxiv_id is empty: give an arXiv id such as 2106.09685")
        try:
            with _current(get_searcher) as searcher:
                detail = searcher.get_paper(arxiv_id)
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
    from retrieval.service import open_searcher, search_settings

    searcher = open_searcher(settings.index_dir, settings=search_settings(settings), config=settings)
    searcher.search("warm-up 검색 준비", limit=1)  # loads the model and the Korean tokenizer now
    try:
        build_mcp(lambda: searcher, limits=settings.request_limits()).run("stdio")
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
    get_searcher: SearcherSource,
    *,
    path: str = "/mcp",
    host: str = "127.0.0.1",
    limits: RequestLimits | None = None,
) -> MountedMCP:
    """Serve the MCP tools over streamable HTTP at `path` of `app`.

    Returns an async context manager that must be entered in the app's lifespan
    (`async with mcp: yield`). `host` is the address the app listens on: for a loopback address
    the SDK's DNS-rebinding protection only accepts loopback Host and Origin headers.
    """
    endpoint = MountedMCP(build_mcp(get_searcher, limits=limits), path, host)
    app.router.routes.append(Route(path, endpoint=endpoint))
    return endpoint
