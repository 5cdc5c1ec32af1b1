"""LlamaIndex retriever over the Daily Papers index: one `NodeWithScore` per paper.

    retriever = DailyPapersLlamaRetriever.from_index("index/daily", k=5)     # in-process
    retriever = DailyPapersLlamaRetriever(url="http://127.0.0.1:8000", k=5)  # running service
    nodes = retriever.retrieve("저랭크 행렬로 미세 조정하는 방법")

Needs the `[llamaindex]` extra (llama-index-core).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from retrieval.integrations import (
    SearchBackend,
    SearchOptions,
    missing_extra,
    open_backend,
    paper_metadata,
    paper_text,
    search_hits,
)
from retrieval.models import Mode, PaperHit

try:
    from llama_index.core.callbacks import CallbackManager
    from llama_index.core.retrievers import BaseRetriever
    from llama_index.core.schema import NodeWithScore, QueryBundle, TextNode
except ImportError as exc:  # pragma: no cover - exercised in a subprocess by the tests
    raise missing_extra("llamaindex", "llama-index-core") from exc

# Kept in node.metadata for programs, but not repeated in the text an LLM or an embedder reads.
_HIDDEN_KEYS = ["title", "evidence", "authors", "score", "dates", "votes", "warning"]


class DailyPapersLlamaRetriever(BaseRetriever):
    """Retrieves papers for a Korean or English query, best first.

    Give exactly one source: `index_dir` (or `from_index`), `url` of a running service, or an
    already opened `searcher`. Node text is the title and the cited bullets; node metadata has
    the same keys as the LangChain retriever's documents; the node id is the arXiv id.
    """

    def __init__(
        self,
        *,
        index_dir: Path | str | None = None,
        url: str | None = None,
        api_token: str | None = None,
        searcher: SearchBackend | None = None,
        k: int = 5,
        mode: Mode = "hybrid",
        date_from: str | None = None,
        date_to: str | None = None,
        min_votes: int | None = None,
        author: str | None = None,
        timeout: float = 30.0,
        callback_manager: CallbackManager | None = None,
        verbose: bool = False,
    ) -> None:
        self.options = SearchOptions(
            k=k, mode=mode, date_from=date_from, date_to=date_to, min_votes=min_votes, author=author
        )
        if searcher is not None:
            if url is not None or index_dir is not None:
                raise ValueError("give one of searcher, index_dir or url, not several")
            self.backend: SearchBackend = searcher
        else:
            self.backend = open_backend(index_dir, url, api_token=api_token, timeout=timeout)
        super().__init__(callback_manager=callback_manager, verbose=verbose)

    @classmethod
    def from_index(
        cls, index_dir: Path | str, k: int = 5, mode: Mode = "hybrid", **kwargs: Any
    ) -> DailyPapersLlamaRetriever:
        """A retriever that searches the index at `index_dir` in this process."""
        return cls(index_dir=index_dir, k=k, mode=mode, **kwargs)

    def _retrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
        hits = search_hits(self.backend, query_bundle.query_str, self.options)
        return [NodeWithScore(node=_node(hit), score=hit.score) for hit in hits]


def _node(hit: PaperHit) -> TextNode:
    return TextNode(
        id_=hit.paper.id,
        text=paper_text(hit),
        metadata=paper_metadata(hit),
        excluded_llm_metadata_keys=list(_HIDDEN_KEYS),
        excluded_embed_metadata_keys=list(_HIDDEN_KEYS),
    )


__all__ = ["DailyPapersLlamaRetriever"]
