"""Property-based tests of the digest parser (hypothesis).

1. On arbitrary text, and on digest-like text built from the parser's own line shapes,
   `parse_digest` never raises and returns well-typed records.
2. Real digests from every era, mutated (garbage between and inside papers, deleted lines,
   duplicated headings and papers, CRLF / CR / mixed line endings, a BOM, trailing blanks):
   every well-formed paper the mutation did not touch is still found with all its bullets.

The real digests are read in place (read-only) and never copied into the repository.
"""

from __future__ import annotations

import random
import re
import tempfile
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import pytest
from conftest import REAL_CORPUS, needs_real_corpus
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from retrieval.corpus import SECTIONS, Paper, ParseProblem, parse_digest, read_digest

# About a dozen digests across the eras: plain bullets (2023-11 .. early 2024), Vote/Authors
# lines (2024), labelled bullets with list-literal authors (mid-2024 onward).
REAL_FILES = (
    "2023/11/20.md",
    "2023/12/15.md",
    "2024/01/24.md",
    "2024/03/18.md",
    "2024/05/16.md",
    "2024/07/09.md",
    "2024/09/02.md",
    "2024/10/22.md",
    "2024/12/13.md",
    "2025/02/06.md",
    "2025/03/27.md",
)

_ID = re.compile(r"^(\d{4}\.\d{4,5}|[a-z\-]+(\.[A-Z]{2})?/\d{7})$")
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_HEADING = re.compile(r"^\s*###\s")
_LINE_BREAKS = re.compile(r"[\n\r\x0b\x0c\x1c-\x1e\x85\u2028\u2029]")


def assert_well_typed(papers: list[Paper], problems: list[ParseProblem], path: str) -> None:
    """Every record has the documented shape, whatever the input was."""
    assert isinstance(papers, list) and isinstance(problems, list)
    for paper in papers:
        assert isinstance(paper, Paper)
        assert _ID.match(paper.arxiv_id), paper.arxiv_id
        assert paper.url == f"https://arxiv.org/abs/{paper.arxiv_id}"
        assert isinstance(paper.title, str) and paper.title == paper.title.strip() and paper.title
        assert all(isinstance(d, str) and _DATE.match(d) for d in paper.dates)
        assert paper.votes is None or (isinstance(paper.votes, int) and paper.votes >= 0)
        assert all(isinstance(a, str) and a and a == a.strip() for a in paper.authors)
        assert paper.bullets, "a paper without bullets must be skipped, not returned"
        assert [b.position for b in paper.bullets] == list(range(len(paper.bullets)))
        for bullet in paper.bullets:
            assert isinstance(bullet.text, str) and bullet.text and bullet.text == bullet.text.strip()
            assert not _LINE_BREAKS.search(bullet.text)
            assert bullet.section is None or bullet.section in SECTIONS
        assert paper.sources == [path]
    for problem in problems:
        assert isinstance(problem, ParseProblem)
        assert problem.path == path and isinstance(problem.reason, str) and problem.reason
        assert problem.line is None or (isinstance(problem.line, int) and problem.line >= 1)


# ---------------------------------------------------------------- 1. never raises

