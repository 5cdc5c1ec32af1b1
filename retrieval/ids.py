"""arXiv ids in the spellings people type: one rule shared by the parser, search and every front end.

`2106.09685`, `2106.09685v2`, `arXiv:2106.09685`, `https://arxiv.org/abs/2106.09685`,
`arxiv.org/pdf/2106.09685v1.pdf` and `https://huggingface.co/papers/2106.09685` all name the
paper `2106.09685`. Old-style ids (`hep-th/9901001`, `math.GT/0309136`) are kept as they are.
"""

from __future__ import annotations

import re

_NEW = r"\d{4}\.\d{4,5}"
_OLD = r"[a-z][a-z\-]*(?:\.[A-Z]{2})?/\d{7}"
_ID = rf"(?P<id>{_NEW}|{_OLD})(?:v\d+)?"

# A whole-string id: optional `arXiv:` prefix or arxiv / Hugging Face URL, optional version and `.pdf`.
_WHOLE = re.compile(
    rf"^\s*(?:arxiv:\s*|(?:https?://)?(?:www\.)?(?:arxiv\.org/(?:abs|pdf)/|huggingface\.co/papers/))?"
    rf"{_ID}(?:\.pdf)?/?\s*$",
    re.IGNORECASE,
)
# An id anywhere in a longer text, on token boundaries (not inside a longer number such as 12106.096851).
_INSIDE = re.compile(rf"(?<![\w.]){_ID}(?![\w])", re.IGNORECASE)
_PREFIX = re.compile(r"(?:arxiv:\s*|(?:https?://)?(?:www\.)?(?:arxiv\.org/(?:abs|pdf)/|huggingface\.co/papers/))", re.I)
# The same mention with what a URL adds after the id, for removing it from a query.
_MENTION = re.compile(rf"(?<![\w.]){_ID}(?:\.pdf)?/?(?![\w])", re.IGNORECASE)


def _canonical(raw: str) -> str:
    # Old-style archive names are lower case, their subject class upper case; new ids are digits.
    if "/" in raw:
        archive, number = raw.split("/", 1)
        name, _, subject = archive.partition(".")
        return f"{name.lower()}{'.' + subject.upper() if subject else ''}/{number}"
    return raw


def normalise_arxiv_id(text: str) -> str | None:
    """The canonical id when the whole of `text` is an arXiv id in a usual spelling, else None."""
    match = _WHOLE.match(text)
    return _canonical(match.group("id")) if match else None


def find_arxiv_ids(text: str) -> list[str]:
    """Canonical ids mentioned anywhere in `text` (bare, versioned, `arXiv:` or as a URL), in order, once each."""
    found: list[str] = []
    for match in _INSIDE.finditer(_PREFIX.sub(" ", text)):
        canonical = _canonical(match.group("id"))
        if canonical not in found:
            found.append(canonical)
    return found


def split_arxiv_ids(text: str) -> tuple[list[str], str]:
    """The ids mentioned in `text` (as `find_arxiv_ids`) and the text without those mentions.

    Without an id the text comes back unchanged; with one, the mentions, their `arXiv:` and URL
    parts are removed and the spacing collapsed ("2106.09685 LoRA" -> (["2106.09685"], "LoRA")).
    """
    ids = find_arxiv_ids(text)
    if not ids:
        return [], text
    rest = _MENTION.sub(" ", _PREFIX.sub(" ", text))
    return ids, " ".join(rest.split())
