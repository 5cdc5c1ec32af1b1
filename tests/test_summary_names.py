"""The summary-name leg (retrieval/mentions.py, `SearchSettings.summary_name_lift`)."""

from __future__ import annotations

import numpy as np
import pytest

from retrieval.embedding import FakeEmbedder
from retrieval.mentions import NameMentions, title_name
from retrieval.search import Searcher, SearchSettings

BULLETS = ("bullets",)


def searcher_with(base: Searcher, **settings: object) -> tuple[Searcher, FakeEmbedder]:
    embedder = FakeEmbedder(base.embedder.dim)
    searcher = Searcher(base.index, embedder, tokenizer=base.tokenizer, settings=SearchSettings(**settings))  # type: ignore[arg-type]
    return searcher, embedder


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


def test_the_rerankers_training_sees_the_lift_the_search_applies(fake_searcher: Searcher) -> None:
    """`query_legs` (what the re-ranker is fitted on) fuses exactly as `search`, the lift included."""
    on, _ = searcher_with(fake_searcher, summary_name_lift=1.0)
    query = "Qwertz: diffusion model for images"
    last = on.search(query.replace(":", ""), limit=12, fields=BULLETS).results[-1].paper.id
    pi = next(i for i, p in enumerate(on.papers) if p.arxiv_id == last)
    on._mentions = NameMentions(["Qwertz 모델" if i == pi else p.bullets[0].text for i, p in enumerate(on.papers)])
    searched = [h.paper.id for h in on.search(query, limit=12, fields=BULLETS).results]
    legs = on.query_legs(query, on.embedder.embed_queries([query])[0], BULLETS)
    ranked = np.flatnonzero(np.isfinite(legs.fused))
    ranked = ranked[np.lexsort((ranked, -legs.fused[ranked]))]
    assert searched[0] == last and [on.papers[i].arxiv_id for i in ranked[:12]] == searched
