"""The digest parser: every format era, merging repeated papers, and bad input reported by file and line.

Expected counts come from tests/fixtures/digests/README.md.
"""

from __future__ import annotations

import shutil
from collections import Counter
from pathlib import Path

import pytest
from conftest import FIXTURES, REAL_CORPUS, needs_real_corpus

from retrieval.corpus import (
    SECTIONS,
    Paper,
    clean_bullet,
    load_corpus,
    merge_papers,
    parse_authors,
    parse_digest,
    read_digest,
)
from retrieval.errors import CorpusError


def parse_fixture(rel: str) -> tuple[list[Paper], list]:
    """Parse one fixture file the way `load_corpus` does; fail if the whole file was skipped."""
    papers, problems, skipped = read_digest(FIXTURES / rel, rel)
    assert skipped is None, skipped
    return papers, problems


def by_id(papers: list[Paper]) -> dict[str, Paper]:
    return {p.arxiv_id: p for p in papers}


def copy_fixtures(target: Path, *rels: str) -> Path:
    """Copy fixture files (keeping their relative paths) into a fresh corpus directory."""
    for rel in rels:
        dest = target / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(FIXTURES / rel, dest)
    return target


# ---------------------------------------------------------------- format eras


def test_plain_era_has_no_votes_authors_or_sections() -> None:
    papers, problems = parse_fixture("era_plain.md")
    assert problems == []
    assert [p.arxiv_id for p in papers] == ["2401.00001", "2401.00002"]
    # paper 2's heading follows paper 1's last bullet with no blank line: it must not be swallowed
    assert [len(p.bullets) for p in papers] == [3, 4]
    first = papers[0]
    assert first.title == "Sparse Mixture Routing for Tiny Language Models"
    assert first.url == "https://arxiv.org/abs/2401.00001"
    assert first.sources == ["era_plain.md"]
    for paper in papers:
        assert paper.dates == ["2024-01-10"]
        assert paper.votes is None
        assert paper.authors == []
        assert [b.section for b in paper.bullets] == [None] * len(paper.bullets)
        assert [b.position for b in paper.bullets] == list(range(len(paper.bullets)))
    assert papers[1].bullets[-1].text == "데이터셋과 코드는 추후 공개될 예정입니다."


def test_vote_and_author_era() -> None:
    papers, problems = parse_fixture("era_vote_authors.md")
    assert problems == []
    found = by_id(papers)
    assert list(found) == ["2403.00011", "2403.00012"]
    assert [len(p.bullets) for p in papers] == [4, 3]
    assert found["2403.00011"].votes == 12
    assert found["2403.00011"].authors == ["Kim Minji", "John Smith"]
    assert found["2403.00012"].votes == 3
    assert found["2403.00012"].authors == ["Lee Junho", "Maria Garcia", "Wei Zhang"]
    texts = [b.text for p in papers for b in p.bullets]
    # image lines, Vote and Authors lines are metadata, never bullets
    assert not any(t.startswith(("![", "Vote", "Authors")) or "example.org" in t for t in texts)
    assert found["2403.00011"].bullets[0].text.startswith("이미지 인코더(image encoder)를 고정한 채")


def test_labelled_era_sections_and_clean_text() -> None:
    papers, problems = parse_fixture("era_labelled.md")
    assert problems == []
    first, second = papers
    assert (first.arxiv_id, second.arxiv_id) == ("2410.00021", "2410.00022")
    assert first.votes == 7 and second.votes == 25
    assert first.authors == ["Park Soyeon", "David Chen"]
    assert second.authors == ["Choi Yuna", "Tom Baker"]  # Python-list form
    for paper in papers:
        assert [b.section for b in paper.bullets] == list(SECTIONS)
        for bullet in paper.bullets:
            assert "*" not in bullet.text
            assert "What's New" not in bullet.text and "Technical Details" not in bullet.text
            assert not bullet.text.startswith(":")
    # the label is gone, the inline bold phrase stays as plain text inside the sentence
    assert first.bullets[0].text == (
        "이 논문은 온디바이스 음성 인식(on-device speech recognition)에 추측 디코딩(speculative decoding)을 "
        "처음 적용한 연구입니다."
    )
    assert first.bullets[2].text.startswith("단어 오류율(WER)은")


def test_continuation_sub_items_join_the_previous_bullet() -> None:
    papers, _ = parse_fixture("era_labelled.md")
    details = papers[1].bullets[1]
    assert len(papers[1].bullets) == 3
    assert details.section == "technical details"
    assert details.text == (
        "메모리 그래프는 두 단계로 갱신됩니다: (1) 새로 방문한 페이지를 노드(node)로 추가합니다. "
        "(2) 클릭이나 입력 같은 행동을 간선(edge)으로 연결합니다."
    )
    assert papers[1].bullets[2].section == "performance highlights"


