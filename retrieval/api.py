"""HTTP API and search page: a FastAPI app factory, request models, error mapping, reload.

`create_app(settings, searcher=None)` builds the app; the index is opened once in the lifespan
(unless a searcher is given) and injected into routes. `run_server(settings)` opens the index
first, so a missing or damaged index stops it with the domain error's one-line message.
"""

from __future__ import annotations

import datetime as dt
import functools
import html
import logging
import re
import secrets
import signal
import socket
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, MutableMapping
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from string import Template
from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, FastAPI, HTTPException, Query, Request
from fastapi import Path as PathParam
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import HTMLResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator
from starlette.concurrency import run_in_threadpool

from retrieval.api_docs import mount_docs
from retrieval.config import Settings
from retrieval.embedding import load_embedder
from retrieval.errors import (
    EmbedderError,
    IndexCorruptError,
    IndexMismatchError,
    IndexNotFoundError,
    PaperNotFoundError,
    RetrievalError,
)
from retrieval.mcp_server import mount_mcp
from retrieval.models import Mode, PaperDetail, PaperHit, SearchResponse
from retrieval.search import Filters, Searcher, SearchSettings
from retrieval.service import open_searcher
from retrieval.store import IndexDirectory, load_index

log = logging.getLogger("retrieval.api")

LOOPBACK_HOSTS = frozenset({"127.0.0.1", "::1", "localhost"})
OPEN_PATHS = frozenset({"/healthz", "/readyz"})
STATIC_PREFIX = "/static/"
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_PACKAGE = resources.files("retrieval")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


