"""The hand-written query sets (dev and held-out test) obey the rules in benchmarks/queries/README.md.

Format and language checks run everywhere; checks against the corpus (ids present, query vs title)
need the real corpus and are skipped when it is missing.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from functools import cache
from pathlib import Path
from typing import Any

import pytest
from conftest import REAL_CORPUS, ROOT, needs_real_corpus

from retrieval.corpus import load_corpus
from retrieval.learned import DEV_QUERIES

QUERIES = ROOT / "benchmarks" / "queries"
DEV = DEV_QUERIES
TEST = QUERIES / "test.jsonl"
LANGS = ("ko", "en", "mixed")
LATIN = re.compile(r"[A-Za-z]")
HANGUL = re.compile(r"[\u1100-\u11ff\u3130-\u318f\uac00-\ud7af]")
ARXIV_ID = re.compile(r"^\d{4}\.\d{4,5}$")
# (file, number of queries per language)
SETS = [(DEV, 42), (TEST, 54)]


def read_queries(path: Path) -> list[dict[str, Any]]:
    """Every non-blank line of a query file, parsed as JSON."""
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def language_problem(query: str, lang: str) -> str | None:
    """Why `query` breaks the script rule of `lang`, or None when it obeys it."""
    latin, hangul = bool(LATIN.search(query)), bool(HANGUL.search(query))
    if lang == "ko" and latin:
        return "ko query has Latin letters"
    if lang == "en" and hangul:
        return "en query has Hangul"
    if lang == "mixed" and not (latin and hangul):
        return "mixed query lacks Latin letters or Hangul"
    if lang not in LANGS:
        return f"unknown lang {lang!r}"
    return None


def id_problems(rows: list[dict[str, Any]]) -> list[str]:
    """Ids that are malformed or listed twice within one file."""
    seen: Counter[str] = Counter(i for row in rows for i in row["ids"])
    problems = [f"{i} used {n} times" for i, n in seen.items() if n > 1]
    problems += [f"{i} is not a bare arXiv id" for i in seen if not ARXIV_ID.match(i)]
    return problems


@cache
def corpus_titles() -> dict[str, str]:
    return {p.arxiv_id: p.title for p in load_corpus(REAL_CORPUS).papers}


@pytest.mark.parametrize("path,per_lang", SETS, ids=lambda v: v.name if isinstance(v, Path) else str(v))
def test_counts_and_format(path: Path, per_lang: int) -> None:
    rows = read_queries(path)
    for row in rows:
        assert set(row) == {"q", "ids", "lang"}, row
        assert isinstance(row["q"], str) and row["q"].strip() == row["q"], row
        assert isinstance(row["ids"], list) and row["ids"], row
        assert 3 <= len(row["q"].split()) <= 20, row
    assert Counter(row["lang"] for row in rows) == {lang: per_lang for lang in LANGS}


@pytest.mark.parametrize("path", [DEV, TEST], ids=lambda p: p.name)
def test_language_scripts(path: Path) -> None:
    problems = [(row["q"], language_problem(row["q"], row["lang"])) for row in read_queries(path)]
    assert [p for p in problems if p[1]] == []


@pytest.mark.parametrize("path", [DEV, TEST], ids=lambda p: p.name)
def test_no_id_used_twice(path: Path) -> None:
    assert id_problems(read_queries(path)) == []


def test_dev_and_test_share_no_id() -> None:
    dev = {i for row in read_queries(DEV) for i in row["ids"]}
    test = {i for row in read_queries(TEST) for i in row["ids"]}
    assert dev and test
    assert dev & test == set()


def test_checks_catch_bad_rows() -> None:
    """The helpers above reject what the README forbids (so the file tests can fail)."""
    assert language_problem("저랭크 LoRA 미세조정", "ko") is not None
    assert language_problem("low-rank 미세조정", "en") is not None
    assert language_problem("저랭크 행렬 미세조정", "mixed") is not None
    assert language_problem("low-rank adapters", "mixed") is not None
    assert language_problem("저랭크 행렬 미세조정", "ko") is None
    assert language_problem("LoRA 로 미세조정", "mixed") is None
    rows = [{"q": "a b c", "ids": ["2401.00001"]}, {"q": "d e f", "ids": ["2401.00001", "2401.00002v2"]}]
    assert sorted(id_problems(rows)) == ["2401.00001 used 2 times", "2401.00002v2 is not a bare arXiv id"]


@needs_real_corpus
@pytest.mark.parametrize("path", [DEV, TEST], ids=lambda p: p.name)
def test_ids_in_corpus_and_query_is_not_title(path: Path) -> None:
    titles = corpus_titles()
    missing, title_like = [], []
    for row in read_queries(path):
        query = row["q"].casefold()
        for arxiv_id in row["ids"]:
            if arxiv_id not in titles:
                missing.append(arxiv_id)
                continue
            title = titles[arxiv_id].casefold()
            if query in title or title in query:
                title_like.append((row["q"], titles[arxiv_id]))
    assert missing == []
    assert title_like == []
