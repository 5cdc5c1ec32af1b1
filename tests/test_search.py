"""Ranking internals: z-score fusion, highlights, the term map, and the summary mismatch flag."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import SAMPLE

from retrieval.embedding import load_embedder
from retrieval.highlight import QueryMarks
from retrieval.hubness import latin_share
from retrieval.indexer import build_index
from retrieval.lexical import STOPWORDS, KoreanEnglishTokenizer
from retrieval.search import Searcher, SearchSettings, standardise
from retrieval.store import load_index
from retrieval.termmap import TermMap


def test_standardise_puts_the_head_of_a_leg_on_a_common_scale() -> None:
    scores = np.array([10.0, 5.0, np.nan, 0.0, 1.0])
    z = standardise(scores, depth=2)
    assert z[0] > z[1] > z[4] > z[3]
    assert z[2] == z[3]  # unscored counts as the floor, 0
    scaled = standardise(scores * 100, depth=2)
    assert np.allclose(z, scaled, atol=1e-3)  # a leg's scale does not matter


def test_hybrid_ranks_a_paper_found_by_both_legs_first(fake_searcher: Searcher) -> None:
    response = fake_searcher.search("selective state space Mamba", mode="hybrid", limit=3)
    assert response.results[0].paper.id == "2312.00752"
    lexical = fake_searcher.search("selective state space Mamba", mode="lexical", limit=20)
    assert lexical.total <= len(fake_searcher.papers)
    scores = [hit.score for hit in lexical.results]
    assert scores == sorted(scores, reverse=True)


def test_highlights_cover_query_words_the_tokenizer_splits(tokenizer: KoreanEnglishTokenizer) -> None:
    text = "두 저랭크 행렬(low-rank matrices)의 곱으로 표현"
    query = "저랭크 행렬로 Low-Rank 미세조정"
    marks = QueryMarks.build(query, tokenizer.tokenize(query), tokenizer.stem, STOPWORDS)
    marked = [text[a:b] for a, b in marks.spans(text, tokenizer.stem)]
    assert "저랭크" in marked and "low-rank" in marked and "행렬" in marked


def marked_words(query: str, text: str, tokenizer: KoreanEnglishTokenizer) -> list[str]:
    marks = QueryMarks.build(query, tokenizer.tokenize(query), tokenizer.stem, STOPWORDS)
    return [text[a:b] for a, b in marks.spans(text, tokenizer.stem)]


def test_highlights_mark_whole_words_never_substrings_or_stop_words(tokenizer: KoreanEnglishTokenizer) -> None:
    text = "A Transformer for closed-form updates with an adapter; models adapt in-context"
    assert marked_words("attention for transformers", text, tokenizer) == ["Transformer"]
    assert marked_words("adapt", text, tokenizer) == ["adapt"]  # not inside "adapter"
    assert marked_words("form", text, tokenizer) == ["form"]  # the part of "closed-form", on its own
    assert marked_words("model adapters", text, tokenizer) == ["adapter", "models"]
    assert marked_words("for the of", text, tokenizer) == []


def test_korean_highlights_follow_morpheme_boundaries(tokenizer: KoreanEnglishTokenizer) -> None:
    text = "저랭크 행렬을 이용해 거대 언어모델을 미세 조정하며, 수학 문제를 푼다"
    assert marked_words("저랭크 행렬로 미세 조정", text, tokenizer) == ["저랭크", "행렬", "미세", "조정"]
    assert marked_words("언어 모델", text, tokenizer) == ["언어모델"]
    assert marked_words("수 있는 방법", text, tokenizer) == []  # one syllable: not "수" inside "수학"
    assert marked_words("랭크", text, tokenizer) == []  # not inside the word "저랭크"


def test_term_map_translates_english_phrases_to_korean_only_by_default() -> None:
    texts = [
        "저랭크 적응(Low-Rank Adaptation)을 제안",
        "저랭크 적응(Low-Rank Adaptation) 기반",
        "트랜스포머(Transformer) 구조",
    ] * 2
    term_map = TermMap.from_texts(texts)
    assert "저랭크적응" in term_map.translations("a low-rank adaptation method")
    assert term_map.translations("저랭크 적응 방법") == []
    assert "low rank adaptation" in term_map.translations("저랭크 적응 방법", ko_to_en=True)


@pytest.mark.slow
def test_a_summary_about_another_paper_is_flagged(tmp_path: Path, tokenizer: KoreanEnglishTokenizer) -> None:
    """Give the Mamba heading the bullets of the CLIP paper: its title no longer finds its summary."""
    corpus = tmp_path / "corpus"
    shutil.copytree(SAMPLE, corpus)
    digest = corpus / "2024" / "04" / "02.md"
    text = digest.read_text(encoding="utf-8")
    clip = (corpus / "2023" / "12" / "01.md").read_text(encoding="utf-8").split("### [CLIP")[0]
    assert "2312.00752" in text
    mamba_block = text.split("### [Mamba")[1].split("### [")[0]
    bullets = [
        line
        for line in (corpus / "2023" / "12" / "01.md").read_text(encoding="utf-8").splitlines()
        if line.startswith("- ")
    ]
    clip_bullets = [b for b in bullets if "CLIP" in b or "이미지" in b][:4]
    assert clip_bullets, clip
    new_block = (
        "\n".join(line for line in mamba_block.splitlines() if not line.startswith("- "))
        + "\n"
        + "\n".join(clip_bullets)
        + "\n\n"
    )
    digest.write_text(text.replace(mamba_block, new_block), encoding="utf-8")
    index_dir = tmp_path / "index"
    build_index(corpus, index_dir, load_embedder("e5-small-q4"), tokenizer=tokenizer)
    index = load_index(index_dir)
    searcher = Searcher(
        index, load_embedder(index.manifest.model), tokenizer=tokenizer, settings=SearchSettings(mismatch_rank=1)
    )
    warnings = searcher.summary_warnings
    assert "2312.00752" in warnings
    assert len(warnings) <= 3, warnings
    hit = searcher.search("Mamba", limit=12, mode="lexical")
    flagged = [h for h in hit.results if h.paper.id == "2312.00752"]
    assert flagged and flagged[0].warning


def test_evidence_scores_are_real_cosines_beyond_the_candidate_depth(fake_searcher: Searcher) -> None:
    """Papers ranked on legs other than the best bullet still cite bullets with their true cosine."""
    shallow = Searcher(
        fake_searcher.index,
        fake_searcher.embedder,
        tokenizer=fake_searcher.tokenizer,
        settings=SearchSettings(candidate_depth=10),
    )
    response = shallow.search("selective state space Mamba", mode="dense", limit=12)
    qvec = fake_searcher.embedder.embed_queries(["selective state space Mamba"])[0]
    for hit in response.results:
        paper = next(p for p in fake_searcher.papers if p.arxiv_id == hit.paper.id)
        start = sum(len(p.bullets) for p in fake_searcher.papers[: fake_searcher.papers.index(paper)])
        for ev in hit.evidence:
            expected = float(fake_searcher._bullet_matrix[start + ev.position] @ qvec)
            assert ev.score == pytest.approx(expected, abs=1e-5)


def test_summary_bm25_weight_follows_the_query_language(fake_searcher: Searcher) -> None:
    settings = fake_searcher.settings
    korean, latin = settings.weight_lexical_paper, settings.weight_lexical_paper_english
    for query in ("상태 공간 모델", "state space 모델", "state space model"):
        hit = fake_searcher.search(query, limit=1, explain=True).results[0]
        assert hit.explain is not None
        weight = next(leg.weight for leg in hit.explain.legs if leg.leg == "lexical_summary")
        assert weight == pytest.approx(korean + (latin - korean) * latin_share(query), abs=1e-6)
    assert latin < korean


def test_explanations_add_up_to_every_hit_score(fake_searcher: Searcher) -> None:
    queries = ["low-rank adaptation 저랭크", "2106.09685 state space", "LoRA", "검색 증강 생성", "diffusion"]
    for mode in ("hybrid", "dense", "lexical"):
        for query in queries:
            response = fake_searcher.search(query, mode=mode, limit=8, explain=True)
            for hit in response.results:
                assert hit.explain is not None
                total = sum(leg.contribution for leg in hit.explain.legs)
                assert total == pytest.approx(hit.score, abs=1e-4), (mode, query, hit.paper.id)
    named = fake_searcher.search("2106.09685 state space", limit=1, explain=True).results[0]
    assert named.explain is not None and [leg.leg for leg in named.explain.legs] == ["arxiv_id"]
    lora = fake_searcher.search("LoRA", limit=1, explain=True).results[0]
    assert lora.explain is not None and "exact_name" in [leg.leg for leg in lora.explain.legs]
    assert fake_searcher.search("LoRA", limit=1).results[0].explain is None


def test_explanation_names_the_bullets_and_terms_that_matched(fake_searcher: Searcher) -> None:
    hit = fake_searcher.search("저랭크 행렬 low-rank", mode="hybrid", limit=1, explain=True).results[0]
    assert hit.explain is not None
    lexical = hit.explain.bullets["lexical"]
    assert lexical is not None
    bullet = fake_searcher.get_paper(hit.paper.id).bullets[lexical].text
    assert any(term.term in bullet.lower() for term in hit.explain.terms)
    assert {leg.leg for leg in hit.explain.legs} >= {"dense_best_bullet", "lexical_summary"}


def test_dense_english_terms_change_only_what_the_dense_legs_embed(fake_searcher: Searcher) -> None:
    texts = ["저랭크 적응(Low-Rank Adaptation)을 제안", "트랜스포머(Transformer) 구조"] * 2
    on = Searcher(
        fake_searcher.index,
        fake_searcher.embedder,
        tokenizer=fake_searcher.tokenizer,
        settings=SearchSettings(dense_english_terms=True),
        term_map=TermMap.from_texts(texts),
    )
    assert on.dense_query_text("저랭크 적응 방법") == "저랭크 적응 방법 (low rank adaptation)"
    assert on.dense_query_text("트랜스포머 transformer 구조") == "트랜스포머 transformer 구조"  # has it already
    assert on.dense_query_text("state space model") == "state space model"  # nothing Korean to translate
    assert on.query_terms("저랭크 적응") == fake_searcher.query_terms("저랭크 적응")  # lexical legs untouched
    assert fake_searcher.settings.dense_english_terms is False  # measured to lose on test (EVALUATION.md)
    assert fake_searcher.dense_query_text("저랭크 적응 방법") == "저랭크 적응 방법"
    hits = on.search("저랭크 적응 방법", mode="dense", limit=5)
    qvec = on.embedder.embed_queries(["저랭크 적응 방법"])[0]  # evidence cites the query as written
    top = hits.results[0]
    pi = next(i for i, p in enumerate(on.papers) if p.arxiv_id == top.paper.id)
    row = int(on.bullet_offsets[pi]) + top.evidence[0].position
    assert top.evidence[0].score == pytest.approx(float(on.bullet_matrix[row] @ qvec), abs=1e-5)
