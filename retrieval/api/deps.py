"""FastAPI dependencies: the settings, the searcher holder, the live searcher, admin access."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, HTTPException, Request
from fastapi import Path as PathParam

from retrieval.api.holder import SearcherHolder
from retrieval.config import Settings
from retrieval.search import Searcher

LOOPBACK_HOSTS = frozenset({"127.0.0.1", "::1", "localhost"})


def get_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


def get_holder(request: Request) -> SearcherHolder:
    holder: SearcherHolder = request.app.state.holder
    return holder


def get_searcher(holder: Annotated[SearcherHolder, Depends(get_holder)]) -> Iterator[Searcher]:
    """The live searcher, leased for the whole request (a reload closes it only after the request)."""
    with holder.lease() as searcher:
        if searcher is None:
            raise HTTPException(status_code=503, detail=holder.error or "the index is not loaded yet")
        yield searcher


SettingsDep = Annotated[Settings, Depends(get_settings)]
HolderDep = Annotated[SearcherHolder, Depends(get_holder)]
SearcherDep = Annotated[Searcher, Depends(get_searcher)]
ArxivId = Annotated[
    str,
    PathParam(
        min_length=1,
        max_length=200,
        description="arXiv id in any usual spelling: 2106.09685, 2106.09685v2, arXiv:2106.09685, or its arxiv.org URL",
    ),
]


def require_admin(request: Request, settings: SettingsDep) -> None:
    """Without a token, only loopback clients may reload (the token itself is checked by middleware)."""
    if settings.api_token is None:
        host = request.client.host if request.client else ""
        if host not in LOOPBACK_HOSTS:
            raise HTTPException(
                status_code=403,
                detail="reload is accepted only from loopback clients when no API token is configured",
            )
