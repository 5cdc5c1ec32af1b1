"""Metrics on small known cases, the query-file parser, and the harness end to end."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from retrieval.cli import main
from retrieval.evaluation import (
    QueryFileError,
    evaluate,
    evaluate_title_task,
    load_query_file,
    mrr_at,
    ndcg_at,
    paper_era,
    recall_at,
    score_ranking,
    title_queries,
)
from retrieval.search import Searcher


def test_recall_counts_any_relevant_id_within_cutoff() -> None:
    ranked = ["a", "b", "c"]
    assert recall_at(ranked, {"a"}, 1) == 1.0
    assert recall_at(ranked, {"c"}, 1) == 0.0
    assert recall_at(ranked, {"c"}, 3) == 1.0
    assert recall_at(ranked, {"x", "b"}, 2) == 1.0
    assert recall_at(ranked, {"z"}, 10) == 0.0


def test_mrr_is_reciprocal_rank_of_first_hit_within_cutoff() -> None:
    assert mrr_at(["a", "b", "c"], {"c"}) == pytest.approx(1 / 3)
    assert mrr_at(["a", "b", "c"], {"b", "c"}) == pytest.approx(1 / 2)
    assert mrr_at([str(i) for i in range(20)], {"15"}, 10) == 0.0


def test_ndcg_binary_relevance() -> None:
    assert ndcg_at(["a", "b"], {"a"}) == pytest.approx(1.0)
    assert ndcg_at(["x", "a"], {"a"}) == pytest.approx(1 / math.log2(3))
    # two relevant ids, one found at rank 2: dcg = 1/log2(3), ideal = 1 + 1/log2(3)
    assert ndcg_at(["x", "a", "y"], {"a", "b"}) == pytest.approx((1 / math.log2(3)) / (1 + 1 / math.log2(3)))
    assert ndcg_at([], {"a"}) == 0.0


def test_score_ranking_has_the_four_metrics() -> None:
    scores = score_ranking(["b", "a"], {"a"})
    assert scores == {"recall@1": 0.0, "recall@10": 1.0, "mrr@10": 0.5, "ndcg@10": pytest.approx(1 / math.log2(3))}


def test_query_file_parsing_and_errors(tmp_path: Path) -> None:
    good = tmp_path / "q.jsonl"
    good.write_text(
        json.dumps({"q": "저랭크 적응", "ids": ["2106.09685"], "lang": "ko"}, ensure_ascii=False)
        + "\n\n"
        + json.dumps({"q": "state space", "ids": ["2312.00752", "x"]})
        + "\n",
        encoding="utf-8",
    )
    queries = load_query_file(good)
    assert [q.group for q in queries] == ["ko", "all"]
    assert queries[1].ids == frozenset({"2312.00752", "x"})
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"q": "ok", "ids": ["1"]}\n{"q": "", "ids": ["1"]}\n', encoding="utf-8")
    with pytest.raises(QueryFileError, match=r"bad.jsonl:2"):
        load_query_file(bad)
    with pytest.raises(QueryFileError):
        load_query_file(_write(tmp_path / "notjson.jsonl", "not json\n"))


def _write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def test_title_task_never_sees_titles(fake_searcher: Searcher) -> None:
    """'Efficient' appears in the sample's titles (LLaMA, QLoRA) but in no bullet: searching
    bullets only, as the title task does, must not find it; searching every field must."""
    bullets_only = fake_searcher.search("Efficient", mode="lexical", fields=("bullets",))
    every_field = fake_searcher.search("Efficient", mode="lexical")
    assert bullets_only.total == 0 and bullets_only.results == []
    assert {hit.paper.id for hit in every_field.results} == {"2302.13971", "2305.14314"}


def test_eras_of_the_sample(fake_searcher: Searcher) -> None:
    eras = {p.arxiv_id: paper_era(p) for p in fake_searcher.papers}
    assert eras["1706.03762"] == "plain"
    assert eras["2312.00752"] == "vote-authors"
    assert eras["2302.13971"] == "labelled"
    assert len(title_queries(fake_searcher.papers)) == len(fake_searcher.papers)


@pytest.mark.slow
def test_title_task_with_the_real_model(e5_searcher: Searcher) -> None:
    """On the 12-paper sample, English titles find their Korean summaries through every leg."""
    for mode in ("dense", "hybrid"):
        result = evaluate_title_task(e5_searcher, mode)  # type: ignore[arg-type]
        assert result.queries == 12
        assert result.metrics["recall@10"] == 1.0
        assert result.metrics["mrr@10"] >= 0.8, result.misses
        assert set(result.by_group) == {"plain", "vote-authors", "labelled"}


@pytest.mark.parametrize("mode", ["hybrid", "lexical"])
def test_title_task_of_one_fold(fake_searcher: Searcher, mode: str) -> None:
    """`--title-fold`: only that half's titles (fold 1 is the learned models' held-out half)."""
    halves = [evaluate_title_task(fake_searcher, mode, fold) for fold in (0, 1)]  # type: ignore[arg-type]
    assert [h.task for h in halves] == ["title fold 0", "title fold 1"]
    assert [h.queries for h in halves] == [7, 5]  # the sample's papers by `title_fold`
    both = evaluate_title_task(fake_searcher, mode)  # type: ignore[arg-type]
    weighted = sum(h.metrics["mrr@10"] * h.queries for h in halves) / both.queries
    assert both.metrics["mrr@10"] == pytest.approx(weighted, abs=1e-3)


@pytest.mark.slow
def test_dev_queries_against_sample_and_cli_json(
    e5_sample_index: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    queries = tmp_path / "dev.jsonl"
    lines = [
        {"q": "저랭크 행렬로 미세조정 파라미터 줄이기", "ids": ["2106.09685"], "lang": "ko"},
        {"q": "selective state space model with linear time", "ids": ["2312.00752"], "lang": "en"},
        {"q": "보상 모델 없이 preference optimization", "ids": ["2305.18290"], "lang": "mixed"},
    ]
    queries.write_text("\n".join(json.dumps(x, ensure_ascii=False) for x in lines), encoding="utf-8")
    code = main(["eval", "--index", str(e5_sample_index), "--queries", str(queries), "--json"])
    assert code == 0
    payload = json.loads(capsys.readouterr().out)
    assert payload["task"] == "queries:dev.jsonl"
    assert payload["mode"] == "hybrid"
    assert payload["queries"] == 3
    assert set(payload["metrics"]) == {"recall@1", "recall@10", "mrr@10", "ndcg@10"}
    assert set(payload["by_group"]) == {"ko", "en", "mixed"}
    assert payload["metrics"]["recall@10"] == 1.0


def test_eval_all_modes_table(fake_sample_index: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["eval", "--index", str(fake_sample_index), "--all-modes"]) == 0
    out = capsys.readouterr().out
    for mode in ("dense", "lexical", "hybrid"):
        assert f"| title | {mode} | all | 12 |" in out
    assert "flagged" in out


def test_evaluate_reports_misses(fake_searcher: Searcher) -> None:
    queries = load_query_file(_write_tmp(fake_searcher))
    result = evaluate(fake_searcher, queries, "lexical", task="t")
    assert result.queries == 1
    assert result.misses and result.misses[0]["ids"] == ["0000.00000"]


def _write_tmp(searcher: Searcher) -> Path:
    import tempfile

    path = Path(tempfile.mkdtemp()) / "q.jsonl"
    path.write_text(json.dumps({"q": "트랜스포머", "ids": ["0000.00000"]}, ensure_ascii=False), encoding="utf-8")
    return path
