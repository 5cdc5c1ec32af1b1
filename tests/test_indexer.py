"""Incremental builds: only changed texts are embedded, removed papers disappear, the cache follows the corpus."""

from __future__ import annotations

import shutil
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
from conftest import FIXTURES

from retrieval.corpus import load_corpus, text_hash
from retrieval.embedding import FakeEmbedder
from retrieval.errors import CorpusError, PaperNotFoundError
from retrieval.indexer import build_index, embed_with_cache
from retrieval.lexical import KoreanEnglishTokenizer
from retrieval.search import Searcher
from retrieval.store import CACHE_FILE, EmbeddingCache, load_index

SAMPLE_PAPERS = 12
SAMPLE_BULLETS = 52
LATEST_FILE = "2024/11/05.md"  # 4 papers, 12 bullets
LATEST_IDS = {"2004.04906", "2302.13971", "2305.14314", "2307.09288"}


class CountingEmbedder:
    """The fake embedder, recording every passage text it is asked to embed."""

    def __init__(self, dim: int = 64) -> None:
        self._inner = FakeEmbedder(dim)
        self.passages: list[str] = []
        self.queries: list[str] = []
        self.calls: list[int] = []

    @property
    def name(self) -> str:
        return self._inner.name

    @property
    def dim(self) -> int:
        return self._inner.dim

    def embed_passages(self, texts: Sequence[str]) -> np.ndarray:
        self.passages.extend(texts)
        self.calls.append(len(texts))
        return self._inner.embed_passages(texts)

    def embed_queries(self, texts: Sequence[str]) -> np.ndarray:
        self.queries.extend(texts)
        return self._inner.embed_queries(texts)

    def reset(self) -> None:
        self.passages.clear()
        self.queries.clear()
        self.calls.clear()


@pytest.fixture()
def built(corpus: Path, tmp_path: Path, tokenizer: KoreanEnglishTokenizer) -> tuple[Path, CountingEmbedder]:
    """The sample copy indexed once; the embedder's record is cleared afterwards."""
    embedder = CountingEmbedder()
    report = build_index(corpus, tmp_path / "index", embedder, tokenizer=tokenizer)
    assert (report.embedded, report.reused) == (SAMPLE_BULLETS, 0)
    embedder.reset()
    return tmp_path / "index", embedder


def cached_hashes(index: Path, model: str) -> set[str]:
    cache = EmbeddingCache(index / CACHE_FILE)
    try:
        rows = cache._db.execute("SELECT hash FROM vectors WHERE model = ?", [model])
        return {row[0] for row in rows}
    finally:
        cache.close()


def test_full_build_embeds_every_bullet_and_title_once(
    corpus: Path, tmp_path: Path, tokenizer: KoreanEnglishTokenizer
) -> None:
    embedder = CountingEmbedder()
    report = build_index(corpus, tmp_path / "index", embedder, tokenizer=tokenizer)
    assert report.files == 3 and report.files_skipped == [] and report.problems == []
    assert (report.papers, report.bullets) == (SAMPLE_PAPERS, SAMPLE_BULLETS)
    assert (report.embedded, report.reused, report.removed, report.papers_removed) == (SAMPLE_BULLETS, 0, 0, 0)
    assert not report.unchanged
    parsed = load_corpus(corpus)
    expected = Counter([b.text for p in parsed.papers for b in p.bullets] + [p.title for p in parsed.papers])
    assert Counter(embedder.passages) == expected
    assert max(expected.values()) == 1
    assert Counter(embedder.queries) == Counter(p.title for p in parsed.papers)  # the hubness pool
    index = load_index(tmp_path / "index", expected_model="fake:64")
    assert index.manifest.papers == SAMPLE_PAPERS
    # row i of the vector index is the i-th bullet in paper order, embedded as a passage
    rows = [b.text for p in index.papers for b in p.bullets]
    assert np.allclose(index.bullet_vectors.reconstruct(7), FakeEmbedder(64).embed_passages([rows[7]])[0])
    assert cached_hashes(tmp_path / "index", "fake:64") == {text_hash(t) for t in expected}


def test_unchanged_rebuild_embeds_nothing(
    built: tuple[Path, CountingEmbedder], corpus: Path, tokenizer: KoreanEnglishTokenizer
) -> None:
    index, embedder = built
    version = (index / "CURRENT").read_text(encoding="utf-8").strip()
    started = time.perf_counter()
    report = build_index(corpus, index, embedder, tokenizer=tokenizer)
    elapsed = time.perf_counter() - started
    assert report.unchanged
    assert (report.embedded, report.reused, report.removed) == (0, SAMPLE_BULLETS, 0)
    assert embedder.calls == []
    assert report.version == version
    assert (index / "CURRENT").read_text(encoding="utf-8").strip() == version
    assert elapsed < 3.0


