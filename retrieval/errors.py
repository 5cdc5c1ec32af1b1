"""Domain exceptions, and the one table that maps each to a CLI exit code and an HTTP status."""

from __future__ import annotations


class RetrievalError(Exception):
    """Base class of every error this package raises on purpose."""


class CorpusError(RetrievalError):
    """The corpus could not be read, or holds no paper at all."""


class EmbedderError(RetrievalError):
    """A model spec is unknown or its backend cannot be loaded."""


class IndexNotFoundError(RetrievalError):
    """No built index exists at the given directory."""


class IndexCorruptError(RetrievalError):
    """An index exists but a file is missing, damaged or inconsistent with the manifest."""


class IndexMismatchError(RetrievalError):
    """The index was built with another model or dimension than the one requested."""


class IndexLockedError(RetrievalError):
    """Another build holds the lock on this index directory."""


class PaperNotFoundError(RetrievalError):
    """No paper with the requested arXiv id is in the index."""


class DayNotFoundError(RetrievalError):
    """No digest of the requested date is in the index."""


class SearcherClosedError(RetrievalError):
    """A query reached a searcher that was closed (replaced by a reload and released)."""


class UsageError(RetrievalError):
    """The user asked for something impossible: a bad request, a path of the wrong kind, a busy port."""


class QueryFileError(UsageError):
    """A query file line is not valid JSON of the expected shape."""


class ServiceError(RetrievalError):
    """The search service could not be reached or answered with an error."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class BackendUnavailableError(RetrievalError):
    """A retrieval backend (e.g. a Milvus server) cannot be reached or refused a request."""


# (exit code, HTTP status) per error; a subclass takes its nearest listed ancestor's codes.
# Exit codes 0 (success), 1 (unexpected failure), 2 (usage) and 130 (interrupted) are reserved.
ERROR_CODES: dict[type[RetrievalError], tuple[int, int]] = {
    UsageError: (2, 422),
    CorpusError: (3, 422),
    IndexNotFoundError: (4, 503),
    IndexCorruptError: (5, 503),
    IndexMismatchError: (6, 503),
    IndexLockedError: (7, 409),
    EmbedderError: (8, 503),
    PaperNotFoundError: (9, 404),
    ServiceError: (10, 502),
    DayNotFoundError: (11, 404),
    SearcherClosedError: (12, 503),
    BackendUnavailableError: (13, 503),
}


def error_codes(exc: RetrievalError) -> tuple[int, int]:
    """The exit code and HTTP status of `exc`: those of the nearest class in `ERROR_CODES`."""
    for kind in type(exc).__mro__:
        if kind in ERROR_CODES:
            return ERROR_CODES[kind]
    return (1, 500)
