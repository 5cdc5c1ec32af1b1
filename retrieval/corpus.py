"""Parse Daily Papers digests of every format era into `Paper` and `Bullet` records.

A digest is a markdown file with a `## Daily Papers (YYYY-MM-DD)` heading and, per paper,
`### [English title](https://arxiv.org/abs/ID)` followed by optional image, `Vote: N` and
`Authors: ...` lines and 3-10 Korean bullets. Three eras exist:

* plain `- ` bullets with no vote or author lines (2023-11 .. early 2024);
* image, `Vote: N`, `Authors: A, B` then plain bullets (2024);
* bullets labelled `**What's New**:` / `***Technical Details***:` ... and authors written as a
  Python list `['A', 'B']` (mid-2024 onward).

Bad input never stops the rest: an unreadable file is skipped, a malformed paper is skipped, and
each is reported as a `ParseProblem` naming the file and line.
"""

from __future__ import annotations

import ast
import hashlib
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from retrieval.errors import CorpusError

SECTIONS = ("what's new", "technical details", "performance highlights")

_DATE_HEADING = re.compile(r"^##\s+Daily Papers\s*\((\d{4}-\d{2}-\d{2})\)")
_PAPER_HEADING = re.compile(r"^###\s+(.*)$")
_LINKED_TITLE = re.compile(r"^\[(?P<title>.+)\]\((?P<url>[^()\s]+)\)\s*$")
_ARXIV_ID = re.compile(
    r"(?:arxiv\.org/(?:abs|pdf)/|huggingface\.co/papers/)"
    r"(?P<id>\d{4}\.\d{4,5}|[a-z\-]+(?:\.[A-Z]{2})?/\d{7})(?:v\d+)?(?:\.pdf)?$"
)
_VOTE = re.compile(r"^Vote:\s*(?P<value>\S*)\s*$")
_AUTHORS = re.compile(r"^Authors:\s*(?P<value>.*)$")
_BULLET = re.compile(r"^[-*]\s+(?P<text>.*)$")
_CONTINUATION = re.compile(r"^(\s+[-*]\s+|\s*\d+[.)]\s+|\s*\(\d+\)\s+)")
_SUB_ITEM_MARK = re.compile(r"^[-*]\s+")
_MEDIA = re.compile(r"^(!\[[^\]]*\]\(|<div>|<video|\[Watch Video\])")
_LABEL = re.compile(
    r"^\*{0,3}\s*(?P<label>what['’]s\s+new|technical\s+details|performance\s+highlights)"
    r"\s*\*{0,3}\s*:\s*\*{0,3}\s*",
    re.IGNORECASE,
)
_EMPHASIS = re.compile(r"(\*{1,3}|_{2})(?=\S)(.+?)(?<=\S)\1")
_PATH_DATE = re.compile(r"(\d{4})[/\\-](\d{2})[/\\-](\d{2})(?:\.md)?$")


@dataclass(frozen=True)
class Bullet:
    """One summary bullet: its place in the paper, its section label and clean text."""

    position: int
    section: str | None
    text: str

    @property
    def text_hash(self) -> str:
        return text_hash(self.text)


@dataclass
class Paper:
    """One paper, merged over every day it appeared on."""

    arxiv_id: str
    title: str
    url: str
    dates: list[str]
    votes: int | None
    authors: list[str]
    bullets: list[Bullet]
    sources: list[str] = field(default_factory=list)
    positions: dict[str, int] = field(default_factory=dict)  # date -> 0-based place in that day's digest


@dataclass(frozen=True)
class ParseProblem:
    """Something in the input that was skipped, with where it is and why."""

    path: str
    line: int | None
    reason: str

    def __str__(self) -> str:
        where = self.path if self.line is None else f"{self.path}:{self.line}"
        return f"{where}: {self.reason}"


@dataclass
class Corpus:
    """Everything read from a corpus directory."""

    papers: list[Paper]
    files: list[str]
    files_skipped: list[ParseProblem]
    problems: list[ParseProblem]

    @property
    def bullet_count(self) -> int:
        return sum(len(p.bullets) for p in self.papers)