def test_changed_bullet_is_the_only_text_embedded(
    built: tuple[Path, CountingEmbedder], corpus: Path, tokenizer: KoreanEnglishTokenizer
) -> None:
    index, embedder = built
    digest = corpus / "2023/12/01.md"
    text = digest.read_text(encoding="utf-8")
    old_bullet = load_corpus(corpus).papers[0].bullets[1].text
    new_bullet = old_bullet + " 지브라토큰 zebratoken 실험을 추가했습니다."
    assert text.count(f"- {old_bullet}\n") == 1
    digest.write_text(text.replace(f"- {old_bullet}\n", f"- {new_bullet}\n"), encoding="utf-8")

    report = build_index(corpus, index, embedder, tokenizer=tokenizer)
    assert not report.unchanged
    assert embedder.passages == [new_bullet]  # titles were unchanged: served from the cache
    assert embedder.queries == []  # so were the titles embedded as queries
    assert (report.embedded, report.reused) == (1, SAMPLE_BULLETS - 1)
    assert (report.removed, report.papers_removed) == (1, 0)
    hashes = cached_hashes(index, "fake:64")
    assert text_hash(new_bullet) in hashes and text_hash(old_bullet) not in hashes  # pruned

    searcher = Searcher(load_index(index), FakeEmbedder(64), tokenizer=tokenizer)
    try:
        hit = searcher.search("zebratoken", mode="lexical", limit=1).results[0]
        assert hit.paper.id == "1706.03762"
        assert any("zebratoken" in e.text for e in hit.evidence)
    finally:
        searcher.close()


def test_changed_title_is_embedded_again(
    built: tuple[Path, CountingEmbedder], corpus: Path, tokenizer: KoreanEnglishTokenizer
) -> None:
    index, embedder = built
    digest = corpus / "2024/04/02.md"
    text = digest.read_text(encoding="utf-8")
    assert text.count("[Mamba:") == 1
    digest.write_text(text.replace("[Mamba:", "[Mamba (revised):"), encoding="utf-8")
    report = build_index(corpus, index, embedder, tokenizer=tokenizer)
    assert len(embedder.passages) == 1 and embedder.passages[0].startswith("Mamba (revised):")
    assert (report.embedded, report.reused, report.removed) == (0, SAMPLE_BULLETS, 0)


def test_new_digest_file_embeds_only_its_texts(
    built: tuple[Path, CountingEmbedder], corpus: Path, tokenizer: KoreanEnglishTokenizer
) -> None:
    index, embedder = built
    (corpus / "2024/10").mkdir(parents=True)
    shutil.copyfile(FIXTURES / "era_labelled.md", corpus / "2024/10/15.md")
    added = load_corpus(FIXTURES / "era_labelled.md").papers

    report = build_index(corpus, index, embedder, tokenizer=tokenizer)
    new_texts = [b.text for p in added for b in p.bullets]
    assert Counter(embedder.passages) == Counter(new_texts + [p.title for p in added])
    assert Counter(embedder.queries) == Counter(p.title for p in added)
    assert (report.embedded, report.reused, report.removed) == (6, SAMPLE_BULLETS, 0)
    assert (report.files, report.papers, report.bullets) == (4, SAMPLE_PAPERS + 2, SAMPLE_BULLETS + 6)
    assert {p.arxiv_id for p in load_index(index).papers} >= {"2410.00021", "2410.00022"}


def test_removed_file_removes_its_papers(
    built: tuple[Path, CountingEmbedder], corpus: Path, tokenizer: KoreanEnglishTokenizer
) -> None:
    index, embedder = built
    removed = load_corpus(corpus / LATEST_FILE).papers
    removed_texts = [b.text for p in removed for b in p.bullets]
    (corpus / LATEST_FILE).unlink()

    report = build_index(corpus, index, embedder, tokenizer=tokenizer)
    assert embedder.passages == []
    assert (report.removed, report.papers_removed) == (12, 4)
    assert (report.embedded, report.reused) == (0, SAMPLE_BULLETS - 12)
    assert (report.papers, report.bullets, report.files) == (8, 40, 2)

    data = load_index(index)
    assert not LATEST_IDS & {p.arxiv_id for p in data.papers}
    assert not {text_hash(t) for t in removed_texts} & cached_hashes(index, "fake:64")
    searcher = Searcher(data, FakeEmbedder(64), tokenizer=tokenizer)
    try:
        for paper_id in LATEST_IDS:
            with pytest.raises(PaperNotFoundError):
                searcher.get_paper(paper_id)
        for query in ("QLoRA", "Llama 2", "Dense Passage Retrieval"):
            for mode in ("lexical", "hybrid"):
                ids = {hit.paper.id for hit in searcher.search(query, mode=mode, limit=20).results}  # type: ignore[arg-type]
                assert not ids & LATEST_IDS
    finally:
        searcher.close()


def test_other_model_re_embeds_everything(
    built: tuple[Path, CountingEmbedder], corpus: Path, tokenizer: KoreanEnglishTokenizer
) -> None:
    index, _ = built
    other = CountingEmbedder(32)
    report = build_index(corpus, index, other, tokenizer=tokenizer)
    assert (report.embedded, report.reused) == (SAMPLE_BULLETS, 0)
    assert len(other.passages) == SAMPLE_BULLETS + SAMPLE_PAPERS
    assert load_index(index).manifest.model == "fake:32"
    # the first model's vectors stay cached: switching back embeds nothing
    embedder = CountingEmbedder(64)
    report = build_index(corpus, index, embedder, tokenizer=tokenizer)
    assert (report.embedded, report.reused, embedder.passages) == (0, SAMPLE_BULLETS, [])
    assert load_index(index, expected_model="fake:64").manifest.dim == 64