_junk = st.text(max_size=60)
_digits = st.text(alphabet="0123456789", min_size=1, max_size=6)
_arxiv_url = st.one_of(
    st.builds(lambda a, b: f"https://arxiv.org/abs/{a}.{b}", _digits, _digits),
    st.builds(lambda a, b: f"https://arxiv.org/pdf/{a}.{b}v2.pdf", _digits, _digits),
    st.builds(lambda a, b: f"https://huggingface.co/papers/{a}.{b}", _digits, _digits),
    st.builds(lambda a: f"http://arxiv.org/abs/hep-th/{a}", _digits),
    _junk,
)
_author_values = st.one_of(
    _junk,
    st.builds(lambda x: f"[{x}]", _junk),
    st.lists(_junk, max_size=4).map(repr),
    st.sampled_from(["[{[]}]", "['a', ['b']]", "[" + "-" * 3000 + "1]", "[" * 500, "['x', +]", "[1e999]", "[b'x']"]),
)
_label = st.sampled_from(
    ["", "**What's New**: ", "***Technical Details***: ", "*Performance Highlights*:", "**what’s new**:"]
)
_digest_line = st.one_of(
    st.builds(lambda d: f"## Daily Papers ({d})", st.from_regex(r"\d{4}-\d{2}-\d{2}", fullmatch=True)),
    st.builds(lambda t, u: f"### [{t}]({u})", _junk, _arxiv_url),
    st.builds(lambda t: f"### {t}", _junk),
    st.builds(lambda v: f"Vote: {v}", st.one_of(_digits, _junk)),
    st.builds(lambda v: f"Authors: {v}", _author_values),
    st.builds(lambda lab, t: f"- {lab}{t}", _label, _junk),
    st.builds(lambda t: f"  - (1) {t}", _junk),
    st.builds(lambda t: f"![]({t})", _junk),
    st.sampled_from(["", "<div>", "[Watch Video](x)", "*", "- ", "-", "###", "### []()"]),
    _junk,
)
_digest_like = st.lists(_digest_line, max_size=40).map("\n".join)
_paths = st.sampled_from(["2024/07/31.md", "x.md", "", "2023-11-20.md", "a/b\\2025\\01\\02.md"])


@settings(max_examples=200, deadline=None)
@given(text=st.one_of(st.text(), _digest_like), path=_paths)
@example(text="### [T](https://arxiv.org/abs/2401.00001)\nAuthors: [{[]}]\n- 불릿", path="x.md")
@example(text="### [T](https://arxiv.org/abs/2401.00001)\nAuthors: [" + "-" * 100_000 + "1]\n- b", path="x.md")
@example(text="\ufeff## Daily Papers (2024-01-01)\r\n### [T](https://arxiv.org/abs/2401.00001)\r\n- b", path="x.md")
def test_parse_digest_never_raises_and_is_well_typed(text: str, path: str) -> None:
    papers, problems = parse_digest(text, path)
    assert_well_typed(papers, problems, path)


# ---------------------------------------------------------------- 2. mutated real digests


@dataclass(frozen=True)
class Digest:
    """A real digest split at paper headings: the lines before the first one, then one block per heading."""

    label: str
    preamble: tuple[str, ...]
    blocks: tuple[tuple[str, ...], ...]
    expected: tuple[Paper | None, ...]  # what each block parses to on its own


@cache
def load_digest(label: str) -> Digest:
    lines = (REAL_CORPUS / label).read_text(encoding="utf-8").splitlines()
    starts = [i for i, line in enumerate(lines) if _HEADING.match(line)]
    preamble = tuple(lines[: starts[0]])
    blocks = tuple(tuple(lines[a:b]) for a, b in zip(starts, [*starts[1:], len(lines)], strict=True))
    expected = []
    for block in blocks:
        papers, _ = parse_digest("\n".join(block), label)
        assert len(papers) <= 1
        expected.append(papers[0] if papers else None)
    return Digest(label, preamble, blocks, tuple(expected))


_garbage_line = st.text(alphabet=st.characters(blacklist_categories=("Cs", "Cc", "Zl", "Zp")), max_size=80).filter(
    lambda s: "Daily Papers" not in s
)
_garbage = st.lists(_garbage_line, min_size=1, max_size=5)