# --------------------------------------------------------------------------- request models
class SearchRequest(BaseModel):
    """Search parameters, the same for `GET /search` (query string) and `POST /search` (JSON)."""

    # The schema's pattern documents what `_query_not_empty` checks (some non-blank character);
    # the validator gives the readable message.
    q: str = Field(description="the query, Korean or English", json_schema_extra={"minLength": 1, "pattern": r"\S"})
    k: int = Field(default=10, ge=1, le=100, description="results per page (1-100)")
    offset: int = Field(default=0, ge=0, description="results to skip, for paging")
    mode: Mode = Field(default="hybrid", description="dense, lexical or hybrid")
    date_from: str | None = Field(default=None, description="first digest date, YYYY-MM-DD (inclusive)")
    date_to: str | None = Field(default=None, description="last digest date, YYYY-MM-DD (inclusive)")
    min_votes: int | None = Field(default=None, ge=0, description="minimum upvotes")
    author: str | None = Field(default=None, max_length=200, description="case-insensitive author substring")

    @field_validator("date_from", "date_to", "author", mode="before")
    @classmethod
    def _blank_is_none(cls, value: object) -> object:
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("q")
    @classmethod
    def _query_not_empty(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("the query is empty")
        return value

    @field_validator("date_from", "date_to")
    @classmethod
    def _iso_date(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is None:
            return None
        value = value.strip()
        try:
            if not _DATE.match(value):
                raise ValueError
            dt.date.fromisoformat(value)
        except ValueError:
            raise ValueError(f"{info.field_name} must be a date YYYY-MM-DD, got {value[:40]!r}") from None
        if info.field_name == "date_to" and (start := info.data.get("date_from")) and start > value:
            raise ValueError(f"date_from ({start}) is after date_to ({value})")
        return value

    def page_size(self, settings: Settings) -> int:
        """`k`, or the default capped by `settings.max_limit` when the client did not choose one."""
        return self.k if "k" in self.model_fields_set else min(self.k, settings.max_limit)

    def filters(self) -> Filters:
        return Filters(date_from=self.date_from, date_to=self.date_to, min_votes=self.min_votes, author=self.author)


class SearchBody(SearchRequest):
    """JSON body of `POST /search`; unknown fields are refused so typos do not pass silently."""

    model_config = ConfigDict(extra="forbid", strict=True)  # strict: `"k": true` is not the integer 1


def limit_errors(request: SearchRequest, settings: Settings, source: str) -> list[dict[str, Any]]:
    """Errors for the bounds that come from settings (query length, page size, offset)."""
    errors: list[dict[str, Any]] = []

    def add(field: str, msg: str) -> None:
        errors.append({"type": "value_error", "loc": (source, field), "msg": msg, "input": None})

    if len(request.q) > settings.max_query_chars:
        add("q", f"the query has {len(request.q)} characters; at most {settings.max_query_chars} are allowed")
    if "k" in request.model_fields_set and request.k > settings.max_limit:
        add("k", f"k must be at most {settings.max_limit}")
    if request.offset > settings.max_offset:
        add("offset", f"offset must be at most {settings.max_offset}")
    return errors


# --------------------------------------------------------------------------- response models
class Health(BaseModel):
    status: str = "ok"


class Readiness(BaseModel):
    status: str
    version: str | None = None
    model: str | None = None
    dim: int | None = None
    papers: int | None = None
    bullets: int | None = None
    created: str | None = None
    detail: str | None = None


class ReloadResult(BaseModel):
    reloaded: bool = Field(description="false when CURRENT still names the version being served")
    version: str
    previous: str | None
    papers: int
    bullets: int
    took_ms: float


# --------------------------------------------------------------------------- searcher holder
def search_settings(settings: Settings) -> SearchSettings:
    return SearchSettings(candidate_depth=settings.candidate_depth)


def warm_up(searcher: Searcher) -> None:
    """One query embedding and one tokenization, so the first real request is not slow."""
    searcher.embedder.embed_queries(["query warm-up 검색 준비"])
    searcher.tokenizer.tokenize("검색 준비 warm-up")


class SearcherHolder:
    """Holds the live `Searcher`; `reload` swaps it atomically.

    Requests read `current` once and keep that reference, so a request in flight finishes on
    the searcher it started with while later requests see the new one.
    """

    def __init__(self, settings: Settings, searcher: Searcher | None = None) -> None:
        self.settings = settings
        self._searcher = searcher
        self._reload_lock = threading.Lock()
        self.error: str | None = None

    @property
    def current(self) -> Searcher | None:
        return self._searcher

    def load(self) -> None:
        """Open the index if none is held; on a domain error stay unready and keep the message."""
        if self._searcher is None:
            try:
                self._searcher = open_searcher(self.settings.index_dir, settings=search_settings(self.settings))
            except RetrievalError as exc:
                self.error = str(exc)
                log.error("index not loaded: %s", exc)
                return
        warm_up(self._searcher)

    def reload(self) -> ReloadResult:
        """Re-open the index directory's CURRENT version and swap it in; serialised."""
        started = time.perf_counter()
        with self._reload_lock:
            old = self._searcher
            live = IndexDirectory(self.settings.index_dir).current_version()
            if old is not None and live is not None and live == old.index.path:
                return _reload_result(False, old, old, started)
            new = self._open(old)
            warm_up(new)
            self._searcher = new
            self.error = None
        log.info("index reloaded: %s -> %s", old.index.path.name if old else None, new.index.path.name)
        return _reload_result(True, new, old, started)

    def _open(self, previous: Searcher | None) -> Searcher:
        """Load the index; keep the previous searcher's settings, tokenizer and (same model) embedder."""
        index = load_index(self.settings.index_dir)
        if previous is None:
            return Searcher(index, load_embedder(index.manifest.model), settings=search_settings(self.settings))
        embedder = previous.embedder
        if embedder.name != index.manifest.model:
            embedder = load_embedder(index.manifest.model)
        return Searcher(index, embedder, tokenizer=previous.tokenizer, settings=previous.settings)


def _reload_result(reloaded: bool, new: Searcher, old: Searcher | None, started: float) -> ReloadResult:
    return ReloadResult(
        reloaded=reloaded,
        version=new.index.path.name,
        previous=old.index.path.name if old is not None else None,
        papers=new.index.manifest.papers,
        bullets=new.index.manifest.bullets,
        took_ms=round((time.perf_counter() - started) * 1000, 3),
    )


# --------------------------------------------------------------------------- dependencies
def get_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


def get_holder(request: Request) -> SearcherHolder:
    holder: SearcherHolder = request.app.state.holder
    return holder


def get_searcher(holder: Annotated[SearcherHolder, Depends(get_holder)]) -> Searcher:
    searcher = holder.current
    if searcher is None:
        raise HTTPException(status_code=503, detail=holder.error or "the index is not loaded yet")
    return searcher


SettingsDep = Annotated[Settings, Depends(get_settings)]
HolderDep = Annotated[SearcherHolder, Depends(get_holder)]
SearcherDep = Annotated[Searcher, Depends(get_searcher)]
ArxivId = Annotated[str, PathParam(min_length=1, max_length=64, description="arXiv id, e.g. 2106.09685")]


def require_admin(request: Request, settings: SettingsDep) -> None:
    """Without a token, only loopback clients may reload (the token itself is checked by middleware)."""
    if settings.api_token is None:
        host = request.client.host if request.client else ""
        if host not in LOOPBACK_HOSTS:
            raise HTTPException(
                status_code=403,
                detail="reload is accepted only from loopback clients when no API token is configured",
            )


def run_search(request: SearchRequest, searcher: Searcher, settings: Settings, source: str) -> SearchResponse:
    errors = limit_errors(request, settings, source)
    if errors:
        raise RequestValidationError(errors)
    return searcher.search(
        request.q,
        mode=request.mode,
        limit=request.page_size(settings),
        offset=request.offset,
        filters=request.filters(),
    )


# --------------------------------------------------------------------------- routes
router = APIRouter()


@router.get("/healthz", response_model=Health, tags=["ops"])
def healthz() -> Health:
    """The process is alive."""
    return Health()


@router.get("/readyz", response_model=Readiness, tags=["ops"], responses={503: {"model": Readiness}})
def readyz(holder: HolderDep) -> Readiness | JSONResponse:
    """The index is loaded: its version, model and counts; 503 otherwise."""
    searcher = holder.current
    if searcher is None:
        body = Readiness(status="unavailable", detail=holder.error or "the index is not loaded yet")
        return JSONResponse(status_code=503, content=body.model_dump())
    manifest = searcher.index.manifest
    return Readiness(
        status="ready",
        version=searcher.index.path.name,
        model=manifest.model,
        dim=manifest.dim,
        papers=manifest.papers,
        bullets=manifest.bullets,
        created=manifest.created,
    )


@router.get("/search", response_model=SearchResponse, tags=["search"])
def search_get(
    params: Annotated[SearchRequest, Query()], searcher: SearcherDep, settings: SettingsDep
) -> SearchResponse:
    """Rank papers for a query; each hit cites the bullets that matched, with highlight spans."""
    return run_search(params, searcher, settings, "query")


@router.post(
    "/search",
    response_model=SearchResponse,
    tags=["search"],
    responses={400: {"description": "the body is not JSON text (bad encoding or framing)"}},
)
def search_post(body: SearchBody, searcher: SearcherDep, settings: SettingsDep) -> SearchResponse:
    """Same as `GET /search`, with the parameters in a JSON body."""
    return run_search(body, searcher, settings, "body")


@router.get("/papers/{arxiv_id}", response_model=PaperDetail, tags=["papers"], responses={404: {}})
def paper(arxiv_id: ArxivId, searcher: SearcherDep) -> PaperDetail:
    """A paper's metadata and its whole summary."""
    return searcher.get_paper(arxiv_id)


@router.get("/papers/{arxiv_id}/similar", response_model=SearchResponse, tags=["papers"], responses={404: {}})
def similar(arxiv_id: ArxivId, searcher: SearcherDep, k: Annotated[int, Query(ge=1, le=100)] = 10) -> SearchResponse:
    """Papers nearest to this one (centroid of its bullet vectors)."""
    return searcher.similar(arxiv_id, limit=k)


@router.post(
    "/admin/reload",
    response_model=ReloadResult,
    tags=["ops"],
    dependencies=[Depends(require_admin)],
    responses={403: {}, 409: {}},
)
def admin_reload(holder: HolderDep) -> ReloadResult:
    """Re-open the index directory (its CURRENT version) and swap it in without a restart."""
    try:
        return holder.reload()
    except RetrievalError as exc:
        serving = holder.current.index.path.name if holder.current else "nothing"
        raise HTTPException(status_code=409, detail=f"reload failed: {exc} (still serving {serving})") from exc


@router.get("/", response_class=HTMLResponse, include_in_schema=False)
def page(request: Request, holder: HolderDep, settings: SettingsDep) -> HTMLResponse:
    """The search page, rendered on the server; works without JavaScript."""
    return render_page(dict(request.query_params), holder.current, holder.error, settings)


# --------------------------------------------------------------------------- error mapping
STATUS_BY_ERROR: dict[type[RetrievalError], int] = {
    PaperNotFoundError: 404,
    IndexNotFoundError: 503,
    IndexCorruptError: 503,
    IndexMismatchError: 503,
    EmbedderError: 503,
}


def _message(msg: str) -> str:
    return msg.removeprefix("Value error, ")


def _field_name(loc: tuple[Any, ...] | list[Any]) -> str:
    parts = [str(p) for p in loc[1:]] if len(loc) > 1 else [str(p) for p in loc]
    return ".".join(parts)


async def validation_error(_request: Request, exc: Exception) -> JSONResponse:
    """422 with one readable `reason` line plus the per-field list."""
    assert isinstance(exc, RequestValidationError)
    detail = [{"loc": list(e["loc"]), "msg": _message(e["msg"]), "type": e["type"]} for e in exc.errors()]
    reason = "; ".join(f"{_field_name(e['loc'])}: {e['msg']}" for e in detail)
    return JSONResponse(status_code=422, content={"detail": detail, "reason": reason})


async def domain_error(_request: Request, exc: Exception) -> JSONResponse:
    status = next((code for kind, code in STATUS_BY_ERROR.items() if isinstance(exc, kind)), 500)
    return JSONResponse(status_code=status, content={"detail": str(exc)})


# --------------------------------------------------------------------------- middleware
class BodySizeLimit:
    """Answer 413 when a request body exceeds `max_bytes` (declared or streamed)."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.max_bytes):
            await self._refuse(scope, receive, send)
            return
        buffered: list[Message] = []
        size = 0
        while True:
            message = await receive()
            buffered.append(message)
            if message["type"] != "http.request":
                break
            size += len(message.get("body", b""))
            if size > self.max_bytes:
                await self._refuse(scope, receive, send)
                return
            if not message.get("more_body", False):
                break

        async def replay() -> Message:
            return buffered.pop(0) if buffered else await receive()

        await self.app(scope, replay, send)

    async def _refuse(self, scope: Scope, receive: Receive, send: Send) -> None:
        detail = f"request body too large: at most {self.max_bytes} bytes are accepted"
        await JSONResponse(status_code=413, content={"detail": detail})(scope, receive, send)


class BearerAuth:
    """Require `Authorization: Bearer <token>` on every path except health, readiness and static assets."""

    def __init__(self, app: ASGIApp, token: str) -> None:
        self.app = app
        self.expected = f"Bearer {token}".encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or self._open(scope["path"]) or self._authorised(scope):
            await self.app(scope, receive, send)
            return
        response = JSONResponse(
            status_code=401,
            content={"detail": "missing or wrong bearer token (send Authorization: Bearer <token>)"},
            headers={"WWW-Authenticate": "Bearer"},
        )
        await response(scope, receive, send)

    @staticmethod
    def _open(path: str) -> bool:
        return path in OPEN_PATHS or path.startswith(STATIC_PREFIX)

    def _authorised(self, scope: Scope) -> bool:
        given = dict(scope.get("headers") or []).get(b"authorization", b"")
        return secrets.compare_digest(given, self.expected)


# --------------------------------------------------------------------------- app factory
def create_app(settings: Settings, searcher: Searcher | None = None) -> FastAPI:
    """Build the app. Without `searcher`, the index at `settings.index_dir` is opened at start-up."""
    holder = SearcherHolder(settings, searcher)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        await run_in_threadpool(holder.load)
        async with mcp:  # the MCP endpoint's session manager lives as long as the app
            yield

    app = FastAPI(
        title="Daily Papers retrieval",
        summary="Korean/English semantic search over Korean summaries of Hugging Face Daily Papers",
        version="0.1.0",
        lifespan=lifespan,
        docs_url=None,  # served by mount_docs from packaged assets, not a CDN
        redoc_url=None,
    )
    app.state.settings = settings
    app.state.holder = holder
    app.include_router(router)
    mcp = mount_mcp(app, lambda: holder.current, host=settings.host, max_query_chars=settings.max_query_chars)
    app.mount("/static", StaticFiles(directory=static_dir()), name="static")
    mount_docs(app)
    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_exception_handler(RetrievalError, domain_error)
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_body_bytes)
    if settings.api_token is not None:
        app.add_middleware(BearerAuth, token=settings.api_token.get_secret_value())
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["GET", "POST"],
            allow_headers=["Authorization", "Content-Type"],
        )
    return app


def run_server(settings: Settings) -> None:
    """Open the index (domain errors propagate before anything listens), then serve with uvicorn."""
    import uvicorn

    searcher = open_searcher(settings.index_dir, settings=search_settings(settings))
    app = create_app(settings, searcher)
    _reload_on_sighup(app.state.holder)
    uvicorn.run(app, host=settings.host, port=settings.port, log_level="info")


def _reload_on_sighup(holder: SearcherHolder) -> None:
    """`kill -HUP <pid>` reloads the index in a background thread (main thread only)."""
    if not hasattr(signal, "SIGHUP") or threading.current_thread() is not threading.main_thread():
        return

    def reload_in_background() -> None:
        try:
            holder.reload()
        except RetrievalError as exc:
            log.error("reload on SIGHUP failed, still serving the previous index: %s", exc)

    def handler(_signum: int, _frame: object) -> None:
        threading.Thread(target=reload_in_background, name="sighup-reload", daemon=True).start()

    signal.signal(signal.SIGHUP, handler)


@contextmanager
def serve_in_thread(app: FastAPI, host: str = "127.0.0.1", timeout: float = 60.0) -> Iterator[str]:
    """Run `app` with uvicorn on a free port in a background thread; yield its base URL."""
    import uvicorn

    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name="uvicorn", daemon=True)
    thread.start()
    deadline = time.monotonic() + timeout
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the server did not start")
        time.sleep(0.02)
    try:
        yield f"http://{host}:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout)
        sock.close()


# --------------------------------------------------------------------------- search page
@dataclass(frozen=True)
class PageState:
    """What the page shows: the form values, and a response or an error message."""

    params: dict[str, str]
    response: SearchResponse | None = None
    error: str | None = None


MODE_LABELS = {"hybrid": "하이브리드 (hybrid)", "dense": "의미 (dense)", "lexical": "키워드 (lexical)"}
HINT = '<p class="hint">한국어나 영어로 논문 내용을 설명해 보세요. 결과마다 근거가 된 요약 문장을 보여 줍니다.</p>'
PAGE_FIELDS = ("q", "mode", "date_from", "date_to", "min_votes", "author", "k", "offset")


def render_page(
    query_params: dict[str, str], searcher: Searcher | None, load_error: str | None, settings: Settings
) -> HTMLResponse:
    state = page_state(query_params, searcher, load_error, settings)
    title = f"{state.params['q']} – 논문 검색" if state.params.get("q") else "Daily Papers 논문 검색"
    body = page_template().substitute(
        title=html.escape(title), results=render_results(state), **render_form(state.params)
    )
    status = 200 if state.error is None else (503 if searcher is None else 422)
    return HTMLResponse(body, status_code=status)


def page_state(
    query_params: dict[str, str], searcher: Searcher | None, load_error: str | None, settings: Settings
) -> PageState:
    params = {k: v for k, v in query_params.items() if k in PAGE_FIELDS and v.strip()}
    shown = {"mode": "hybrid", **params}
    if "q" not in params:
        return PageState(shown)
    if searcher is None:
        return PageState(shown, error=load_error or "the index is not loaded yet")
    try:
        request = SearchRequest.model_validate(params)
    except ValidationError as exc:
        return PageState(
            shown, error="; ".join(f"{'.'.join(map(str, e['loc']))}: {_message(e['msg'])}" for e in exc.errors())
        )
    errors = limit_errors(request, settings, "query")
    if errors:
        return PageState(shown, error="; ".join(e["msg"] for e in errors))
    response = searcher.search(
        request.q,
        mode=request.mode,
        limit=request.page_size(settings),
        offset=request.offset,
        filters=request.filters(),
    )
    return PageState(shown, response=response)


def _attr(value: str | None) -> str:
    return html.escape(value or "", quote=True)


def render_form(params: dict[str, str]) -> dict[str, str]:
    """Template values of the search form, escaped."""
    mode = params.get("mode", "hybrid")
    options = "".join(
        f'<option value="{m}"{" selected" if m == mode else ""}>{html.escape(label)}</option>'
        for m, label in MODE_LABELS.items()
    )
    values = {f: _attr(params.get(f)) for f in ("q", "date_from", "date_to", "min_votes", "author")}
    has_filters = any(params.get(f) for f in ("date_from", "date_to", "min_votes", "author"))
    return {**values, "mode_options": options, "filters_open": " open" if has_filters else ""}


def render_results(state: PageState) -> str:
    if state.error is not None:
        return f'<p class="error" role="alert">{html.escape(state.error)}</p>'
    response = state.response
    if response is None:
        return HINT
    if not response.results:
        return f'<p class="summary">“{html.escape(response.query)}”에 맞는 논문이 없습니다.</p>'
    first, last = response.offset + 1, response.offset + len(response.results)
    summary = (
        f'<p class="summary">논문 {response.total}편 중 {first}–{last} '
        f'<span class="muted">({html.escape(response.mode)}, {response.took_ms:.0f} ms)</span></p>'
    )
    items = "".join(render_hit(hit, rank) for rank, hit in enumerate(response.results, start=first))
    return f'{summary}<ol class="results" start="{first}">{items}</ol>{render_pager(state.params, response)}'


def render_hit(hit: PaperHit, rank: int) -> str:
    paper = hit.paper
    votes = "" if paper.votes is None else f'<span class="votes">▲ {paper.votes}</span>'
    dates = html.escape(", ".join(paper.dates))
    warning = f'<p class="warning">⚠ {html.escape(hit.warning)}</p>' if hit.warning else ""
    bullets = "".join(
        f'<li class="evidence">{section_tag(ev.section)}{highlight(ev.text, ev.highlights)}</li>' for ev in hit.evidence
    )
    href = _attr(safe_url(paper.url))
    link = f'<a href="{href}" rel="noopener noreferrer" target="_blank">{html.escape(paper.title)}</a>'
    meta = (
        f'<span class="arxiv">arXiv {html.escape(paper.id)}</span><span class="date">{dates}</span>{votes}'
        f'<span class="score">score {hit.score:.4f}</span>'
    )
    return (
        f'<li class="hit" data-id="{_attr(paper.id)}" data-rank="{rank}"><h2>{link}</h2>'
        f'<p class="meta">{meta}</p>{warning}<ul class="bullets">{bullets}</ul></li>'
    )


def section_tag(section: str | None) -> str:
    return f'<span class="section">{html.escape(section)}</span> ' if section else ""


def highlight(text: str, spans: list[tuple[int, int]]) -> str:
    """Escape `text` and wrap the [start, end) spans in <mark>."""
    out: list[str] = []
    cursor = 0
    for start, end in sorted(spans):
        start, end = max(start, cursor), min(end, len(text))
        if start >= end:
            continue
        out.append(html.escape(text[cursor:start]))
        out.append(f"<mark>{html.escape(text[start:end])}</mark>")
        cursor = end
    out.append(html.escape(text[cursor:]))
    return "".join(out)


def safe_url(url: str) -> str:
    """Only http(s) links are rendered as links; anything else (javascript:, data:) becomes '#'."""
    return url if url.lower().startswith(("https://", "http://")) else "#"


def render_pager(params: dict[str, str], response: SearchResponse) -> str:
    links: list[str] = []
    if response.offset > 0:
        prev_offset = max(response.offset - response.limit, 0)
        links.append(f'<a class="prev" rel="prev" href="{_attr(page_link(params, prev_offset))}">← 이전</a>')
    if response.offset + len(response.results) < response.total:
        next_offset = response.offset + response.limit
        links.append(f'<a class="next" rel="next" href="{_attr(page_link(params, next_offset))}">다음 →</a>')
    return f'<nav class="pager">{"".join(links)}</nav>' if links else ""


def page_link(params: dict[str, str], offset: int) -> str:
    query = {k: v for k, v in params.items() if k != "offset"}
    if offset:
        query["offset"] = str(offset)
    return "/?" + urlencode(query)


def static_dir() -> Path:
    """Folder of the page's static assets (served at /static without auth)."""
    return Path(str(_PACKAGE / "static"))


@functools.cache
def page_template() -> Template:
    return Template((_PACKAGE / "templates" / "search.html").read_text(encoding="utf-8"))