def text_hash(text: str) -> str:
    """Stable content hash of a bullet text (the embedding cache key)."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:32]


def clean_bullet(raw: str) -> tuple[str | None, str]:
    """Split a raw bullet into its section label and its text without markdown emphasis."""
    section = None
    match = _LABEL.match(raw)
    if match:
        section = re.sub(r"\s+", " ", match.group("label").lower()).replace("’", "'")
        raw = raw[match.end() :]
    text = _EMPHASIS.sub(r"\2", raw)
    text = re.sub(r"\s+", " ", text).strip()
    return section, text


def parse_authors(value: str) -> list[str]:
    """Authors as `A, B` or as a Python list literal `['A', 'B']`."""
    value = value.strip()
    names: list[str]
    if value.startswith("["):
        try:
            parsed = ast.literal_eval(value)
        except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
            # malformed, unhashable set members ("[{[]}]"), or nested too deep for the parser
            parsed = None
        if isinstance(parsed, list | tuple):
            names = [str(item) for item in parsed]
        else:
            names = value.strip("[]").replace("'", "").replace('"', "").split(",")
    else:
        names = value.split(",")
    cleaned = [name.strip() for name in names]
    return [name for name in cleaned if name and name != "+"]


def arxiv_id_from_url(url: str) -> str | None:
    match = _ARXIV_ID.search(url.strip())
    return match.group("id") if match else None


def date_from_path(path: str) -> str | None:
    match = _PATH_DATE.search(path)
    return "-".join(match.groups()) if match else None


@dataclass
class _Draft:
    """A paper while its lines are being read."""

    arxiv_id: str
    title: str
    url: str
    line: int
    votes: int | None = None
    authors: list[str] = field(default_factory=list)
    raw_bullets: list[str] = field(default_factory=list)


def parse_digest(text: str, path: str) -> tuple[list[Paper], list[ParseProblem]]:
    """Parse one digest's text. Never raises on malformed content: problems are returned."""
    problems: list[ParseProblem] = []
    papers: list[Paper] = []
    date = date_from_path(path)
    draft: _Draft | None = None
    skipping_heading = False

    def finish(current: _Draft | None) -> None:
        if current is None:
            return
        bullets: list[Bullet] = []
        for raw in current.raw_bullets:
            section, clean = clean_bullet(raw)
            if clean:
                bullets.append(Bullet(position=len(bullets), section=section, text=clean))
        if not bullets:
            problems.append(ParseProblem(path, current.line, f"paper {current.arxiv_id} has no bullets; skipped"))
            return
        papers.append(
            Paper(
                arxiv_id=current.arxiv_id,
                title=current.title,
                url=current.url,
                dates=[date] if date else [],
                votes=current.votes,
                authors=current.authors,
                bullets=bullets,
                sources=[path],
                positions={date: len(papers)} if date else {},
            )
        )

    for number, line in enumerate(text.splitlines(), start=1):
        stripped = line.strip()
        date_match = _DATE_HEADING.match(stripped)
        if date_match:
            date = date_match.group(1)
            continue
        heading = _PAPER_HEADING.match(stripped)
        if heading:
            finish(draft)
            draft = None
            skipping_heading = False
            linked = _LINKED_TITLE.match(heading.group(1).strip())
            arxiv_id = arxiv_id_from_url(linked.group("url")) if linked else None
            if linked is None or arxiv_id is None:
                problems.append(ParseProblem(path, number, "paper heading without an arXiv link; paper skipped"))
                skipping_heading = True
                continue
            title = re.sub(r"\s+", " ", linked.group("title")).strip()
            draft = _Draft(arxiv_id=arxiv_id, title=title, url=f"https://arxiv.org/abs/{arxiv_id}", line=number)
            continue
        if draft is None or not stripped:
            continue
        if skipping_heading:
            continue
        vote = _VOTE.match(stripped)
        if vote and not draft.raw_bullets:
            draft.votes = int(vote.group("value")) if vote.group("value").isdigit() else None
            continue
        authors = _AUTHORS.match(stripped)
        if authors and not draft.raw_bullets:
            draft.authors = parse_authors(authors.group("value"))
            continue
        if _MEDIA.match(stripped):
            continue
        if _CONTINUATION.match(line) and draft.raw_bullets:
            draft.raw_bullets[-1] += " " + _SUB_ITEM_MARK.sub("", stripped)
            continue
        bullet = _BULLET.match(line)
        if bullet:
            draft.raw_bullets.append(bullet.group("text"))
        elif draft.raw_bullets:
            draft.raw_bullets[-1] += " " + stripped
        else:
            draft.raw_bullets.append(stripped)
    finish(draft)
    return papers, problems


