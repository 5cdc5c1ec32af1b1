"""Open a loaded index with its matching embedder: the one way every front end gets a `Searcher`."""

from __future__ import annotations

from pathlib import Path

from retrieval.embedding import load_embedder
from retrieval.lexical import KoreanEnglishTokenizer
from retrieval.search import Searcher, SearchSettings
from retrieval.store import load_index


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
    embedder = load_embedder(index.manifest.model)
    return Searcher(index, embedder, tokenizer=tokenizer, settings=settings)
