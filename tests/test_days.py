"""Digest days: each paper's place in a day's digest, `GET /days`, `GET /days/{date}`, the day pages."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import SAMPLE
from fastapi.testclient import TestClient

from retrieval.api import create_app
from retrieval.config import Settings
from retrieval.corpus import Bullet, Paper, load_corpus, merge_papers, parse_digest
from retrieval.days import DayIndex
from retrieval.search import Searcher
from retrieval.store import paper_from_json, paper_to_json

SAMPLE_DAYS = {"2024-11-05": "2024/11/05.md", "2024-04-02": "2024/04/02.md", "2023-12-01": "2023/12/01.md"}


def digest_order(path: Path) -> list[str]:
    """arXiv ids of a digest's paper headings, in the file's order (read independently of the parser)."""
    return re.findall(r"^### \[.*\]\(https://arxiv\.org/abs/([0-9.]+)\)", path.read_text(encoding="utf-8"), re.M)


@pytest.fixture(scope="module")
def client(fake_sample_index: Path, fake_searcher: Searcher) -> Iterator[TestClient]:
    with TestClient(create_app(Settings(index_dir=fake_sample_index), fake_searcher)) as test_client:
        yield test_client


def paper(arxiv_id: str, positions: dict[str, int]) -> Paper:
    return Paper(
        arxiv_id=arxiv_id,
        title=f"title {arxiv_id}",
        url=f"https://arxiv.org/abs/{arxiv_id}",
        dates=sorted(positions),
        votes=None,
        authors=[],
        bullets=[Bullet(0, None, "요약")],
        positions=positions,
    )


# --------------------------------------------------------------------------- positions
def test_the_parser_records_each_papers_place_in_its_digest() -> None:
    path = SAMPLE / "2024/04/02.md"
    papers, _ = parse_digest(path.read_text(encoding="utf-8"), "2024/04/02.md")
    assert [(p.arxiv_id, p.positions) for p in papers] == [
        (arxiv_id, {"2024-04-02": place}) for place, arxiv_id in enumerate(digest_order(path))
    ]


def test_merging_keeps_the_place_on_every_day() -> None:
    first = paper("2401.00001", {"2024-01-01": 3})
    again = paper("2401.00001", {"2024-01-02": 0})
    listed_twice = paper("2401.00001", {"2024-01-02": 5})
    (merged,) = merge_papers([first, again, listed_twice])
    assert merged.positions == {"2024-01-01": 3, "2024-01-02": 0}
    assert merged.dates == ["2024-01-01", "2024-01-02"]


def test_positions_survive_papers_json_and_older_indexes_still_load() -> None:
    original = paper("2401.00001", {"2024-01-01": 2})
    assert paper_from_json(json.loads(json.dumps(paper_to_json(original)))).positions == {"2024-01-01": 2}
    older = paper_to_json(original)
    del older["positions"]  # papers.json of an index built before positions existed
    assert paper_from_json(older).positions == {}


def test_a_day_without_recorded_places_falls_back_to_arxiv_id_order() -> None:
    papers = [paper("2402.00002", {}), paper("2401.00009", {}), paper("2403.00001", {})]
    for p in papers:
        p.dates = ["2024-03-01"]
    days = DayIndex(papers)
    assert [papers[i].arxiv_id for i in days.papers_on("2024-03-01")] == ["2401.00009", "2402.00002", "2403.00001"]


def test_the_day_order_is_part_of_the_corpus_fingerprint(tmp_path: Path) -> None:
    from retrieval.indexer import corpus_fingerprint

    source = (SAMPLE / "2024/04/02.md").read_text(encoding="utf-8")
    head, *blocks = re.split(r"(?m)^(?=### )", source)
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    (tmp_path / "a" / "2024-04-02.md").write_text(source, encoding="utf-8")
    (tmp_path / "b" / "2024-04-02.md").write_text(head + "".join(reversed(blocks)), encoding="utf-8")
    a, b = load_corpus(tmp_path / "a"), load_corpus(tmp_path / "b")
    assert {p.arxiv_id for p in a.papers} == {p.arxiv_id for p in b.papers}
    assert corpus_fingerprint(a) != corpus_fingerprint(b), "a reordered digest must rebuild the index"


# --------------------------------------------------------------------------- JSON routes
def test_days_lists_every_date_newest_first_with_counts(client: TestClient) -> None:
    body = client.get("/days").json()
    expected = [{"date": d, "papers": len(digest_order(SAMPLE / f))} for d, f in SAMPLE_DAYS.items()]
    assert body == {"days": expected}


@pytest.mark.parametrize("date", list(SAMPLE_DAYS))
def test_a_day_lists_its_digest_in_the_digest_order(client: TestClient, date: str) -> None:
    order = digest_order(SAMPLE / SAMPLE_DAYS[date])
    body = client.get(f"/days/{date}").json()
    assert body["date"] == date
    assert [hit["paper"]["id"] for hit in body["papers"]] == order


def test_the_digest_order_is_not_the_id_order(client: TestClient) -> None:
    """The sample day 2024-04-02 lists 2005.11401 last: the order test above can fail."""
    order = digest_order(SAMPLE / "2024/04/02.md")
    assert order != sorted(order)


def test_day_papers_are_search_hits_with_every_bullet(client: TestClient) -> None:
    corpus = {p.arxiv_id: p for p in load_corpus(SAMPLE).papers}
    body = client.get("/days/2024-11-05").json()
    search_hit = client.get("/search", params={"q": "QLoRA", "k": 1}).json()["results"][0]
    for hit in body["papers"]:
        assert set(hit) == set(search_hit)
        assert set(hit["paper"]) == set(search_hit["paper"])
        assert hit["score"] == 0
        assert [ev["text"] for ev in hit["evidence"]] == [b.text for b in corpus[hit["paper"]["id"]].bullets]
        assert [ev["position"] for ev in hit["evidence"]] == list(range(len(hit["evidence"])))
        assert "2024-11-05" in hit["paper"]["dates"]


def test_a_day_names_its_neighbours(client: TestClient) -> None:
    middle = client.get("/days/2024-04-02").json()
    assert (middle["previous"], middle["next"]) == ("2023-12-01", "2024-11-05")
    newest = client.get("/days/2024-11-05").json()
    assert (newest["previous"], newest["next"]) == ("2024-04-02", None)


def test_an_unknown_day_is_404_naming_the_nearest_days(client: TestClient) -> None:
    response = client.get("/days/2024-05-01")
    assert response.status_code == 404
    detail = response.json()["detail"]
    assert "2024-05-01" in detail and "2024-04-02 (before)" in detail and "2024-11-05 (after)" in detail
    after_all = client.get("/days/2030-01-01").json()["detail"]
    assert "2024-11-05 (before)" in after_all and "after)" not in after_all


@pytest.mark.parametrize("bad", ["2024-13-01", "2024-02-30", "yesterday", "20241105", "2024-1-05"])
def test_a_malformed_date_is_422_with_a_reason(client: TestClient, bad: str) -> None:
    response = client.get(f"/days/{bad}")
    assert response.status_code == 422
    assert response.json()["reason"] == f"date: must be a date YYYY-MM-DD, got {bad!r}"


# --------------------------------------------------------------------------- pages
def test_the_front_page_links_the_latest_day(client: TestClient) -> None:
    page = client.get("/")
    assert page.status_code == 200
    assert '<p class="latest">최신 다이제스트: <a href="/day/2024-11-05">2024-11-05</a></p>' in page.text
    assert client.get("/day", follow_redirects=False).headers["location"] == "/day/2024-11-05"


def test_a_day_page_lists_the_digest_with_links_to_the_days_around(client: TestClient) -> None:
    page = client.get("/day/2024-04-02")
    assert page.status_code == 200
    assert re.findall(r'<li class="hit" data-id="([^"]+)"', page.text) == digest_order(SAMPLE / "2024/04/02.md")
    assert 'href="/day/2023-12-01">← 이전 날 2023-12-01' in page.text
    assert 'href="/day/2024-11-05">다음 날 2024-11-05 →' in page.text
    assert "score" not in re.sub(r"<style>.*?</style>", "", page.text, flags=re.S), "a day is not ranked"
    newest = client.get("/day/2024-11-05").text
    assert "다음 날" not in newest and "이전 날 2024-04-02" in newest


def test_day_pages_for_unknown_and_malformed_dates(client: TestClient) -> None:
    unknown = client.get("/day/2024-05-01")
    assert unknown.status_code == 404
    assert "no digest for 2024-05-01" in unknown.text and 'href="/day/2024-04-02"' in unknown.text
    bad = client.get("/day/<script>")
    assert bad.status_code == 422
    assert "<script>" not in bad.text and "&lt;script&gt;" in bad.text
