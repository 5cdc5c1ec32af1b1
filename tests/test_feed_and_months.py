"""Follow a topic (the Atom feed) and when did it rise (month facets and the page's histogram)."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import feedparser
import pytest
from fastapi.testclient import TestClient

from retrieval.api import create_app
from retrieval.config import Settings
from retrieval.corpus import parse_digest
from retrieval.embedding import load_embedder
from retrieval.indexer import build_index
from retrieval.lexical import KoreanEnglishTokenizer
from retrieval.search import Searcher

LOOPBACK = ("127.0.0.1", 50000)
SAMPLE = Path(__file__).resolve().parents[1] / "examples" / "sample"
LORA = "2106.09685"


@pytest.fixture(scope="module")
def e5_client(e5_sample_index: Path, e5_searcher: Searcher) -> Any:
    app = create_app(Settings(index_dir=e5_sample_index), e5_searcher)
    with TestClient(app, client=LOOPBACK) as client:
        yield client


@pytest.mark.slow
def test_month_facets_count_the_papers_that_match_well(e5_searcher: Searcher) -> None:
    query = "low-rank adaptation for fine-tuning large language models"
    every = e5_searcher.search(query, limit=100, facets=("months",))
    assert every.facets is not None
    strong = [hit for hit in every.results if not hit.weak]
    assert strong, "the sample holds LoRA: at least one strong match"
    assert sum(every.facets["months"].values()) == len(strong)
    for month, count in every.facets["months"].items():
        assert count == sum(1 for hit in strong if min(hit.paper.dates)[:7] == month)
    off_topic = e5_searcher.search("how to bake sourdough bread at home", limit=10, facets=("months",))
    assert off_topic.facets == {"months": {}}


@pytest.mark.slow
def test_api_facets_and_a_valid_atom_feed(e5_client: TestClient) -> None:
    body = e5_client.get("/search", params={"q": "LoRA low-rank adaptation", "facets": "months"}).json()
    assert body["facets"]["months"] and all(len(m) == 7 for m in body["facets"]["months"])
    assert e5_client.get("/search", params={"q": "LoRA"}).json()["facets"] is None
    assert e5_client.get("/search", params={"q": "LoRA", "facets": "years"}).status_code == 422

    response = e5_client.get("/feed.atom", params={"q": "low-rank adaptation of language models"})
    assert response.status_code == 200 and response.headers["content-type"].startswith("application/atom+xml")
    parsed = feedparser.parse(response.content)
    assert not parsed.bozo, parsed.bozo_exception
    assert parsed.version == "atom10"
    entries = parsed.entries
    assert entries and entries[0].id == f"https://arxiv.org/abs/{LORA}" or LORA in [e.id[-10:] for e in entries]
    dates = [e.updated for e in entries]
    assert dates == sorted(dates, reverse=True)
    assert all(e.link.startswith("https://arxiv.org/abs/") and e.content[0].value for e in entries)
    assert e5_client.get("/feed.atom", params={"q": " "}).status_code == 422
    off = feedparser.parse(e5_client.get("/feed.atom", params={"q": "김치찌개 끓이는 법"}).content)
    assert not off.bozo and off.entries == []


@pytest.mark.slow
def test_a_paper_added_by_a_rebuild_is_a_new_entry_with_a_stable_id(tmp_path: Path) -> None:
    corpus = tmp_path / "corpus"
    shutil.copytree(SAMPLE, corpus)
    digests = sorted(p for p in corpus.rglob("*.md") if p.name != "README.md")
    held_back = digests[-1].read_text(encoding="utf-8")
    digests[-1].unlink()
    index = tmp_path / "index"
    embedder = load_embedder("e5-small-q4")
    tokenizer = KoreanEnglishTokenizer()
    build_index(corpus, index, embedder, tokenizer=tokenizer)
    held_paper = parse_digest(held_back, str(digests[-1]))[0][0]
    query = {"q": held_paper.title}  # a subscription to that topic, made before the paper exists

    def entries() -> dict[str, str]:
        app = create_app(Settings(index_dir=index))
        with TestClient(app, client=LOOPBACK) as client:
            feed = feedparser.parse(client.get("/feed.atom", params=query).content)
        assert not feed.bozo
        return {e.id: e.title for e in feed.entries}

    before = entries()
    digests[-1].write_text(held_back, encoding="utf-8")
    build_index(corpus, index, embedder, tokenizer=tokenizer)
    after = entries()
    assert set(before) <= set(after), "entries keep their ids across a rebuild"
    added = set(after) - set(before)
    assert added, "a paper of the added digest matches the query and is a new entry"
    assert f"https://arxiv.org/abs/{held_paper.arxiv_id}" in added
