"""The second-stage re-ranker (retrieval/rerank.py): features, the model and its round trip in
learned.json, the searcher applying it, and the build fitting and carrying it."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from test_learned import live_version, options, store_learned, tuning_file  # noqa: F401 (fixture)

from retrieval.cli import main
from retrieval.embedding import FakeEmbedder
from retrieval.errors import IndexCorruptError
from retrieval.indexer import build_index
from retrieval.learned import LEARNED_FILE, LearnedModels
from retrieval.lexical import KoreanEnglishTokenizer
from retrieval.rerank import DEPTH, FEATURES, FEATURES_ID, PaperTables, Reranker, candidate_features, fit_reranker
from retrieval.search import Searcher, SearchSettings
from retrieval.service import open_searcher
from retrieval.store import load_index

RANK = FEATURES.index("fused_rank")


def synthetic(queries: int, width: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Rows whose only varying feature is `fused_rank` (shuffled), graded by it: the higher, the
    more relevant, so a model that learned it reverses the default order's head."""
    rng = np.random.default_rng(seed)
    x = np.zeros((queries, width, len(FEATURES)), dtype=np.float32)
    x[:, :, RANK] = np.argsort(rng.random((queries, width)), axis=1)
    return x, x[:, :, RANK].astype(np.int32)


@pytest.fixture(scope="module")
def backwards() -> Reranker:
    x, label = synthetic(400, 12, seed=0)
    model = fit_reranker([(x, label, 1)], depth=12)
    assert model is not None
    return model


# --------------------------------------------------------------------------- the model
def test_a_fitted_model_learns_and_survives_learned_json(backwards: Reranker) -> None:
    x, label = synthetic(100, 12, seed=1)
    picked = np.array([backwards.order(rows)[0] for rows in x])
    assert (label[np.arange(len(x)), picked] == 11).all()  # held-out rows: it learned the rule
    models = LearnedModels(None, None, {"papers": 12}, reranker=backwards)
    text = models.to_json()
    assert "pickle" not in text and json.loads(text)["reranker"]["features"] == FEATURES_ID
    back = LearnedModels.from_json(text)
    assert back.fitted and back.reranker is not None and back.reranker.depth == 12
    assert np.array_equal(back.reranker.scores(x[0]), backwards.scores(x[0]))


def test_nothing_to_fit_gives_no_model() -> None:
    x, label = synthetic(5, 12, seed=2)
    assert fit_reranker([(x, np.zeros_like(label), 1)]) is None


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"model": "tree\nnot a model"}, "reranker model cannot be read"),
        ({"depth": True}, "integer depth"),
        ({"depth": 1}, "depth 1 is below 2"),
        ({"extra": 1}, "exactly model, depth, features"),
    ],
)
def test_a_damaged_reranker_is_refused(backwards: Reranker, change: dict, message: str) -> None:
    data = json.loads(LearnedModels(None, None, reranker=backwards).to_json())
    data["reranker"] |= change
    with pytest.raises(ValueError, match=message):
        LearnedModels.from_json(json.dumps(data))


def test_a_reranker_of_other_features_is_left_out(backwards: Reranker) -> None:
    data = json.loads(LearnedModels(None, None, reranker=backwards).to_json())
    data["reranker"]["features"] = "rerank-v0"
    back = LearnedModels.from_json(json.dumps(data))
    assert back.reranker is None and "other features: not used" in back.note


# --------------------------------------------------------------------------- features
def test_features_see_names_numbers_and_terms(fake_searcher: Searcher) -> None:
    papers = [p.arxiv_id for p in fake_searcher.papers]
    attention, lora = papers.index("1706.03762"), papers.index("2106.09685")
    tables = PaperTables.of(fake_searcher.papers)
    column = {name: i for i, name in enumerate(FEATURES)}
    top = np.array([attention, lora])
    text = "Transformer: 28.4 BLEU translation"
    query = fake_searcher.query_legs(text, fake_searcher.embedder.embed_queries([text])[0])
    x = candidate_features(fake_searcher, tables, query, top, ("bullets", "title"))
    assert x.shape == (2, len(FEATURES)) and x.dtype == np.float32
    assert list(x[:, column["name_in_summary"]]) == [1.0, 0.0]  # "Transformer" is in the first summary only
    assert list(x[:, column["numbers_matched"]]) == [1.0, 0.0]  # so is 28.4
    assert x[0, column["cov_latin_idf"]] > x[1, column["cov_latin_idf"]]
    assert list(x[:, column["q_colon"]]) == [1.0, 1.0] and list(x[:, column["fused_rank"]]) == [0.0, 1.0]
    plain = fake_searcher.query_legs("low rank", fake_searcher.embedder.embed_queries(["low rank"])[0], ("bullets",))
    y = candidate_features(fake_searcher, tables, plain, top, ("bullets",))
    assert (y[:, column["name_in_summary"]] == -1.0).all() and (y[:, column["numbers_matched"]] == -1.0).all()
    assert (y[:, column["dense_title:z"]] == 0.0).all()  # the title legs are not searched


