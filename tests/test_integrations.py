"""LangChain and LlamaIndex retrievers, in process and against a live service, with the real libraries."""

from __future__ import annotations

import asyncio
import socket
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from langchain_core.documents import Document
from llama_index.core.schema import MetadataMode, NodeWithScore, TextNode

from retrieval.api import create_app, serve_in_thread
from retrieval.client import SearchClient, ServiceError
from retrieval.config import Settings
from retrieval.integrations import paper_metadata, paper_text
from retrieval.integrations.langchain import DailyPapersRetriever
from retrieval.integrations.llamaindex import DailyPapersLlamaRetriever
from retrieval.models import PaperHit
from retrieval.search import Filters, Searcher

LORA = "2106.09685"
QUERY = "LoRA low-rank adaptation of language models"
METADATA_KEYS = {"id", "title", "url", "dates", "votes", "authors", "score", "evidence", "warning"}


def check_document(doc: Document, hit: PaperHit) -> None:
    assert doc.id == hit.paper.id
    assert doc.page_content.splitlines() == [hit.paper.title] + [f"- {ev.text}" for ev in hit.evidence]
    assert set(doc.metadata) == METADATA_KEYS
    assert doc.metadata["url"] == f"https://arxiv.org/abs/{hit.paper.id}"
    assert doc.metadata["dates"] == hit.paper.dates and doc.metadata["votes"] == hit.paper.votes
    assert doc.metadata["score"] == hit.score and doc.metadata["warning"] == hit.warning
    assert doc.metadata["evidence"] == [
        {"position": ev.position, "section": ev.section, "text": ev.text, "score": ev.score} for ev in hit.evidence
    ]


def check_node(result: NodeWithScore, hit: PaperHit) -> None:
    node = result.node
    assert isinstance(node, TextNode)
    assert node.node_id == hit.paper.id and result.score == hit.score
    assert node.text == paper_text(hit) and node.metadata == paper_metadata(hit)
    llm_view = node.get_content(metadata_mode=MetadataMode.LLM)
    assert hit.paper.url in llm_view and node.text in llm_view
    assert "evidence" not in llm_view and llm_view.count(hit.paper.title) == 1


def descending(scores: list[float]) -> bool:
    return scores == sorted(scores, reverse=True)


# --------------------------------------------------------------------------- in process
def test_langchain_from_index_returns_one_document_per_paper(fake_sample_index: Path, fake_searcher: Searcher) -> None:
    retriever = DailyPapersRetriever.from_index(fake_sample_index, k=4)
    docs = retriever.invoke(QUERY)
    expected = fake_searcher.search(QUERY, limit=4).results
    assert len(docs) == 4 and docs[0].id == LORA
    for doc, hit in zip(docs, expected, strict=True):
        check_document(doc, hit)
    assert descending([d.metadata["score"] for d in docs])
    assert len({d.id for d in docs}) == 4


def test_llamaindex_from_index_returns_scored_nodes(fake_sample_index: Path, fake_searcher: Searcher) -> None:
    retriever = DailyPapersLlamaRetriever.from_index(fake_sample_index, k=3, mode="lexical")
    results = retriever.retrieve(QUERY)
    expected = fake_searcher.search(QUERY, mode="lexical", limit=3).results
    assert len(results) == 3 and results[0].node.node_id == LORA
    for result, hit in zip(results, expected, strict=True):
        check_node(result, hit)
    assert descending([r.score for r in results if r.score is not None])


def test_filters_and_mode_reach_the_searcher(fake_searcher: Searcher) -> None:
    options: dict[str, Any] = {"date_from": "2024-01-01", "min_votes": 10, "mode": "dense", "k": 10}
    expected = fake_searcher.search(
        "language model", limit=10, mode="dense", filters=Filters(date_from="2024-01-01", min_votes=10)
    )
    docs = DailyPapersRetriever(searcher=fake_searcher, **options).invoke("language model")
    nodes = DailyPapersLlamaRetriever(searcher=fake_searcher, **options).retrieve("language model")
    assert expected.results and len(expected.results) < len(fake_searcher.papers)
    assert [d.id for d in docs] == [n.node.node_id for n in nodes] == [h.paper.id for h in expected.results]
    assert all(max(d.metadata["dates"]) >= "2024-01-01" and d.metadata["votes"] >= 10 for d in docs)


