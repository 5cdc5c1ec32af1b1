"""Query views, lexical feedback and the summary-name leg (retrieval/views.py, SearchSettings)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

import numpy as np
import pytest
import scipy.sparse as sp

from retrieval.backends.sparse import SparseEncoder
from retrieval.embedding import FakeEmbedder
from retrieval.search import Searcher, SearchSettings
from retrieval.views import FeedbackTerms, NameMentions, description_of, mix_views, title_name, with_feedback

BULLETS = ("bullets",)


class RecordingEmbedder(FakeEmbedder):
    """The fake embedder, remembering what it embedded as queries and as passages."""

    def __init__(self, dim: int = 64) -> None:
        super().__init__(dim)
        self.queries: list[str] = []
        self.passages: list[str] = []

    def embed_queries(self, texts: Sequence[str]) -> np.ndarray:
        self.queries += list(texts)
        return super().embed_queries(texts)

    def embed_passages(self, texts: Sequence[str]) -> np.ndarray:
        self.passages += list(texts)
        return super().embed_passages(texts)


def searcher_with(base: Searcher, **settings: object) -> tuple[Searcher, RecordingEmbedder]:
    embedder = RecordingEmbedder(base.embedder.dim)
    searcher = Searcher(base.index, embedder, tokenizer=base.tokenizer, settings=SearchSettings(**settings))  # type: ignore[arg-type]
    return searcher, embedder


def test_description_is_the_text_after_the_first_colon() -> None:
    assert (
        description_of("LoRA: Low-Rank Adaptation of Large Language Models")
        == "Low-Rank Adaptation of Large Language Models"
    )
    assert description_of("A: b: c") == "b: c"
    assert description_of("no colon here") is None
    assert description_of(": only a tail") is None
    assert description_of("only a head:  ") is None


def test_views_are_mixed_by_their_shares_and_normalised() -> None:
    own = np.array([1.0, 0.0, 0.0], dtype=np.float32)
    view = np.array([0.0, 1.0, 0.0], dtype=np.float32)
    assert mix_views(own, []) is own
    half = mix_views(own, [(0.5, view)])
    assert half == pytest.approx(np.array([1.0, 1.0, 0.0]) / np.sqrt(2), abs=1e-6)
    assert mix_views(own, [(1.0, view)]) == pytest.approx(view)  # the view replaces the query
    quarter = mix_views(own, [(0.25, view)])
    assert quarter[0] == pytest.approx(3 * quarter[1], rel=1e-5) and np.linalg.norm(quarter) == pytest.approx(1.0)


def feedback_fixture() -> tuple[FeedbackTerms, dict[str, int]]:
    docs = [["확산", "모델", "a", "the"], ["확산", "영상"], ["언어", "모델"], ["언어"]]
    encoder = SparseEncoder().fit(docs)
    rows = [encoder.encode_document(d) for d in docs]
    matrix = sp.lil_matrix((len(docs), len(encoder.vocab)), dtype=np.float32)
    for row, weights in enumerate(rows):
        for term_id, weight in weights.items():
            matrix[row, term_id] = weight
    return FeedbackTerms.of(encoder, matrix.tocsr(), stopwords={"the"}), encoder.vocab


def test_feedback_takes_the_heaviest_eligible_terms_of_the_feedback_papers() -> None:
    terms, vocab = feedback_fixture()
    expansion = terms.expansion([0, 1], count=2)
    assert set(expansion) == {vocab["확산"], vocab["영상"]}  # "확산" in both papers, "영상" in the shorter one
    assert sum(expansion.values()) == pytest.approx(1.0)
    everything = terms.expansion([0, 1], count=10)
    assert vocab["a"] not in everything and vocab["the"] not in everything  # one letter, stop-word
    assert vocab["언어"] not in everything  # not in the feedback papers
    assert set(everything) == {vocab["확산"], vocab["영상"], vocab["모델"]}
    assert terms.expansion([], count=5) == {} and terms.expansion([0], count=0) == {}


def test_feedback_weights_scale_with_the_query_mass() -> None:
    query = {1: 2.0, 7: 1.0}
    out = with_feedback(query, {1: 0.5, 9: 0.5}, weight=0.2)
    assert out == pytest.approx({1: 2.0 + 0.2 * 3.0 * 0.5, 7: 1.0, 9: 0.2 * 3.0 * 0.5})
    assert with_feedback({}, {4: 1.0}, weight=0.3) == pytest.approx({4: 0.3})  # the expansion alone


def test_every_view_and_feedback_is_off_by_default(fake_searcher: Searcher) -> None:
    settings = SearchSettings()
    assert (settings.passage_mix, settings.colon_mix, settings.lowercase_mix, settings.weight_passage_bullets) == (
        0,
        0,
        0,
        0,
    )
    assert settings.feedback_docs == 0
    searcher, embedder = searcher_with(fake_searcher)
    searcher.search("LoRA: Low-Rank Adaptation", limit=3)
    assert embedder.passages == [] and embedder.queries == ["LoRA: Low-Rank Adaptation"]


def test_views_embed_what_they_name_and_change_only_the_dense_vector(fake_searcher: Searcher) -> None:
    query = "LoRA: Low-Rank Adaptation"
    searcher, embedder = searcher_with(fake_searcher, passage_mix=0.3, colon_mix=0.5, lowercase_mix=0.2)
    plain, _ = searcher_with(fake_searcher)
    response = searcher.search(query, limit=5, explain=True)
    assert embedder.passages == [query]
    assert sorted(embedder.queries) == sorted([query, "Low-Rank Adaptation", query.lower()])
    viewed = {leg.leg: leg for leg in response.results[0].explain.legs}  # type: ignore[union-attr]
    baseline = {leg.leg: leg for leg in plain.search(query, limit=5, explain=True).results[0].explain.legs}  # type: ignore[union-attr]
    assert set(viewed) == set(baseline)  # no new leg: the views only move the dense query vector
    dense = plain.dense_legs(plain.embedder.embed_queries([query])[0], plain.analyse(query).english)
    mixed = searcher.dense_legs(
        mix_views(embedder.embed_queries([query])[0], [
            (0.3, embedder.embed_passages([query])[0]), (0.5, embedder.embed_queries(["Low-Rank Adaptation"])[0]),
            (0.2, embedder.embed_queries([query.lower()])[0])]),
        searcher.analyse(query).english,
    )  # fmt: skip
    assert not np.allclose(dense[0].scores, mixed[0].scores)  # the description moves the vector


def test_passage_leg_searches_the_bullets_with_the_query_as_a_passage(fake_searcher: Searcher) -> None:
    searcher, embedder = searcher_with(fake_searcher, weight_passage_bullets=2.0)
    response = searcher.search("diffusion model for images", limit=3, explain=True)
    assert embedder.passages == ["diffusion model for images"]
    legs = {leg.leg for leg in response.results[0].explain.legs}  # type: ignore[union-attr]
    assert "dense_passage_bullet" in legs
    lexical, lexical_embedder = searcher_with(fake_searcher, weight_passage_bullets=2.0)
    lexical.search("diffusion model for images", mode="lexical", limit=3)
    assert lexical_embedder.passages == []  # no dense legs, no passage view


def lexical_raw(searcher: Searcher, query: str) -> dict[str, float]:
    """Each hit's raw BM25 summary score (NaN: not scored) under `searcher`."""
    out: dict[str, float] = {}
    for hit in searcher.search(query, limit=len(searcher.papers), explain=True).results:
        leg = next(leg for leg in hit.explain.legs if leg.leg == "lexical_summary")  # type: ignore[union-attr]
        out[hit.paper.id] = float("nan") if leg.raw is None else float(leg.raw)
    return out


