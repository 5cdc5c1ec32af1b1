"""What the LangChain and LlamaIndex retrievers share: backends, options and the paper rendering.

A backend is anything with `Searcher.search`'s signature: an in-process `Searcher` over an index
directory, or a `SearchClient` for a running service. Each retriever turns one `PaperHit` into
one document with `paper_text` and `paper_metadata`.

Importing this package never imports LangChain or LlamaIndex; only the submodules
`retrieval.integrations.langchain` and `retrieval.integrations.llamaindex` do.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, get_args

from retrieval.models import Mode, PaperHit, SearchResponse
from retrieval.requests import InvalidRequest, RequestLimits, parse_search_request

if TYPE_CHECKING:
    from retrieval.models import Filters

MAX_K = RequestLimits().max_limit
MODES: tuple[str, ...] = get_args(Mode)


class SearchBackend(Protocol):
    """The one method the retrievers call; `Searcher` and `SearchClient` both have it."""

    def search(
        self,
        query: str,
        mode: Mode = ...,
        limit: int = ...,
        offset: int = ...,
        filters: Filters | None = ...,
    ) -> SearchResponse: ...


def missing_extra(extra: str, package: str) -> ImportError:
    """The ImportError raised when an optional integration's library is not installed."""
    return ImportError(
        f"{package} is not installed; this integration needs it: pip install 'daily-papers-retrieval[{extra}]'"
    )


@dataclass(frozen=True)
class SearchOptions:
    """Validated per-retriever search settings: page size, mode and paper filters."""

    k: int = 5
    mode: Mode = "hybrid"
    date_from: str | None = None
    date_to: str | None = None
    min_votes: int | None = None
    author: str | None = None

    def __post_init__(self) -> None:
        # The same rules as the API, the CLI and MCP (retrieval/requests.py); a placeholder query.
        fields = {"q": "-", "k": self.k, "mode": self.mode, "date_from": self.date_from, "date_to": self.date_to}
        fields |= {"min_votes": self.min_votes, "author": self.author}
        try:
            parse_search_request(fields)
        except InvalidRequest as exc:
            raise ValueError(str(exc)) from None

    def filters(self) -> Filters:
        from retrieval.models import Filters

        return Filters(date_from=self.date_from, date_to=self.date_to, min_votes=self.min_votes, author=self.author)


def open_backend(
    index_dir: Path | str | None = None,
    url: str | None = None,
    api_token: str | None = None,
    timeout: float = 30.0,
) -> SearchBackend:
    """A `Searcher` over `index_dir`, or a `SearchClient` for the service at `url` (exactly one)."""
    if (index_dir is None) == (url is None):
        raise ValueError("give exactly one of an index directory or a service URL")
    if url is not None:
        from retrieval.client import SearchClient

        return SearchClient(url, api_token=api_token, timeout=timeout)
    from retrieval.service import open_searcher

    return open_searcher(Path(index_dir))  # type: ignore[arg-type]


def search_hits(backend: SearchBackend, query: str, options: SearchOptions) -> list[PaperHit]:
    """The top `options.k` papers for `query`; an empty query is an error, not a random page."""
    query = query.strip()
    if not query:
        raise ValueError("the query is empty")
    response = backend.search(query, mode=options.mode, limit=options.k, offset=0, filters=options.filters())
    return response.results


def paper_text(hit: PaperHit) -> str:
    """The text an LLM reads: the title, then each cited bullet on its own line."""
    lines = [hit.paper.title]
    lines.extend(f"- {ev.text}" for ev in hit.evidence)
    return "\n".join(lines)


def paper_metadata(hit: PaperHit) -> dict[str, Any]:
    """Plain JSON-ready metadata of one hit (the same keys in both integrations)."""
    return {
        "id": hit.paper.id,
        "title": hit.paper.title,
        "url": hit.paper.url,
        "dates": list(hit.paper.dates),
        "votes": hit.paper.votes,
        "authors": list(hit.paper.authors),
        "score": hit.score,
        "evidence": [
            {"position": ev.position, "section": ev.section, "text": ev.text, "score": ev.score} for ev in hit.evidence
        ],
        "warning": hit.warning,
    }


__all__ = [
    "MAX_K",
    "SearchBackend",
    "SearchOptions",
    "missing_extra",
    "open_backend",
    "paper_metadata",
    "paper_text",
    "search_hits",
]
