"""Plain-text rendering of search results for the terminal and for LLM tool output."""

from __future__ import annotations

import textwrap

from retrieval.models import PaperHit, SearchResponse


def _dates(hit: PaperHit) -> str:
    return ", ".join(hit.paper.dates) or "-"


def render_text(response: SearchResponse, width: int = 100) -> str:
    """A readable table: rank, title, date, votes, link and the cited bullets."""
    if not response.results:
        return f"no papers found for {response.query!r} ({response.mode})"
    lines = [
        f"{response.total} papers for {response.query!r} ({response.mode}, {response.took_ms:.0f} ms); "
        f"showing {response.offset + 1}-{response.offset + len(response.results)}"
    ]
    for rank, hit in enumerate(response.results, start=response.offset + 1):
        votes = "-" if hit.paper.votes is None else str(hit.paper.votes)
        lines.append("")
        lines.append(f"{rank:>3}. {hit.paper.title}")
        lines.append(f"     {hit.paper.url}  date {_dates(hit)}  votes {votes}  score {hit.score:.4f}")
        if hit.warning:
            lines.append(f"     ! {hit.warning}")
        for ev in hit.evidence:
            label = f"[{ev.position}{' ' + ev.section if ev.section else ''}] "
            wrapped = textwrap.wrap(label + ev.text, width=width - 7) or [label]
            lines.append("     - " + wrapped[0])
            lines.extend("       " + rest for rest in wrapped[1:])
    return "\n".join(lines)


def render_citations(response: SearchResponse) -> str:
    """Numbered citations for an assistant: [n] title (url) followed by the quoted bullets."""
    if not response.results:
        return f"No papers found for {response.query!r}."
    out: list[str] = []
    number = 0
    for hit in response.results:
        out.append(f"{hit.paper.title} ({hit.paper.url}; {_dates(hit)}; arXiv {hit.paper.id})")
        for ev in hit.evidence:
            number += 1
            out.append(f"  [{number}] {ev.text}")
        if hit.warning:
            out.append(f"  note: {hit.warning}")
    return "\n".join(out)
