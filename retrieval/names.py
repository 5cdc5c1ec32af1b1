"""Exact paper names: the short name a title starts with, and the whole title, as lookup keys.

A paper's short name is the part of its title before the first colon ("MotionMaster" in
"MotionMaster: ..."), or before a spaced dash ("SeaLLMs" in "SeaLLMs -- Large Language ...").
Names and queries are compared by a key that ignores case, spacing, hyphens, CamelCase and
punctuation, so "Coffee-Gym" = "coffee gym" and "MotionMaster" = "Motion Master", while
"LongRoPE" and "LongRoPE2", or "SeaLLMs" and "SeaLLMs 3", stay different names.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence

_DASH = re.compile(r"\s(?:--|[-\u2013\u2014])\s")


def name_key(text: str) -> str:
    """Case-folded letters and digits of `text` (NFKC), everything else dropped."""
    return "".join(ch for ch in unicodedata.normalize("NFKC", text).casefold() if ch.isalnum())


def short_name(title: str) -> str | None:
    """The part of `title` before its first colon, stripped; None without a colon or when empty."""
    head, colon, _ = title.partition(":")
    head = head.strip()
    return head if colon and head else None


def title_names(title: str) -> list[str]:
    """Every spelling a title can be named by: its short names (colon, spaced dash) and the whole title."""
    names = [title]
    head = short_name(title)
    if head:
        names.append(head)
    dashed = _DASH.split(title, maxsplit=1)
    if len(dashed) == 2 and dashed[0].strip():
        names.append(dashed[0].strip())
    return names


class NameIndex:
    """Normalised name -> indexes of the papers called that, built once from the titles."""

    def __init__(self, titles: Sequence[str]) -> None:
        table: dict[str, list[int]] = {}
        for index, title in enumerate(titles):
            for name in title_names(title):
                key = name_key(name)
                if key and index not in table.setdefault(key, []):
                    table[key].append(index)
        self._table = {key: tuple(indexes) for key, indexes in table.items()}

    def lookup(self, query: str) -> tuple[int, ...]:
        """Papers whose short name or whole title is exactly `query` (after normalising); () if none."""
        return self._table.get(name_key(query), ())

    def __len__(self) -> int:
        return len(self._table)