# --------------------------------------------------------------------------- the searcher
def test_the_searcher_reorders_the_head_of_hybrid_rankings(fake_sample_index: Path, backwards: Reranker,
                                                           tokenizer: KoreanEnglishTokenizer) -> None:  # fmt: skip
    index = load_index(fake_sample_index)
    plain = Searcher(index, FakeEmbedder(64), tokenizer=tokenizer)
    reranked = Searcher(index, FakeEmbedder(64), tokenizer=tokenizer, reranker=backwards)
    query = "low-rank adaptation of language models"
    ids = lambda s, **kw: [h.paper.id for h in s.search(query, limit=12, **kw).results]  # noqa: E731
    default = ids(plain)
    assert len(default) == 12
    assert ids(reranked)[:8] == default[::-1][:8]  # the model puts the default order's last first
    assert sorted(ids(reranked)) == sorted(default)  # (the lowest grades weigh too little to be told apart)
    hits = reranked.search(query, limit=12).results
    scores = [h.score for h in hits]
    assert scores == sorted(scores, reverse=True)  # the shown scores stay descending
    explained = reranked.search(query, limit=12, explain=True).results
    for hit in explained:  # the breakdown still adds up to the shown score, the move as its own leg
        assert hit.explain is not None
        assert sum(leg.contribution for leg in hit.explain.legs) == pytest.approx(hit.score, abs=1e-4)
    assert explained[0].explain is not None and explained[0].explain.legs[-1].leg == "reranker"
    assert ids(reranked, mode="dense") == ids(plain, mode="dense")  # hybrid only
    reranked.settings = SearchSettings(rerank=False)
    assert ids(reranked) == default
    page = [h.paper.id for h in Searcher(index, FakeEmbedder(64), tokenizer=tokenizer, reranker=backwards)
            .search(query, limit=4, offset=4).results]  # fmt: skip
    assert page == default[::-1][4:8]  # pages follow the re-ranked order
    plain.close()
    reranked.close()


def test_korean_and_mixed_queries_keep_the_fused_order(fake_sample_index: Path, backwards: Reranker,
                                                       tokenizer: KoreanEnglishTokenizer) -> None:  # fmt: skip
    """The re-ranker learned from English titles and lost on Korean and mixed queries: it serves
    queries that are mostly Latin letters (`SearchSettings.rerank_min_latin`)."""
    index = load_index(fake_sample_index)
    plain = Searcher(index, FakeEmbedder(64), tokenizer=tokenizer)
    reranked = Searcher(index, FakeEmbedder(64), tokenizer=tokenizer, reranker=backwards)
    ids = lambda s, q: [h.paper.id for h in s.search(q, limit=12).results]  # noqa: E731
    for query in ("저랭크 행렬로 미세 조정하는 방법", "저랭크 행렬로 LLM을 LoRA 방식으로 미세 조정"):
        assert plain.analyse(query).english < SearchSettings().rerank_min_latin
        assert ids(reranked, query) == ids(plain, query)
        reranked.settings = SearchSettings(rerank_min_latin=0.0)  # every language: re-ordered
        assert ids(reranked, query)[:8] == ids(plain, query)[::-1][:8]
        reranked.settings = SearchSettings()
    assert reranked.reranks(1.0) and not reranked.reranks(0.5) and not plain.reranks(1.0)
    plain.close()
    reranked.close()