def test_feedback_reruns_the_summary_leg_with_the_top_papers_terms(fake_searcher: Searcher) -> None:
    query = fake_searcher.papers[0].title
    off, _ = searcher_with(fake_searcher)
    on, _ = searcher_with(fake_searcher, feedback_docs=2, feedback_terms=10, feedback_weight=0.5)
    before, after = lexical_raw(off, query), lexical_raw(on, query)
    first = off.search(query, limit=1).results[0].paper.id  # a feedback paper: its own terms were added
    assert after[first] > before[first]
    assert {p for p, v in after.items() if v > 0} >= {p for p, v in before.items() if v > 0}
    for paper, score in before.items():
        if score > 0:
            assert after[paper] >= score - 1e-6  # feedback only adds positive weights
    assert lexical_raw(replace_settings(on, feedback_docs=0), query) == pytest.approx(before, nan_ok=True)


def replace_settings(searcher: Searcher, **changes: object) -> Searcher:
    return Searcher(searcher.index, searcher.embedder, tokenizer=searcher.tokenizer,
                    settings=replace(searcher.settings, **changes))  # type: ignore[arg-type]  # fmt: skip


def test_name_mentions_are_whole_words_in_any_case_spacing_or_hyphenation() -> None:
    mentions = NameMentions(
        ["MoSLoRA는 LoRA를 개선", "exploration of lora", "Coffee Gym 데이터", "LoRA2 모델", "GPT4o와 비교"]
    )
    assert mentions.papers("LoRA").tolist() == [0, 1]  # not inside "exploration", not "LoRA2"
    assert mentions.papers("MoSLoRA").tolist() == [0]  # a Korean particle may follow
    assert mentions.papers("Coffee-Gym").tolist() == [2]
    assert mentions.papers("GPT-4o").tolist() == [4]
    assert mentions.papers(" - ").tolist() == []


