"""The HTTP routes: search, papers, digest days, health, readiness, reload, the search and day pages."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from pydantic import BaseModel, Field

from retrieval.api.deps import ArxivId, HolderDep, SearcherDep, SettingsDep, require_admin
from retrieval.api.holder import ReloadResult
from retrieval.config import Settings
from retrieval.days import day_hits, days_of, parse_day
from retrieval.errors import BackendUnavailableError, RetrievalError
from retrieval.feed import atom_feed
from retrieval.models import DayResponse, DaysResponse, PaperDetail, SearchResponse
from retrieval.page import render_day_page, render_page
from retrieval.requests import SearchBody, SearchRequest
from retrieval.search import Searcher


class Health(BaseModel):
    status: str = "ok"


class LastBuild(BaseModel):
    """The outcome of the watcher's latest build (`serve --watch`)."""

    at: str = Field(description="when the build ended, ISO 8601 UTC")
    ok: bool = Field(description="false: the build or the switch to it failed; the previous version still serves")
    error: str | None = Field(default=None, description="why it failed")
    version: str | None = Field(default=None, description="the version it built (or found unchanged)")
    unchanged: bool | None = Field(default=None, description="true when the corpus had not changed")
    seconds: float = 0.0


class Readiness(BaseModel):
    status: str
    version: str | None = None
    model: str | None = None
    dim: int | None = None
    papers: int | None = None
    bullets: int | None = None
    created: str | None = Field(default=None, description="when the served version was built, ISO 8601 UTC")
    latest_day: str | None = Field(default=None, description="the newest digest date in the served version")
    watching: str | None = Field(default=None, description="the corpus folder `serve --watch` watches, if any")
    last_build: LastBuild | None = Field(default=None, description="the watcher's latest build, if one ran")
    backend: str | None = Field(
        default=None, description="the store answering the ranking legs: embedded or milvus URI"
    )
    detail: str | None = None


router = APIRouter()


def run_search(request: SearchRequest, searcher: Searcher, settings: Settings) -> SearchResponse:
    """Apply the operator's limits (one rule for every front end) and search."""
    request = request.checked(settings.request_limits())
    return searcher.search(
        request.q,
        mode=request.mode,
        limit=request.k,
        offset=request.offset,
        filters=request.filters(),
        explain=request.explain,
        facets=(request.facets,) if request.facets else (),
    )


@router.get("/healthz", response_model=Health, tags=["ops"])
def healthz() -> Health:
    """The process is alive."""
    return Health()


@router.get("/readyz", response_model=Readiness, tags=["ops"], responses={503: {"model": Readiness}})
def readyz(request: Request, holder: HolderDep) -> Readiness | JSONResponse:
    """The index is loaded: its version, when it was built, model, counts, newest day; 503 otherwise.

    Under `serve --watch` also the watched folder and the latest watch build's outcome.
    """
    watch = watch_state(request)
    with holder.lease() as searcher:
        if searcher is None:
            body = Readiness(status="unavailable", detail=holder.error or "the index is not loaded yet", **watch)
            return JSONResponse(status_code=503, content=body.model_dump())
        try:
            searcher.backend.check()  # Milvus reachable and answering; the embedded store always is
        except BackendUnavailableError as exc:
            body = Readiness(status="unavailable", detail=str(exc), version=searcher.index.path.name, **watch)
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
            latest_day=days_of(searcher).latest,
            backend=describe_backend(searcher.backend),
            **watch,
        )


def describe_backend(backend: object) -> str:
    uri = getattr(backend, "uri", None)
    return f"milvus {uri}" if uri else "embedded"


def watch_state(request: Request) -> dict[str, Any]:
    watcher = getattr(request.app.state, "watcher", None)
    if watcher is None:
        return {}
    outcome = watcher.last_build
    return {
        "watching": str(watcher.corpus_dir),
        "last_build": LastBuild(**outcome.to_json()) if outcome is not None else None,
    }


@router.get("/days", response_model=DaysResponse, tags=["days"])
def days(searcher: SearcherDep) -> DaysResponse:
    """Every digest date in the index, newest first, with its number of papers."""
    return DaysResponse(days=days_of(searcher).counts())


