"""Known-item search: exact names and arXiv ids find their paper first; the known-item task."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import ROOT

from retrieval.cli import main
from retrieval.embedding import FakeEmbedder
from retrieval.evaluation import evaluate_known_items, evaluate_title_task, known_item_queries
from retrieval.ids import split_arxiv_ids
from retrieval.indexer import build_index
from retrieval.lexical import KoreanEnglishTokenizer
from retrieval.names import NameIndex, name_key, short_name, title_names
from retrieval.search import Searcher, SearchSettings
from retrieval.store import IndexData, load_index

KNOWN = ROOT / "tests" / "fixtures" / "known_items"
MODES = ("hybrid", "dense", "lexical")


@pytest.fixture(scope="module")
def known_index(tmp_path_factory: pytest.TempPathFactory, tokenizer: KoreanEnglishTokenizer) -> IndexData:
    path = tmp_path_factory.mktemp("known-items") / "index"
    build_index(KNOWN, path, FakeEmbedder(64), tokenizer=tokenizer)
    return load_index(path)


def _searcher(index: IndexData, tokenizer: KoreanEnglishTokenizer, weight_name: float = 1.0) -> Searcher:
    return Searcher(index, FakeEmbedder(64), tokenizer=tokenizer, settings=SearchSettings(weight_name=weight_name))


@pytest.fixture(scope="module")
def known(known_index: IndexData, tokenizer: KoreanEnglishTokenizer) -> Searcher:
    return _searcher(known_index, tokenizer)


@pytest.fixture(scope="module")
def nameless(known_index: IndexData, tokenizer: KoreanEnglishTokenizer) -> Searcher:
    return _searcher(known_index, tokenizer, weight_name=0.0)


def _ids(searcher: Searcher, query: str, **kwargs: object) -> list[str]:
    return [hit.paper.id for hit in searcher.search(query, **kwargs).results]  # type: ignore[arg-type]


# ----------------------------------------------------------------------------- names
@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("Coffee-Gym", "coffee gym"),
        ("MotionMaster", "Motion Master"),
        ("MotionMaster", "motion-master"),
        ("LLaMA", "Llama"),
        ("SeaLLMs 3", "seallms3"),
        ("M$^{2}$UGen", "M2UGen"),
        ("ＧＰＴ-４Ｖ", "GPT-4V"),  # full-width forms (NFKC)
    ],
)
def test_spellings_of_one_name_share_a_key(a: str, b: str) -> None:
    assert name_key(a) == name_key(b) != ""


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("LongRoPE", "LongRoPE2"),
        ("SeaLLMs", "SeaLLMs 3"),
        ("MobileVLM", "MobileVLM V2"),
        ("Vision Mamba", "MambaVision"),
    ],
)
def test_different_names_keep_different_keys(a: str, b: str) -> None:
    assert name_key(a) != name_key(b)


def test_short_names_and_title_names() -> None:
    assert short_name("LongRoPE2: Near-Lossless Context Extension") == "LongRoPE2"
    assert short_name("Scaling Laws for Data Filtering") is None
    assert short_name(": no head") is None
    assert title_names("EMO: Emote Portrait Alive - Generating Videos") == [
        "EMO: Emote Portrait Alive - Generating Videos",
        "EMO",
        "EMO: Emote Portrait Alive",
    ]
    assert title_names("SeaLLMs -- Large Language Models") == ["SeaLLMs -- Large Language Models", "SeaLLMs"]
    assert title_names("Éclair \u2014 Reading Documents") == ["Éclair \u2014 Reading Documents", "Éclair"]
    assert title_names("Text-to-3D Faces") == ["Text-to-3D Faces"]


def test_name_index_matches_whole_names_only() -> None:
    names = NameIndex(["LongRoPE: One", "LongRoPE2: Two", "Parrot: A", "Parrot: B", "Scaling Laws for Data"])
    assert names.lookup("longrope") == (0,)
    assert names.lookup("LongRoPE 2") == (1,)
    assert names.lookup("Parrot") == (2, 3)
    assert names.lookup("scaling laws for data") == (4,)
    assert names.lookup("Scaling Laws") == ()
    assert names.lookup("LongRoPE: One") == (0,)
    assert names.lookup("") == () and names.lookup(" - ") == ()


# ----------------------------------------------------------------------------- the name leg
NAMED = [
    ("LongRoPE", "2406.10001"),
    ("LongRoPE2", "2406.10002"),
    ("SeaLLMs", "2406.10003"),
    ("SeaLLMs 3", "2406.10004"),
    ("MobileVLM", "2406.10005"),
    ("MobileVLM V2", "2406.10006"),
    ("coffee gym", "2406.10007"),
    ("Motion Master", "2406.10008"),
    ("Vision Mamba", "2406.10010"),
    ("mambavision", "2406.10011"),
]


@pytest.mark.parametrize("mode", MODES)
def test_an_exact_name_ranks_its_paper_first(known: Searcher, mode: str) -> None:
    for query, arxiv_id in NAMED:
        assert _ids(known, query, mode=mode)[0] == arxiv_id, query


def test_without_the_name_leg_longer_names_and_lookalikes_win(nameless: Searcher, known: Searcher) -> None:
    """The fixture's bullets favour the wrong paper; only the name leg puts the named one first."""
    for query, right, wrong in [
        ("LongRoPE", "2406.10001", "2406.10002"),
        ("Motion Master", "2406.10008", "2406.10009"),
        ("MobileVLM", "2406.10005", "2406.10006"),
    ]:
        assert _ids(nameless, query, mode="lexical")[0] == wrong, query
        assert _ids(known, query, mode="lexical")[0] == right, query


