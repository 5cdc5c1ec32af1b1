"""Relevance per hit (0-1, `weak` below the threshold): the model, its inputs, and every front end.

The end-to-end tests use the real default model over the 12-paper sample (examples/sample):
"speculative decoding" and cooking have no paper there, LoRA and Mamba have one each.
"""

from __future__ import annotations

import functools
import importlib.util
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import numpy as np
import pytest
from conftest import ROOT
from fastapi.testclient import TestClient
from mcp import Client
from test_query_sets import language_problem

from retrieval import training
from retrieval.api import create_app
from retrieval.config import Settings
from retrieval.lexical import BM25Index
from retrieval.mcp_server import SearchPapersResult, build_mcp
from retrieval.relevance import E5_SMALL_Q4, Calibration, QueryJudge, Signals, calibration_for, idf
from retrieval.render import render_citations, render_text
from retrieval.search import Searcher

LORA = "2106.09685"
MAMBA = "2312.00752"
ON_TOPIC = {
    "low-rank adaptation for fine-tuning large language models": LORA,
    "저랭크 행렬로 LLM 미세 조정": LORA,
    "state space model with selective scan": MAMBA,
}
OFF_TOPIC = ["speculative decoding", "김치찌개 끓이는 법", "how to bake sourdough bread"]
NO_MATCH_PAGE = "잘 맞는 논문을 찾지 못했습니다"
NO_MATCH_TEXT = "No paper in the index answers"


# --------------------------------------------------------------------------- the model
def test_relevance_is_a_probability_and_rises_with_cosine_and_term_share() -> None:
    cosines, shares, latins = np.linspace(0.0, 1.0, 21), np.linspace(0.0, 1.0, 11), (0.0, 0.5, 1.0)
    for latin in latins:
        grid = np.array([[E5_SMALL_Q4.relevance(Signals(c, s, latin)) for s in shares] for c in cosines])
        assert ((grid >= 0.0) & (grid <= 1.0)).all()
        assert (np.diff(grid, axis=0) >= 0).all() and (np.diff(grid, axis=1) >= 0).all()
        assert grid[-1, -1] > 0.99 and grid[0, 0] < 0.01  # the scale is used end to end
    # an extreme signal must not overflow
    assert E5_SMALL_Q4.relevance(Signals(-100.0, 0.0, 0.0)) == 0.0


def test_weak_is_below_the_threshold() -> None:
    model = Calibration(intercept=0.0, cosine=10.0, term_share=0.0, latin=0.0, threshold=0.5)
    assert model.relevance(Signals(0.0, 0.0, 0.0)) == pytest.approx(0.5)
    assert model.is_weak(0.49) and not model.is_weak(0.5) and not model.is_weak(0.9)


def test_the_fitted_model_separates_typical_hits() -> None:
    """Right answers in the calibration had cosines ~0.87-0.9 and a third or more of the terms;
    off-topic top hits ~0.8-0.83 and a tenth of the terms (benchmarks/calibrate_relevance.py)."""
    right = E5_SMALL_Q4.relevance(Signals(cosine=0.89, term_share=0.45, latin=0.0))
    off = E5_SMALL_Q4.relevance(Signals(cosine=0.82, term_share=0.08, latin=0.0))
    assert not E5_SMALL_Q4.is_weak(right) and E5_SMALL_Q4.is_weak(off)
    # English queries sit lower on the cosine scale: the same cosine means more for them
    assert E5_SMALL_Q4.relevance(Signals(0.84, 0.2, 1.0)) > E5_SMALL_Q4.relevance(Signals(0.84, 0.2, 0.0))


def test_calibration_is_per_model_with_the_default_as_fallback() -> None:
    assert calibration_for("e5-small-q4") is E5_SMALL_Q4
    assert calibration_for("fake:64") is E5_SMALL_Q4