def test_crlf_and_bom_parse_like_plain_lf(tmp_path: Path) -> None:
    text = (FIXTURES / "era_labelled.md").read_text(encoding="utf-8")
    variant = tmp_path / "crlf.md"
    variant.write_bytes(b"\xef\xbb\xbf" + text.replace("\n", "\r\n").encode("utf-8"))
    expected, _ = parse_digest(text, "crlf.md")
    papers, problems, skipped = read_digest(variant, "crlf.md")
    assert skipped is None and problems == []
    assert [(p.arxiv_id, p.dates, p.votes, p.authors, p.bullets) for p in papers] == [
        (p.arxiv_id, p.dates, p.votes, p.authors, p.bullets) for p in expected
    ]


def test_date_comes_from_the_path_when_the_heading_is_missing() -> None:
    text = "### [A Paper](https://arxiv.org/abs/2405.00001)\n\n- 첫 번째 요약입니다.\n"
    papers, problems = parse_digest(text, "2024/05/06.md")
    assert problems == []
    assert papers[0].dates == ["2024-05-06"]
    with_heading, _ = parse_digest("## Daily Papers (2024-05-07)\n\n" + text, "2024/05/06.md")
    assert with_heading[0].dates == ["2024-05-07"]


@pytest.mark.parametrize(
    ("raw", "section", "text"),
    [
        ("**What's New**: 새 방법", "what's new", "새 방법"),
        ("***What's New***: 새 방법", "what's new", "새 방법"),
        ("**What’s New**: 곡선 따옴표", "what's new", "곡선 따옴표"),
        ("**Technical Details:** 콜론이 안쪽", "technical details", "콜론이 안쪽"),
        ("Performance Highlights: 강조 없음", "performance highlights", "강조 없음"),
        ("**굵은 글씨**로 시작하는 문장", None, "굵은 글씨로 시작하는 문장"),
        ("문장 중간의 __강조__와 *기울임*", None, "문장 중간의 강조와 기울임"),
        ("A* 탐색과 1120*1120 해상도", None, "A* 탐색과 1120*1120 해상도"),
        ("  여러   칸의\t공백  ", None, "여러 칸의 공백"),
    ],
)
def test_clean_bullet(raw: str, section: str | None, text: str) -> None:
    assert clean_bullet(raw) == (section, text)


@pytest.mark.parametrize(
    ("value", "names"),
    [
        ("Kim Minji, John Smith", ["Kim Minji", "John Smith"]),
        ("['Choi Yuna', 'Tom Baker']", ["Choi Yuna", "Tom Baker"]),
        ('["O\'Neil Pat", "Lee Ana"]', ["O'Neil Pat", "Lee Ana"]),
        ("['Broken List', 'No End'", ["Broken List", "No End"]),
        ("Solo Author", ["Solo Author"]),
        ("A One, B Two, +", ["A One", "B Two"]),
        ("", []),
    ],
)
def test_parse_authors(value: str, names: list[str]) -> None:
    assert parse_authors(value) == names


# ---------------------------------------------------------------- repeated papers


def test_repeated_paper_becomes_one_paper_with_both_dates() -> None:
    corpus = load_corpus(FIXTURES / "repeated_paper")
    assert corpus.files == ["2024/01/02.md", "2024/01/05.md"]
    assert corpus.files_skipped == [] and corpus.problems == []
    papers = by_id(corpus.papers)
    assert sorted(papers) == ["2401.00100", "2401.00101", "2401.00102"]
    repeated = papers["2401.00100"]
    assert repeated.dates == ["2024-01-02", "2024-01-05"]
    assert repeated.votes == 31
    assert repeated.sources == ["2024/01/02.md", "2024/01/05.md"]
    assert len(repeated.bullets) == 4  # the latest appearance's summary
    assert repeated.bullets[0].text.startswith("이 연구는 검색 증강(retrieval-augmented)")
    assert corpus.bullet_count == 10
    assert papers["2401.00101"].dates == ["2024-01-02"]


def test_merge_keeps_latest_bullets_and_max_votes_whatever_the_input_order() -> None:
    early, _ = parse_fixture("repeated_paper/2024/01/02.md")
    late, _ = parse_fixture("repeated_paper/2024/01/05.md")
    late_copy = by_id(late)["2401.00100"]
    late_copy.votes = 2  # a later appearance with fewer votes must not lower the count
    for order in (early + late, late + early):
        merged = by_id(merge_papers(order))["2401.00100"]
        assert merged.dates == ["2024-01-02", "2024-01-05"]
        assert merged.votes == 15
        assert [b.text for b in merged.bullets] == [b.text for b in late_copy.bullets]


# ---------------------------------------------------------------- bad input