def test_failed_build_keeps_old_version_and_embedded_vectors(
    built: tuple[Path, CountingEmbedder], corpus: Path, tokenizer: KoreanEnglishTokenizer
) -> None:
    index, embedder = built
    version = (index / "CURRENT").read_text(encoding="utf-8").strip()
    (corpus / "2024/10").mkdir(parents=True)
    shutil.copyfile(FIXTURES / "era_labelled.md", corpus / "2024/10/15.md")

    def crash() -> None:
        raise RuntimeError("simulated crash after embedding")

    with pytest.raises(RuntimeError, match="simulated crash"):
        build_index(corpus, index, embedder, tokenizer=tokenizer, after_embedding=crash)
    assert (index / "CURRENT").read_text(encoding="utf-8").strip() == version
    assert load_index(index).manifest.papers == SAMPLE_PAPERS
    embedder.reset()
    report = build_index(corpus, index, embedder, tokenizer=tokenizer)
    assert embedder.passages == []  # everything embedded before the crash was kept in the cache
    assert (report.embedded, report.papers) == (0, SAMPLE_PAPERS + 2)


def test_corpus_without_papers_leaves_index_untouched(
    built: tuple[Path, CountingEmbedder], tmp_path: Path, tokenizer: KoreanEnglishTokenizer
) -> None:
    index, embedder = built
    empty = tmp_path / "empty-corpus"
    empty.mkdir()
    (empty / "2024").mkdir()
    (empty / "2024" / "01.md").write_bytes(b"")
    with pytest.raises(CorpusError):
        build_index(empty, index, embedder, tokenizer=tokenizer)
    assert load_index(index).manifest.papers == SAMPLE_PAPERS


def test_embed_with_cache_dedupes_batches_and_keeps_input_order(tmp_path: Path) -> None:
    embedder = CountingEmbedder(32)
    texts = [
        "짧은 문장",
        "조금 더 긴 두 번째 문장입니다",
        "짧은 문장",
        "가장 길고 자세한 세 번째 문장이 여기에 있습니다",
        "x",
    ]
    cache = EmbeddingCache(tmp_path / "cache.sqlite")
    try:
        vectors, embedded, reused = embed_with_cache(embedder, texts, cache, batch_size=2)
        assert (embedded, reused) == (4, 0)
        assert sorted(embedder.passages) == sorted(set(texts))
        assert embedder.calls == [2, 2]
        assert np.allclose(vectors, FakeEmbedder(32).embed_passages(texts))
        embedder.reset()
        again, embedded, reused = embed_with_cache(embedder, [*texts, "새 문장"], cache, batch_size=2)
        assert (embedded, reused) == (1, 5)
        assert embedder.passages == ["새 문장"]
        assert np.allclose(again[:5], vectors)
        empty, embedded, reused = embed_with_cache(embedder, [], cache)
        assert empty.shape == (0, 32) and (embedded, reused) == (0, 0)
    finally:
        cache.close()


def test_a_small_change_keeps_the_query_map_and_a_large_drift_refits_it(
    built: tuple[Path, CountingEmbedder],
    corpus: Path,
    tokenizer: KoreanEnglishTokenizer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Unchanged papers keep their hubness offsets (and so their backend records) while few
    papers changed since the query map was fitted; past the drift limit the map is refitted."""
    import retrieval.indexer as indexer
    import retrieval.refit as refit

    index, embedder = built
    before = load_index(index)
    digest = corpus / "2023/12/01.md"
    text = digest.read_text(encoding="utf-8")
    old_bullet = load_corpus(corpus).papers[0].bullets[1].text
    digest.write_text(text.replace(f"- {old_bullet}\n", f"- {old_bullet} 변경\n"), encoding="utf-8")
    build_index(corpus, index, embedder, tokenizer=tokenizer)
    kept = load_index(index)
    assert np.array_equal(kept.query_map, before.query_map)
    assert kept.manifest.build[indexer.QUERY_MAP_DRIFT] == 1
    owner = np.repeat(np.arange(len(kept.papers)), [len(p.bullets) for p in kept.papers])
    others = owner != 0
    assert np.allclose(kept.hub_bullets[others], before.hub_bullets[others])  # the edited paper's own may move

    monkeypatch.setattr(refit, "REFIT_MIN_PAPERS", 0)  # now one paper of 12 (8 %) makes a refit due
    digest.write_text(digest.read_text(encoding="utf-8").replace(" 변경\n", " 다시 변경\n"), encoding="utf-8")
    build_index(corpus, index, embedder, tokenizer=tokenizer)
    refitted = load_index(index)
    assert refitted.manifest.build[indexer.QUERY_MAP_DRIFT] == 0
    assert not np.array_equal(refitted.query_map, before.query_map)