@router.get("/days/{date}", response_model=DayResponse, tags=["days"], responses={404: {}, 422: {}})
def day(date: str, searcher: SearcherDep) -> DayResponse:
    """One day's digest in its own order: each paper as in search results, all its bullets, score 0.

    An unknown date is a 404 naming the nearest dates that have a digest; a malformed one a 422.
    """
    date = parse_day(date)
    hits = day_hits(searcher, date)
    previous, following = days_of(searcher).neighbours(date)
    return DayResponse(date=date, papers=hits, previous=previous, next=following)


@router.get("/search", response_model=SearchResponse, tags=["search"], responses={422: {}})
def search_get(
    params: Annotated[SearchRequest, Query()], searcher: SearcherDep, settings: SettingsDep
) -> SearchResponse:
    """Rank papers for a query; each hit cites the bullets that matched, with highlight spans."""
    return run_search(params, searcher, settings)


@router.post(
    "/search",
    response_model=SearchResponse,
    tags=["search"],
    responses={400: {"description": "the body is not JSON text (bad encoding or framing)"}, 422: {}},
)
def search_post(body: SearchBody, searcher: SearcherDep, settings: SettingsDep) -> SearchResponse:
    """Same as `GET /search`, with the parameters in a JSON body."""
    return run_search(body, searcher, settings)


# `:path` so an id may be written as its URL (https://arxiv.org/abs/...); the longer route goes first.
@router.get("/papers/{arxiv_id:path}/similar", response_model=SearchResponse, tags=["papers"], responses={404: {}})
def similar(arxiv_id: ArxivId, searcher: SearcherDep, k: Annotated[int, Query(ge=1, le=100)] = 10) -> SearchResponse:
    """Papers nearest to this one (centroid of its bullet vectors)."""
    return searcher.similar(arxiv_id, limit=k)


@router.get("/papers/{arxiv_id:path}", response_model=PaperDetail, tags=["papers"], responses={404: {}})
def paper(arxiv_id: ArxivId, searcher: SearcherDep) -> PaperDetail:
    """A paper's metadata and its whole summary; the id in any usual spelling."""
    return searcher.get_paper(arxiv_id)


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


@router.get(
    "/feed.atom",
    tags=["search"],
    response_class=Response,
    responses={200: {"content": {"application/atom+xml": {}}, "description": "an Atom feed"}, 422: {}},
)
def feed(
    params: Annotated[SearchRequest, Query()], request: Request, searcher: SearcherDep, settings: SettingsDep
) -> Response:
    """Follow a search: an Atom feed of the papers that match it well (not weak), newest digest first,
    each with its arXiv link, digest date and cited bullets; the same parameters as `GET /search`."""
    wide = params.model_copy(update={"k": settings.max_limit, "offset": 0})
    response = run_search(wide, searcher, settings)
    page_url = str(request.url).replace("/feed.atom", "/", 1)
    body = atom_feed(response, str(request.url), page_url)
    return Response(content=body, media_type="application/atom+xml")


@router.get("/", response_class=HTMLResponse, include_in_schema=False)
def page(request: Request, holder: HolderDep, settings: SettingsDep) -> HTMLResponse:
    """The search page, rendered on the server; works without JavaScript."""
    with holder.lease() as searcher:
        return render_page(dict(request.query_params), searcher, holder.error, settings)


@router.get("/day", include_in_schema=False, response_model=None)
def latest_day_page(holder: HolderDep) -> RedirectResponse | HTMLResponse:
    """The newest day's digest page."""
    with holder.lease() as searcher:
        latest = days_of(searcher).latest if searcher is not None else None
        if latest is None:
            return render_day_page("", searcher, holder.error)
    return RedirectResponse(f"/day/{latest}", status_code=307)


@router.get("/day/{date}", response_class=HTMLResponse, include_in_schema=False)
def day_page(date: str, holder: HolderDep) -> HTMLResponse:
    """One day's digest as a page, with links to the days before and after."""
    with holder.lease() as searcher:
        return render_day_page(date, searcher, holder.error)
