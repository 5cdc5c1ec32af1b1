"""Which backend answers the ranking legs, from the settings: the one rule every front end uses.

`embedded` (the default) needs nothing: the searcher searches the index's own arrays in memory.
`milvus` connects to `RETRIEVAL_MILVUS_URI` (a server URL or a Milvus Lite `*.db` file) and
checks that its live version is the index version being served (build-index syncs both).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from retrieval.backends.base import Backend
from retrieval.errors import IndexMismatchError, UsageError

if TYPE_CHECKING:
    from retrieval.config import Settings

__all__ = ["backend_version_name", "check_serves", "connect_backend"]


def backend_version_name(index_version: str) -> str:
    """The backend's name for an index version (`v-20261201T102133-74c507` -> `v_20261201T102133_74c507`)."""
    return index_version.replace("-", "_")


def connect_backend(settings: Settings, dim: int) -> Backend | None:
    """The configured external backend for `dim`-dim vectors, connected; None for `embedded`.

    Raises `UsageError` when Milvus is chosen without a URI, `BackendUnavailableError` (one
    line naming the URI) when it cannot be reached or pymilvus is not installed.
    """
    if settings.backend == "embedded":
        return None
    if not settings.milvus_uri:
        raise UsageError("RETRIEVAL_BACKEND=milvus needs RETRIEVAL_MILVUS_URI (http://host:19530 or a *.db file)")
    from retrieval.backends.milvus import MilvusBackend

    token = settings.milvus_token.get_secret_value() if settings.milvus_token else ""
    return MilvusBackend(
        settings.milvus_uri, dim, prefix=settings.milvus_prefix, token=token, search_timeout=settings.milvus_timeout
    )


def check_serves(backend: Backend, index_version: str) -> None:
    """`IndexMismatchError` unless the backend's live version is this index version."""
    live = backend.refresh()
    want = backend_version_name(index_version)
    if live != want:
        where = getattr(backend, "uri", type(backend).__name__)
        raise IndexMismatchError(
            f"the backend at {where} serves version {live or '(none)'}, the index serves {index_version}; "
            "run `retrieval build-index` with the same RETRIEVAL_BACKEND settings to sync them"
        )
