"""Retrieval backends: the stores the ranking legs ask for top-K candidates (see README "Backends").

`base` holds the protocol, `embedded` the in-process default, `milvus` the Milvus one (needs
`pip install '.[milvus]'`, so it is not imported here).
"""

from retrieval.backends.base import Backend, BulletHit, PaperRecord, PaperScore
from retrieval.backends.embedded import DenseIndexConfig, EmbeddedBackend
from retrieval.backends.sparse import SparseEncoder

__all__ = ["Backend", "BulletHit", "DenseIndexConfig", "EmbeddedBackend", "PaperRecord", "PaperScore", "SparseEncoder"]
