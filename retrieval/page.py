"""The search page and the day pages: server-rendered HTML (no JavaScript framework, no build step), XSS-safe.

The search page parses its query string with the same `parse_search_request` as every other
front end; without a query it offers the newest digest day. A day page (`/day/YYYY-MM-DD`) lists
that day's digest in its own order with every bullet, and links to the days before and after.
"""

from __future__ import annotations

import calendar
import functools
import html
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from string import Template
from urllib.parse import quote, urlencode

from fastapi.responses import HTMLResponse

from retrieval.config import Settings
from retrieval.days import day_hits, days_of, parse_day
from retrieval.errors import DayNotFoundError
from retrieval.models import PaperHit, SearchResponse
from retrieval.requests import InvalidRequest, parse_search_request
from retrieval.search import Searcher

_PACKAGE = resources.files("retrieval")


@dataclass(frozen=True)
class PageState:
    """What the page shows: the form values, and a response or an error message."""

    params: dict[str, str]
    response: SearchResponse | None = None
    error: str | None = None
    latest_day: str | None = None


MODE_LABELS = {"hybrid": "하이브리드 (hybrid)", "dense": "의미 (dense)", "lexical": "키워드 (lexical)"}
HINT = '<p class="hint">한국어나 영어로 논문 내용을 설명해 보세요. 결과마다 근거가 된 요약 문장을 보여 줍니다.</p>'
PAGE_FIELDS = ("q", "mode", "date_from", "date_to", "min_votes", "author", "k", "offset")


def render_page(
    query_params: dict[str, str], searcher: Searcher | None, load_error: str | None, settings: Settings
) -> HTMLResponse:
    state = page_state(query_params, searcher, load_error, settings)
    title = f"{state.params['q']} – 논문 검색" if state.params.get("q") else "Daily Papers 논문 검색"
    body = page_template().substitute(
        title=html.escape(title), results=render_results(state), **render_form(state.params)
    )
    status = 200 if state.error is None else (503 if searcher is None else 422)
    return HTMLResponse(body, status_code=status)


def page_state(
    query_params: dict[str, str], searcher: Searcher | None, load_error: str | None, settings: Settings
) -> PageState:
    params = {k: v for k, v in query_params.items() if k in PAGE_FIELDS and v.strip()}
    shown = {"mode": "hybrid", **params}
    if "q" not in params:
        return PageState(shown, latest_day=days_of(searcher).latest if searcher is not None else None)
    if searcher is None:
        return PageState(shown, error=load_error or "the index is not loaded yet")
    try:
        request = parse_search_request(params, settings.request_limits())
    except InvalidRequest as exc:
        return PageState(shown, error=str(exc))
    response = searcher.search(
        request.q,
        mode=request.mode,
        limit=request.k,
        offset=request.offset,
        filters=request.filters(),
        explain=True,
        facets=("months",),
    )
    return PageState(shown, response=response)


def _attr(value: str | None) -> str:
    return html.escape(value or "", quote=True)


def render_form(params: dict[str, str]) -> dict[str, str]:
    """Template values of the search form, escaped."""
    mode = params.get("mode", "hybrid")
    options = "".join(
        f'<option value="{m}"{" selected" if m == mode else ""}>{html.escape(label)}</option>'
        for m, label in MODE_LABELS.items()
    )
    values = {f: _attr(params.get(f)) for f in ("q", "date_from", "date_to", "min_votes", "author")}
    has_filters = any(params.get(f) for f in ("date_from", "date_to", "min_votes", "author"))
    return {**values, "mode_options": options, "filters_open": " open" if has_filters else ""}


def render_results(state: PageState) -> str:
    if state.error is not None:
        return f'<p class="error" role="alert">{html.escape(state.error)}</p>'
    response = state.response
    if response is None:
        return HINT + latest_day_link(state.latest_day)
    if not response.results:
        return f'<p class="summary">“{html.escape(response.query)}”에 맞는 논문이 없습니다.</p>'
    first, last = response.offset + 1, response.offset + len(response.results)
    summary = (
        f'<p class="summary">논문 {response.total}편 중 {first}–{last} '
        f'<span class="muted">({html.escape(response.mode)}, {response.took_ms:.0f} ms)</span></p>'
    )
    items = "".join(render_hit(hit, rank) for rank, hit in enumerate(response.results, start=first))
    notice = weak_notice(response)
    chart = render_months(state.params, (response.facets or {}).get("months", {}))
    feed = render_feed_link(state.params)
    return (
        f'{summary}{notice}{chart}{feed}<ol class="results" start="{first}">{items}</ol>'
        f"{render_pager(state.params, response)}"
    )


