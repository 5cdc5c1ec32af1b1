"""The HTTP routes: search, papers, health, readiness, reload and the search page."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse
from pydantic import BaseModel

from retrieval.api.deps import ArxivId, HolderDep, SearcherDep, SettingsDep, require_admin
from retrieval.api.holder import ReloadResult
from retrieval.config import Settings
from retrieval.errors import RetrievalError
from retrieval.models import PaperDetail, SearchResponse
from retrieval.page import render_page
from retrieval.requests import SearchBody, SearchRequest
from retrieval.search import Searcher


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


router = APIRouter()


def run_search(request: SearchRequest, searcher: Searcher, settings: Settings) -> SearchResponse:
    """Apply the operator's limits (one rule for every front end) and search."""
    request = request.checked(settings.request_limits())
    return searcher.search(
        request.q, mode=request.mode, limit=request.k, offset=request.offset, filters=request.filters()
    )


@router.get("/healthz", response_model=Health, tags=["ops"])
def healthz() -> Health:
    """The process is alive."""
    return Health()


@router.get("/readyz", response_model=Readiness, tags=["ops"], responses={503: {"model": Readiness}})
def readyz(holder: HolderDep) -> Readiness | JSONResponse:
    """The index is loaded: its version, model and counts; 503 otherwise."""
    with holder.lease() as searcher:
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


@router.get("/", response_class=HTMLResponse, include_in_schema=False)
def page(request: Request, holder: HolderDep, settings: SettingsDep) -> HTMLResponse:
    """The search page, rendered on the server; works without JavaScript."""
    with holder.lease() as searcher:
        return render_page(dict(request.query_params), searcher, holder.error, settings)
