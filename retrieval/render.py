"""Plain-text rendering of search results for the terminal and for LLM tool output."""

from __future__ import annotations

import textwrap

from retrieval.models import PaperDetail, PaperHit, SearchResponse


def _dates(hit: PaperHit) -> str:
    return ", ".join(hit.paper.dates) or "-"


def relevance_label(hit: PaperHit) -> str:
    """`relevance 87%`, with `(weak match)` below the threshold; the raw score when there is no relevance."""
    if hit.relevance is None:
        return f"score {hit.score:.4f}"
    return f"relevance {round(hit.relevance * 100)}%" + (" (weak match)" if hit.weak else "")


def weak_line(response: SearchResponse) -> str | None:
    """A warning when every hit shown is weak: on the first page, nothing in the index answers well."""
    if not response.results or not response.weak:
        return None
    if response.offset == 0:
        return (
            f"No paper in the index answers {response.query!r} well: every result below is a weak match "
            "(low relevance); rephrase the query or treat these as unrelated."
        )
    return "Every result on this page is a weak match (low relevance)."


def render_text(response: SearchResponse, width: int = 100) -> str:
    """A readable table: rank, title, date, votes, link and the cited bullets."""
    if not response.results:
        return f"no papers found for {response.query!r} ({response.mode})"
    lines = [
        f"{response.total} papers for {response.query!r} ({response.mode}, {response.took_ms:.0f} ms); "
        f"showing {response.offset + 1}-{response.offset + len(response.results)}"
    ]
    notice = weak_line(response)
    if notice:
        lines.append(f"! {notice}")
    for rank, hit in enumerate(response.results, start=response.offset + 1):
        votes = "-" if hit.paper.votes is None else str(hit.paper.votes)
        lines.append("")
        lines.append(f"{rank:>3}. {hit.paper.title}")
        lines.append(f"     {hit.paper.url}  date {_dates(hit)}  votes {votes}  {relevance_label(hit)}")
        if hit.warning:
            lines.append(f"     ! {hit.warning}")
        for ev in hit.evidence:
            label = f"[{ev.position}{' ' + ev.section if ev.section else ''}] "
            wrapped = textwrap.wrap(label + ev.text, width=width - 7) or [label]
            lines.append("     - " + wrapped[0])
            lines.extend("       " + rest for rest in wrapped[1:])
    return "\n".join(lines)


def citation_numbers(response: SearchResponse) -> list[list[int]]:
    """The citation number of each cited bullet: 1, 2, 3... across the whole page, in order."""
    numbers: list[list[int]] = []
    next_number = 1
    for hit in response.results:
        numbers.append(list(range(next_number, next_number + len(hit.evidence))))
        next_number += len(hit.evidence)
    return numbers


def _section(section: str | None) -> str:
    return f"({section}) " if section else ""


def render_citations(response: SearchResponse) -> str:
    """Numbered citations for an assistant: each paper, then its quoted bullets as [n]."""
    if not response.results:
        return f"No papers found for {response.query!r}."
    notice = weak_line(response)
    out = [notice] if notice else []
    out.append(
        f"{response.total} papers match {response.query!r}; showing {len(response.results)}. "
        "Cite a bullet by its number, e.g. [1]."
    )
    for rank, (hit, numbers) in enumerate(zip(response.results, citation_numbers(response), strict=True), start=1):
        votes = "" if hit.paper.votes is None else f"; votes {hit.paper.votes}"
        out.append("")
        out.append(f"{rank}. {hit.paper.title}")
        out.append(f"   arXiv {hit.paper.id}, {hit.paper.url}; {_dates(hit)}{votes}; {relevance_label(hit)}")
        if hit.warning:
            out.append(f"   note: {hit.warning}")
        for number, ev in zip(numbers, hit.evidence, strict=True):
            out.append(f"   [{number}] {_section(ev.section)}{ev.text}")
    return "\n".join(out)


def render_paper(detail: PaperDetail) -> str:
    """A whole summary as plain text: title, link, dates, votes, authors, every bullet by position."""
    info = detail.paper
    out = [f"{info.title} (arXiv {info.id})", info.url, f"dates: {', '.join(info.dates) or '-'}"]
    if info.votes is not None:
        out.append(f"votes: {info.votes}")
    if info.authors:
        out.append(f"authors: {', '.join(info.authors)}")
    if detail.warning:
        out.append(f"note: {detail.warning}")
    out.append("")
    out.extend(f"#{ev.position} {_section(ev.section)}{ev.text}" for ev in detail.bullets)
    return "\n".join(out)