def test_a_title_shaped_query_names_its_head() -> None:
    assert title_name("MoSLoRA: Mixture of Subspaces") == "MoSLoRA"
    assert title_name("Motion Master: training-free camera motion") == "Motion Master"
    assert title_name("What matters when building vision-language models?") is None  # no colon
    assert title_name("Four words in head: tail") is None  # a phrase, not a name
    assert title_name("AI: short") is None  # too short to be told apart
    assert title_name("MoSLoRA:  ") is None  # nothing after the colon


def test_summary_name_leg_lifts_papers_mentioning_the_name(fake_searcher: Searcher) -> None:
    assert SearchSettings().summary_name_lift == 0.3  # measured on title fold 1 and fold 0 (EVALUATION.md)
    off, _ = searcher_with(fake_searcher, summary_name_lift=0.0)
    on, _ = searcher_with(fake_searcher, summary_name_lift=1.0)
    ranked = off.search("Qwertz: diffusion model for images", limit=12, fields=BULLETS).results
    last = ranked[-1].paper.id
    pi = next(i for i, p in enumerate(on.papers) if p.arxiv_id == last)
    on._mentions = NameMentions(["Qwertz 모델" if i == pi else p.bullets[0].text for i, p in enumerate(on.papers)])
    response = on.search("Qwertz: diffusion model for images", limit=12, fields=BULLETS, explain=True)
    assert response.results[0].paper.id == last  # lifted above every paper not mentioning it
    legs = {leg.leg: leg.contribution for leg in response.results[0].explain.legs}  # type: ignore[union-attr]
    assert legs["summary_name"] > 0 and "exact_name" not in legs
    assert sum(legs.values()) == pytest.approx(response.results[0].score, abs=1e-4)
    plain = on.search("Qwertz diffusion model for images", limit=12, fields=BULLETS)  # no colon: no lift
    assert [h.paper.id for h in plain.results] == [h.paper.id for h in off.search(
        "Qwertz diffusion model for images", limit=12, fields=BULLETS).results]  # fmt: skip
