"""arXiv ids in every usual spelling map to one canonical id."""

from __future__ import annotations

import pytest

from retrieval.ids import find_arxiv_ids, normalise_arxiv_id


@pytest.mark.parametrize(
    "text",
    [
        "2106.09685",
        "2106.09685v2",
        " arXiv:2106.09685 ",
        "arxiv: 2106.09685v1",
        "https://arxiv.org/abs/2106.09685",
        "http://arxiv.org/abs/2106.09685v3",
        "arxiv.org/pdf/2106.09685v1.pdf",
        "https://www.arxiv.org/pdf/2106.09685",
        "https://huggingface.co/papers/2106.09685",
        "https://arxiv.org/abs/2106.09685/",
    ],
)
def test_every_spelling_names_the_same_paper(text: str) -> None:
    assert normalise_arxiv_id(text) == "2106.09685"


@pytest.mark.parametrize("text", ["", "LoRA", "2106.096", "2106.09685x", "12106.09685", "2106.09685 LoRA", "abs/2106"])
def test_non_ids_are_refused(text: str) -> None:
    assert normalise_arxiv_id(text) is None


def test_old_style_ids_keep_their_case_rules() -> None:
    assert normalise_arxiv_id("arXiv:hep-th/9901001v2") == "hep-th/9901001"
    assert normalise_arxiv_id("math.gt/0309136") == "math.GT/0309136"


def test_ids_inside_a_query_are_found_once_each_in_order() -> None:
    text = "compare 2402.17764v2 with https://arxiv.org/abs/2106.09685 and arXiv:2402.17764"
    assert find_arxiv_ids(text) == ["2402.17764", "2106.09685"]
    assert find_arxiv_ids("version 12106.096851 and 3.14159") == []
