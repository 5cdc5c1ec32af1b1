"""Fuzzing the HTTP API: Schemathesis against the service's own OpenAPI schema, and odd Unicode queries.

Every generated request must get a non-5xx answer that matches the schema. The Unicode cases
(mixed scripts, conjoining jamo, emoji, zero-width characters, a 1000-character token, RTL
text, NUL, noncharacters...) must each be answered 200 with a valid `SearchResponse`, or 4xx
with a reason, both through the fake model and, for a subset, through the real e5 model.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
import schemathesis
from fastapi import FastAPI
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode
from schemathesis.specs.openapi.checks import positive_data_acceptance

from retrieval.api import create_app
from retrieval.config import Settings
from retrieval.models import SearchResponse
from retrieval.search import Searcher


@pytest.fixture(scope="module")
def fake_app(fake_sample_index: Path, fake_searcher: Searcher) -> FastAPI:
    return create_app(Settings(index_dir=fake_sample_index), fake_searcher)


@pytest.fixture(scope="module")
def api_schema(fake_app: FastAPI) -> Any:
    return schemathesis.openapi.from_asgi("/openapi.json", fake_app)


OPERATIONS = (
    ("GET", "/search"),
    ("POST", "/search"),
    ("GET", "/papers/{arxiv_id}"),
    ("GET", "/papers/{arxiv_id}/similar"),
    ("GET", "/healthz"),
    ("GET", "/readyz"),
    ("POST", "/admin/reload"),
)


# Schemathesis' own pytest loader (`schemathesis.pytest.from_fixture`) fails under pytest 9.2
# (it sets `Node._nodeid`), so each operation's strategy is driven by a plain `@given`.
# `/search` refuses some schema-valid requests by design, with a 422 and a reason: limits set in
# `Settings` (query length, offset), calendar dates ("2024-02-30") and date_from <= date_to are
# not expressible in the static schema. So "schema-valid data is accepted" is not checked there;
# every other check (no 5xx, documented status, response schema, ...) is.
# Negative data needs parameters to break: the three operations without any get positive runs only.
CASES = [(m, p, GenerationMode.POSITIVE) for m, p in OPERATIONS] + [
    (m, p, GenerationMode.NEGATIVE) for m, p in OPERATIONS if p.startswith(("/search", "/papers"))
]


@pytest.mark.parametrize(("method", "path", "mode"), CASES, ids=[f"{m} {p} {g.value}" for m, p, g in CASES])
def test_api_conforms_to_its_schema(api_schema: Any, method: str, path: str, mode: GenerationMode) -> None:
    """No 5xx; status, content type, headers and body match the documented responses."""
    operation = api_schema[path][method]

    excluded = [positive_data_acceptance] if path == "/search" else []

    @settings(max_examples=30, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    @given(case=operation.as_strategy(generation_mode=mode))
    def check(case: schemathesis.Case) -> None:
        case.call_and_validate(excluded_checks=excluded)

    check()


def test_schema_covers_every_route(api_schema: Any) -> None:
    operations = {(op.ok().method.upper(), op.ok().path) for op in api_schema.get_all_operations()}
    assert {
        ("GET", "/search"),
        ("POST", "/search"),
        ("GET", "/papers/{arxiv_id}"),
        ("GET", "/papers/{arxiv_id}/similar"),
        ("GET", "/healthz"),
        ("GET", "/readyz"),
        ("POST", "/admin/reload"),
    } <= operations


# --------------------------------------------------------------------------- Unicode queries

ODD_QUERIES = {
    "mixed scripts": "LoRA 저랭크 적응 низкоранговая адаптация 低秩适应 Ελληνικά",
    "conjoining jamo": "\u1100\u1161\u11a8",
    "conjoining jamo words": "\u1100\u1161\u11a8 \u1106\u1169\u1103\u1166\u11af \ud55c\uad6d\uc5b4",
    "emoji": "🤖 언어 모델 🚀🔥",
    "emoji zwj and flag": "👩\u200d💻 🇰🇷 ❤\ufe0f",
    "zero-width space": "\u200b",
    "zero-width joiner": "\u200d",
    "bom": "\ufeff",
    "zero-width inside a word": "Lo\u200bRA \ufeff모델\u200d",
    "1000-char token": "a" * 1000,
    "1000 hangul syllables": "가" * 1000,
    "only punctuation": "?!.,;:…—()[]{}<>\"'`~@#$%^&*_+=|\\/",
    "rtl arabic": "نموذج لغوي كبير",
    "rtl hebrew with override": "\u202eמודל שפה\u202c LoRA",
    "nul": "LoRA\x00모델",
    "only nul": "\x00",
    "noncharacters": "\ufffe\uffff\U0010ffff",
    "private use and tags": "\ue000\U000f0000\U000e0041\U000e007f",
    "stacked combining marks": "a" + "\u0301" * 200,
    "fullwidth and math letters": "ＬｏＲＡ 𝐌𝐚𝐦𝐛𝐚",
    "control characters": "\x01\x02\x1b[31mred\x7f",
    "ideographic space": "\u3000LoRA\u3000",
}
E5_SUBSET = (
    "conjoining jamo",
    "emoji zwj and flag",
    "zero-width space",
    "1000-char token",
    "1000 hangul syllables",
    "rtl hebrew with override",
    "nul",
    "noncharacters",
    "stacked combining marks",
)


@pytest.fixture(scope="module")
def fake_client(fake_app: FastAPI) -> Iterator[TestClient]:
    with TestClient(fake_app) as client:
        yield client


@pytest.fixture(scope="module")
def e5_client(e5_sample_index: Path, e5_searcher: Searcher) -> Iterator[TestClient]:
    with TestClient(create_app(Settings(index_dir=e5_sample_index), e5_searcher)) as client:
        yield client


def check_answer(response: Any, query: str) -> None:
    """200 with a well-formed result page for the query, or 4xx with a reason."""
    assert response.status_code < 500, response.text
    body = response.json()
    if response.status_code == 200:
        page = SearchResponse.model_validate(body)
        assert page.query == query.strip()
        assert all(
            0 <= start < end <= len(ev.text)
            for hit in page.results
            for ev in hit.evidence
            for start, end in ev.highlights
        )
    else:
        assert 400 <= response.status_code < 500
        assert body.get("reason") or body.get("detail")


def ask(client: TestClient, query: str, mode: str) -> None:
    check_answer(client.get("/search", params={"q": query, "mode": mode}), query)
    check_answer(client.post("/search", json={"q": query, "mode": mode, "k": 5}), query)


@pytest.mark.parametrize("name", sorted(ODD_QUERIES))
def test_odd_unicode_queries_with_fake_model(fake_client: TestClient, name: str) -> None:
    query = ODD_QUERIES[name]
    for mode in ("hybrid", "dense", "lexical"):
        ask(fake_client, query, mode)
    page = fake_client.get("/", params={"q": query})
    assert page.status_code < 500 and "text/html" in page.headers["content-type"]


@pytest.mark.slow
@pytest.mark.parametrize("name", E5_SUBSET)
def test_odd_unicode_queries_with_e5(e5_client: TestClient, name: str) -> None:
    ask(e5_client, ODD_QUERIES[name], "hybrid")


def test_over_long_and_blank_queries_are_4xx_with_a_reason(fake_client: TestClient) -> None:
    for query in ("a" * 1001, "가" * 1001, "   ", "\t\n", "\u3000"):
        response = fake_client.get("/search", params={"q": query})
        assert response.status_code == 422, (query[:5], response.status_code)
        assert response.json()["reason"]


@pytest.mark.parametrize(
    "arxiv_id", ["\u200b", "2106.09685\x00", "../../etc", "🤖", "\u1100\u1161\u11a8", "a" * 64, "%00"]
)
def test_odd_paper_ids_are_404(fake_client: TestClient, arxiv_id: str) -> None:
    quoted = quote(arxiv_id, safe="")
    for path in (f"/papers/{quoted}", f"/papers/{quoted}/similar"):
        response = fake_client.get(path)
        assert response.status_code == 404, (path, response.status_code, response.text)
        assert response.json()["detail"]
