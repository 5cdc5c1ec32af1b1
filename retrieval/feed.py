"""Follow a topic: an Atom feed of the papers that match a search well, newest digest first."""

from __future__ import annotations

import datetime as dt
import html

from feedgen.feed import FeedGenerator

from retrieval.models import PaperHit, SearchResponse

FEED_ENTRIES = 50


def _day(date: str) -> dt.datetime:
    return dt.datetime.fromisoformat(date).replace(tzinfo=dt.UTC)


def newest_first(hits: list[PaperHit]) -> list[PaperHit]:
    """The hits that match well (not weak), by their latest digest date, newest first."""
    strong = [hit for hit in hits if not hit.weak and hit.paper.dates]
    return sorted(strong, key=lambda hit: (max(hit.paper.dates), hit.paper.id), reverse=True)[:FEED_ENTRIES]


def atom_feed(response: SearchResponse, self_url: str, page_url: str) -> bytes:
    """Valid Atom for a search: one entry per well-matching paper, its id the paper's arXiv URL (stable
    across rebuilds), its date the paper's latest digest date, its content the cited bullets."""
    feed = FeedGenerator()
    feed.id(self_url)
    feed.title(f"Daily Papers: {response.query}")
    feed.subtitle(f"papers whose Korean summaries match {response.query!r} well, newest digest first")
    feed.link(href=self_url, rel="self")
    feed.link(href=page_url, rel="alternate")
    feed.language("ko")
    entries = newest_first(response.results)
    feed.updated(_day(max(entries[0].paper.dates)) if entries else dt.datetime(2000, 1, 1, tzinfo=dt.UTC))
    for hit in reversed(entries):  # feedgen prepends: add the oldest first
        paper = hit.paper
        entry = feed.add_entry()
        entry.id(paper.url)
        entry.title(paper.title)
        entry.link(href=paper.url)
        entry.published(_day(min(paper.dates)))
        entry.updated(_day(max(paper.dates)))
        for author in paper.authors[:10]:
            entry.author(name=author)
        bullets = "".join(f"<li>{html.escape(ev.text)}</li>" for ev in hit.evidence)
        relevance = f"{hit.relevance:.0%}" if hit.relevance is not None else "-"
        entry.content(f"<p>arXiv {html.escape(paper.id)} · relevance {relevance}</p><ul>{bullets}</ul>", type="html")
        entry.summary(" / ".join(ev.text for ev in hit.evidence[:2]))
    return feed.atom_str(pretty=True)
