"""Learned models stored in the index (retrieval/learned.py, training.py, learning.py): learned.json,
fitted by the build and carried forward while the corpus changes little, checked on load, used by
the searcher. The fake embedder keeps most of this fast; one test runs the real default model."""

from __future__ import annotations

import json
import logging
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from conftest import SAMPLE

import retrieval.refit as refit
from retrieval.cli import main
from retrieval.corpus import load_corpus
from retrieval.embedding import FakeEmbedder, load_embedder
from retrieval.errors import IndexCorruptError, QueryFileError
from retrieval.evaluation import load_query_file
from retrieval.indexer import build_index
from retrieval.learned import (
    DEV_QUERIES,
    LEARNED_FILE,
    NO_TUNING,
    LearnedModels,
    LearnOptions,
    read_learned,
    refit_reason,
    search_settings,
    without_learned,
)
from retrieval.lexical import KoreanEnglishTokenizer
from retrieval.relevance import E5_SMALL_Q4, Calibration
from retrieval.search import SearchSettings
from retrieval.service import open_searcher
from retrieval.store import MANIFEST_FILE, file_sha256, load_index

# Reader-style queries about the 12 sample papers (examples/sample), every language.
TUNING = [
    ("low-rank adaptation for fine-tuning large language models", "2106.09685", "en"),
    ("저랭크 행렬로 LLM 미세 조정", "2106.09685", "ko"),
    ("state space model with selective scan", "2312.00752", "en"),
    ("어텐션만으로 시퀀스를 변환하는 모델", "1706.03762", "ko"),
    ("이미지-텍스트 쌍으로 학습한 CLIP 모델", "2103.00020", "mixed"),
    ("보상 모델 없이 선호 데이터로 정책을 직접 최적화", "2305.18290", "ko"),
    ("4비트 양자화 모델 위에서 LoRA 어댑터만 학습", "2305.14314", "mixed"),
    ("dense passage retrieval for open-domain question answering", "2004.04906", "en"),
]
MODELS = LearnedModels(
    fusion={"weight_dense_max": 1.0, "weight_dense_max_english": 4.5, "weight_lexical_paper": 7.25},
    calibration=Calibration(intercept=-30.5, cosine=33.0, term_share=7.5, latin=2.25, threshold=0.15),
    fitted_on={"papers": 12, "inputs": {"model": "fake:64"}, "answered": {"tuning": 8, "title": 7}},
    drift=3,
    note="",
)


@pytest.fixture()
def tuning_file(tmp_path: Path) -> Path:
    path = tmp_path / "tuning.jsonl"
    lines = [json.dumps({"q": q, "ids": [i], "lang": lang}, ensure_ascii=False) for q, i, lang in TUNING]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def options(tuning: Path | None, **extra: object) -> LearnOptions:
    """Small enough for the sample: every fold-0 title, a handful of answered queries."""
    return LearnOptions(tuning_queries=tuning, min_queries=3, **extra)  # type: ignore[arg-type]


def live_version(index: Path) -> Path:
    return index / "versions" / (index / "CURRENT").read_text(encoding="utf-8").strip()


def store_learned(index: Path, text: str) -> None:
    """Replace the live version's learned.json and list it in the manifest with its new checksum."""
    version = live_version(index)
    path = version / LEARNED_FILE
    path.write_text(text, encoding="utf-8")
    manifest = json.loads((version / MANIFEST_FILE).read_text(encoding="utf-8"))
    manifest["files"][LEARNED_FILE] = {"sha256": file_sha256(path), "bytes": path.stat().st_size}
    (version / MANIFEST_FILE).write_text(json.dumps(manifest), encoding="utf-8")


# --------------------------------------------------------------------------- learned.json
def test_learned_json_round_trip() -> None:
    text = MODELS.to_json()
    assert LearnedModels.from_json(text) == MODELS
    assert "pickle" not in text and json.loads(text)["schema"] == 1
    empty = LearnedModels(None, None, {"papers": 12}, note="no tuning queries")
    assert LearnedModels.from_json(empty.to_json()) == empty and not empty.fitted


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"fusion": {"weight_bogus": 1.0}}, "'fusion' must map"),
        ({"fusion": {"weight_dense_max": "1"}}, "fusion.weight_dense_max"),
        ({"calibration": {"intercept": 1.0}}, "'calibration' must have exactly"),
        ({"schema": 99}, "schema 99"),
        ({"drift": -1}, "'drift' a count"),
    ],
)
def test_learned_json_with_bad_content_is_refused(change: dict, message: str) -> None:
    data = {**json.loads(MODELS.to_json()), **change}
    with pytest.raises(ValueError, match=message):
        LearnedModels.from_json(json.dumps(data))
    with pytest.raises(ValueError, match="threshold"):
        bad = json.loads(MODELS.to_json())
        bad["calibration"]["threshold"] = 1.5
        LearnedModels.from_json(json.dumps(bad))