# --------------------------------------------------------------------------- the build
def test_the_build_fits_carries_and_checks_the_reranker(
    corpus: Path, tmp_path: Path, tuning_file: Path, tokenizer: KoreanEnglishTokenizer,  # noqa: F811
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    index = tmp_path / "index"
    build_index(corpus, index, FakeEmbedder(64), tokenizer=tokenizer, learning=options(tuning_file))
    learned = load_index(index).learned
    assert learned is not None and learned.reranker is not None and learned.reranker.depth == DEPTH
    assert learned.fitted_on["inputs"]["reranker"] == FEATURES_ID and "rerank_seconds" in learned.fitted_on
    searcher = open_searcher(index, tokenizer=tokenizer)
    assert searcher.reranker == learned.reranker
    assert len(searcher.search("저랭크 행렬로 LLM 미세 조정", limit=5).results) == 5
    searcher.close()
    report = build_index(corpus, index, FakeEmbedder(64), tokenizer=tokenizer, learning=options(tuning_file))
    assert report.learned["action"] == "carried" and load_index(index).learned.reranker == learned.reranker
    without = build_index(corpus, tmp_path / "plain", FakeEmbedder(64), tokenizer=tokenizer,
                          learning=options(tuning_file, rerank=False))  # fmt: skip
    assert without.learned["action"] == "fitted" and load_index(tmp_path / "plain").learned.reranker is None
    data = json.loads((live_version(index) / LEARNED_FILE).read_text(encoding="utf-8"))
    data["reranker"]["model"] = "garbage"
    store_learned(index, json.dumps(data))
    with pytest.raises(IndexCorruptError, match=r"learned.json is damaged \(reranker model cannot be read"):
        load_index(index)
    assert main(["search", "lora", "--index", str(index)]) == 5
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "reranker model cannot be read" in err and "Traceback" not in err


# --------------------------------------------------------------------------- the real model
@pytest.mark.slow
def test_features_and_reranking_through_the_default_model(e5_searcher: Searcher, backwards: Reranker) -> None:
    """Through e5-small-q4 on the sample: every feature is finite, the features that read the
    summary see the title's name in its own paper's summary, and the searcher re-orders the head."""
    query = "QLoRA: Efficient Finetuning of Quantized LLMs"
    own = next(i for i, p in enumerate(e5_searcher.papers) if p.arxiv_id == "2305.14314")
    legs = e5_searcher.query_legs(query, e5_searcher.embedder.embed_queries([query])[0])
    top = np.flatnonzero(np.isfinite(legs.fused))
    top = top[np.lexsort((top, -legs.fused[top]))][:DEPTH]
    assert top[0] == own  # the model finds the paper by its title
    x = candidate_features(e5_searcher, PaperTables.of(e5_searcher.papers), legs, top, ("bullets", "title"))
    assert x.shape == (len(top), len(FEATURES)) and np.isfinite(x).all()
    column = {name: i for i, name in enumerate(FEATURES)}
    assert x[0, column["name_in_summary"]] == 1.0  # "QLoRA" is written in its own summary
    assert x[0, column["cov_idf"]] == x[:, column["cov_idf"]].max()
    reranked = Searcher(e5_searcher.index, e5_searcher.embedder, tokenizer=e5_searcher.tokenizer, reranker=backwards)
    plain = [h.paper.id for h in e5_searcher.search(query, limit=len(top)).results]
    moved = [h.paper.id for h in reranked.search(query, limit=len(top)).results]
    assert moved[0] == plain[0] == "2305.14314"  # the query is its title: named exactly, it stays first
    assert moved[1:4] == plain[1:][::-1][:3]  # the rest follows the model


def test_a_paper_named_exactly_stays_first(fake_sample_index: Path, backwards: Reranker,
                                           tokenizer: KoreanEnglishTokenizer) -> None:  # fmt: skip
    """The exact-name leg's paper is not re-ranked: the model never saw that leg fire."""
    index = load_index(fake_sample_index)
    plain = Searcher(index, FakeEmbedder(64), tokenizer=tokenizer)
    reranked = Searcher(index, FakeEmbedder(64), tokenizer=tokenizer, reranker=backwards)
    default = [h.paper.id for h in plain.search("QLoRA", limit=12).results]
    moved = [h.paper.id for h in reranked.search("QLoRA", limit=12).results]
    assert default[0] == moved[0] == "2305.14314"
    assert moved[1:9] == default[1:][::-1][:8]  # the rest is still re-ranked
    plain.close()
    reranked.close()
