"""/docs (Swagger UI) and /redoc render in headless Chromium with every non-loopback host blocked."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from browser_support import block_other_hosts, launch_chromium
from playwright.sync_api import Browser, Page, sync_playwright

from retrieval.api import create_app, serve_in_thread
from retrieval.config import Settings

pytestmark = [pytest.mark.browser, pytest.mark.slow]

PATHS = {"/search", "/papers/{arxiv_id}", "/papers/{arxiv_id}/similar", "/healthz", "/readyz"}


@pytest.fixture(scope="module")
def base_url(fake_sample_index: Path) -> Iterator[str]:
    with serve_in_thread(create_app(Settings(index_dir=fake_sample_index))) as url:
        yield url


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        instance = launch_chromium(playwright)
        yield instance
        instance.close()


@pytest.fixture()
def offline_page(browser: Browser) -> Iterator[tuple[Page, list[str], list[str]]]:
    """A tab that reaches only loopback; with the URLs it tried elsewhere and its script errors."""
    context = browser.new_context()
    blocked = block_other_hosts(context)
    tab = context.new_page()
    errors: list[str] = []
    tab.on("pageerror", lambda error: errors.append(str(error)))
    yield tab, blocked, errors
    context.close()


def test_swagger_ui_renders_offline(offline_page: tuple[Page, list[str], list[str]], base_url: str) -> None:
    page, blocked, errors = offline_page
    page.goto(base_url + "/docs")
    page.locator(".opblock-summary-path").first.wait_for(timeout=20_000)
    shown = {text.strip().replace("\u200b", "") for text in page.locator(".opblock-summary-path").all_inner_texts()}
    assert PATHS.issubset(shown), shown
    assert page.locator(".opblock-get .opblock-summary-path", has_text="/search").count() == 1
    assert page.locator(".opblock-post .opblock-summary-path", has_text="/search").count() == 1
    assert page.locator(".swagger-ui .info .title").inner_text().startswith("Daily Papers retrieval")
    assert blocked == [] and errors == []


def test_redoc_renders_offline(offline_page: tuple[Page, list[str], list[str]], base_url: str) -> None:
    page, blocked, errors = offline_page
    page.goto(base_url + "/redoc")
    page.locator("h1", has_text="Daily Papers retrieval").first.wait_for(timeout=20_000)
    page.get_by_text("/papers/{arxiv_id}/similar").first.wait_for(timeout=20_000)
    assert page.locator("h2", has_text="Search Get").count() >= 1
    assert blocked == [] and errors == []
