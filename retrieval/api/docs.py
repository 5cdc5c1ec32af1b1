"""Swagger UI at /docs and ReDoc at /redoc with their JS and CSS served by the app itself, never a CDN.

FastAPI's self-hosting recipe: the app is created with `docs_url=None, redoc_url=None` and
`mount_docs` adds the two pages, pointing them at the assets shipped by the `fastapi-offline`
package. The assets live under `/static/`, which the bearer-token middleware leaves open like the
search page's own; the pages themselves are ordinary routes, so with a token they need it, like
`/openapi.json` that they load. ReDoc's page forbids images from other hosts (its bundle would
fetch a logo from its vendor's CDN on every visit).
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html, get_swagger_ui_oauth2_redirect_html
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles
from starlette.routing import Mount

ASSETS_URL = "/static/api-docs"
ASSET_FILES = ("swagger-ui-bundle.js", "swagger-ui.css", "redoc.standalone.js")
FAVICON_URL = "/static/favicon.svg"
# ReDoc 2 always draws its vendor's logo from the vendor's CDN; images from other hosts are refused instead.
REDOC_POLICY = "img-src 'self' data:"


def assets_dir() -> Path:
    """The folder of Swagger UI and ReDoc files inside the installed `fastapi-offline` package."""
    folder = Path(str(resources.files("fastapi_offline") / "static"))
    missing = [name for name in ASSET_FILES if not (folder / name).is_file()]
    if missing:
        raise RuntimeError(f"fastapi-offline at {folder} lacks {', '.join(missing)}: reinstall it (pip install -e .)")
    return folder


def mount_docs(app: FastAPI, docs_url: str = "/docs", redoc_url: str = "/redoc") -> None:
    """Serve the doc assets at ASSETS_URL and add the Swagger UI, its OAuth2 redirect and ReDoc pages."""
    # First in the route list, so the app's own `/static` mount (added before or after) cannot shadow it.
    app.router.routes.insert(0, Mount(ASSETS_URL, app=StaticFiles(directory=assets_dir()), name="api-docs-assets"))
    openapi_url = app.openapi_url or "/openapi.json"
    oauth2_url = app.swagger_ui_oauth2_redirect_url

    def root(request: Request) -> str:
        return str(request.scope.get("root_path", "")).rstrip("/")

    @app.get(docs_url, include_in_schema=False)
    def swagger_ui(request: Request) -> HTMLResponse:
        base = root(request)
        return get_swagger_ui_html(
            openapi_url=base + openapi_url,
            title=f"{app.title} - Swagger UI",
            swagger_js_url=f"{base}{ASSETS_URL}/swagger-ui-bundle.js",
            swagger_css_url=f"{base}{ASSETS_URL}/swagger-ui.css",
            swagger_favicon_url=base + FAVICON_URL,
            oauth2_redirect_url=oauth2_url,
            init_oauth=app.swagger_ui_init_oauth,
            swagger_ui_parameters=app.swagger_ui_parameters,
        )

    if oauth2_url:

        @app.get(oauth2_url, include_in_schema=False)
        def swagger_ui_oauth2_redirect() -> HTMLResponse:
            return get_swagger_ui_oauth2_redirect_html()

    @app.get(redoc_url, include_in_schema=False)
    def redoc(request: Request) -> HTMLResponse:
        base = root(request)
        page = get_redoc_html(
            openapi_url=base + openapi_url,
            title=f"{app.title} - ReDoc",
            redoc_js_url=f"{base}{ASSETS_URL}/redoc.standalone.js",
            redoc_favicon_url=base + FAVICON_URL,
            with_google_fonts=False,
        )
        page.headers["Content-Security-Policy"] = REDOC_POLICY
        return page
