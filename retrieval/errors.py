"""Domain exceptions. The CLI turns them into exit codes, the API into HTTP statuses."""


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