# --------------------------------------------------------------------------- the signals
def test_judge_signals_term_share_and_cosine() -> None:
    # three papers: 2, 1 and 2 bullets; summaries and titles as BM25 documents
    summaries = BM25Index.build([["lora", "adapter"], ["mamba", "scan"], ["lora", "rank", "rank"]])
    titles = BM25Index.build([["lora"], ["mamba"], ["qlora"]])
    bullets = np.array([[1, 0], [0.6, 0.8], [0, 1], [0.8, 0.6], [0, 1]], dtype=np.float32)
    offsets = np.array([0, 2, 3, 5])
    query = np.array([1.0, 0.0], dtype=np.float32)
    terms = ["lora", "adapter", "unknownword", "lora"]  # repeated terms count once
    judge = QueryJudge.build(query, terms, [summaries], summaries, 0.25, bullets, offsets, E5_SMALL_Q4)
    w_lora, w_adapter, w_unknown = idf(2, 3), idf(1, 3), idf(0, 3)
    assert w_unknown > w_adapter > w_lora > 0
    total = w_lora + w_adapter + w_unknown
    first, second, third = (judge.signals(p) for p in range(3))
    assert first == Signals(
        cosine=pytest.approx(1.0), term_share=pytest.approx((w_lora + w_adapter) / total), latin=0.25
    )
    assert second.cosine == pytest.approx(0.0) and second.term_share == 0.0
    assert third.cosine == pytest.approx(0.8) and third.term_share == pytest.approx(w_lora / total)
    # searching the titles too: a term in the title counts, weighted by the summaries' idf
    with_titles = QueryJudge.build(
        query, ["mamba", "qlora"], [summaries, titles], summaries, 0.0, bullets, offsets, E5_SMALL_Q4
    )
    assert with_titles.signals(2).term_share == pytest.approx(idf(0, 3) / (idf(1, 3) + idf(0, 3)))
    relevance, weak = judge.judge(0)
    assert relevance == round(E5_SMALL_Q4.relevance(first), 4) and weak == E5_SMALL_Q4.is_weak(relevance)


def test_a_query_without_terms_has_no_term_share() -> None:
    summaries = BM25Index.build([["a1"]])
    judge = QueryJudge.build(np.ones(1, np.float32), [], [summaries], summaries, 0.0, np.ones((1, 1), np.float32),
                             np.array([0, 1]), E5_SMALL_Q4)  # fmt: skip
    assert judge.signals(0).term_share == 0.0


def test_every_search_hit_carries_relevance_in_every_mode(fake_searcher: Searcher) -> None:
    for mode in ("hybrid", "dense", "lexical"):
        response = fake_searcher.search("low-rank adaptation", mode=mode, limit=5)
        assert response.results
        judge = fake_searcher.relevance_judge("low-rank adaptation")
        index = {p.arxiv_id: i for i, p in enumerate(fake_searcher.papers)}
        for hit in response.results:
            expected, weak = judge.judge(index[hit.paper.id])
            assert hit.relevance == expected and hit.weak == weak
        assert response.weak == all(h.weak for h in response.results)


def test_similar_papers_have_no_relevance(fake_searcher: Searcher) -> None:
    response = fake_searcher.similar(LORA, limit=3)
    assert response.results and all(h.relevance is None and not h.weak for h in response.results)
    assert not response.weak


# --------------------------------------------------------------------------- the real model
@pytest.mark.parametrize("query", list(ON_TOPIC))
def test_on_topic_top_hit_is_not_weak(e5_searcher: Searcher, query: str) -> None:
    response = e5_searcher.search(query, limit=5)
    top = response.results[0]
    assert top.paper.id == ON_TOPIC[query]
    assert top.relevance is not None and top.relevance >= 0.5 and not top.weak
    assert not response.weak


@pytest.mark.parametrize("query", OFF_TOPIC)
def test_off_topic_query_has_only_weak_hits(e5_searcher: Searcher, query: str) -> None:
    response = e5_searcher.search(query, limit=10)
    assert len(response.results) == 10
    assert all(hit.weak for hit in response.results), [(h.paper.title, h.relevance) for h in response.results]
    assert response.weak
    assert max(h.relevance or 0.0 for h in response.results) < E5_SMALL_Q4.threshold


