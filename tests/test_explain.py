"""The score breakdown (`explain`): the real computation, through every front end."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from retrieval.api import create_app
from retrieval.config import Settings
from retrieval.learned import DEV_QUERIES
from retrieval.search import Searcher
from retrieval.termmap import TermMap

ROOT = Path(__file__).resolve().parents[1]
LOOPBACK = ("127.0.0.1", 50000)


@pytest.fixture(scope="module")
def client(fake_sample_index: Path, fake_searcher: Searcher) -> Any:
    with TestClient(create_app(Settings(index_dir=fake_sample_index), fake_searcher), client=LOOPBACK) as test_client:
        yield test_client


def test_term_map_sources_name_the_english_phrase() -> None:
    texts = ["어텐션(attention) 구조를 바꾼다", "어텐션(attention) 계산"] * 2
    term_map = TermMap.from_texts(texts)
    extra = term_map.expand("sparse attention", ["spars", "attent"])
    assert "어텐션" in extra
    assert term_map.sources("sparse attention", extra)["어텐션"] == "attention"


def test_api_explain_is_opt_in_and_adds_up(client: TestClient) -> None:
    plain = client.get("/search", params={"q": "low-rank adaptation", "k": 5}).json()
    assert all(hit["explain"] is None for hit in plain["results"])
    for response in (
        client.get("/search", params={"q": "low-rank adaptation", "k": 5, "explain": "true"}),
        client.post("/search", json={"q": "low-rank adaptation", "k": 5, "explain": True}),
    ):
        assert response.status_code == 200, response.text
        for hit in response.json()["results"]:
            legs = hit["explain"]["legs"]
            assert {"leg", "raw", "standardised", "weight", "contribution"} <= set(legs[0])
            assert sum(leg["contribution"] for leg in legs) == pytest.approx(hit["score"], abs=1e-4)
            assert set(hit["explain"]["bullets"]) == {"dense", "lexical"}
    schema = client.get("/openapi.json").json()["components"]["schemas"]
    assert "Explanation" in schema and "LegContribution" in schema


def test_page_has_a_readable_breakdown_without_javascript(client: TestClient) -> None:
    page = client.get("/", params={"q": "low-rank adaptation"}).text
    assert page.count('<details class="why"><summary>왜 이 논문인가</summary>') >= 3
    assert 'data-leg="dense_best_bullet"' in page and "합계 (score)" in page


@pytest.mark.slow
def test_breakdowns_add_up_for_evaluation_queries_through_the_real_model(e5_searcher: Searcher) -> None:
    lines = DEV_QUERIES.read_text(encoding="utf-8").splitlines()
    queries = [json.loads(line)["q"] for line in lines[::9]]  # 14 queries, every language
    checked = 0
    for query in queries:
        for hit in e5_searcher.search(query, limit=10, explain=True).results:
            assert hit.explain is not None
            assert sum(leg.contribution for leg in hit.explain.legs) == pytest.approx(hit.score, abs=1e-4)
            checked += 1
    assert checked >= 100
    lora = e5_searcher.search("low-rank adaptation of large language models", limit=1, explain=True).results[0]
    assert lora.explain is not None and lora.explain.bullets["dense"] is not None