FEED_FIELDS = ("q", "mode", "date_from", "date_to", "min_votes", "author")


def render_feed_link(params: dict[str, str]) -> str:
    """A link to the Atom feed of this search (same query and filters)."""
    href = _attr("/feed.atom?" + urlencode({k: v for k, v in params.items() if k in FEED_FIELDS}))
    return (
        f'<p class="feed"><a rel="alternate" type="application/atom+xml" href="{href}">이 검색 구독하기 (Atom)</a></p>'
    )


def month_range(month: str) -> tuple[str, str]:
    """First and last day of `YYYY-MM`."""
    year, number = int(month[:4]), int(month[5:7])
    last = calendar.monthrange(year, number)[1]
    return f"{month}-01", f"{month}-{last:02d}"


def every_month(first: str, last: str) -> list[str]:
    """`YYYY-MM` from `first` to `last`, gaps included."""
    year, month = int(first[:4]), int(first[5:7])
    out: list[str] = []
    while f"{year:04d}-{month:02d}" <= last:
        out.append(f"{year:04d}-{month:02d}")
        year, month = (year + 1, 1) if month == 12 else (year, month + 1)
    return out


def render_months(params: dict[str, str], counts: dict[str, int]) -> str:
    """When did it rise: an SVG bar per month of the papers that match well; a bar links to its month."""
    if not counts:
        return ""
    months = every_month(min(counts), max(counts))
    peak = max(counts.values())
    width, height, gap = 24, 60, 6
    bars = [render_bar(params, month, counts.get(month, 0), peak, i * (width + gap), width, height) for i, month in
            enumerate(months)]  # fmt: skip
    size = len(months) * (width + gap)
    caption = f"잘 맞는 논문 {sum(counts.values())}편의 월별 분포 (막대를 누르면 그 달로 좁힙니다)"
    return (
        f'<figure class="months"><svg role="img" viewBox="0 0 {size} {height + 30}" width="{size}" '
        f'height="{height + 30}" aria-label="잘 맞는 논문의 월별 수">{"".join(bars)}</svg>'
        f"<figcaption>{caption}</figcaption></figure>"
    )


def render_bar(params: dict[str, str], month: str, n: int, peak: int, x: int, width: int, height: int) -> str:
    """One month's bar: its count above it, its label below, a link that filters to the month."""
    h = round(height * n / peak) if n else 0
    top = height + 12 - h
    date_from, date_to = month_range(month)
    link = _attr(page_link({**params, "date_from": date_from, "date_to": date_to}, 0))
    label = f"{month}: {n}편"
    middle = x + width / 2
    count = f'<text class="count" x="{middle}" y="{top - 2}" text-anchor="middle">{n}</text>' if n else ""
    return (
        f'<a href="{link}" class="bar" data-month="{month}" data-count="{n}" aria-label="{_attr(label)}">'
        f'<title>{html.escape(label)}</title><rect x="{x}" y="{top}" width="{width}" height="{max(h, 1)}" rx="2">'
        f'</rect>{count}<text class="month" x="{middle}" y="{height + 26}" text-anchor="middle">'
        f"{month[2:4]}.{month[5:]}</text></a>"
    )


def weak_notice(response: SearchResponse) -> str:
    """A notice above the results when every hit on the page is a weak match (else empty)."""
    if not response.results or not response.weak:
        return ""
    if response.offset == 0:
        text = (
            f"“{html.escape(response.query)}”에 잘 맞는 논문을 찾지 못했습니다. "
            "아래 결과는 모두 약한 일치이니 검색어를 바꿔 보세요."
        )
    else:
        text = "이 페이지의 결과는 모두 약한 일치입니다."
    return f'<p class="notice weak-notice" role="status">{text}</p>'


