"""Open a loaded index with its matching embedder and backend: the one way every front end gets a `Searcher`."""

from __future__ import annotations

from pathlib import Path

from retrieval.backends.choice import check_serves, connect_backend
from retrieval.config import Settings
from retrieval.embedding import Embedder, load_embedder
from retrieval.learned import calibration_of, describe, reranker_of
from retrieval.learned import search_settings as learned_settings
from retrieval.lexical import KoreanEnglishTokenizer
from retrieval.search import Searcher, SearchSettings
from retrieval.store import IndexData, load_index


def search_settings(config: Settings) -> SearchSettings:
    """The ranking settings the service settings choose (candidate depths, the re-ranker on or off)."""
    return SearchSettings(candidate_depth=config.candidate_depth, leg_depth=config.leg_depth, rerank=config.rerank)


def open_searcher(
    index_dir: Path | str,
    model: str | None = None,
    settings: SearchSettings | None = None,
    tokenizer: KoreanEnglishTokenizer | None = None,
    config: Settings | None = None,
) -> Searcher:
    """Load and validate the index and pair it with the model it was built with and the backend
    `config` chooses (`RETRIEVAL_BACKEND` etc. from the environment when not given).

    `model`, when given, must equal the index's model (else `IndexMismatchError`).
    """
    index = load_index(index_dir, expected_model=model)
    return searcher_for(index, load_embedder(index.manifest.model), settings, tokenizer, config)


def searcher_for(
    index: IndexData,
    embedder: Embedder,
    settings: SearchSettings | None = None,
    tokenizer: KoreanEnglishTokenizer | None = None,
    config: Settings | None = None,
) -> Searcher:
    """A searcher over a loaded index with the configured backend (checked to hold this version)
    and the index's learned fusion weights and relevance calibration (retrieval/learned.py).

    `settings` default to those `config` chooses; weights they set away from the code defaults
    win over the learned ones.
    """
    config = config if config is not None else Settings()
    settings = settings if settings is not None else search_settings(config)
    backend = connect_backend(config, index.manifest.dim)
    try:
        if backend is not None:
            check_serves(backend, index.path.name)
        searcher = Searcher(
            index,
            embedder,
            tokenizer=tokenizer,
            settings=learned_settings(index.learned, settings),
            calibration=calibration_of(index.learned, index.manifest.model),
            backend=backend,
            reranker=reranker_of(index.learned),
        )
    except BaseException:
        if backend is not None:
            backend.close()
        raise
    describe(index.learned, index.path)  # logged once the index really serves
    return searcher