def test_relevance_is_comparable_across_queries_unlike_score(e5_searcher: Searcher) -> None:
    """The off-topic query's top hit has a high fused score (a z-score) but a low relevance."""
    off = e5_searcher.search("speculative decoding", limit=1).results[0]
    on = e5_searcher.search("state space model with selective scan", limit=1).results[0]
    assert off.relevance is not None and on.relevance is not None
    assert on.relevance > 10 * off.relevance


# --------------------------------------------------------------------------- front ends
@pytest.fixture(scope="module")
def e5_client(e5_sample_index: Path, e5_searcher: Searcher) -> Iterator[TestClient]:
    with TestClient(create_app(Settings(index_dir=e5_sample_index), e5_searcher), client=("127.0.0.1", 50000)) as c:
        yield c


def test_api_json_carries_relevance_and_weak(e5_client: TestClient) -> None:
    off = e5_client.get("/search", params={"q": "speculative decoding", "k": 5}).json()
    assert off["weak"] is True
    assert all(hit["weak"] is True and 0.0 <= hit["relevance"] < 0.2 for hit in off["results"])
    assert all(isinstance(hit["score"], float) for hit in off["results"])  # the raw score stays
    on = e5_client.post("/search", json={"q": "state space model with selective scan", "k": 5}).json()
    assert on["weak"] is False
    assert on["results"][0]["paper"]["id"] == MAMBA and on["results"][0]["weak"] is False
    assert on["results"][0]["relevance"] > 0.5
    similar = e5_client.get(f"/papers/{LORA}/similar", params={"k": 2}).json()
    assert all(hit["relevance"] is None for hit in similar["results"])


def test_page_shows_relevance_marks_weak_hits_and_the_no_match_notice(e5_client: TestClient) -> None:
    off = e5_client.get("/", params={"q": "speculative decoding"}).text
    assert NO_MATCH_PAGE in off and 'class="notice weak-notice"' in off
    assert off.count('data-weak="true"') == off.count('li class="hit"') == 10
    assert off.count('<span class="weak-mark">약한 일치</span>') == 10
    assert "score " not in off
    on = e5_client.get("/", params={"q": "state space model with selective scan", "k": "3"}).text
    assert NO_MATCH_PAGE not in on and "weak-notice" not in on
    first = on.split('li class="hit"')[1]
    assert f'data-id="{MAMBA}"' in first and "data-weak" not in first.split("</li>")[0]
    assert '<meter min="0" max="100" value="' in first and "관련도 " in first


def test_later_page_notice_talks_about_the_page(e5_client: TestClient) -> None:
    second = e5_client.get("/", params={"q": "speculative decoding", "k": "5", "offset": "5"}).text
    assert NO_MATCH_PAGE not in second and "이 페이지의 결과는 모두 약한 일치입니다" in second


def call_search(server: Any, query: str) -> Any:
    async def go() -> Any:
        async with Client(server) as client:
            return await client.call_tool("search_papers", {"query": query, "k": 3})

    return anyio.run(go)


def test_mcp_text_says_no_paper_answers_an_off_topic_query(e5_searcher: Searcher) -> None:
    server = build_mcp(lambda: e5_searcher)
    off = call_search(server, "speculative decoding")
    text = off.content[0].text
    assert text.splitlines()[0].startswith(NO_MATCH_TEXT)
    assert text.count("(weak match)") == 3 and "relevance " in text
    structured = SearchPapersResult.model_validate(off.structured_content)
    assert structured.weak and all(p.weak and p.relevance is not None for p in structured.results)
    on = call_search(server, "state space model with selective scan")
    on_text = on.content[0].text
    assert NO_MATCH_TEXT not in on_text
    first = on_text.split("\n2. ")[0]
    assert "relevance " in first and "(weak match)" not in first


