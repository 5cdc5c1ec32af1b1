"""/docs and /redoc: every asset they load is served by the app itself (no CDN), with the right type."""

from __future__ import annotations

import re
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from retrieval.api import create_app
from retrieval.api import docs as api_docs
from retrieval.config import Settings
from retrieval.search import Searcher

ABSOLUTE_URL = re.compile(r"(?:https?:)?//[^\s\"'<>()]+", re.IGNORECASE)
JS_TYPES = ("text/javascript", "application/javascript")
PAGES = ("/docs", "/redoc")


class References(HTMLParser):
    """Collects the `src` and `href` attributes of a page."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.urls += [value for name, value in attrs if name in ("src", "href") and value]


def references(html: str) -> list[str]:
    parser = References()
    parser.feed(html)
    return parser.urls


@pytest.fixture(scope="module")
def client(fake_sample_index: Path, fake_searcher: Searcher) -> Iterator[TestClient]:
    with TestClient(create_app(Settings(index_dir=fake_sample_index), fake_searcher)) as test_client:
        yield test_client


@pytest.mark.parametrize("path", PAGES)
def test_page_names_no_other_host(client: TestClient, path: str) -> None:
    response = client.get(path)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    foreign = [url for url in ABSOLUTE_URL.findall(response.text) if urlsplit(url).hostname != "testserver"]
    assert foreign == [], f"{path} loads from other hosts"
    urls = references(response.text)
    assert urls and all(url.startswith("/") and not url.startswith("//") for url in urls), urls


@pytest.mark.parametrize(
    ("path", "kinds", "marker"),
    [
        ("/docs", {".js": JS_TYPES, ".css": ("text/css",), ".svg": ("image/svg+xml",)}, "SwaggerUIBundle"),
        ("/redoc", {".js": JS_TYPES, ".svg": ("image/svg+xml",)}, "Redoc"),
    ],
)
def test_every_referenced_asset_is_served(
    client: TestClient, path: str, kinds: dict[str, tuple[str, ...]], marker: str
) -> None:
    urls = references(client.get(path).text)
    assert {Path(url).suffix for url in urls} == set(kinds), urls
    for url in urls:
        asset = client.get(url)
        assert asset.status_code == 200, url
        media_type = asset.headers["content-type"].split(";")[0]
        assert media_type in kinds[Path(url).suffix], (url, media_type)
        if url.endswith(".js"):
            assert marker in asset.text and len(asset.content) > 100_000, f"{url} is not the real bundle"


def test_swagger_ui_loads_the_schema_of_this_app(client: TestClient) -> None:
    page = client.get("/docs").text
    assert "url: '/openapi.json'" in page
    assert '<redoc spec-url="/openapi.json">' in client.get("/redoc").text
    assert "/search" in client.get("/openapi.json").json()["paths"]
    assert client.get("/docs/oauth2-redirect").status_code == 200
    assert "/docs" not in client.get("/openapi.json").json()["paths"]


def test_redoc_may_not_load_images_from_other_hosts(client: TestClient) -> None:
    assert client.get("/redoc").headers["content-security-policy"] == "img-src 'self' data:"


def test_pages_need_the_token_and_assets_do_not(fake_sample_index: Path, fake_searcher: Searcher) -> None:
    app = create_app(Settings(index_dir=fake_sample_index, api_token="s3cret"), fake_searcher)
    with TestClient(app) as secured:
        for path in PAGES:
            assert secured.get(path).status_code == 401, path
            page = secured.get(path, headers={"Authorization": "Bearer s3cret"})
            assert page.status_code == 200, path
            for url in references(page.text):
                assert secured.get(url).status_code == 200, url


def test_urls_follow_the_root_path(fake_sample_index: Path, fake_searcher: Searcher) -> None:
    app = create_app(Settings(index_dir=fake_sample_index), fake_searcher)
    with TestClient(app, root_path="/api") as proxied:
        urls = references(proxied.get("/docs").text)
    assert "/api/static/api-docs/swagger-ui-bundle.js" in urls
    assert "/api/static/favicon.svg" in urls


def test_missing_asset_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(api_docs, "ASSET_FILES", (*api_docs.ASSET_FILES, "swagger-ui-nowhere.js"))
    with pytest.raises(RuntimeError, match="lacks swagger-ui-nowhere.js"):
        api_docs.mount_docs(FastAPI(docs_url=None, redoc_url=None))