def relevance_tag(hit: PaperHit) -> str:
    """Relevance as a bar and a percentage, plus the weak-match mark; empty without a relevance."""
    if hit.relevance is None:
        return ""
    percent = round(hit.relevance * 100)
    bar = f'<meter min="0" max="100" value="{percent}">{percent}%</meter>'
    weak = '<span class="weak-mark">약한 일치</span>' if hit.weak else ""
    return f'<span class="relevance" title="관련도 (0–100%)">{bar} 관련도 {percent}%</span>{weak}'


def latest_day_link(latest: str | None) -> str:
    if latest is None:
        return ""
    href = _attr(day_href(latest))
    return f'<p class="latest">최신 다이제스트: <a href="{href}">{html.escape(latest)}</a></p>'


def day_href(date: str) -> str:
    return f"/day/{quote(date, safe='')}"


def render_day_page(date: str, searcher: Searcher | None, load_error: str | None) -> HTMLResponse:
    """The page of one day's digest; an unknown day is a 404 page naming the nearest days, a bad date a 422."""
    title = f"Daily Papers ({date})" if date else "Daily Papers"
    status, content = 200, ""
    if searcher is None:
        status, content = 503, _error(load_error or "the index is not loaded yet")
    else:
        try:
            date = parse_day(date)
            hits = day_hits(searcher, date)
        except InvalidRequest as exc:
            status, content = 422, _error(str(exc))
        except DayNotFoundError as exc:
            status, content = 404, _error(str(exc)) + day_nav(*days_of(searcher).neighbours(date))
        else:
            content = render_day(date, hits, *days_of(searcher).neighbours(date))
    body = page_template().substitute(title=html.escape(title), results=content, **render_form({}))
    return HTMLResponse(body, status_code=status)


def _error(message: str) -> str:
    return f'<p class="error" role="alert">{html.escape(message)}</p>'


def render_day(date: str, hits: list[PaperHit], before: str | None, after: str | None) -> str:
    heading = f'<h2 class="day">Daily Papers ({html.escape(date)}) <span class="muted">논문 {len(hits)}편</span></h2>'
    items = "".join(render_hit(hit, rank, show_score=False) for rank, hit in enumerate(hits, start=1))
    nav = day_nav(before, after)
    return f'{heading}{nav}<ol class="results day">{items}</ol>{nav}'


def day_nav(before: str | None, after: str | None) -> str:
    """Links to the nearest earlier (이전 날) and later (다음 날) digest days."""
    links: list[str] = []
    if before is not None:
        links.append(f'<a class="prev" rel="prev" href="{_attr(day_href(before))}">← 이전 날 {html.escape(before)}</a>')
    if after is not None:
        links.append(f'<a class="next" rel="next" href="{_attr(day_href(after))}">다음 날 {html.escape(after)} →</a>')
    return f'<nav class="pager days">{"".join(links)}</nav>' if links else ""


def render_hit(hit: PaperHit, rank: int, show_score: bool = True) -> str:
    paper = hit.paper
    votes = "" if paper.votes is None else f'<span class="votes">▲ {paper.votes}</span>'
    dates = html.escape(", ".join(paper.dates))
    warning = f'<p class="warning">⚠ {html.escape(hit.warning)}</p>' if hit.warning else ""
    bullets = "".join(
        f'<li class="evidence">{section_tag(ev.section)}{highlight(ev.text, ev.highlights)}</li>' for ev in hit.evidence
    )
    href = _attr(safe_url(paper.url))
    link = f'<a href="{href}" rel="noopener noreferrer" target="_blank">{html.escape(paper.title)}</a>'
    meta = (
        f'<span class="arxiv">arXiv {html.escape(paper.id)}</span><span class="date">{dates}</span>{votes}'
        f"{relevance_tag(hit) if show_score else ''}"
    )
    weak = ' data-weak="true"' if hit.weak else ""
    return (
        f'<li class="hit" data-id="{_attr(paper.id)}" data-rank="{rank}"{weak}><h2>{link}</h2>'
        f'<p class="meta">{meta}</p>{warning}<ul class="bullets">{bullets}</ul>{render_explanation(hit)}</li>'
    )


