"""LangChain retriever over the Daily Papers index: one `Document` per paper.

    retriever = DailyPapersRetriever.from_index("index/daily", k=5)          # in-process
    retriever = DailyPapersRetriever(url="http://127.0.0.1:8000", k=5)       # running service
    docs = retriever.invoke("저랭크 행렬로 미세 조정하는 방법")

Needs the `[langchain]` extra (langchain-core).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import ConfigDict, Field, PrivateAttr, SecretStr

from retrieval.integrations import (
    MAX_K,
    SearchBackend,
    SearchOptions,
    missing_extra,
    open_backend,
    paper_metadata,
    paper_text,
    search_hits,
)
from retrieval.models import Mode

try:
    from langchain_core.callbacks import CallbackManagerForRetrieverRun
    from langchain_core.documents import Document
    from langchain_core.retrievers import BaseRetriever
except ImportError as exc:  # pragma: no cover - exercised in a subprocess by the tests
    raise missing_extra("langchain", "langchain-core") from exc


class DailyPapersRetriever(BaseRetriever):
    """Retrieves papers for a Korean or English query, best first.

    Give exactly one source: `index_dir` (or `from_index`), `url` of a running service, or an
    already opened `searcher`. `page_content` is the title and the cited bullets; `metadata` holds
    id, title, url, dates, votes, authors, score, evidence (list of dicts) and warning.
    """

    model_config = ConfigDict(arbitrary_types_allowed=True)

    url: str | None = Field(default=None, description="base URL of a running `retrieval serve`")
    api_token: SecretStr | None = Field(default=None, description="bearer token of that service, if it needs one")
    index_dir: Path | None = Field(default=None, description="index directory searched in-process")
    searcher: Any = Field(default=None, exclude=True, description="an opened Searcher (or SearchClient) to reuse")
    k: int = Field(default=5, ge=1, le=MAX_K)
    mode: Mode = "hybrid"
    date_from: str | None = None
    date_to: str | None = None
    min_votes: int | None = None
    author: str | None = None
    timeout: float = Field(default=30.0, gt=0)

    _backend: SearchBackend = PrivateAttr()
    _options: SearchOptions = PrivateAttr()

    def model_post_init(self, context: Any, /) -> None:
        self._options = SearchOptions(
            k=self.k,
            mode=self.mode,
            date_from=self.date_from,
            date_to=self.date_to,
            min_votes=self.min_votes,
            author=self.author,
        )
        if self.searcher is not None:
            if self.url is not None or self.index_dir is not None:
                raise ValueError("give one of searcher, index_dir or url, not several")
            self._backend = self.searcher
            return
        token = self.api_token.get_secret_value() if self.api_token else None
        self._backend = open_backend(self.index_dir, self.url, api_token=token, timeout=self.timeout)

    @classmethod
    def from_index(
        cls, index_dir: Path | str, k: int = 5, mode: Mode = "hybrid", **kwargs: Any
    ) -> DailyPapersRetriever:
        """A retriever that searches the index at `index_dir` in this process."""
        return cls(index_dir=Path(index_dir), k=k, mode=mode, **kwargs)

    def _get_relevant_documents(self, query: str, *, run_manager: CallbackManagerForRetrieverRun) -> list[Document]:
        hits = search_hits(self._backend, query, self._options)
        return [Document(page_content=paper_text(hit), metadata=paper_metadata(hit), id=hit.paper.id) for hit in hits]


__all__ = ["DailyPapersRetriever"]
