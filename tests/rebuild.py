"""A sample-corpus index that each `rebuild()` moves to a new version, cheaply (test helper)."""

from __future__ import annotations

import shutil
from pathlib import Path

from conftest import SAMPLE

from retrieval.embedding import FakeEmbedder
from retrieval.indexer import BuildReport, build_index
from retrieval.lexical import KoreanEnglishTokenizer

BUMPED_PAPER = "2302.13971"  # LLaMA, the one paper with this vote line in the sample
_DIGEST = Path("2024") / "11" / "05.md"
_VOTE_LINE = "Vote: 95\n"


class Rebuilder:
    """A copy of the sample corpus under `root`, indexed with the fake embedder into `root/index`.

    `rebuild()` rewrites one paper's vote count (to `votes`, one more each time) and builds
    again: a new corpus fingerprint, so a new version, with no text to embed or tokenize anew.
    """

    def __init__(self, root: Path, tokenizer: KoreanEnglishTokenizer, dim: int = 64) -> None:
        self.corpus = root / "corpus"
        self.index = root / "index"
        shutil.copytree(SAMPLE, self.corpus)
        self._digest = self.corpus / _DIGEST
        self._text = self._digest.read_text(encoding="utf-8")
        assert self._text.count(_VOTE_LINE) == 1
        self._tokenizer = tokenizer
        self._dim = dim
        self.votes = 95
        build_index(self.corpus, self.index, FakeEmbedder(dim), tokenizer=tokenizer)

    def rebuild(self) -> BuildReport:
        self.votes = max(self.votes, 1000) + 1
        self._digest.write_text(self._text.replace(_VOTE_LINE, f"Vote: {self.votes}\n"), encoding="utf-8")
        report = build_index(self.corpus, self.index, FakeEmbedder(self._dim), tokenizer=self._tokenizer)
        assert not report.unchanged and report.embedded == 0, report
        return report