LEG_LABELS = {
    "dense_best_bullet": "의미: 가장 가까운 요약 문장",
    "dense_centroid": "의미: 요약 전체",
    "dense_title": "의미: 제목",
    "lexical_summary": "키워드: 요약 (BM25)",
    "lexical_title": "키워드: 제목·저자 (BM25)",
    "exact_name": "논문 이름과 정확히 일치",
    "arxiv_id": "arXiv id로 지정",
    "reranker": "재순위 모델이 옮긴 만큼",
}


def _figure(value: float | None, digits: int = 3) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def render_explanation(hit: PaperHit) -> str:
    """The score breakdown as a <details> block: readable without JavaScript."""
    why = hit.explain
    if why is None:
        return ""
    rows = "".join(
        f'<tr data-leg="{_attr(leg.leg)}"><th scope="row">{html.escape(LEG_LABELS.get(leg.leg, leg.leg))}</th>'
        f"<td>{_figure(leg.raw)}</td><td>{_figure(leg.standardised, 2)}</td><td>{_figure(leg.weight, 2)}</td>"
        f"<td>{leg.contribution:+.2f}</td></tr>"
        for leg in why.legs
    )
    table = (
        '<table class="legs"><thead><tr><th scope="col">근거</th><th scope="col">원점수</th>'
        '<th scope="col">표준화</th><th scope="col">가중치</th><th scope="col">기여</th></tr></thead>'
        f'<tbody>{rows}</tbody><tfoot><tr><th scope="row">합계 (score)</th><td></td><td></td><td></td>'
        f"<td>{hit.score:+.2f}</td></tr></tfoot></table>"
    )
    terms = ", ".join(html.escape(f"{t.via} → {t.term}" if t.via else t.term) for t in why.terms)
    parts = [table]
    if terms:
        parts.append(f'<p class="terms">일치한 검색어: {terms}</p>')
    cited = {ev.position: ev.text for ev in hit.evidence}
    for kind, label in (("dense", "의미가 가장 가까운 문장"), ("lexical", "키워드가 가장 많이 맞은 문장")):
        position = why.bullets.get(kind)
        if position is not None:
            text = cited.get(position)
            quoted = f": {html.escape(text)}" if text else ""
            parts.append(f'<p class="carried" data-kind="{kind}">{label}: 요약 #{position + 1}{quoted}</p>')
    return f'<details class="why"><summary>왜 이 논문인가</summary>{"".join(parts)}</details>'


def section_tag(section: str | None) -> str:
    return f'<span class="section">{html.escape(section)}</span> ' if section else ""


def highlight(text: str, spans: list[tuple[int, int]]) -> str:
    """Escape `text` and wrap the [start, end) spans in <mark>."""
    out: list[str] = []
    cursor = 0
    for start, end in sorted(spans):
        start, end = max(start, cursor), min(end, len(text))
        if start >= end:
            continue
        out.append(html.escape(text[cursor:start]))
        out.append(f"<mark>{html.escape(text[start:end])}</mark>")
        cursor = end
    out.append(html.escape(text[cursor:]))
    return "".join(out)


def safe_url(url: str) -> str:
    """Only http(s) links are rendered as links; anything else (javascript:, data:) becomes '#'."""
    return url if url.lower().startswith(("https://", "http://")) else "#"


def render_pager(params: dict[str, str], response: SearchResponse) -> str:
    links: list[str] = []
    if response.offset > 0:
        prev_offset = max(response.offset - response.limit, 0)
        links.append(f'<a class="prev" rel="prev" href="{_attr(page_link(params, prev_offset))}">← 이전</a>')
    if response.offset + len(response.results) < response.total:
        next_offset = response.offset + response.limit
        links.append(f'<a class="next" rel="next" href="{_attr(page_link(params, next_offset))}">다음 →</a>')
    return f'<nav class="pager">{"".join(links)}</nav>' if links else ""


def page_link(params: dict[str, str], offset: int) -> str:
    query = {k: v for k, v in params.items() if k != "offset"}
    if offset:
        query["offset"] = str(offset)
    return "/?" + urlencode(query)


def static_dir() -> Path:
    """Folder of the page's static assets (served at /static without auth)."""
    return Path(str(_PACKAGE / "static"))


@functools.cache
def page_template() -> Template:
    return Template((_PACKAGE / "templates" / "search.html").read_text(encoding="utf-8"))
