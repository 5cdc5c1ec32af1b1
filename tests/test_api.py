"""HTTP API: endpoints, validation, filters and paging, auth, CORS, body limit, reload, the page."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import SAMPLE
from fastapi.testclient import TestClient

from retrieval.api import create_app, serve_in_thread
from retrieval.config import Settings
from retrieval.corpus import load_corpus
from retrieval.embedding import FakeEmbedder
from retrieval.indexer import build_index
from retrieval.lexical import KoreanEnglishTokenizer
from retrieval.page import highlight
from retrieval.search import Searcher, SearchSettings
from retrieval.service import open_searcher
from retrieval.store import IndexDirectory

LORA = "2106.09685"
LORA_TITLE = "Low-Rank Adaptation of Large Language Models"  # finds LoRA first whatever the fusion weights
LOOPBACK = ("127.0.0.1", 50000)
REMOTE = ("203.0.113.9", 50000)
RESULT_KEYS = {"query", "mode", "total", "offset", "limit", "results", "weak", "facets", "took_ms"}
PAPER_KEYS = {"id", "title", "url", "dates", "votes", "authors"}
EVIDENCE_KEYS = {"position", "section", "text", "score", "highlights"}


@pytest.fixture(scope="module")
def papers() -> dict[str, Any]:
    return {p.arxiv_id: p for p in load_corpus(SAMPLE).papers}


@pytest.fixture(scope="module")
def client(fake_sample_index: Path, fake_searcher: Searcher) -> Iterator[TestClient]:
    app = create_app(Settings(index_dir=fake_sample_index), fake_searcher)
    with TestClient(app, client=LOOPBACK) as test_client:
        yield test_client


def make_client(
    searcher: Searcher | None, index_dir: Path, client: tuple[str, int] = LOOPBACK, **settings: Any
) -> TestClient:
    return TestClient(create_app(Settings(index_dir=index_dir, **settings), searcher), client=client)


def ids(response: Any) -> list[str]:
    """Paper ids of a 200 search response (TestClient's or httpx's)."""
    assert response.status_code == 200, response.text
    return [hit["paper"]["id"] for hit in response.json()["results"]]


# --------------------------------------------------------------------------- endpoints
def test_healthz(client: TestClient) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}


def test_readyz_reports_the_loaded_index(client: TestClient, fake_sample_index: Path) -> None:
    body = client.get("/readyz").json()
    live = IndexDirectory(fake_sample_index).current_version()
    assert live is not None
    assert body["status"] == "ready"
    assert body["version"] == live.name
    assert (body["model"], body["dim"], body["papers"], body["bullets"]) == ("fake:64", 64, 12, 52)


def test_not_ready_without_an_index(tmp_path: Path) -> None:
    with make_client(None, tmp_path / "missing") as not_ready:
        assert not_ready.get("/healthz").status_code == 200
        ready = not_ready.get("/readyz")
        assert ready.status_code == 503
        assert "no index at" in ready.json()["detail"]
        search = not_ready.get("/search", params={"q": "LoRA"})
        assert search.status_code == 503
        assert "build-index" in search.json()["detail"]
        assert not_ready.get("/", params={"q": "LoRA"}).status_code == 503


def test_search_response_shape(client: TestClient) -> None:
    response = client.get("/search", params={"q": LORA_TITLE, "k": 3})
    body = response.json()
    assert set(body) == RESULT_KEYS
    assert (body["query"], body["mode"], body["limit"], body["offset"]) == (LORA_TITLE, "hybrid", 3, 0)
    assert len(body["results"]) == 3
    top = body["results"][0]
    assert set(top) >= {"paper", "score", "relevance", "weak", "evidence"}
    assert all(0.0 <= hit["relevance"] <= 1.0 and isinstance(hit["weak"], bool) for hit in body["results"])
    assert body["weak"] == all(hit["weak"] for hit in body["results"])
    assert set(top["paper"]) == PAPER_KEYS
    assert top["paper"]["id"] == LORA
    assert top["paper"]["url"] == f"https://arxiv.org/abs/{LORA}"
    assert top["evidence"] and all(set(ev) == EVIDENCE_KEYS for ev in top["evidence"])
    assert body["took_ms"] >= 0


def test_highlights_mark_query_terms(client: TestClient) -> None:
    body = client.get("/search", params={"q": "LoRA 저랭크", "mode": "lexical", "k": 1}).json()
    evidence = body["results"][0]["evidence"]
    spans = [(ev["text"], span) for ev in evidence for span in ev["highlights"]]
    assert spans, "no highlight in the cited bullets"
    marked = {text[start:end].lower() for text, (start, end) in spans}
    assert marked & {"lora", "저랭크"}


def test_post_matches_get(client: TestClient) -> None:
    params: dict[str, Any] = {"q": "선호 데이터로 언어 모델 정렬", "k": 5, "mode": "hybrid", "min_votes": 10}
    got = client.get("/search", params=params)
    posted = client.post("/search", json=params)
    assert ids(got) == ids(posted)
    assert posted.json()["results"][0]["score"] == got.json()["results"][0]["score"]


def test_each_mode(client: TestClient) -> None:
    for mode in ("dense", "lexical", "hybrid"):
        body = client.get("/search", params={"q": "Mamba state space", "mode": mode}).json()
        assert body["mode"] == mode
        assert body["results"], mode


def test_paper_detail(client: TestClient, papers: dict[str, Any]) -> None:
    body = client.get(f"/papers/{LORA}").json()
    assert body["paper"]["id"] == LORA
    assert [b["text"] for b in body["bullets"]] == [b.text for b in papers[LORA].bullets]


def test_unknown_paper_is_404(client: TestClient) -> None:
    for path in ("/papers/9999.99999", "/papers/9999.99999/similar"):
        response = client.get(path)
        assert response.status_code == 404
        assert "9999.99999" in response.json()["detail"]


def test_similar_papers(client: TestClient) -> None:
    found = ids(client.get(f"/papers/{LORA}/similar", params={"k": 4}))
    assert len(found) == 4
    assert LORA not in found
    assert client.get(f"/papers/{LORA}/similar", params={"k": 0}).status_code == 422


def test_openapi_and_docs(client: TestClient) -> None:
    schema = client.get("/openapi.json").json()
    assert {"/search", "/papers/{arxiv_id}", "/papers/{arxiv_id}/similar", "/healthz", "/readyz"} <= set(
        schema["paths"]
    )
    assert "post" in schema["paths"]["/search"]
    assert client.get("/docs").status_code == 200


# --------------------------------------------------------------------------- validation
BAD_PARAMS = [
    ({"q": ""}, "q"),
    ({"q": "   "}, "q"),
    ({"q": "x" * 1001}, "q"),
    ({"q": "LoRA", "k": 0}, "k"),
    ({"q": "LoRA", "k": 101}, "k"),
    ({"q": "LoRA", "k": "ten"}, "k"),
    ({"q": "LoRA", "offset": -1}, "offset"),
    ({"q": "LoRA", "offset": 10_001}, "offset"),
    ({"q": "LoRA", "date_from": "2024-1-5"}, "date_from"),
    ({"q": "LoRA", "date_to": "2024-02-30"}, "date_to"),
    ({"q": "LoRA", "date_from": "yesterday"}, "date_from"),
    ({"q": "LoRA", "mode": "fuzzy"}, "mode"),
    ({"q": "LoRA", "date_from": "2024-05-01", "date_to": "2024-01-01"}, "date_from"),
    ({"q": "LoRA", "min_votes": "many"}, "min_votes"),
    ({"q": "LoRA", "min_votes": -1}, "min_votes"),
]


@pytest.mark.parametrize(("params", "field"), BAD_PARAMS)
def test_bad_query_string_is_422_with_reason(client: TestClient, params: dict[str, Any], field: str) -> None:
    response = client.get("/search", params=params)
    assert response.status_code == 422
    body = response.json()
    assert field in body["reason"]
    assert any(field in ".".join(map(str, e["loc"])) or field in e["msg"] for e in body["detail"])


@pytest.mark.parametrize(("params", "field"), BAD_PARAMS)
def test_bad_json_body_is_422_with_reason(client: TestClient, params: dict[str, Any], field: str) -> None:
    response = client.post("/search", json=params)
    assert response.status_code == 422
    assert field in response.json()["reason"]


def test_missing_query_and_bad_bodies_are_422(client: TestClient) -> None:
    assert "q" in client.get("/search").json()["reason"]
    assert client.post("/search", content=b"{not json", headers={"content-type": "application/json"}).status_code == 422
    assert client.post("/search", json=["LoRA"]).status_code == 422
    unknown = client.post("/search", json={"q": "LoRA", "limit": 5})
    assert unknown.status_code == 422
    assert "limit" in unknown.json()["reason"]


def test_limits_come_from_settings(fake_sample_index: Path, fake_searcher: Searcher) -> None:
    with make_client(fake_searcher, fake_sample_index, max_query_chars=10, max_limit=5, max_offset=3) as small:
        assert small.get("/search", params={"q": "x" * 10}).status_code == 200
        too_long = small.get("/search", params={"q": "x" * 11})
        assert too_long.status_code == 422
        assert "at most 10" in too_long.json()["reason"]
        assert "k" in small.get("/search", params={"q": "LoRA", "k": 6}).json()["reason"]
        assert "offset" in small.post("/search", json={"q": "LoRA", "offset": 4}).json()["reason"]


# --------------------------------------------------------------------------- filters and paging
def all_pages(client: TestClient, params: dict[str, Any], k: int) -> list[list[str]]:
    pages: list[list[str]] = []
    offset = 0
    while True:
        response = client.get("/search", params={**params, "k": k, "offset": offset})
        page = ids(response)
        if not page:
            return pages
        pages.append(page)
        offset += k


@pytest.mark.parametrize(
    ("filters", "keep"),
    [
        ({"date_from": "2024-01-01"}, lambda p: max(p.dates) >= "2024-01-01"),
        ({"date_to": "2023-12-31"}, lambda p: min(p.dates) <= "2023-12-31"),
        ({"min_votes": 70}, lambda p: p.votes is not None and p.votes >= 70),
        ({"author": "touvron"}, lambda p: any("touvron" in a.lower() for a in p.authors)),
        (
            {"date_from": "2024-04-01", "date_to": "2024-04-30", "min_votes": 50},
            lambda p: "2024-04-02" in p.dates and (p.votes or 0) >= 50,
        ),
    ],
)
def test_filters_with_paging(client: TestClient, papers: dict[str, Any], filters: dict[str, Any], keep: Any) -> None:
    expected = {pid for pid, paper in papers.items() if keep(paper)}
    assert 2 <= len(expected) < len(papers)
    k = 2
    pages = all_pages(client, {"q": "언어 모델 학습", "mode": "hybrid", **filters}, k)
    flat = [pid for page in pages for pid in page]
    assert len(flat) == len(set(flat)), "pages overlap"
    assert set(flat) == expected
    assert all(len(page) == k for page in pages[:-1])
    total = client.get("/search", params={"q": "언어 모델 학습", **filters}).json()["total"]
    assert total == len(expected)


def test_filtered_page_is_full_with_a_shallow_candidate_depth(fake_sample_index: Path) -> None:
    """Settings.candidate_depth reaches the searcher; the filter still fills the page by widening it."""
    with make_client(None, fake_sample_index, candidate_depth=10) as small:
        searcher = small.app.state.holder.current  # type: ignore[attr-defined]
        assert searcher.settings.candidate_depth == 10
        assert len(ids(small.get("/search", params={"q": "LoRA", "mode": "dense", "min_votes": 60, "k": 5}))) == 5


# --------------------------------------------------------------------------- auth, CORS, body size
def test_token_protects_everything_but_health_and_static(fake_sample_index: Path, fake_searcher: Searcher) -> None:
    good = {"Authorization": "Bearer s3cret"}
    with make_client(fake_searcher, fake_sample_index, client=REMOTE, api_token="s3cret") as secured:
        for path in ("/search?q=LoRA", f"/papers/{LORA}", "/", "/docs", "/openapi.json", "/nowhere"):
            refused = secured.get(path)
            assert refused.status_code == 401, path
            assert refused.headers["www-authenticate"] == "Bearer"
        assert secured.get("/search?q=LoRA", headers={"Authorization": "Bearer wrong"}).status_code == 401
        assert secured.get("/search?q=LoRA", headers={"Authorization": "s3cret"}).status_code == 401
        assert ids(secured.get("/search", params={"q": LORA_TITLE}, headers=good))[0] == LORA
        assert secured.post("/search", json={"q": "LoRA"}, headers=good).status_code == 200
        for path in ("/healthz", "/readyz", "/static/favicon.svg"):
            assert secured.get(path).status_code == 200, path
        assert secured.post("/admin/reload").status_code == 401
        reload = secured.post("/admin/reload", headers=good)
        assert reload.status_code == 200, "a token holder may reload from any host"
        assert reload.json()["reloaded"] is False


def test_without_token_reload_is_loopback_only(fake_sample_index: Path, fake_searcher: Searcher) -> None:
    with make_client(fake_searcher, fake_sample_index, client=REMOTE) as remote:
        assert remote.get("/search?q=LoRA").status_code == 200
        refused = remote.post("/admin/reload")
        assert refused.status_code == 403
        assert "loopback" in refused.json()["detail"]
    with make_client(fake_searcher, fake_sample_index, client=LOOPBACK) as local:
        assert local.post("/admin/reload").status_code == 200


def test_cors_only_when_configured(client: TestClient, fake_sample_index: Path, fake_searcher: Searcher) -> None:
    origin = {"Origin": "https://papers.example.org"}
    assert "access-control-allow-origin" not in client.get("/search?q=LoRA", headers=origin).headers
    with make_client(
        fake_searcher, fake_sample_index, cors_origins=["https://papers.example.org"], api_token="t"
    ) as cors:
        allowed = cors.get("/search?q=LoRA", headers={**origin, "Authorization": "Bearer t"})
        assert allowed.headers["access-control-allow-origin"] == "https://papers.example.org"
        preflight = cors.options(
            "/search",
            headers={
                **origin,
                "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": "authorization",
            },
        )
        assert preflight.status_code == 200
        assert "POST" in preflight.headers["access-control-allow-methods"]
        other = cors.get("/healthz", headers={"Origin": "https://evil.example.com"})
        assert "access-control-allow-origin" not in other.headers


def test_body_too_large_is_413(client: TestClient) -> None:
    big = {"q": "LoRA", "author": "x" * 20_000}
    declared = client.post("/search", json=big)
    assert declared.status_code == 413
    assert "16384" in declared.json()["detail"]

    def chunks() -> Iterator[bytes]:
        yield b'{"q": "LoRA", "author": "'
        for _ in range(40):
            yield b"x" * 1000
        yield b'"}'

    streamed = client.post("/search", content=chunks(), headers={"content-type": "application/json"})
    assert streamed.status_code == 413
    assert client.post("/search", json={"q": "LoRA", "author": "x" * 100}).status_code == 200


# --------------------------------------------------------------------------- reload
def copy_corpus(target: Path, drop: str | None = None) -> Path:
    shutil.copytree(SAMPLE, target)
    if drop:
        (target / drop).unlink()
    return target


@pytest.fixture()
def corpora(tmp_path: Path) -> tuple[Path, Path]:
    """The sample (12 papers) and the sample without its 2024-11-05 digest (8 papers)."""
    return copy_corpus(tmp_path / "full"), copy_corpus(tmp_path / "less", drop="2024/11/05.md")


def test_reload_swaps_in_a_rebuilt_index(
    tmp_path: Path, corpora: tuple[Path, Path], tokenizer: KoreanEnglishTokenizer
) -> None:
    full, less = corpora
    index = tmp_path / "index"
    build_index(full, index, FakeEmbedder(64), tokenizer=tokenizer)
    first = open_searcher(index, tokenizer=tokenizer, settings=SearchSettings(candidate_depth=40))
    with make_client(first, index) as local:
        before = local.get("/readyz").json()
        assert before["papers"] == 12
        assert local.post("/admin/reload").json()["reloaded"] is False
        build_index(less, index, FakeEmbedder(64), tokenizer=tokenizer)
        result = local.post("/admin/reload").json()
        assert result["reloaded"] is True
        assert (result["previous"], result["papers"]) == (before["version"], 8)
        after = local.get("/readyz").json()
        assert after["version"] == result["version"] != before["version"]
        assert local.get("/papers/2305.14314").status_code == 404, "QLoRA left with the dropped digest"
        swapped = local.app.state.holder.current  # type: ignore[attr-defined]
        assert swapped is not first
        assert (swapped.settings.candidate_depth, swapped.tokenizer, swapped.embedder) == (
            40,
            tokenizer,
            first.embedder,
        )


def test_failed_reload_keeps_serving(tmp_path: Path, tokenizer: KoreanEnglishTokenizer) -> None:
    index = tmp_path / "index"
    build_index(SAMPLE, index, FakeEmbedder(64), tokenizer=tokenizer)
    with make_client(open_searcher(index, tokenizer=tokenizer), index) as local:
        version = local.get("/readyz").json()["version"]
        (index / "CURRENT").write_text("v-missing\n", encoding="utf-8")
        failed = local.post("/admin/reload")
        assert failed.status_code == 409
        assert "v-missing" in failed.json()["detail"] and version in failed.json()["detail"]
        assert local.get("/readyz").json()["version"] == version
        assert ids(local.get("/search", params={"q": LORA_TITLE}))[0] == LORA


def test_no_failed_request_during_reloads(
    tmp_path: Path, corpora: tuple[Path, Path], tokenizer: KoreanEnglishTokenizer
) -> None:
    """Real uvicorn, four client threads searching while the index is rebuilt and reloaded."""
    full, less = corpora
    index = tmp_path / "index"
    build_index(full, index, FakeEmbedder(64), tokenizer=tokenizer)
    failures: list[str] = []
    done = threading.Event()
    counts = [0] * 4
    queries = ["LoRA", "저랭크 행렬", "state space", "선호 최적화", "quantized 4-bit", "검색 증강 생성"]

    def worker(slot: int, url: str) -> None:
        with httpx.Client(base_url=url, timeout=30) as http:
            while not done.is_set():
                q = queries[counts[slot] % len(queries)]
                mode = ("hybrid", "dense", "lexical")[counts[slot] % 3]
                try:
                    response = http.get("/search", params={"q": q, "mode": mode, "k": 5})
                    paper = http.get(f"/papers/{LORA}")
                    if response.status_code != 200 or not response.json()["results"] or paper.status_code != 200:
                        failures.append(f"{response.status_code} {paper.status_code} {response.text[:200]}")
                except httpx.HTTPError as exc:
                    failures.append(repr(exc))
                counts[slot] += 1

    app = create_app(Settings(index_dir=index), open_searcher(index, tokenizer=tokenizer))
    with serve_in_thread(app) as url:
        threads = [threading.Thread(target=worker, args=(slot, url)) for slot in range(4)]
        for thread in threads:
            thread.start()
        versions = [httpx.get(f"{url}/readyz").json()["version"]]
        for round_ in range(4):
            build_index(less if round_ % 2 == 0 else full, index, FakeEmbedder(64), tokenizer=tokenizer)
            reload = httpx.post(f"{url}/admin/reload", timeout=60)
            assert reload.status_code == 200, reload.text
            assert reload.json()["papers"] == (8 if round_ % 2 == 0 else 12)
            versions.append(reload.json()["version"])
            time.sleep(0.3)
        done.set()
        for thread in threads:
            thread.join(60)
    assert failures == []
    assert sum(counts) >= 20, counts
    assert len(set(versions)) == 5


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_ready(url: str, process: subprocess.Popen[str], timeout: float = 60) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.poll() is None, process.stderr.read() if process.stderr else ""
        try:
            response = httpx.get(f"{url}/readyz", timeout=2)
            if response.status_code == 200:
                return dict(response.json())
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise AssertionError("server did not become ready")


@pytest.mark.skipif(not hasattr(signal, "SIGHUP"), reason="SIGHUP is POSIX only")
def test_serve_reloads_on_sighup(tmp_path: Path, corpora: tuple[Path, Path], tokenizer: KoreanEnglishTokenizer) -> None:
    full, less = corpora
    index = tmp_path / "index"
    build_index(full, index, FakeEmbedder(64), tokenizer=tokenizer)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    command = [sys.executable, "-m", "retrieval.cli", "serve", "--index", str(index), "--port", str(port)]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        first = wait_ready(url, process)
        build_index(less, index, FakeEmbedder(64), tokenizer=tokenizer)
        os.kill(process.pid, signal.SIGHUP)
        deadline = time.monotonic() + 30
        while httpx.get(f"{url}/readyz").json()["version"] == first["version"]:
            assert time.monotonic() < deadline, "SIGHUP did not reload the index"
            time.sleep(0.1)
        assert httpx.get(f"{url}/readyz").json()["papers"] == 8
    finally:
        process.terminate()
        process.wait(30)


@pytest.mark.parametrize(("damage", "code", "needle"), [("missing", 4, "no index at"), ("corrupt", 5, "papers.json")])
def test_serve_refuses_a_bad_index_in_one_line(
    tmp_path: Path, fake_sample_index: Path, damage: str, code: int, needle: str
) -> None:
    index = tmp_path / "index"
    if damage == "corrupt":
        shutil.copytree(fake_sample_index, index)
        live = IndexDirectory(index).current_version()
        assert live is not None
        with (live / "papers.json").open("a", encoding="utf-8") as handle:
            handle.write(" ")
    command = [sys.executable, "-m", "retrieval.cli", "serve", "--index", str(index), "--port", str(free_port())]
    result = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert result.returncode == code
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and needle in lines[0], result.stderr
    assert "Traceback" not in result.stderr


# --------------------------------------------------------------------------- search page (server side)
def test_page_without_query_shows_the_form(client: TestClient) -> None:
    page = client.get("/")
    assert page.status_code == 200
    assert 'name="q"' in page.text and 'name="mode"' in page.text and 'name="date_from"' in page.text
    assert 'li class="hit"' not in page.text


def test_page_renders_hits_marks_and_paging(client: TestClient) -> None:
    first = client.get("/", params={"q": "LoRA 저랭크", "k": 5})
    assert first.status_code == 200
    assert f'data-id="{LORA}"' in first.text
    assert "<mark>" in first.text
    assert f'href="https://arxiv.org/abs/{LORA}"' in first.text
    assert 'class="next"' in first.text and 'class="prev"' not in first.text
    assert "offset=5" in first.text
    second = client.get("/", params={"q": "LoRA 저랭크", "k": 5, "offset": 5})
    assert 'class="prev"' in second.text
    assert not set(_page_ids(first.text)) & set(_page_ids(second.text))


def _page_ids(text: str) -> list[str]:
    return [chunk.split('"', 1)[0] for chunk in text.split('li class="hit" data-id="')[1:]]


def test_page_escapes_everything(client: TestClient) -> None:
    attack = '"><script>alert(1)</script><img src=x onerror=alert(2)>'
    page = client.get("/", params={"q": attack, "author": attack})
    assert "<script>alert" not in page.text and "<img src=x" not in page.text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page.text


def test_page_shows_validation_errors(client: TestClient) -> None:
    page = client.get("/", params={"q": "LoRA", "date_from": "2024-99-01"})
    assert page.status_code == 422
    assert 'class="error"' in page.text and "date_from" in page.text


def test_highlight_escapes_and_marks() -> None:
    assert highlight("a <b> LoRA c", [(6, 10)]) == "a &lt;b&gt; <mark>LoRA</mark> c"
    assert highlight("저랭크 행렬", [(0, 3), (2, 6)]) == "<mark>저랭크</mark><mark> 행렬</mark>"
    assert highlight("abc", [(5, 9)]) == "abc"


# --------------------------------------------------------------------------- the real model
@pytest.mark.slow
def test_real_model_finds_lora_from_korean_and_english(e5_sample_index: Path, e5_searcher: Searcher) -> None:
    with make_client(e5_searcher, e5_sample_index) as real:
        korean = real.get("/search", params={"q": "저랭크 행렬로 미세조정", "k": 3}).json()
        assert LORA in [hit["paper"]["id"] for hit in korean["results"]]
        lora = next(hit for hit in korean["results"] if hit["paper"]["id"] == LORA)
        assert any(ev["highlights"] for ev in lora["evidence"])
        english = real.get(
            "/search", params={"q": "low-rank adaptation of large language models", "mode": "dense", "k": 3}
        )
        assert ids(english)[0] == LORA


def test_the_package_log_follows_stderr_even_after_the_one_it_started_with_closed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import io
    import logging
    import sys

    from retrieval.api.app import configure_logging

    logger = logging.getLogger("retrieval")
    monkeypatch.setattr(logger, "handlers", [])
    first = io.StringIO()
    monkeypatch.setattr(sys, "stderr", first)
    configure_logging()
    first.close()  # e.g. a test's captured stderr, or a replaced one
    later = io.StringIO()
    monkeypatch.setattr(sys, "stderr", later)
    logging.getLogger("retrieval.learned").warning("one line")
    assert later.getvalue() == "WARNING:     one line\n"