# --------------------------------------------------------------------------- the build
def test_build_fits_then_an_unchanged_rebuild_carries_the_models(
    corpus: Path, tmp_path: Path, tuning_file: Path, tokenizer: KoreanEnglishTokenizer
) -> None:
    index = tmp_path / "index"
    first = build_index(corpus, index, FakeEmbedder(64), tokenizer=tokenizer, learning=options(tuning_file))
    assert first.learned["action"] == "fitted" and first.learned["reason"] == "first build"
    assert first.learned["seconds"] > 0
    data = load_index(index)
    assert LEARNED_FILE in data.manifest.files  # listed and checked like every other file
    stored = data.learned
    assert stored is not None and stored.fusion is not None and stored.calibration is not None
    assert stored.fusion["weight_dense_max"] == 1.0  # scaled to the best-bullet leg
    assert set(stored.fusion) == set(SearchSettings().__dataclass_fields__) & set(stored.fusion)
    assert stored.fitted_on["title_queries"] == 7 and stored.fitted_on["tuning_queries"] == len(TUNING)
    assert stored.fitted_on["inputs"]["tuning_queries_sha256"] == file_sha256(tuning_file)

    second = build_index(corpus, index, FakeEmbedder(64), tokenizer=tokenizer, learning=options(tuning_file))
    assert second.unchanged and second.version == first.version
    assert second.learned["action"] == "carried" and second.learned["seconds"] == 0.0
    assert load_index(index).learned == stored