def test_invalid_utf8_file_is_skipped_with_its_line(tmp_path: Path) -> None:
    corpus = load_corpus(copy_fixtures(tmp_path, "bad/invalid_utf8.md", "era_plain.md"))
    assert corpus.files == ["bad/invalid_utf8.md", "era_plain.md"]
    assert len(corpus.files_skipped) == 1
    skipped = corpus.files_skipped[0]
    assert skipped.path == "bad/invalid_utf8.md"
    assert skipped.line == 6
    assert "UTF-8" in skipped.reason
    assert str(skipped).startswith("bad/invalid_utf8.md:6: ")
    assert {p.arxiv_id for p in corpus.papers} == {"2401.00001", "2401.00002"}


def test_empty_file_is_skipped() -> None:
    papers, problems, skipped = read_digest(FIXTURES / "bad/empty.md", "bad/empty.md")
    assert papers == [] and problems == []
    assert skipped is not None
    assert skipped.path == "bad/empty.md"
    assert "empty" in skipped.reason


def test_heading_without_link_is_reported_and_its_bullets_dropped() -> None:
    papers, problems = parse_fixture("bad/no_link.md")
    assert len(problems) == 1
    assert problems[0].path == "bad/no_link.md" and problems[0].line == 3
    assert "arXiv link" in problems[0].reason
    assert [p.arxiv_id for p in papers] == ["2402.00041"]
    texts = [b.text for b in papers[0].bullets]
    assert len(texts) == 3
    assert texts[0].startswith("표 형식 데이터(tabular data)")
    assert not any("링크가 없는 제목" in t or "어떤 논문에도" in t for t in texts)


def test_paper_without_bullets_is_reported_and_the_next_paper_kept() -> None:
    papers, problems = parse_fixture("bad/no_bullets.md")
    assert len(problems) == 1
    assert problems[0].line == 3
    assert "2402.00051" in problems[0].reason
    assert [p.arxiv_id for p in papers] == ["2402.00052"]
    kept = papers[0]
    assert kept.votes == 10
    assert kept.authors == ["Kang Doyun", "Anna Müller"]  # not the skipped paper's authors
    assert len(kept.bullets) == 3


def test_whole_fixture_folder() -> None:
    corpus = load_corpus(FIXTURES)
    assert len(corpus.files) == 9  # README.md excluded
    assert sorted(s.path for s in corpus.files_skipped) == ["bad/empty.md", "bad/invalid_utf8.md"]
    assert sorted((p.path, p.line) for p in corpus.problems) == [("bad/no_bullets.md", 3), ("bad/no_link.md", 3)]
    assert len(corpus.papers) == 11
    assert len({p.arxiv_id for p in corpus.papers}) == 11
    assert corpus.bullet_count == 7 + 7 + 6 + 10 + 3 + 3
    dates = [p.dates[0] for p in corpus.papers]
    assert dates == sorted(dates)


def test_no_paper_at_all_raises_corpus_error(tmp_path: Path) -> None:
    corpus_dir = copy_fixtures(tmp_path / "c", "bad/empty.md", "bad/invalid_utf8.md")
    with pytest.raises(CorpusError) as info:
        load_corpus(corpus_dir)
    message = str(info.value)
    assert "no paper found" in message
    assert "empty file" in message and "UTF-8" in message
    (tmp_path / "none").mkdir()
    with pytest.raises(CorpusError, match="no paper found"):
        load_corpus(tmp_path / "none")
    with pytest.raises(CorpusError, match="does not exist"):
        load_corpus(tmp_path / "missing")


def test_single_file_corpus() -> None:
    corpus = load_corpus(FIXTURES / "era_plain.md")
    assert corpus.files == ["era_plain.md"]
    assert len(corpus.papers) == 2


# ---------------------------------------------------------------- the real corpus


@pytest.mark.slow
@needs_real_corpus
def test_real_corpus_counts() -> None:
    corpus = load_corpus(REAL_CORPUS)
    assert len(corpus.files) == 357
    assert corpus.files_skipped == []
    assert len(corpus.papers) == 5487
    assert corpus.bullet_count == 21388
    assert len({p.arxiv_id for p in corpus.papers}) == 5487
    sections = Counter(b.section for p in corpus.papers for b in p.bullets)
    assert set(sections) == {None, *SECTIONS}
    assert all(sections[s] > 3000 for s in SECTIONS)
    dates = sorted(d for p in corpus.papers for d in p.dates)
    assert (dates[0], dates[-1]) == ("2023-11-20", "2025-05-09")
    assert all(p.bullets and p.title and p.url.startswith("https://arxiv.org/abs/") for p in corpus.papers)
    texts = [b.text for p in corpus.papers for b in p.bullets]
    assert not any(t.startswith(("**", "- ")) for t in texts)
