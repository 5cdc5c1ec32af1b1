"""Which words of a cited bullet to mark for a query: whole words, never substrings, never stop-words.

* Latin words are matched whole (on word boundaries, each part of a hyphenated compound on its
  own), by their lower-case form or an inflection of the same English stem, so "models" meets
  "model" but "for" never lights up inside "Transformer" nor "adapt" inside "adapter".
* Hangul is matched on morpheme boundaries without running the analyser at query time: within
  each run of Hangul, marks start where the run starts and chain from one known query morpheme
  or query word to the next ("저랭크" as typed, "행렬" in "행렬을", "언어" + "모델" in "언어모델").
  A Korean term must be at least two syllables, so particles and one-syllable stems are never marked.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass

_LATIN = re.compile(r"[0-9A-Za-z]+(?:[\-\.][0-9A-Za-z]+)*")
_LATIN_PART = re.compile(r"[0-9A-Za-z]+")
_HANGUL = re.compile(r"[가-힣]+")
# Inflection endings: two words with one English stem are the same word only when they are equal
# after dropping these ("models", "modeled", "modeling" meet "model"; "adapter" and "adaptation" do
# not meet "adapt", though Snowball stems all three to "adapt").
_INFLECTIONS = (("ies", "y"), ("ing", ""), ("ed", ""), ("es", ""), ("s", ""), ("e", ""))


def inflection_base(word: str) -> str:
    """`word` without one inflection ending: models -> model, studies -> study, images -> imag."""
    for ending, replacement in _INFLECTIONS:
        if word.endswith(ending) and len(word) - len(ending) >= 3 and not (ending == "s" and word.endswith("ss")):
            return word[: -len(ending)] + replacement
    return word


@dataclass(frozen=True)
class QueryMarks:
    """What a query marks: Latin forms and stems, and Korean morphemes and words (longest first)."""

    latin_forms: frozenset[str]
    latin_stems: frozenset[str]
    latin_bases: frozenset[str]
    korean: tuple[str, ...]

    def __post_init__(self) -> None:
        # One alternation, longest term first: matching it at a position picks the same term as
        # trying the terms in `korean`'s order (and costs one regex call instead of a Python loop).
        pattern = re.compile("|".join(re.escape(k) for k in self.korean)) if self.korean else None
        object.__setattr__(self, "_korean_pattern", pattern)

    @classmethod
    def build(
        cls, query: str, terms: Iterable[str], stem: Callable[[str], str], stopwords: frozenset[str]
    ) -> QueryMarks:
        """From the query as typed and its lexical terms (tokenizer output, term-map expansions)."""
        # Latin: the query's own words (the tokenizer's Latin terms are stems, matched below);
        # Korean: the tokenizer's morphemes and term-map expansions, and the query's Hangul words.
        forms = {w.lower() for w in [*_LATIN.findall(query), *_LATIN_PART.findall(query)]}
        forms = {w for w in forms if len(w) >= 2 and w not in stopwords}
        korean = {t for t in [*terms, *_HANGUL.findall(query)] if _HANGUL.fullmatch(t) and len(t) >= 2}
        korean -= stopwords
        words = [form for form in forms if form.isalpha()]
        stems = {stem(word) for word in words} - stopwords
        bases = {inflection_base(word) for word in words}
        return cls(frozenset(forms), frozenset(stems), frozenset(bases), tuple(sorted(korean, key=len, reverse=True)))

    def spans(self, text: str, stem: Callable[[str], str]) -> list[tuple[int, int]]:
        """[start, end) spans of `text` to mark, sorted and merged."""
        spans: list[tuple[int, int]] = []
        for word in _LATIN.finditer(text):
            if self._latin_hit(word.group(0).lower(), stem):
                spans.append(word.span())
                continue
            for part in _LATIN_PART.finditer(word.group(0)):
                if self._latin_hit(part.group(0).lower(), stem):
                    spans.append((word.start() + part.start(), word.start() + part.end()))
        if self.korean:
            for run in _HANGUL.finditer(text):
                spans.extend(self._korean_spans(run.group(0), run.start()))
        return merge(spans)

    def _latin_hit(self, word: str, stem: Callable[[str], str]) -> bool:
        if len(word) < 2:
            return False
        if word in self.latin_forms:
            return True
        if not word.isalpha():
            return False
        return stem(word) in self.latin_stems and inflection_base(word) in self.latin_bases

    def _korean_spans(self, run: str, offset: int) -> list[tuple[int, int]]:
        spans: list[tuple[int, int]] = []
        pattern: re.Pattern[str] = self._korean_pattern  # type: ignore[attr-defined]
        position = 0
        while position < len(run):
            match = pattern.match(run, position)
            if match is None:
                break
            spans.append((offset + match.start(), offset + match.end()))
            position = match.end()
        return spans


def merge(spans: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """Sort spans and merge the ones that overlap or touch."""
    merged: list[tuple[int, int]] = []
    for start, end in sorted(spans):
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(end, merged[-1][1]))
        else:
            merged.append((start, end))
    return merged
