"""The app factory and the server entry point.

`create_app(settings, searcher=None)` builds the app; the index is opened once in the lifespan
(unless a searcher is given) and injected into routes. With `settings.watch_corpus` the lifespan
also starts a `CorpusWatcher` (retrieval/refresh.py) that rebuilds the index when digests change
and hot-reloads it; it is stopped on shutdown. `run_server(settings)` checks the port and opens
the index first, so a busy port or a missing or damaged index stops it with one line (with a
watched corpus and no index yet, it builds the index first).
"""

from __future__ import annotations

import contextlib
import errno
import logging
import signal
import socket
import sys
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.staticfiles import StaticFiles
from starlette.concurrency import run_in_threadpool

from retrieval import __version__
from retrieval.api.docs import mount_docs
from retrieval.api.errors import domain_error, validation_error
from retrieval.api.holder import SearcherHolder
from retrieval.api.middleware import BearerAuth, BodySizeLimit
from retrieval.api.routes import router
from retrieval.config import Settings
from retrieval.errors import RetrievalError, UsageError
from retrieval.mcp_server import mount_mcp
from retrieval.page import static_dir
from retrieval.refresh import make_builder, serve_watcher
from retrieval.search import Searcher
from retrieval.service import open_searcher, search_settings
from retrieval.store import IndexDirectory

log = logging.getLogger("retrieval.api")


def create_app(settings: Settings, searcher: Searcher | None = None) -> FastAPI:
    """Build the app. Without `searcher`, the index at `settings.index_dir` is opened at start-up."""
    holder = SearcherHolder(settings, searcher)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await run_in_threadpool(holder.load)
        watcher = serve_watcher(settings, holder).start() if settings.watch_corpus is not None else None
        app.state.watcher = watcher
        try:
            async with mcp:  # the MCP endpoint's session manager lives as long as the app
                yield
        finally:
            if watcher is not None:
                await run_in_threadpool(watcher.stop)
            holder.shutdown()  # a lifespan-opened searcher's threads and memory go with the app

    app = FastAPI(
        title="Daily Papers retrieval",
        summary="Korean/English semantic search over Korean summaries of Hugging Face Daily Papers",
        version=__version__,
        lifespan=lifespan,
        docs_url=None,  # served by mount_docs from packaged assets, not a CDN
        redoc_url=None,
    )
    app.state.settings = settings
    app.state.holder = holder
    app.state.watcher = None  # the CorpusWatcher of `serve --watch`, once started
    app.include_router(router)
    mcp = mount_mcp(app, holder.lease, host=settings.host, limits=settings.request_limits())
    app.mount("/static", StaticFiles(directory=static_dir()), name="static")
    mount_docs(app)
    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_exception_handler(RetrievalError, domain_error)
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_body_bytes)
    if settings.api_token is not None:
        app.add_middleware(BearerAuth, token=settings.api_token.get_secret_value())
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["GET", "POST"],
            allow_headers=["Authorization", "Content-Type"],
        )
    return app


def bind_port(host: str, port: int) -> socket.socket:
    """A listening socket on host:port, or `UsageError` naming the address when it is taken."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    no_delay(sock)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise UsageError(f"port {port} on {host} is already in use; choose another with --port") from None
        raise UsageError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    sock.listen(2048)
    return sock


def no_delay(sock: socket.socket) -> None:
    """Set TCP_NODELAY on a listening socket; the connections it accepts inherit it (Linux, macOS).

    uvicorn given a bound socket leaves Nagle on, and h11 writes a response's head and body
    separately: the body then waits for the client's delayed ACK, about 40 ms per request.
    """
    if sock.family in (socket.AF_INET, socket.AF_INET6):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def run_server(settings: Settings) -> None:
    """Take the port, open the index (domain errors propagate before anything listens), then serve."""
    import uvicorn

    configure_logging()
    sock = bind_port(settings.host, settings.port)
    try:
        if settings.watch_corpus is not None:
            first_build_if_missing(settings)
        searcher = open_searcher(settings.index_dir, settings=search_settings(settings), config=settings)
        app = create_app(settings, searcher)
        _reload_on_sighup(app.state.holder)
        shown_host = f"[{settings.host}]" if ":" in settings.host else settings.host
        port = sock.getsockname()[1]
        log.info("serving %s (%d papers)", searcher.index.path, searcher.index.manifest.papers)
        print(
            f"search page: http://{shown_host}:{port}/  (index {settings.index_dir}, version "
            f"{searcher.index.path.name}, {searcher.index.manifest.papers} papers; API docs at /docs)",
            flush=True,
        )
        if settings.watch_corpus is not None:
            print(f"watching {settings.watch_corpus}: digest changes rebuild and reload the index", flush=True)
        server = uvicorn.Server(uvicorn.Config(app, log_level="info"))
        server.run(sockets=[sock])
    finally:
        sock.close()


def first_build_if_missing(settings: Settings) -> None:
    """`serve --watch` on a corpus folder without an index yet: build it before serving."""
    assert settings.watch_corpus is not None
    if not settings.watch_corpus.is_dir():
        raise UsageError(f"cannot watch {settings.watch_corpus}: not a folder (give the folder of the *.md digests)")
    if IndexDirectory(settings.index_dir).exists():
        return
    print(f"no index at {settings.index_dir} yet: building it from {settings.watch_corpus} first", flush=True)
    build = make_builder(
        settings.watch_corpus,
        settings.index_dir,
        settings.model,
        settings.batch_size,
        learning=settings.learn_options(),
        config=settings,
    )
    build()


class _StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """A stream handler writing to whatever `sys.stderr` is when a line is logged, not the stream
    it was when the handler was made (a replaced or closed stderr must not break logging)."""

    @property  # type: ignore[override]
    def stream(self) -> Any:
        return sys.stderr

    @stream.setter
    def stream(self, value: Any) -> None:
        pass


def configure_logging() -> None:
    """Send the package's own log lines (reloads, load failures, watch builds) to stderr beside uvicorn's.

    Only there: the MCP SDK puts a handler on the root logger, which would print each line twice.
    """
    logger = logging.getLogger("retrieval")
    if not logger.handlers:
        handler = _StderrHandler()
        handler.setFormatter(logging.Formatter("%(levelname)s:     %(message)s"))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
        logger.propagate = False


def _reload_on_sighup(holder: SearcherHolder) -> None:
    """`kill -HUP <pid>` reloads the index in a background thread (main thread only)."""
    if not hasattr(signal, "SIGHUP") or threading.current_thread() is not threading.main_thread():
        return

    def reload_in_background() -> None:
        # On a domain error the holder logs the failure and keeps serving the previous index.
        with contextlib.suppress(RetrievalError):
            holder.reload()

    def handler(_signum: int, _frame: object) -> None:
        log.info("SIGHUP: reloading the index")
        threading.Thread(target=reload_in_background, name="sighup-reload", daemon=True).start()

    signal.signal(signal.SIGHUP, handler)