def test_a_shared_name_lifts_every_paper_with_it(known: Searcher) -> None:
    assert set(_ids(known, "Parrot", mode="dense")[:2]) == {"2406.10012", "2406.10013"}


def test_the_name_leg_is_off_without_the_title_field(known: Searcher, nameless: Searcher) -> None:
    """Searching bullets only (as the title task does) must not see titles through the name leg."""
    for query, _ in NAMED:
        for mode in MODES:
            with_leg = known.search(query, mode=mode, fields=("bullets",))  # type: ignore[arg-type]
            without = nameless.search(query, mode=mode, fields=("bullets",))  # type: ignore[arg-type]
            assert [(h.paper.id, h.score) for h in with_leg.results] == [(h.paper.id, h.score) for h in without.results]
    # Control: with every field the leg changes the ranking.
    assert _ids(known, "LongRoPE", mode="lexical") != _ids(nameless, "LongRoPE", mode="lexical")


def test_title_task_is_the_same_with_and_without_the_name_leg(known: Searcher, nameless: Searcher) -> None:
    """The title task's queries are whole titles, which the name leg would match exactly."""
    assert known._names.lookup(known.papers[0].title) == (0,)  # the leg would fire on a title
    for mode in MODES:
        with_leg = evaluate_title_task(known, mode)  # type: ignore[arg-type]
        without = evaluate_title_task(nameless, mode)  # type: ignore[arg-type]
        assert with_leg.metrics == without.metrics and with_leg.misses == without.misses


# ----------------------------------------------------------------------------- arXiv ids
SPELLINGS = [
    "2406.10009",
    "2406.10009v2",
    "arXiv:2406.10009",
    "arxiv: 2406.10009v1",
    "https://arxiv.org/abs/2406.10009",
    "arxiv.org/pdf/2406.10009v3.pdf",
    "https://huggingface.co/papers/2406.10009",
]


@pytest.mark.parametrize("spelling", SPELLINGS)
@pytest.mark.parametrize("mode", MODES)
def test_an_id_in_any_spelling_finds_its_paper_first(known: Searcher, spelling: str, mode: str) -> None:
    response = known.search(spelling, mode=mode)  # type: ignore[arg-type]
    assert [h.paper.id for h in response.results] == ["2406.10009"] and response.total == 1
    assert response.results[0].evidence  # its bullets are still cited


@pytest.mark.parametrize("mode", MODES)
def test_ids_come_first_then_the_rest_of_the_query(known: Searcher, nameless: Searcher, mode: str) -> None:
    rest = _ids(nameless, "LongRoPE", mode=mode)
    got = _ids(nameless, "2406.10015 LongRoPE arXiv:2406.10012", mode=mode)
    assert got[:2] == ["2406.10015", "2406.10012"]
    assert got[2:] == [i for i in rest if i not in {"2406.10015", "2406.10012"}][: len(got) - 2]
    response = known.search("2406.10015 LongRoPE", mode=mode)  # type: ignore[arg-type]
    assert [h.paper.id for h in response.results[:2]] == ["2406.10015", "2406.10001"]
    assert response.results[0].score > response.results[1].score


def test_ids_respect_filters_paging_and_unknown_ids(known: Searcher) -> None:
    from retrieval.search import Filters

    assert _ids(known, "2406.10009", filters=Filters(min_votes=5)) == []
    assert _ids(known, "9999.99999") == []
    page = known.search("2406.10015 LongRoPE", limit=1, offset=1)
    assert [h.paper.id for h in page.results] == ["2406.10001"]
    assert page.total == known.search("LongRoPE").total


