"""Keep an index fresh from its corpus folder: the builds a `CorpusWatcher` runs and what follows them.

* `make_builder`: the incremental build of an index with the index's own model (the model named
  in its live manifest; `model` only for an index that does not exist yet).
* `serve_watcher`: for `serve --watch`, builds in the server process and hot-reloads the holder.
* `run_watch`: the standalone `retrieval watch`: builds only; optionally tells a running server
  to reload (`POST <url>/admin/reload`), which `kill -HUP <pid>` of the server also does.
"""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from retrieval.backends.choice import connect_backend
from retrieval.config import Settings
from retrieval.embedding import Embedder, load_embedder
from retrieval.errors import IndexCorruptError, IndexMismatchError, ServiceError, UsageError
from retrieval.indexer import BuildReport, build_index
from retrieval.learned import LearnOptions
from retrieval.lexical import KoreanEnglishTokenizer
from retrieval.store import IndexDirectory, read_manifest
from retrieval.watch import CorpusWatcher

if TYPE_CHECKING:
    from retrieval.api.holder import SearcherHolder

log = logging.getLogger("retrieval.watch")


def index_model(index_dir: Path, default: str) -> str:
    """The model of the index's live version, or `default` when there is no readable one."""
    directory = IndexDirectory(index_dir)
    try:
        version = directory.current_version()
        if version is not None and version.is_dir():
            return read_manifest(version).model
    except (IndexCorruptError, IndexMismatchError):
        pass
    return default


def make_builder(
    corpus_dir: Path,
    index_dir: Path,
    model: str,
    batch_size: int = 256,
    reuse: Callable[[], tuple[Embedder | None, KoreanEnglishTokenizer | None]] | None = None,
    config: Settings | None = None,
    learning: LearnOptions | None = None,
) -> Callable[[], BuildReport]:
    """A no-argument incremental build of `index_dir` from `corpus_dir`.

    `reuse()` may offer an already loaded embedder and tokenizer (a server's); the embedder is
    used when its name is the index's model. Other embedders are loaded once and kept. `config`
    chooses an external backend to sync (connected for each build, closed after it).
    """
    loaded: dict[str, Embedder] = {}
    tokenizers: list[KoreanEnglishTokenizer] = []  # made on first need, then kept

    def build() -> BuildReport:
        spec = index_model(index_dir, model)
        embedder, tokenizer = reuse() if reuse is not None else (None, None)
        if embedder is None or embedder.name != spec:
            if spec not in loaded:
                loaded[spec] = load_embedder(spec, batch_size=batch_size)
            embedder = loaded[spec]
        if tokenizer is None:
            if not tokenizers:
                tokenizers.append(KoreanEnglishTokenizer())
            tokenizer = tokenizers[0]
        backend = connect_backend(config, embedder.dim) if config is not None else None
        try:
            return build_index(
                corpus_dir,
                index_dir,
                embedder,
                tokenizer=tokenizer,
                batch_size=batch_size,
                backend=backend,
                learning=learning,
            )
        finally:
            if backend is not None:
                backend.close()

    return build


def watcher_for(
    settings: Settings,
    corpus_dir: Path,
    build: Callable[[], BuildReport],
    on_built: Callable[[BuildReport], object] | None,
) -> CorpusWatcher:
    """A watcher with the settings' timing and polling choice; the index folder itself is never watched."""
    return CorpusWatcher(
        corpus_dir,
        build,
        on_built,
        ignore=settings.index_dir,
        debounce_ms=settings.watch_debounce_ms,
        step_ms=settings.watch_step_ms,
        force_polling=settings.watch_force_polling,
        poll_delay_ms=settings.watch_poll_ms,
    )


def serve_watcher(settings: Settings, holder: SearcherHolder) -> CorpusWatcher:
    """The watcher of `serve --watch`: build with the live searcher's model, then reload the holder."""
    assert settings.watch_corpus is not None

    def reuse() -> tuple[Embedder | None, KoreanEnglishTokenizer | None]:
        searcher = holder.current
        return (searcher.embedder, searcher.tokenizer) if searcher is not None else (None, None)

    build = make_builder(
        settings.watch_corpus,
        settings.index_dir,
        settings.model,
        settings.batch_size,
        reuse,
        config=settings,
        learning=settings.learn_options(),
    )
    return watcher_for(settings, settings.watch_corpus, build, lambda _report: holder.reload())


def post_reload(url: str, token: str | None, timeout: float = 60.0) -> None:
    """`POST <url>/admin/reload`; `ServiceError` with the server's message when it does not answer 200."""
    import httpx

    headers = {"Authorization": f"Bearer {token}"} if token else {}
    target = url.rstrip("/") + "/admin/reload"
    try:
        response = httpx.post(target, headers=headers, timeout=timeout)
    except httpx.HTTPError as exc:
        raise ServiceError(f"cannot reach {target}: {exc}") from exc
    if response.status_code != 200:
        try:
            detail = response.json().get("detail", response.text)
        except ValueError:
            detail = response.text
        raise ServiceError(f"{target} answered {response.status_code}: {detail}", status=response.status_code)
    body = response.json()
    log.info("server at %s now serves %s (reloaded: %s)", url, body.get("version"), body.get("reloaded"))


def run_watch(settings: Settings, corpus_dir: Path, reload_url: str | None = None) -> int:
    """`retrieval watch`: build now and after every change until Ctrl-C or SIGTERM; 0 when stopped."""
    if not corpus_dir.is_dir():
        raise UsageError(f"cannot watch {corpus_dir}: not a folder (give the folder of the *.md digests)")
    model = index_model(settings.index_dir, settings.model)
    if "model" in settings.model_fields_set and IndexDirectory(settings.index_dir).exists() and model != settings.model:
        raise UsageError(
            f"index {settings.index_dir} was built with model {model!r}, not {settings.model!r}; the watcher keeps "
            f"an index's model (rebuild it with `retrieval build-index --model {settings.model}` to change it)"
        )
    token = settings.api_token.get_secret_value() if settings.api_token is not None else None
    after = (lambda _report: post_reload(reload_url, token)) if reload_url else None
    build = make_builder(
        corpus_dir, settings.index_dir, model, settings.batch_size, config=settings, learning=settings.learn_options()
    )
    watcher = watcher_for(settings, corpus_dir, build, after)
    stop = threading.Event()
    previous = signal.signal(signal.SIGTERM, lambda *_: stop.set())
    print(
        f"watching {corpus_dir} for digest changes; building {settings.index_dir} [{model}] (Ctrl-C stops)", flush=True
    )
    watcher.start()
    try:
        while not stop.wait(0.5):
            pass
    except KeyboardInterrupt:
        pass
    finally:
        watcher.stop()
        signal.signal(signal.SIGTERM, previous)
    print("stopped watching", flush=True)
    return 0
