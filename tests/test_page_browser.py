"""The search page in headless Chromium, over the sample indexed with the real e5 model."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from browser_support import NO_KOREAN_FONTS, draw_hangul, launch_chromium
from playwright.sync_api import Browser, Dialog, Page, Playwright, sync_playwright

from retrieval.api import create_app, serve_in_thread
from retrieval.config import Settings

pytestmark = [pytest.mark.browser, pytest.mark.slow]

LORA = "2106.09685"


@pytest.fixture(scope="module")
def base_url(e5_sample_index: Path) -> Iterator[str]:
    """A real uvicorn server on a free loopback port; the index is opened in the lifespan."""
    with serve_in_thread(create_app(Settings(index_dir=e5_sample_index))) as url:
        yield url


@pytest.fixture(scope="module")
def playwright() -> Iterator[Playwright]:
    with sync_playwright() as instance:
        yield instance


@pytest.fixture(scope="module")
def browser(playwright: Playwright) -> Iterator[Browser]:
    instance = launch_chromium(playwright)
    yield instance
    instance.close()


@pytest.fixture()
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context(locale="ko-KR", viewport={"width": 1100, "height": 1400})
    tab = context.new_page()
    dialogs: list[str] = []

    def on_dialog(dialog: Dialog) -> None:
        dialogs.append(dialog.message)
        dialog.dismiss()

    tab.on("dialog", on_dialog)
    yield tab
    context.close()
    assert dialogs == [], "a script ran from user input"


def search(page: Page, base_url: str, query: str) -> None:
    page.goto(base_url + "/")
    page.fill("#q", query)
    with page.expect_navigation():
        page.click("button[type=submit]")


def hit_ids(page: Page) -> list[str]:
    return [str(el.get_attribute("data-id")) for el in page.locator("li.hit").all()]


def assert_lora_cited(page: Page) -> None:
    assert LORA in hit_ids(page)
    lora = page.locator(f'li.hit[data-id="{LORA}"]')
    assert lora.locator("h2 a").get_attribute("href") == f"https://arxiv.org/abs/{LORA}"
    assert lora.locator("li.evidence").count() >= 1
    assert lora.locator("li.evidence mark").count() >= 1
    assert lora.locator("li.evidence mark").first.inner_text().strip()


def test_korean_query_finds_lora_with_cited_highlights(page: Page, base_url: str) -> None:
    search(page, base_url, "저랭크 행렬로 미세조정")
    assert_lora_cited(page)
    assert hit_ids(page).index(LORA) < 3
    assert page.input_value("#q") == "저랭크 행렬로 미세조정"


def test_english_query_finds_lora(page: Page, base_url: str) -> None:
    search(page, base_url, "low-rank adaptation for fine-tuning large language models")
    assert_lora_cited(page)
    assert hit_ids(page)[0] == LORA


def test_mode_filters_and_paging(page: Page, base_url: str) -> None:
    page.goto(base_url + "/")
    page.fill("#q", "언어 모델")
    page.click("details.filters summary")
    page.select_option("#mode", "dense")
    page.fill("#date_from", "2024-01-01")
    page.fill("#min_votes", "60")
    with page.expect_navigation():
        page.press("#q", "Enter")
    assert "mode=dense" in page.url and "min_votes=60" in page.url
    first = hit_ids(page)
    assert first and len(first) <= 10
    votes = [int(v.inner_text().strip("▲ ")) for v in page.locator("li.hit .votes").all()]
    assert len(votes) == len(first) and min(votes) >= 60

    page.goto(base_url + "/?q=%EC%96%B8%EC%96%B4+%EB%AA%A8%EB%8D%B8&k=5")
    page_one = hit_ids(page)
    assert len(page_one) == 5
    with page.expect_navigation():
        page.click("nav.pager a.next")
    page_two = hit_ids(page)
    assert page_two and not set(page_one) & set(page_two)
    with page.expect_navigation():
        page.click("nav.pager a.prev")
    assert hit_ids(page) == page_one


def test_user_input_is_never_executed(page: Page, base_url: str) -> None:
    attack = '"><img src=x onerror="alert(1)"><script>alert(2)</script>'
    search(page, base_url, attack)
    assert page.input_value("#q") == attack
    assert page.locator("#results img").count() == 0
    assert page.locator("#results script").count() == 0


# Korean text in several sizes and weights: title, subtitle, hint, filters; then a result summary and bullets.
KOREAN_TEXT = ("header h1", "header p", "p.hint", "details.filters", "p.summary", "li.evidence")


def test_hangul_is_drawn_with_real_glyphs(page: Page, base_url: str) -> None:
    """Fails on a machine whose Chromium has no Korean font (Hangul drawn as boxes): `make browser`."""
    page.goto(base_url + "/")
    drawings = {selector: draw_hangul(page, selector) for selector in KOREAN_TEXT[:4]}
    search(page, base_url, "저랭크 행렬로 미세조정")
    drawings |= {selector: draw_hangul(page, selector) for selector in KOREAN_TEXT[4:]}
    for selector, drawing in drawings.items():
        assert len(drawing.syllables) >= 3, f"{selector} has no Korean text to check"
        assert drawing.tofu == [], f"{selector}: {''.join(drawing.tofu)} drawn as missing-glyph boxes (no Korean font)"
        assert drawing.distinct == len(drawing.syllables), f"{selector}: syllables drawn alike"


def test_the_hangul_check_fails_without_a_korean_font(playwright: Playwright, base_url: str, tmp_path: Path) -> None:
    """The same check, in a Chromium that sees every font but those declaring Korean: all boxes."""
    config = tmp_path / "fonts.conf"
    config.write_text(NO_KOREAN_FONTS, encoding="utf-8")
    fontless = launch_chromium(playwright, fontconfig_file=config)
    try:
        page = fontless.new_page(locale="ko-KR")
        page.goto(base_url + "/")
        for selector in KOREAN_TEXT[:4]:
            drawing = draw_hangul(page, selector)
            assert len(drawing.syllables) >= 3, selector
            assert drawing.tofu == drawing.syllables, f"{selector}: the check did not see the missing font"
    finally:
        fontless.close()


def test_breakdown_and_month_histogram_in_the_browser(page: Page, base_url: str, tmp_path: Path) -> None:
    query = "low-rank adaptation for fine-tuning language models"
    search(page, base_url, query)
    bars = page.locator("figure.months a.bar")
    assert bars.count() >= 1
    counts = [int(bars.nth(i).get_attribute("data-count") or "0") for i in range(bars.count())]
    assert sum(counts) >= 1
    months = [bars.nth(i).get_attribute("data-month") or "" for i in range(bars.count())]
    assert months == sorted(months) and all(len(m) == 7 for m in months)
    labels = page.locator("figure.months text.month").all_text_contents()
    assert labels == [f"{m[2:4]}.{m[5:]}" for m in months]
    shown = page.locator("figure.months text.count").all_text_contents()
    assert [int(n) for n in shown] == [n for n in counts if n]
    # the breakdown opens without JavaScript (a <details> element) and shows every leg
    why = page.locator("li.hit").first.locator("details.why")
    why.locator("summary").click()
    assert why.locator("tr[data-leg]").count() >= 4
    assert "합계 (score)" in why.inner_text()
    page.screenshot(path=str(tmp_path / "breakdown-and-histogram.png"), full_page=False)
    shot = os.environ.get("RETRIEVAL_SCREENSHOT")  # set it to refresh docs/breakdown-and-histogram.png
    if shot:
        page.screenshot(path=shot, full_page=False)
    # a bar filters the results to its month
    busiest = counts.index(max(counts))
    with page.expect_navigation():
        bars.nth(busiest).click()
    month = months[busiest]
    assert page.input_value("input[name=date_from]") == f"{month}-01"
    assert page.locator("li.hit").count() >= 1