def test_cli_table_shows_relevance_and_the_no_match_line(e5_searcher: Searcher) -> None:
    off = render_text(e5_searcher.search("speculative decoding", limit=3))
    assert off.splitlines()[1].startswith(f"! {NO_MATCH_TEXT}")
    assert off.count("(weak match)") == 3 and " score " not in off
    on = render_text(e5_searcher.search("state space model with selective scan", limit=3))
    assert NO_MATCH_TEXT not in on and "relevance " in on.splitlines()[3] and "weak" not in on.splitlines()[3]
    assert render_citations(e5_searcher.search("speculative decoding", limit=3)).startswith(NO_MATCH_TEXT)


# --------------------------------------------------------------------------- calibration inputs
@functools.cache
def load_calibrator() -> Any:
    """benchmarks/calibrate_relevance.py as a module (benchmarks/ is not a package)."""
    path = ROOT / "benchmarks" / "calibrate_relevance.py"
    spec = importlib.util.spec_from_file_location("calibrate_relevance", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses resolve their annotations through it
    spec.loader.exec_module(module)
    return module


def test_logistic_fit_recovers_known_coefficients() -> None:
    rng = np.random.default_rng(7)
    x = rng.normal(size=(20000, 3)) * np.array([0.05, 0.2, 0.4]) + np.array([0.85, 0.3, 0.5])
    true_intercept, true = -30.0, np.array([35.0, 6.0, 1.5])
    y = (rng.random(len(x)) < 1 / (1 + np.exp(-(true_intercept + x @ true)))).astype(float)
    intercept, coefficients = training.logistic(x, y, np.ones(len(x)), l2=0.0)
    assert np.allclose(coefficients, true, rtol=0.1) and abs(intercept - true_intercept) < 3.0
    # the calibration fit (standardised signals, a light penalty) lands on the same scale
    fitted = training.fit_calibration(x, y.astype(bool), np.array(["dev"] * len(x)))
    assert fitted.cosine == pytest.approx(35.0, rel=0.25) and fitted.term_share == pytest.approx(6.0, rel=0.25)


def test_fit_weights_balance_classes_and_sources() -> None:
    positive = np.array([True] * 8 + [False] * 15)
    source = np.array(["dev"] * 2 + ["title"] * 6 + ["dev"] * 10 + ["offtopic-fit"] * 5)
    weights = training.class_source_weights(positive, source)
    assert weights[positive].sum() == pytest.approx(1.0) and weights[~positive].sum() == pytest.approx(1.0)
    assert weights[:2].sum() == pytest.approx(weights[2:8].sum())
    assert weights[8:18].sum() == pytest.approx(weights[18:].sum())


def test_threshold_rule_takes_the_largest_allowed() -> None:
    # 3 % of the right answers at 0.12, 3 % more at 0.33: 0.30 flags 3 %, 0.35 flags 6 % (> 5 %)
    right = np.array([0.12] * 3 + [0.33] * 3 + [0.9] * 94)
    assert training.choose_threshold(right) == 0.3
    assert training.choose_threshold(np.array([0.01] * 10)) == training.GRID[0]  # nothing allowed: the lowest


def test_the_script_uses_the_package_fit() -> None:
    calibrator = load_calibrator()
    assert calibrator.fit_calibration is training.fit_calibration
    assert calibrator.choose_threshold is training.choose_threshold


def test_offtopic_queries_file() -> None:
    path = ROOT / "benchmarks" / "queries" / "offtopic.jsonl"
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    assert len(rows) == 60 and all(set(row) == {"q", "lang"} for row in rows)
    by_lang = {lang: [r for r in rows if r["lang"] == lang] for lang in ("ko", "en", "mixed")}
    assert {lang: len(group) for lang, group in by_lang.items()} == {"ko": 20, "en": 20, "mixed": 20}
    assert [language_problem(r["q"], r["lang"]) for r in rows] == [None] * len(rows)
    assert len({r["q"] for r in rows}) == len(rows)
    # the fitting half (odd lines) and the held-out half each hold every language
    halves = [rows[0::2], rows[1::2]]
    assert all({r["lang"] for r in half} == {"ko", "en", "mixed"} for half in halves)
    fitting = load_calibrator().load_offtopic(path)
    assert [q for q, _, fit in fitting if fit] == [r["q"] for r in halves[0]]