@pytest.mark.slow
def test_real_model_finds_lora_for_a_korean_query(e5_searcher: Searcher) -> None:
    query = "사전 학습된 가중치는 고정하고 저랭크 행렬만 학습하는 미세 조정"
    docs = DailyPapersRetriever(searcher=e5_searcher, k=3).invoke(query)
    nodes = DailyPapersLlamaRetriever(searcher=e5_searcher, k=3).retrieve(query)
    assert docs[0].id == nodes[0].node.node_id == LORA
    assert "저랭크" in docs[0].page_content
    assert descending([d.metadata["score"] for d in docs])


def test_async_entry_points(fake_searcher: Searcher) -> None:
    async def both() -> tuple[list[Document], list[NodeWithScore]]:
        docs = await DailyPapersRetriever(searcher=fake_searcher, k=2).ainvoke(QUERY)
        nodes = await DailyPapersLlamaRetriever(searcher=fake_searcher, k=2).aretrieve(QUERY)
        return docs, nodes

    docs, nodes = asyncio.run(both())
    assert [d.id for d in docs] == [n.node.node_id for n in nodes] and docs[0].id == LORA


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"k": 0}, "k"),
        ({"k": 101}, "k"),
        ({"mode": "fuzzy"}, "mode"),
        ({"date_from": "2024/01/01"}, "date_from: must be a date YYYY-MM-DD"),
        ({"url": "http://127.0.0.1:1"}, "give one of searcher, index_dir or url"),
    ],
)
def test_bad_options_are_refused(fake_searcher: Searcher, options: dict[str, Any], message: str) -> None:
    for make in (DailyPapersRetriever, DailyPapersLlamaRetriever):
        with pytest.raises(ValueError, match=message):
            make(searcher=fake_searcher, **options)


def test_a_source_is_required_and_queries_must_not_be_empty(fake_searcher: Searcher, tmp_path: Path) -> None:
    for make in (DailyPapersRetriever, DailyPapersLlamaRetriever):
        with pytest.raises(ValueError, match="exactly one of an index directory or a service URL"):
            make(k=3)
        with pytest.raises(ValueError, match="exactly one"):
            make(index_dir=tmp_path, url="http://127.0.0.1:8000")
        with pytest.raises(ValueError, match="must start with http"):
            make(url="127.0.0.1:8000")
    with pytest.raises(ValueError, match="the query is empty"):
        DailyPapersRetriever(searcher=fake_searcher).invoke("  ")
    with pytest.raises(ValueError, match="the query is empty"):
        DailyPapersLlamaRetriever(searcher=fake_searcher).retrieve("")


# --------------------------------------------------------------------------- against a live service
@pytest.fixture(scope="module")
def service_url(fake_sample_index: Path, fake_searcher: Searcher) -> Iterator[str]:
    with serve_in_thread(create_app(Settings(index_dir=fake_sample_index), fake_searcher)) as base:
        yield base


@pytest.fixture(scope="module")
def private_service_url(fake_sample_index: Path, fake_searcher: Searcher) -> Iterator[str]:
    settings = Settings(index_dir=fake_sample_index, api_token="s3cret-token")
    with serve_in_thread(create_app(settings, fake_searcher)) as base:
        yield base


def test_remote_retrievers_match_the_in_process_results(service_url: str, fake_searcher: Searcher) -> None:
    expected = fake_searcher.search(QUERY, limit=5).results
    docs = DailyPapersRetriever(url=service_url, k=5).invoke(QUERY)
    nodes = DailyPapersLlamaRetriever(url=service_url + "/", k=5).retrieve(QUERY)
    for doc, node, hit in zip(docs, nodes, expected, strict=True):
        check_document(doc, hit)
        check_node(node, hit)


