"""The summary-name leg's lookups (EVALUATION.md "Query views and lexical feedback").

A title-shaped query ("MoSLoRA: Mixture-of-Subspaces ...") names its paper in its head; the
Korean summaries often repeat that name. `title_name` finds the head, `NameMentions` the
summaries that mention it as a word. The other query views measured with it (the query as a
passage, the description after the colon, lower-cased text, RM3 feedback) lost and were removed.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np

from retrieval.names import short_name


class NameMentions:
    """Which summaries mention a name as a whole word ("MoSLoRA", "Coffee-Gym", "Motion Master"):
    case-insensitive, spaces and hyphens between the name's words optional, no letter or digit
    of the Latin alphabet right before or after (a Korean particle may follow: "MoSLoRA는")."""

    def __init__(self, summaries: Sequence[str]) -> None:
        self._texts = [s.lower() for s in summaries]
        # One ASCII string (every other character a space, so offsets stay those of the texts):
        # the substring test before the pattern runs at C speed over one byte per character.
        self._ascii = _SEPARATOR.join(_NON_ASCII.sub(" ", t) for t in self._texts)
        self._starts = np.cumsum([0] + [len(t) + len(_SEPARATOR) for t in self._texts[:-1]]).astype(np.int64)

    def papers(self, name: str) -> np.ndarray:
        """Rows of the summaries that mention `name` (sorted)."""
        parts = [p for p in re.split(r"[\s\-]+", name.lower()) if p]
        if not parts:
            return np.zeros(0, dtype=np.int64)
        pattern = re.compile(r"[\s\-]*".join(re.escape(p) for p in parts))
        longest = max(parts, key=len)
        rows = self._containing(longest) if longest.isascii() else range(len(self._texts))
        found = [row for row in rows if longest in self._texts[row] and _mentions(pattern, self._texts[row])]
        return np.asarray(found, dtype=np.int64)

    def _containing(self, part: str) -> list[int]:
        """Rows whose summary holds `part` as a substring (the cheap test before the pattern)."""
        rows: list[int] = []
        at = self._ascii.find(part)
        while at >= 0:
            row = int(np.searchsorted(self._starts, at, side="right")) - 1
            rows.append(row)
            if row + 1 >= len(self._starts):
                break
            at = self._ascii.find(part, int(self._starts[row + 1]))
        return rows


def _mentions(pattern: re.Pattern[str], text: str) -> bool:
    return any(not _word_char(text, m.start() - 1) and not _word_char(text, m.end()) for m in pattern.finditer(text))


_SEPARATOR = "\n\x00\n"
_NON_ASCII = re.compile(r"[^\x00-\x7f]")


def _word_char(text: str, at: int) -> bool:
    return 0 <= at < len(text) and text[at].isascii() and text[at].isalnum()


def title_name(text: str, max_words: int = 3, min_chars: int = 3) -> str | None:
    """The short name a title-shaped query starts with ("MoSLoRA" in "MoSLoRA: ..."): the head
    before its colon when it has at most `max_words` words and `min_chars` letters or digits."""
    head = short_name(text)
    if head is None or not text.partition(":")[2].strip() or len(head.split()) > max_words:
        return None
    return head if sum(ch.isalnum() for ch in head) >= min_chars else None