def merge_papers(papers: Iterable[Paper]) -> list[Paper]:
    """Merge repeated appearances of a paper into one record.

    The bullets of the latest appearance are kept (a later summary replaces an earlier one),
    dates and sources are the union, votes the highest seen; `positions` keeps the paper's place
    in each day's digest (its first place when a digest lists it twice).
    """
    merged: dict[str, Paper] = {}
    for paper in sorted(papers, key=lambda p: (p.dates[0] if p.dates else "", p.sources)):
        existing = merged.get(paper.arxiv_id)
        if existing is None:
            merged[paper.arxiv_id] = Paper(
                arxiv_id=paper.arxiv_id,
                title=paper.title,
                url=paper.url,
                dates=list(paper.dates),
                votes=paper.votes,
                authors=list(paper.authors),
                bullets=list(paper.bullets),
                sources=list(paper.sources),
                positions=dict(paper.positions),
            )
            continue
        for date, position in paper.positions.items():
            existing.positions[date] = min(position, existing.positions.get(date, position))
        existing.dates = sorted(set(existing.dates) | set(paper.dates))
        existing.sources = existing.sources + [s for s in paper.sources if s not in existing.sources]
        if paper.votes is not None and (existing.votes is None or paper.votes > existing.votes):
            existing.votes = paper.votes
        existing.authors = paper.authors or existing.authors
        existing.title = paper.title
        existing.bullets = list(paper.bullets)
    return sorted(merged.values(), key=lambda p: ((p.dates[0] if p.dates else ""), p.arxiv_id))


def find_digests(root: Path) -> list[Path]:
    """Every `*.md` digest below `root` (or `root` itself when it is a file), README files excluded."""
    if root.is_file():
        return [root]
    if not root.is_dir():
        raise CorpusError(f"corpus path {root} does not exist")
    return sorted(p for p in root.rglob("*.md") if p.is_file() and p.name.lower() != "readme.md")


def read_digest(path: Path, label: str) -> tuple[list[Paper], list[ParseProblem], ParseProblem | None]:
    """Read and parse one file; the third value is set when the whole file was skipped."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        return [], [], ParseProblem(label, None, f"cannot read file: {exc.strerror or exc}")
    if not data.strip():
        return [], [], ParseProblem(label, None, "empty file")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        return [], [], ParseProblem(label, line, f"invalid UTF-8 (byte offset {exc.start}); file skipped")
    papers, problems = parse_digest(text.lstrip("\ufeff"), label)
    if not papers:
        return [], problems, ParseProblem(label, None, "no paper found in file")
    return papers, problems, None


def load_corpus(root: Path | str) -> Corpus:
    """Parse every digest under `root`. Raises `CorpusError` only when no paper is found at all."""
    root = Path(root)
    paths = find_digests(root)
    base = root if root.is_dir() else root.parent
    all_papers: list[Paper] = []
    skipped: list[ParseProblem] = []
    problems: list[ParseProblem] = []
    for path in paths:
        label = path.relative_to(base).as_posix()
        papers, file_problems, skip = read_digest(path, label)
        all_papers.extend(papers)
        problems.extend(file_problems)
        if skip is not None:
            skipped.append(skip)
    merged = merge_papers(all_papers)
    if not merged:
        reasons = "; ".join(str(p) for p in skipped[:5]) or "no *.md digest files"
        raise CorpusError(f"no paper found under {root} ({len(paths)} files read: {reasons})")
    return Corpus(
        papers=merged, files=[p.relative_to(base).as_posix() for p in paths], files_skipped=skipped, problems=problems
    )
