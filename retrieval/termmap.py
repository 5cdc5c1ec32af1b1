"""A Korean <-> English term map mined from the summaries themselves.

The bullets are full of pairs such as `저랭크 적응(Low-Rank Adaptation)` and
`Transformer(트랜스포머)`. Counting those pairs over the corpus gives a bilingual dictionary
of exactly the vocabulary users search for; the lexical leg uses it to expand a query in both
directions, so an English query can match Korean bullets and the other way round.
"""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from retrieval.corpus import Paper

_KO_THEN_EN = re.compile(r"([가-힣][가-힣0-9\- ]{0,24}?)\s?\(\s*([A-Za-z][A-Za-z0-9\-\.\+ ]{1,48}?)\s*[\);,]")
_EN_THEN_KO = re.compile(
    r"([A-Za-z][A-Za-z0-9\-\.\+]*(?: [A-Za-z][A-Za-z0-9\-\.\+]*){0,4})\s?\(\s*([가-힣][가-힣 ]{0,20}?)\s*[\);,]"
)
_KO_PARTICLE_WORDS = {
    "및",
    "또는",
    "그리고",
    "통해",
    "위한",
    "위해",
    "대한",
    "새로운",
    "이",
    "그",
    "본",
    "더",
    "각",
    "주요",
}


def _norm_en(text: str) -> str:
    return " ".join(re.sub(r"[^0-9a-z\+]+", " ", text.lower()).split())


def _norm_ko(text: str) -> str:
    return re.sub(r"\s+", "", text)


def _ko_candidates(phrase: str) -> list[str]:
    """The last one to three words before a parenthesis: which of them the English translates
    is unknown, so all are counted and frequency decides."""
    words = [w for w in phrase.split() if w]
    while words and words[0] in _KO_PARTICLE_WORDS:
        words = words[1:]
    return [" ".join(words[-n:]) for n in (1, 2, 3) if len(words) >= n]


@dataclass
class TermMap:
    """Bidirectional phrase map: normalised English phrase <-> Korean phrase (spaces removed)."""

    en_to_ko: dict[str, list[str]] = field(default_factory=dict)
    ko_to_en: dict[str, list[str]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._en_first: dict[str, list[str]] = defaultdict(list)
        for key in self.en_to_ko:
            self._en_first[key.split()[0]].append(key)
        self._ko_prefix: dict[str, list[str]] = defaultdict(list)
        for key in self.ko_to_en:
            self._ko_prefix[key[:2]].append(key)

    def __len__(self) -> int:
        return len(self.en_to_ko) + len(self.ko_to_en)

    @classmethod
    def from_texts(cls, texts: Iterable[str], min_count: int = 2, per_key: int = 2) -> TermMap:
        pairs: Counter[tuple[str, str]] = Counter()
        for text in texts:
            if "(" not in text:
                continue
            for ko, en in _KO_THEN_EN.findall(text):
                en_key = _norm_en(en)
                if len(en_key) < 2:
                    continue
                for candidate in _ko_candidates(ko):
                    pairs[(en_key, _norm_ko(candidate))] += 1
            for en, ko in _EN_THEN_KO.findall(text):
                en_key = _norm_en(en)
                if len(en_key) >= 2:
                    pairs[(en_key, _norm_ko(ko))] += 1
        en_to_ko: dict[str, Counter[str]] = defaultdict(Counter)
        ko_to_en: dict[str, Counter[str]] = defaultdict(Counter)
        for (en, ko), count in pairs.items():
            if count < min_count or len(ko) < 2:
                continue
            en_to_ko[en][ko] += count
            ko_to_en[ko][en] += count
        return cls(
            en_to_ko={k: [t for t, _ in v.most_common(per_key)] for k, v in en_to_ko.items()},
            ko_to_en={k: [t for t, _ in v.most_common(per_key)] for k, v in ko_to_en.items()},
        )

    @classmethod
    def from_papers(cls, papers: Sequence[Paper]) -> TermMap:
        return cls.from_texts(b.text for p in papers for b in p.bullets)

    def to_json(self) -> dict[str, dict[str, list[str]]]:
        return {"en_to_ko": self.en_to_ko, "ko_to_en": self.ko_to_en}

    @classmethod
    def from_json(cls, data: object) -> TermMap:
        """Read `to_json`'s form; `ValueError` when it is not that."""
        if not isinstance(data, dict) or not all(isinstance(data.get(k), dict) for k in ("en_to_ko", "ko_to_en")):
            raise ValueError("expected {'en_to_ko': {...}, 'ko_to_en': {...}}")
        return cls(
            en_to_ko={str(k): [str(t) for t in v] for k, v in data["en_to_ko"].items()},
            ko_to_en={str(k): [str(t) for t in v] for k, v in data["ko_to_en"].items()},
        )

    def translations(self, query: str, ko_to_en: bool = False, min_ko_length: int = 2) -> list[str]:
        """Korean phrases for the English phrases found in `query` (and, when asked, English
        phrases for its Korean ones of at least `min_ko_length` characters: measured to hurt
        Korean queries in the lexical legs, so off by default)."""
        found: list[str] = []
        words = _norm_en(query).split()
        for i, word in enumerate(words):
            for key in self._en_first.get(word, ()):
                size = key.count(" ") + 1
                if " ".join(words[i : i + size]) == key:
                    found.extend(self.en_to_ko[key])
        compact = _norm_ko(query) if ko_to_en else ""
        for i in range(len(compact) - 1):
            for key in self._ko_prefix.get(compact[i : i + 2], ()):
                if len(key) >= min_ko_length and compact.startswith(key, i):
                    found.extend(self.ko_to_en[key])
        return list(dict.fromkeys(found))

    def sources(self, query: str, extra: Sequence[str], tokenizer: object | None = None) -> dict[str, str]:
        """For terms `expand` added, the English phrase of `query` each one translates ("attention")."""
        words = _norm_en(query).split()
        wanted = set(extra)
        found: dict[str, str] = {}
        for i, word in enumerate(words):
            for key in self._en_first.get(word, ()):
                if " ".join(words[i : i + key.count(" ") + 1]) != key:
                    continue
                for phrase in self.en_to_ko[key]:
                    if tokenizer is not None:
                        tokens = tokenizer.tokenize(phrase)  # type: ignore[attr-defined]
                    else:
                        tokens = re.findall(r"[0-9a-z][0-9a-z\-\.\+]*|[가-힣]+", phrase.lower())
                    for token in tokens:
                        if token in wanted:
                            found.setdefault(token, key)
        return found

    def expand(self, query: str, terms: Sequence[str], tokenizer: object | None = None) -> list[str]:
        """Lexical terms of the translations of `query` that the query does not have yet."""
        phrases = self.translations(query)
        if not phrases:
            return []
        have = set(terms)
        extra: list[str] = []
        if tokenizer is not None:
            tokens = tokenizer.tokenize(" , ".join(phrases))  # type: ignore[attr-defined]
        else:
            tokens = re.findall(r"[0-9a-z][0-9a-z\-\.\+]*|[가-힣]+", " ".join(phrases).lower())
        for token in tokens:
            if token not in have and len(token) >= 2:
                extra.append(token)
                have.add(token)
        return extra