def test_remote_filters_mode_and_author_are_sent(service_url: str, fake_searcher: Searcher) -> None:
    author = fake_searcher.get_paper("2305.14314").paper.authors[0]
    filters = Filters(date_to="2024-06-30", author=author.lower())
    expected = fake_searcher.search("quantized fine-tuning", mode="lexical", limit=3, filters=filters).results
    options: dict[str, Any] = {"mode": "lexical", "k": 3, "date_to": "2024-06-30", "author": author.lower()}
    remote = DailyPapersRetriever(url=service_url, **options).invoke("quantized fine-tuning")
    assert [d.id for d in remote] == [h.paper.id for h in expected]
    dated = DailyPapersRetriever(url=service_url, k=10, date_from="2024-11-01").invoke("language model")
    assert dated and all(max(d.metadata["dates"]) >= "2024-11-01" for d in dated)


def test_remote_bearer_token(private_service_url: str) -> None:
    with pytest.raises(ServiceError, match="answered 401 for /search: missing or wrong bearer token") as refused:
        DailyPapersRetriever(url=private_service_url).invoke(QUERY)
    assert refused.value.status == 401
    with pytest.raises(ServiceError, match="401"):
        DailyPapersLlamaRetriever(url=private_service_url, api_token="wrong").retrieve(QUERY)
    docs = DailyPapersRetriever(url=private_service_url, api_token="s3cret-token", k=2).invoke(QUERY)
    nodes = DailyPapersLlamaRetriever(url=private_service_url, api_token="s3cret-token", k=2).retrieve(QUERY)
    assert docs[0].id == nodes[0].node.node_id == LORA
    assert "s3cret-token" not in repr(DailyPapersRetriever(url=private_service_url, api_token="s3cret-token"))


def test_client_reports_service_errors(service_url: str) -> None:
    with SearchClient(service_url) as client:
        with pytest.raises(ServiceError, match="answered 404 for /papers/0000.00000") as missing:
            client.get_paper("0000.00000")
        assert missing.value.status == 404
        with pytest.raises(ServiceError, match="answered 422 for /search: .*author"):
            client.search("LoRA", filters=Filters(author="x" * 300))
        assert client.get_paper(LORA).paper.id == LORA


def test_unreachable_service_is_a_clear_error() -> None:
    with socket.socket() as sock:  # a port that nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(ServiceError, match=f"cannot reach the search service at http://127.0.0.1:{port}"):
        DailyPapersRetriever(url=f"http://127.0.0.1:{port}", timeout=5).invoke(QUERY)


# --------------------------------------------------------------------------- optional extras
def run_python(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize(
    ("module", "blocked", "extra"),
    [
        ("retrieval.integrations.langchain", "langchain_core", "langchain"),
        ("retrieval.integrations.llamaindex", "llama_index", "llamaindex"),
    ],
)
def test_missing_extra_names_the_pip_command(module: str, blocked: str, extra: str) -> None:
    result = run_python(
        f"""
        import sys
        sys.modules[{blocked!r}] = None  # as if the package were not installed
        try:
            import {module}
        except ImportError as exc:
            print(exc)
        else:
            raise SystemExit("imported without {blocked}")
        """
    )
    assert result.returncode == 0, result.stderr
    assert f"pip install 'daily-papers-retrieval[{extra}]'" in result.stdout


def test_core_imports_never_load_the_optional_libraries() -> None:
    result = run_python(
        """
        import sys
        import retrieval, retrieval.cli, retrieval.client, retrieval.integrations, retrieval.mcp_server, retrieval.api
        loaded = sorted(m for m in sys.modules if m.split(".")[0] in ("langchain_core", "llama_index"))
        print(loaded)
        """
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