def test_a_small_change_carries_the_models_and_a_larger_one_refits(
    corpus: Path, tmp_path: Path, tuning_file: Path, tokenizer: KoreanEnglishTokenizer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(refit, "REFIT_MIN_PAPERS", 1)  # the sample has 12 papers
    index = tmp_path / "index"
    learning = options(tuning_file, refit_percent=15.0)  # one paper of 12 is 8 %
    build_index(corpus, index, FakeEmbedder(64), tokenizer=tokenizer, learning=learning)
    fitted = load_index(index).learned
    assert fitted is not None and fitted.drift == 0
    digest = corpus / "2023/12/01.md"
    text = digest.read_text(encoding="utf-8")
    digest.write_text(text.replace("어텐션(attention)만으로", "어텐션(attention) 하나만으로", 1), encoding="utf-8")
    report = build_index(corpus, index, FakeEmbedder(64), tokenizer=tokenizer, learning=learning)
    assert not report.unchanged and report.learned["action"] == "carried"
    carried = load_index(index).learned
    assert carried is not None and carried.drift == 1
    assert (carried.fusion, carried.calibration, carried.fitted_on) == (fitted.fusion, fitted.calibration,
                                                                         fitted.fitted_on)  # fmt: skip
    digest.write_text(text.replace("순환 신경망", "순환 신경망 모델", 1), encoding="utf-8")  # drift 2 of 12: 17 %
    report = build_index(corpus, index, FakeEmbedder(64), tokenizer=tokenizer, learning=learning)
    assert report.learned["action"] == "fitted" and "16.7% of the papers" in report.learned["reason"]
    refitted = load_index(index).learned
    assert refitted is not None and refitted.drift == 0


def test_the_models_can_learn_from_the_other_title_fold(
    corpus: Path, tmp_path: Path, tuning_file: Path, tokenizer: KoreanEnglishTokenizer
) -> None:
    """`title_fold=1` (RETRIEVAL_LEARNED_TITLE_FOLD) trains on fold 1's titles, so that fold 0
    can be measured held out; switching folds refits."""
    from retrieval.evaluation import title_fold
    from retrieval.training import title_sample

    index = tmp_path / "index"
    build_index(corpus, index, FakeEmbedder(64), tokenizer=tokenizer, learning=options(tuning_file))
    report = build_index(
        corpus, index, FakeEmbedder(64), tokenizer=tokenizer, learning=options(tuning_file, title_fold=1)
    )
    assert report.learned["action"] == "fitted" and report.learned["reason"] == "the training inputs changed"
    stored = load_index(index).learned
    assert stored is not None and stored.fitted_on["title_fold"] == 1
    searcher = open_searcher(index)
    ones = title_sample(searcher, 100, 0, fold=1)
    assert len(ones) and all(title_fold(searcher.papers[i].arxiv_id) == 1 for i in ones)
    assert stored.fitted_on["title_queries"] == len(ones)
    searcher.close()


def test_changed_tuning_queries_refit_even_on_an_unchanged_corpus(
    corpus: Path, tmp_path: Path, tuning_file: Path, tokenizer: KoreanEnglishTokenizer
) -> None:
    index = tmp_path / "index"
    build_index(corpus, index, FakeEmbedder(64), tokenizer=tokenizer, learning=options(tuning_file))
    with tuning_file.open("a", encoding="utf-8") as handle:
        handle.write(json.dumps({"q": "1.58-bit ternary weights", "ids": ["2402.17764"], "lang": "en"}) + "\n")
    report = build_index(corpus, index, FakeEmbedder(64), tokenizer=tokenizer, learning=options(tuning_file))
    assert not report.unchanged and report.learned["action"] == "fitted"
    assert report.learned["reason"] == "the training inputs changed"
    stored = load_index(index).learned
    assert stored is not None and stored.fitted_on["tuning_queries"] == len(TUNING) + 1


def test_an_index_keeps_its_tuning_file_when_a_build_names_none(
    corpus: Path, tmp_path: Path, tuning_file: Path, tokenizer: KoreanEnglishTokenizer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Like its model: `watch` or a plain rebuild must not drop the learned models."""
    monkeypatch.setattr(refit, "REFIT_MIN_PAPERS", 1)  # the sample has 12 papers
    index = tmp_path / "index"
    build_index(corpus, index, FakeEmbedder(64), tokenizer=tokenizer, learning=options(tuning_file))
    stored = load_index(index).learned
    assert stored is not None and stored.fitted_on["tuning_queries_path"] == str(tuning_file.resolve())
    (corpus / "2024/11/05.md").unlink()  # 4 of 12 papers: refit
    report = build_index(corpus, index, FakeEmbedder(64), tokenizer=tokenizer, learning=options(None))
    assert report.learned["action"] == "fitted"
    refitted = load_index(index).learned
    left = {p.arxiv_id for p in load_corpus(corpus).papers}
    named = sum(paper in left for _, paper, _ in TUNING)  # the queries about removed papers are left out
    assert 0 < named < len(TUNING)
    assert refitted is not None and refitted.fitted and refitted.fitted_on["tuning_queries"] == named
    tuning_file.unlink()  # gone: the bundled dev set is next, and it names no sample paper
    report = build_index(corpus, index, FakeEmbedder(64), tokenizer=tokenizer, learning=options(None))
    assert report.learned["action"] == "defaults" and report.learned["reason"] == "the training inputs changed"
    assert "none of the 126 tuning queries in dev.jsonl names a paper" in report.learned["note"]
    assert load_index(index).learned.fitted_on["tuning_queries_path"] == str(DEV_QUERIES)


def test_without_tuning_queries_or_data_the_code_defaults_stay(
    corpus: Path, tmp_path: Path, tuning_file: Path, tokenizer: KoreanEnglishTokenizer
) -> None:
    index = tmp_path / "index"
    report = build_index(corpus, index, FakeEmbedder(64), tokenizer=tokenizer)  # the bundled dev set
    assert report.learned["action"] == "defaults"
    assert report.learned["note"] == "none of the 126 tuning queries in dev.jsonl names a paper of this corpus"
    stored = load_index(index).learned
    assert stored is not None and not stored.fitted
    report = build_index(corpus, tmp_path / "none", FakeEmbedder(64), tokenizer=tokenizer,
                         learning=LearnOptions(tuning_queries=NO_TUNING))  # fmt: skip
    assert report.learned["action"] == "defaults" and "no tuning queries" in report.learned["note"]
    assert load_index(tmp_path / "none").learned.fitted_on["tuning_queries_path"] == NO_TUNING
    (corpus / "2024/11/05.md").unlink()  # a later plain build (as `watch` runs it) keeps the choice
    report = build_index(corpus, tmp_path / "none", FakeEmbedder(64), tokenizer=tokenizer)
    assert "no tuning queries" in report.learned["note"]
    too_few = LearnOptions(tuning_queries=tuning_file)  # the default minimum is far above the sample's 15
    report = build_index(corpus, index, FakeEmbedder(64), tokenizer=tokenizer, learning=too_few)
    assert report.learned["action"] == "defaults" and "fewer than 100" in report.learned["note"]


def test_by_default_a_build_fits_on_the_bundled_dev_queries_that_name_its_papers(
    corpus: Path, tmp_path: Path, tokenizer: KoreanEnglishTokenizer
) -> None:
    """The sample's papers renamed to papers the dev set asks about: the default build fits on
    exactly those queries, and a later build that names none keeps the choice."""
    dev_ids = [min(q.ids) for q in load_query_file(DEV_QUERIES)]
    sample_ids = sorted({p.arxiv_id for p in load_corpus(corpus).papers})
    for digest in corpus.rglob("*.md"):
        text = digest.read_text(encoding="utf-8")
        for old, new in zip(sample_ids, dev_ids[::10], strict=False):
            text = text.replace(f"abs/{old})", f"abs/{new})")
        digest.write_text(text, encoding="utf-8")
    renamed = {p.arxiv_id for p in load_corpus(corpus).papers}
    named = [q for q in load_query_file(DEV_QUERIES) if set(q.ids) & renamed]
    assert len(named) == len(sample_ids)
    index = tmp_path / "index"
    report = build_index(corpus, index, FakeEmbedder(64), tokenizer=tokenizer, learning=LearnOptions(min_queries=3))
    stored = load_index(index).learned
    assert report.learned["action"] == "fitted" and stored is not None and stored.fitted
    assert stored.fitted_on["tuning_queries"] == len(named)
    assert stored.fitted_on["tuning_queries_path"] == str(DEV_QUERIES)
    assert stored.fitted_on["inputs"]["tuning_queries_sha256"] == file_sha256(DEV_QUERIES)


def test_a_bad_tuning_file_stops_the_build_before_it_starts(
    corpus: Path, tmp_path: Path, tokenizer: KoreanEnglishTokenizer
) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"q": "no ids"}\n', encoding="utf-8")
    with pytest.raises(QueryFileError, match="bad.jsonl:1"):
        build_index(corpus, tmp_path / "index", FakeEmbedder(64), tokenizer=tokenizer, learning=options(bad))
    assert not (tmp_path / "index" / "CURRENT").exists()


def test_build_index_cli_takes_the_tuning_file(
    corpus: Path, tmp_path: Path, tuning_file: Path, capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch, tokenizer: KoreanEnglishTokenizer,
) -> None:  # fmt: skip
    monkeypatch.setattr("retrieval.indexer.KoreanEnglishTokenizer", lambda: tokenizer)
    monkeypatch.setenv("RETRIEVAL_TUNING_QUERIES", str(tmp_path / "missing.jsonl"))
    index = str(tmp_path / "index")
    assert main(["build-index", str(corpus), "--index", index, "--model", "fake:64"]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        f"error: tuning queries file {tmp_path / 'missing.jsonl'} not found (--tuning-queries, "
        "RETRIEVAL_TUNING_QUERIES)"
    ]
    code = main(["build-index", str(corpus), "--index", index, "--model", "fake:64", "--tuning-queries",
                 str(tuning_file), "--json"])  # fmt: skip
    assert code == 0
    report = json.loads(capsys.readouterr().out)
    # the sample is far below the default minimum of training queries: the code defaults, said so
    assert report["learned"]["action"] == "defaults" and "fewer than 100" in report["learned"]["note"]

    code = main(["build-index", str(corpus), "--index", index, "--model", "fake:64", "--tuning-queries", "None",
                 "--json"])  # fmt: skip
    assert code == 0
    report = json.loads(capsys.readouterr().out)
    assert report["learned"]["action"] == "defaults" and "no tuning queries" in report["learned"]["note"]


def test_eval_says_which_queries_the_learned_models_were_fitted_on(
    corpus: Path, tmp_path: Path, tuning_file: Path, capsys: pytest.CaptureFixture[str],
    tokenizer: KoreanEnglishTokenizer,
) -> None:  # fmt: skip
    index = tmp_path / "index"
    build_index(corpus, index, FakeEmbedder(64), tokenizer=tokenizer, learning=options(tuning_file))
    assert main(["eval", "--index", str(index), "--queries", str(tuning_file)]) == 0
    assert "note: the index's learned models were fitted on tuning.jsonl: in-sample" in capsys.readouterr().out
    other = tmp_path / "other.jsonl"
    other.write_text(tuning_file.read_text(encoding="utf-8").splitlines()[0] + "\n", encoding="utf-8")
    assert main(["eval", "--index", str(index), "--queries", str(other), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["in_sample"] == ""
    assert main(["eval", "--index", str(index), "--title-fold", "0", "--json"]) == 0
    note = json.loads(capsys.readouterr().out)["in_sample"]
    assert note == "the index's learned models were fitted on title fold 0; held out: --title-fold 1"
    assert main(["eval", "--index", str(index), "--title-fold", "1", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["in_sample"] == ""


# --------------------------------------------------------------------------- loading
def test_a_corrupt_learned_json_is_reported_in_one_line(
    corpus: Path, tmp_path: Path, tuning_file: Path, tokenizer: KoreanEnglishTokenizer,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    index = tmp_path / "index"
    build_index(corpus, index, FakeEmbedder(64), tokenizer=tokenizer, learning=options(tuning_file))
    path = live_version(index) / LEARNED_FILE
    original = path.read_text(encoding="utf-8")
    path.write_text(original.replace('"schema": 1', '"schema": 2'), encoding="utf-8")  # same size, new bytes
    with pytest.raises(IndexCorruptError, match="learned.json does not match its checksum"):
        load_index(index)
    store_learned(index, original.replace('"weight_dense_max": 1.0', '"weight_dense_max": "high"'))
    with pytest.raises(IndexCorruptError, match=r"learned.json is damaged \(fusion.weight_dense_max is 'high'"):
        load_index(index)
    assert main(["search", "lora", "--index", str(index)]) == 5
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "learned.json is damaged" in err and "Traceback" not in err
    assert read_learned(live_version(index)) is None  # the next build refits instead of failing
    report = build_index(corpus, index, FakeEmbedder(64), tokenizer=tokenizer, learning=options(tuning_file))
    assert report.learned["action"] == "fitted" and load_index(index).learned is not None


def test_an_index_without_learned_json_still_loads(
    corpus: Path, tmp_path: Path, tokenizer: KoreanEnglishTokenizer, caplog: pytest.LogCaptureFixture
) -> None:
    """An index built before learned.json existed: code defaults, said in a log line."""
    index = tmp_path / "index"
    build_index(corpus, index, FakeEmbedder(64), tokenizer=tokenizer)
    version = live_version(index)
    (version / LEARNED_FILE).unlink()
    manifest = json.loads((version / MANIFEST_FILE).read_text(encoding="utf-8"))
    del manifest["files"][LEARNED_FILE]
    (version / MANIFEST_FILE).write_text(json.dumps(manifest), encoding="utf-8")
    with caplog.at_level(logging.INFO, logger="retrieval.learned"):
        searcher = open_searcher(index, tokenizer=tokenizer)
    assert searcher.index.learned is None and searcher.settings == SearchSettings()
    assert any("has no learned.json" in r.getMessage() for r in caplog.records)
    searcher.close()


# --------------------------------------------------------------------------- the searcher
def test_the_searcher_ranks_with_the_stored_weights(
    corpus: Path, tmp_path: Path, tokenizer: KoreanEnglishTokenizer, caplog: pytest.LogCaptureFixture
) -> None:
    index = tmp_path / "index"
    build_index(corpus, index, FakeEmbedder(64), tokenizer=tokenizer)
    query = "low-rank adaptation of language models"
    with caplog.at_level(logging.INFO, logger="retrieval.learned"):
        defaults = open_searcher(index, tokenizer=tokenizer)
    assert any("no learned models (none of the 126 tuning queries" in r.getMessage() for r in caplog.records)
    ids = lambda s, mode: [h.paper.id for h in s.search(query, mode=mode, limit=12).results]  # noqa: E731
    assert ids(defaults, "hybrid") != ids(defaults, "dense")  # the lexical legs count by default
    defaults.close()
    dense_only = {"weight_lexical_paper": 0.0, "weight_lexical_paper_english": 0.0, "weight_lexical_title": 0.0}
    calibration = Calibration(intercept=-5.0, cosine=1.0, term_share=1.0, latin=0.0, threshold=0.9)
    store_learned(index, LearnedModels(dense_only, calibration, {"papers": 12}).to_json())
    searcher = open_searcher(index, tokenizer=tokenizer)
    assert searcher.settings.weight_lexical_paper == 0.0 and searcher.relevance_calibration == calibration
    assert ids(searcher, "hybrid") == ids(searcher, "dense")  # zero lexical weights: hybrid ranks as dense
    hits = searcher.search(query, limit=3).results
    assert all(hit.weak for hit in hits)  # the stored calibration (threshold 0.9) judges the hits
    searcher.close()
    explicit = open_searcher(index, tokenizer=tokenizer, settings=SearchSettings(weight_lexical_paper=2.0))
    assert explicit.settings.weight_lexical_paper == 2.0  # the caller's explicit weight wins
    assert explicit.settings.weight_lexical_title == 0.0  # the rest comes from the index
    explicit.close()


def test_settings_follow_each_version_across_reloads() -> None:
    base = SearchSettings(candidate_depth=500, weight_lexical_title=0.9)
    first = search_settings(MODELS, base)
    assert (first.weight_dense_max_english, first.weight_lexical_title, first.candidate_depth) == (4.5, 0.9, 500)
    assert without_learned(first, MODELS) == base
    other = replace(MODELS, fusion={"weight_dense_max_english": 3.0})
    second = search_settings(other, without_learned(first, MODELS))
    assert (
        second.weight_dense_max_english == 3.0 and second.weight_lexical_paper == SearchSettings().weight_lexical_paper
    )


def test_refit_rule() -> None:
    inputs = {"model": "fake:64"}
    previous = replace(MODELS, fitted_on={"papers": 1000, "inputs": inputs}, drift=30)
    assert refit_reason(previous, inputs, 19, 5.0) is None  # 49 of 1,000 changed since the fit
    assert "5.0% of the papers" in str(refit_reason(previous, inputs, 20, 5.0))
    small = replace(previous, fitted_on={"papers": 100, "inputs": inputs}, drift=3)
    assert refit_reason(small, inputs, 20, 5.0) is None  # 23 % of the papers, but under 25 papers
    assert refit_reason(small, inputs, 22, 5.0) is not None
    assert refit_reason(previous, {"model": "other"}, 0, 5.0) == "the training inputs changed"
    assert refit_reason(None, inputs, 0, 5.0) == "no models in the previous version"


# --------------------------------------------------------------------------- the real model
@pytest.mark.slow
def test_fit_with_the_default_model_on_the_sample(
    e5_sample_index: Path, tmp_path: Path, tuning_file: Path, tokenizer: KoreanEnglishTokenizer
) -> None:
    index = tmp_path / "e5"
    shutil.copytree(e5_sample_index, index)  # its cache holds every passage: only the queries are embedded
    report = build_index(
        SAMPLE, index, load_embedder("e5-small-q4"), tokenizer=tokenizer, learning=options(tuning_file)
    )
    assert report.embedded == 0 and report.learned["action"] == "fitted"
    stored = load_index(index).learned
    assert stored is not None and stored.fusion is not None and stored.calibration is not None
    assert stored.fitted_on["answered"] == {"tuning": len(TUNING), "title": 7}  # every answer is a candidate
    assert all(np.isfinite(v) for v in stored.fusion.values())
    searcher = open_searcher(index, tokenizer=tokenizer)
    assert searcher.relevance_calibration == stored.calibration != E5_SMALL_Q4
    assert {k: getattr(searcher.settings, k) for k in stored.fusion} == dict(stored.fusion)
    top = searcher.search("state space model with selective scan", limit=3).results[0]
    assert top.paper.id == "2312.00752" and not top.weak
    off = searcher.search("김치찌개 끓이는 법", limit=3)
    assert off.weak  # an off-topic query still gets only weak hits under the calibration fitted here
    searcher.close()