@st.composite
def mutations(draw: st.DrawFn, digest: Digest) -> tuple[bytes, set[int]]:
    """A mutated copy of `digest` as file bytes, and the blocks the mutation touched."""
    count = len(digest.blocks)
    indices = st.integers(0, count - 1)
    damaged = draw(st.sets(indices, max_size=max(1, count // 3)))
    gaps = draw(st.dictionaries(indices, st.tuples(st.booleans(), _garbage), max_size=max(1, count // 3)))
    doubled_headings = draw(st.sets(indices, max_size=3))
    doubled_blocks = draw(st.sets(indices, max_size=2))
    touched: set[int] = set()
    out: list[str] = list(digest.preamble) + draw(st.lists(_garbage_line, max_size=3))
    for i, block in enumerate(digest.blocks):
        lines = list(block)
        if i in damaged:
            touched.add(i)
            drop = draw(st.sets(st.integers(0, len(lines) - 1), max_size=max(1, len(lines) // 2)))
            if 0 in drop and i > 0:  # without its heading, this block's lines join the paper above
                touched.add(i - 1)
            lines = [line for j, line in enumerate(lines) if j not in drop]
            at = draw(st.integers(min(1, len(lines)), len(lines)))
            lines[at:at] = draw(st.lists(_garbage_line, max_size=4))
        if i in doubled_headings:
            lines.insert(0, block[0])
        if i in doubled_blocks:
            lines = lines + list(block)
        out.extend(lines)
        if i in gaps:
            fenced, garbage = gaps[i]
            if fenced:  # a heading with no link ends the paper above and hides the garbage below it
                garbage = [f"### note {garbage[0]}", *garbage[1:]]
            else:
                touched.add(i)
            out.extend(garbage)
        if i in doubled_headings:
            out.extend(line for line in digest.preamble if "Daily Papers" in line)  # a repeated date heading
    if draw(st.booleans()):
        out = [line + draw(st.sampled_from([" ", "\t", "  \t"])) for line in out]
    endings = draw(st.sampled_from(["\n", "\r\n", "\r", "mixed"]))
    if endings == "mixed":
        rng: random.Random = draw(st.randoms(use_true_random=False))
        text = "".join(line + rng.choice(["\n", "\r\n", "\r"]) for line in out)
    else:
        text = endings.join(out) + draw(st.sampled_from(["", endings]))
    data = text.encode("utf-8")
    if draw(st.booleans()):
        data = b"\xef\xbb\xbf" + data
    return data, touched


@needs_real_corpus
def test_blocks_model_the_whole_file() -> None:
    """Sanity check of the test's own model: a file parses to the papers of its blocks, in order."""
    for label in REAL_FILES:
        digest = load_digest(label)
        papers, _ = parse_digest((REAL_CORPUS / label).read_text(encoding="utf-8"), label)
        expected = [p for p in digest.expected if p is not None]
        assert len(expected) >= 3, label
        assert [(p.arxiv_id, p.bullets) for p in papers] == [(p.arxiv_id, p.bullets) for p in expected]


def _same_paper(found: Paper, wanted: Paper) -> bool:
    return (found.arxiv_id, found.title, found.votes, found.authors, found.bullets, found.dates) == (
        wanted.arxiv_id,
        wanted.title,
        wanted.votes,
        wanted.authors,
        wanted.bullets,
        wanted.dates,
    )


@needs_real_corpus
@pytest.mark.parametrize("label", REAL_FILES)
@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(data=st.data())
def test_untouched_papers_survive_mutations(label: str, data: st.DataObject) -> None:
    digest = load_digest(label)
    raw, touched = data.draw(mutations(digest), label="mutation")
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "digest.md"
        path.write_bytes(raw)
        papers, problems, skipped = read_digest(path, label)
    assert_well_typed(papers, problems, label)
    for i, wanted in enumerate(digest.expected):
        if wanted is None or i in touched:
            continue
        matches = [p for p in papers if p.arxiv_id == wanted.arxiv_id]
        assert matches, f"{label}: paper {wanted.arxiv_id} (block {i}, untouched) was lost"
        assert any(_same_paper(p, wanted) for p in matches), f"{label}: paper {wanted.arxiv_id} changed"
    if any(p is not None and i not in touched for i, p in enumerate(digest.expected)):
        assert skipped is None
