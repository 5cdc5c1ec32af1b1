"""Open a loaded index with its matching embedder: the one way every front end gets a `Searcher`."""

from __future__ import annotations

from pathlib import Path

from retrieval.embedding import Embedder, load_embedder
from retrieval.learned import calibration_of, describe, search_settings
from retrieval.lexical import KoreanEnglishTokenizer
from retrieval.search import Searcher, SearchSettings
from retrieval.store import IndexData, load_index


def open_searcher(
    index_dir: Path | str,
    model: str | None = None,
    settings: SearchSettings | None = None,
    tokenizer: KoreanEnglishTokenizer | None = None,
) -> Searcher:
    """Load and validate the index and pair it with the model it was built with.

    `model`, when given, must equal the index's model (else `IndexMismatchError`).
    """
    index = load_index(index_dir, expected_model=model)
    return searcher_for(index, load_embedder(index.manifest.model), settings, tokenizer)


def searcher_for(
    index: IndexData,
    embedder: Embedder,
    settings: SearchSettings | None = None,
    tokenizer: KoreanEnglishTokenizer | None = None,
) -> Searcher:
    """A searcher with the index's learned fusion weights and relevance calibration (retrieval/learned.py).

    Weights `settings` sets away from the code defaults win over the learned ones.
    """
    describe(index.learned, index.path)
    return Searcher(
        index,
        embedder,
        tokenizer=tokenizer,
        settings=search_settings(index.learned, settings),
        calibration=calibration_of(index.learned, index.manifest.model),
    )