def test_split_arxiv_ids_removes_every_spelling() -> None:
    assert split_arxiv_ids("2106.09685 LoRA") == (["2106.09685"], "LoRA")
    assert split_arxiv_ids("see https://arxiv.org/pdf/2106.09685v2.pdf and arXiv:2312.00752") == (
        ["2106.09685", "2312.00752"],
        "see and",
    )
    assert split_arxiv_ids("arxiv: a survey") == ([], "arxiv: a survey")
    assert split_arxiv_ids("huggingface.co/papers/2106.09685/") == (["2106.09685"], "")


# ----------------------------------------------------------------------------- the known-item task
def test_known_item_queries_follow_the_name_rule(known: Searcher) -> None:
    queries = known_item_queries(known.papers)
    names = sorted(q.q for q in queries if q.group == "name")
    assert names == sorted(
        ["LongRoPE", "LongRoPE2", "SeaLLMs", "SeaLLMs 3", "MobileVLM", "MobileVLM V2"]
        + ["Coffee-Gym", "MotionMaster", "Vision Mamba", "MambaVision"]
    )
    assert "What Matters When Building Vision Language Models" in {
        q.q for q in known_item_queries(known.papers, max_words=7) if q.group == "name"
    }
    by_group = {g: [q for q in queries if q.group == g] for g in ("id", "id-v2", "id-arxiv", "id-url")}
    assert all(len(group) == 15 for group in by_group.values())
    assert {q.q for q in by_group["id-url"]} >= {"https://arxiv.org/abs/2406.10001"}
    assert {q.q for q in by_group["id-v2"]} >= {"2406.10001v2"}
    assert {q.q for q in by_group["id-arxiv"]} >= {"arXiv:2406.10001"}
    assert all(q.ids == {q.q.removeprefix("arXiv:")} for q in by_group["id-arxiv"])


def test_known_item_task_scores_every_group(known: Searcher, nameless: Searcher) -> None:
    result = evaluate_known_items(known, "hybrid")
    assert result.task == "known-items" and result.queries == 70
    assert set(result.by_group) == {"name", "id", "id-v2", "id-arxiv", "id-url"}
    assert all(metrics["recall@1"] == 1.0 for metrics in result.by_group.values()), result.misses
    # Without the name leg the fixture's lookalikes take first place for some names.
    assert evaluate_known_items(nameless, "lexical").by_group["name"]["recall@1"] < 1.0


def test_cli_known_items_json_and_table(
    tmp_path: Path, tokenizer: KoreanEnglishTokenizer, capsys: pytest.CaptureFixture[str]
) -> None:
    index = tmp_path / "index"
    build_index(KNOWN, index, FakeEmbedder(64), tokenizer=tokenizer)
    assert main(["eval", "--index", str(index), "--known-items", "--mode", "lexical", "--json", "--misses"]) == 0
    payload = json.loads(capsys.readouterr().out)
    assert payload["misses"] == []
    assert payload["task"] == "known-items" and payload["mode"] == "lexical" and payload["queries"] == 70
    assert payload["by_group"]["id-url"]["recall@1"] == 1.0
    assert main(["eval", "--index", str(index), "--known-items", "--name-max-words", "7", "--mode", "lexical"]) == 0
    out = capsys.readouterr().out
    assert "| known-items | lexical | all | 71 |" in out and "| known-items | lexical | name |" in out
    with pytest.raises(SystemExit) as exit_info:
        main(["eval", "--index", str(index), "--known-items", "--name-max-words", "0"])
    assert exit_info.value.code == 2
    assert "--name-max-words: must be 1 or more" in capsys.readouterr().err


# ----------------------------------------------------------------------------- the real model
@pytest.mark.slow
def test_names_and_ids_with_the_real_model(e5_searcher: Searcher) -> None:
    """The sample's LLaMA and Llama 2 are told apart by name; ids in any spelling come first."""
    for mode in MODES:
        assert _ids(e5_searcher, "LLaMA", mode=mode)[0] == "2302.13971"
        assert _ids(e5_searcher, "llama 2", mode=mode)[0] == "2307.09288"
        assert _ids(e5_searcher, "Q-LoRA", mode=mode)[0] == "2305.14314"
        assert _ids(e5_searcher, "https://arxiv.org/abs/2312.00752v2", mode=mode) == ["2312.00752"]
    mixed = _ids(e5_searcher, "2106.09685 quantized low-rank finetuning", mode="hybrid")
    assert mixed[0] == "2106.09685" and mixed[1] == "2305.14314"
