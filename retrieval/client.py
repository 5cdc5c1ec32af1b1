"""A small HTTP client for a running search service (`retrieval serve`).

`SearchClient.search` has the same signature and return type as `Searcher.search`, so code
written against one works against the other (the LangChain and LlamaIndex retrievers rely on it).
HTTP and connection failures become `ServiceError` with a one-line message.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, TypeVar

import httpx
from pydantic import ValidationError

from retrieval.errors import ServiceError
from retrieval.models import Mode, PaperDetail, SearchResponse

if TYPE_CHECKING:
    from retrieval.search import Filters

DEFAULT_TIMEOUT = 30.0
_Body = TypeVar("_Body", SearchResponse, PaperDetail)


class SearchClient:
    """Calls `GET /search` and `GET /papers/{id}` of a running service."""

    def __init__(
        self,
        url: str,
        api_token: str | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        if not url.startswith(("http://", "https://")):
            raise ValueError(f"the service URL must start with http:// or https://, got {url!r}")
        self.url = url.rstrip("/")
        headers = {"Accept": "application/json"}
        if api_token:
            headers["Authorization"] = f"Bearer {api_token}"
        self._http = httpx.Client(base_url=self.url, headers=headers, timeout=timeout, transport=transport)

    def search(
        self,
        query: str,
        mode: Mode = "hybrid",
        limit: int = 10,
        offset: int = 0,
        filters: Filters | None = None,
    ) -> SearchResponse:
        """One page of results for `query`, exactly as the service ranks them."""
        params: dict[str, Any] = {"q": query, "k": limit, "mode": mode, "offset": offset}
        if filters is not None:
            for name in ("date_from", "date_to", "min_votes", "author"):
                value = getattr(filters, name)
                if value is not None and value != "":
                    params[name] = value
        return self._get("/search", params, SearchResponse)

    def get_paper(self, arxiv_id: str) -> PaperDetail:
        """The whole summary of one paper."""
        return self._get(f"/papers/{arxiv_id.strip()}", {}, PaperDetail)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> SearchClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _get(self, path: str, params: dict[str, Any], model: type[_Body]) -> _Body:
        try:
            response = self._http.get(path, params=params)
        except httpx.HTTPError as exc:
            raise ServiceError(f"cannot reach the search service at {self.url}: {exc}") from exc
        if response.status_code >= 400:
            raise ServiceError(
                f"the search service at {self.url} answered {response.status_code} for {path}: {_detail(response)}",
                status=response.status_code,
            )
        try:
            return model.model_validate_json(response.content)
        except ValidationError as exc:
            raise ServiceError(f"the search service at {self.url} sent an unexpected {path} body: {exc}") from exc


def _detail(response: httpx.Response) -> str:
    """The service's error message (`reason` or `detail`), or the start of the body."""
    try:
        body = response.json()
    except ValueError:
        return response.text[:200] or response.reason_phrase
    if not isinstance(body, dict):
        return str(body)[:200]
    for key in ("reason", "detail"):  # the API's one-line summary of a 422 first
        if isinstance(body.get(key), str):
            return str(body[key])
    detail = body.get("detail")
    if detail is not None:
        return str(detail)[:300]
    return str(body)[:200]
