"""Shared fixtures: paths, a tokenizer, and indexes of the bundled sample built once per session."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from retrieval.embedding import FakeEmbedder, load_embedder
from retrieval.indexer import build_index
from retrieval.lexical import KoreanEnglishTokenizer
from retrieval.search import Searcher
from retrieval.store import load_index

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "tests" / "fixtures" / "digests"
SAMPLE = ROOT / "examples" / "sample"
REAL_CORPUS = ROOT.parent / "shared" / "corpus" / "daily_papers_ko" / "paper_logs"

needs_real_corpus = pytest.mark.skipif(not REAL_CORPUS.is_dir(), reason=f"real corpus not found at {REAL_CORPUS}")


@pytest.fixture()
def corpus(tmp_path: Path) -> Path:
    """A writable copy of the bundled sample digests (without its README)."""
    target = tmp_path / "corpus"
    shutil.copytree(SAMPLE, target)
    (target / "README.md").unlink()
    return target


@pytest.fixture(scope="session")
def tokenizer() -> KoreanEnglishTokenizer:
    return KoreanEnglishTokenizer()


@pytest.fixture(scope="session")
def fake_sample_index(tmp_path_factory: pytest.TempPathFactory, tokenizer: KoreanEnglishTokenizer) -> Path:
    """The sample corpus indexed with the deterministic fake embedder (fast)."""
    path = tmp_path_factory.mktemp("fake-index") / "sample"
    build_index(SAMPLE, path, FakeEmbedder(64), tokenizer=tokenizer)
    return path


@pytest.fixture(scope="session")
def e5_sample_index(tmp_path_factory: pytest.TempPathFactory, tokenizer: KoreanEnglishTokenizer) -> Path:
    """The sample corpus indexed with the real default model (about 15 s, once per session)."""
    path = tmp_path_factory.mktemp("e5-index") / "sample"
    build_index(SAMPLE, path, load_embedder("e5-small-q4"), tokenizer=tokenizer)
    return path


@pytest.fixture(scope="session")
def fake_searcher(fake_sample_index: Path, tokenizer: KoreanEnglishTokenizer) -> Searcher:
    index = load_index(fake_sample_index)
    return Searcher(index, FakeEmbedder(64), tokenizer=tokenizer)


@pytest.fixture(scope="session")
def e5_searcher(e5_sample_index: Path, tokenizer: KoreanEnglishTokenizer) -> Searcher:
    index = load_index(e5_sample_index)
    return Searcher(index, load_embedder(index.manifest.model), tokenizer=tokenizer)
