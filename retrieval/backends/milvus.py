"""The Milvus backend: the same protocol on `pymilvus.MilvusClient` (`pip install '.[milvus]'`).

`uri` is a local `*.db` file (Milvus Lite: the Milvus server binary, started in-process; one
process per file) or `http://host:19530` (a standalone server or a cluster; `token` for auth).

Collections, per version `v` and a `prefix` (letters and digits)::

    <prefix>_bullets_<v>   one row per bullet: paper_id, position, filter fields,
                           vector = [v, hub(v)] (FLAT / IVF_FLAT / HNSW on a server, metric IP),
                           sparse = BM25 document weights (SPARSE_INVERTED_INDEX, IP)
    <prefix>_papers_<v>    one row per paper (primary key paper_id): filter fields,
                           centroid = [c, hub(c)], title, summary_sparse, title_sparse
    <prefix>_meta          key "live" -> the live version's name

Milvus Lite has no aliases (create_alias answers UNIMPLEMENTED), so the live version is that one
row of our own; `publish` replaces it in one upsert. Filters become a boolean expression over the
filter fields, which every row carries, so Milvus filters while it searches.
"""

from __future__ import annotations

import contextlib
import logging
import re
import warnings
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, Literal, TypeVar

import numpy as np

from retrieval.backends.base import (
    Backend,
    BulletHit,
    PaperField,
    PaperRecord,
    PaperScore,
    augment,
    check_version_name,
)
from retrieval.backends.sparse import rows_to_csr
from retrieval.errors import BackendUnavailableError, IndexMismatchError, IndexNotFoundError, UsageError
from retrieval.models import Filters

__all__ = ["MilvusBackend", "filter_expression"]

MAX_TOPK = 16384  # Milvus refuses a larger limit in one search
AUTHORS_MAX = 65535  # VARCHAR bytes
ID_MAX = 64
LIVE_KEY = "live"
DenseIndex = Literal["FLAT", "IVF_FLAT", "HNSW", "AUTOINDEX"]
T = TypeVar("T")
_PREFIX = re.compile(r"^[A-Za-z][A-Za-z0-9]{0,31}$")
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")


def _string(text: str) -> str:
    """A Milvus expression string literal."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def filter_expression(filters: Filters) -> str:
    """The Milvus boolean expression of `filters` ("" when there is none).

    Dates overlap the paper's [first_date, last_date]; the author is a case-insensitive
    substring of the joined authors (LIKE with `%`, `_` and `\\` escaped).
    """
    parts: list[str] = []
    for value, clause in ((filters.date_from, "last_date >= "), (filters.date_to, "first_date <= ")):
        if value:
            if not _DATE.match(value):
                raise UsageError(f"filters: a date must be YYYY-MM-DD, got {value[:40]!r}")
            parts.append(clause + _string(value))
    if filters.min_votes is not None:
        parts.append(f"votes >= {int(filters.min_votes)}")
    needle = (filters.author or "").strip().lower()
    if needle:
        pattern = re.sub(r"([\\%_])", r"\\\1", needle)
        parts.append("authors like " + _string(f"%{pattern}%"))
    return " and ".join(parts)


class MilvusBackend(Backend):
    """The protocol over Milvus (see the module docstring). One client per backend object."""

    def __init__(
        self,
        uri: str,
        dim: int,
        *,
        prefix: str = "dailypapers",
        token: str = "",
        timeout: float = 5.0,
        call_timeout: float = 120.0,
        batch_size: int = 1000,
        index_type: DenseIndex = "FLAT",
        index_params: dict[str, Any] | None = None,
        search_params: dict[str, Any] | None = None,
    ) -> None:
        if not _PREFIX.match(prefix):
            raise UsageError(f"prefix {prefix!r} is not allowed: use a letter then letters or digits (at most 32)")
        self.uri = str(uri)
        self.dim = int(dim)
        self.prefix = prefix
        self.timeout = float(timeout)  # connecting
        self.call_timeout = float(call_timeout)  # each request, retries included
        self.batch_size = int(batch_size)
        self.index_type = index_type
        self.index_params = index_params or ({"nlist": 128} if index_type == "IVF_FLAT" else {})
        self.search_params = search_params or ({"nprobe": 16} if index_type == "IVF_FLAT" else {})
        self._client = self._connect(token)
        self._building: str | None = None
        self._live: str | None = None
        self._collections: dict[str, Any] = {}  # pymilvus Collection handles, for column inserts
        self._ensure_meta()
        self.refresh()

    # ------------------------------------------------------------------ plumbing
    def _connect(self, token: str) -> Any:
        try:
            from pymilvus import MilvusClient
        except ImportError as exc:
            raise BackendUnavailableError(f"pymilvus is not installed ({exc}); pip install '.[milvus]'") from exc
        local = "://" not in self.uri
        if local:
            if not self.uri.endswith(".db"):
                raise UsageError(f"Milvus URI {self.uri}: a local Milvus Lite file must end in .db (or use http://)")
            Path(self.uri).parent.mkdir(parents=True, exist_ok=True)
            try:
                with warnings.catch_warnings():  # milvus-lite 2.5.1 imports the deprecated pkg_resources
                    warnings.filterwarnings("ignore", message="pkg_resources is deprecated", category=UserWarning)
                    import milvus_lite  # noqa: F401
            except ImportError as exc:
                raise BackendUnavailableError(
                    f"Milvus Lite is not installed for {self.uri} ({exc}); pip install '.[milvus]'"
                ) from exc
        with _quiet_pymilvus():
            try:
                return MilvusClient(uri=self.uri, token=token, timeout=self.timeout)
            except Exception as exc:  # pymilvus raises MilvusException, grpc errors or OSError
                raise BackendUnavailableError(f"cannot reach Milvus at {self.uri}: {_reason(exc)}") from exc

    def _call(self, what: str, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run one client call; any failure becomes a one-line `BackendUnavailableError`."""
        try:
            return fn(*args, **kwargs)
        except Exception as exc:
            raise BackendUnavailableError(f"Milvus at {self.uri}: {what} failed: {_reason(exc)}") from exc

    def _name(self, kind: str, version: str) -> str:
        return f"{self.prefix}_{kind}_{version}"

    @property
    def _meta(self) -> str:
        return f"{self.prefix}_meta"

    def _ensure_meta(self) -> None:
        from pymilvus import DataType, MilvusClient

        if self._call("has_collection", self._client.has_collection, self._meta, timeout=self.call_timeout):
            return
        schema = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False)
        schema.add_field("key", DataType.VARCHAR, is_primary=True, max_length=64)
        schema.add_field("value", DataType.VARCHAR, max_length=256)
        schema.add_field("dim", DataType.INT64)
        schema.add_field("vec", DataType.FLOAT_VECTOR, dim=2)  # Milvus needs one vector field
        index = self._client.prepare_index_params()
        index.add_index("vec", index_type="FLAT", metric_type="IP")
        self._create(self._meta, schema, index)

    def _create_version(self, version: str) -> None:
        from pymilvus import DataType, MilvusClient

        dense: dict[str, Any] = {"index_type": self.index_type, "metric_type": "IP", "params": self.index_params}
        sparse: dict[str, Any] = {"index_type": "SPARSE_INVERTED_INDEX", "metric_type": "IP"}
        fields_of: dict[str, dict[str, dict[str, Any]]] = {
            "bullets": {"vector": dense, "sparse": sparse},
            "papers": {"centroid": dense, "title": dense, "summary_sparse": sparse, "title_sparse": sparse},
        }

        def common(schema: Any) -> None:
            schema.add_field("first_date", DataType.VARCHAR, max_length=10)
            schema.add_field("last_date", DataType.VARCHAR, max_length=10)
            schema.add_field("votes", DataType.INT64)
            schema.add_field("authors", DataType.VARCHAR, max_length=AUTHORS_MAX)

        bullets = MilvusClient.create_schema(auto_id=True, enable_dynamic_field=False)
        bullets.add_field("id", DataType.INT64, is_primary=True)
        bullets.add_field("paper_id", DataType.VARCHAR, max_length=ID_MAX)
        bullets.add_field("position", DataType.INT32)
        common(bullets)
        bullets.add_field("vector", DataType.FLOAT_VECTOR, dim=self.dim + 1)
        bullets.add_field("sparse", DataType.SPARSE_FLOAT_VECTOR)
        papers = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False)
        papers.add_field("paper_id", DataType.VARCHAR, is_primary=True, max_length=ID_MAX)
        common(papers)
        papers.add_field("centroid", DataType.FLOAT_VECTOR, dim=self.dim + 1)
        papers.add_field("title", DataType.FLOAT_VECTOR, dim=self.dim)
        papers.add_field("summary_sparse", DataType.SPARSE_FLOAT_VECTOR)
        papers.add_field("title_sparse", DataType.SPARSE_FLOAT_VECTOR)
        for kind, schema in (("bullets", bullets), ("papers", papers)):
            index = self._client.prepare_index_params()
            for field_name, params in fields_of[kind].items():
                index.add_index(field_name, **params)
            self._create(self._name(kind, version), schema, index)

    def _create(self, name: str, schema: Any, index: Any) -> None:
        """Create, index and load an empty collection. With sync=False pymilvus does not poll each
        index in 0.5 s steps (the collection is empty); load_collection waits until it is searchable."""
        self._call(
            "create_collection",
            self._client.create_collection,
            name,
            schema=schema,
            consistency_level="Strong",
            timeout=self.call_timeout,
        )
        self._call("create_index", self._client.create_index, name, index, sync=False, timeout=self.call_timeout)
        self._call("load_collection", self._client.load_collection, name, timeout=self.call_timeout)

    # ------------------------------------------------------------------ versions
    def live_version(self) -> str | None:
        rows = self._call(
            "reading the live version",
            self._client.query,
            self._meta,
            filter=f"key == {_string(LIVE_KEY)}",
            output_fields=["value", "dim"],
            consistency_level="Strong",
            timeout=self.call_timeout,
        )
        if not rows:
            return None
        if int(rows[0]["dim"]) != self.dim:
            raise IndexMismatchError(
                f"Milvus at {self.uri} (prefix {self.prefix}) holds {rows[0]['dim']}-dim vectors, "
                f"the backend expects {self.dim}; rebuild it or use another prefix"
            )
        return str(rows[0]["value"])

    def refresh(self) -> str | None:
        self._live = self.live_version()
        return self._live

    def _versions(self) -> set[str]:
        found = set()
        for name in self._call("list_collections", self._client.list_collections, timeout=self.call_timeout):
            for kind in ("bullets", "papers"):
                head = f"{self.prefix}_{kind}_"
                if name.startswith(head):
                    found.add(name[len(head) :])
        return found

    def begin_version(self, name: str, *, from_live: bool = True) -> None:
        check_version_name(name)
        live = self.refresh()
        if name == live:
            raise UsageError(f"version {name} is the live version; begin a version with a new name")
        for old in self._versions() - {live}:
            for kind in ("bullets", "papers"):
                self._collections.pop(self._name(kind, old), None)
                self._call(
                    "drop_collection", self._client.drop_collection, self._name(kind, old), timeout=self.call_timeout
                )
        self._create_version(name)
        self._building = name
        if from_live and live is not None:
            for kind in ("bullets", "papers"):
                self._copy(self._name(kind, live), self._name(kind, name), drop_key="id" if kind == "bullets" else None)

    def _copy(self, source: str, target: str, drop_key: str | None) -> None:
        """Every row of `source` into `target`, in batches (the bullet ids are new)."""
        with _quiet_pymilvus():  # Milvus Lite gives no MVCC timestamp; pymilvus warns and uses its own
            iterator = self._call(
                "query_iterator",
                self._client.query_iterator,
                source,
                batch_size=self.batch_size,
                filter="",
                output_fields=["*"],
                timeout=self.call_timeout,
            )
        try:
            while True:
                rows = self._call("reading rows", iterator.next)
                if not rows:
                    break
                names = [name for name in rows[0] if name != drop_key]
                self._insert(target, {name: [row[name] for row in rows] for name in names})
        finally:
            iterator.close()

    def _insert(self, collection: str, columns: dict[str, Any]) -> None:
        """Insert columns (equal lengths; float vectors as 2-D arrays) in batches of `batch_size`.

        Column-wise through pymilvus's `Collection` on the client's own connection: packing row
        dicts costs pymilvus about five times as long (3.6 s against 0.74 s per 2,000 bullets).
        Relies on `MilvusClient._using` (the connection alias) of pymilvus 2.5."""
        from pymilvus import Collection

        handle = self._collections.get(collection)
        if handle is None:
            handle = self._call(
                "opening a collection", Collection, collection, using=self._client._using, timeout=self.call_timeout
            )
            self._collections[collection] = handle
        ordered: list[Any] = []
        for f in handle.schema.fields:
            if f.auto_id:
                continue
            column = columns[f.name]
            if f.dtype.name == "FLOAT_VECTOR":
                column = np.asarray(column, dtype=np.float32)
            elif f.dtype.name == "SPARSE_FLOAT_VECTOR":  # a CSR matrix skips pymilvus's per-pair type checks
                column = rows_to_csr(column)
            ordered.append(column)
        total = ordered[0].shape[0] if hasattr(ordered[0], "shape") else len(ordered[0])
        for start in range(0, total, self.batch_size):
            batch = [column[start : start + self.batch_size] for column in ordered]
            self._call("insert", handle.insert, batch, timeout=self.call_timeout)

    def _target(self) -> str:
        if self._building is None:
            raise UsageError("no version is being built; call begin_version(name) first")
        return self._building

    def upsert(self, papers: Sequence[PaperRecord]) -> None:
        version = self._target()
        records = self._check_records(papers)
        for record in records:
            if len(record.paper_id) > ID_MAX or len(record.authors.encode("utf-8")) > AUTHORS_MAX:
                raise UsageError(
                    f"paper {record.paper_id[:80]}: Milvus keeps ids up to {ID_MAX} characters and authors "
                    f"up to {AUTHORS_MAX} bytes"
                )
        self._delete(version, [r.paper_id for r in records])
        if records:
            self._insert(self._name("bullets", version), _bullet_columns(records, self.dim))
            self._insert(self._name("papers", version), _paper_columns(records))

    def delete(self, paper_ids: Sequence[str]) -> None:
        self._delete(self._target(), list(paper_ids))

    def _delete(self, version: str, paper_ids: list[str]) -> None:
        for start in range(0, len(paper_ids), 1000):
            chunk = paper_ids[start : start + 1000]
            expression = "paper_id in [" + ", ".join(_string(p) for p in chunk) + "]"
            for kind in ("bullets", "papers"):
                self._call(
                    "delete",
                    self._client.delete,
                    self._name(kind, version),
                    filter=expression,
                    timeout=self.call_timeout,
                )

    def publish(self, name: str) -> None:
        version = self._target()
        if version != name:
            raise UsageError(f"version {name} is not being built (the build in progress is {version})")
        for kind in ("bullets", "papers"):
            self._call("flush", self._client.flush, self._name(kind, name), timeout=self.call_timeout)
        row = {"key": LIVE_KEY, "value": name, "dim": self.dim, "vec": [1.0, 0.0]}
        self._call("publishing the version", self._client.upsert, self._meta, [row], timeout=self.call_timeout)
        self._live = name
        self._building = None

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._client.close()

    # ------------------------------------------------------------------ queries
    def _search(
        self, kind: str, field_name: str, data: Any, k: int, filters: Filters, outputs: list[str]
    ) -> list[dict[str, Any]]:
        """Search the live version; when that fails because another process published a newer
        one (and a later build dropped this one), move to the new live version and search again."""
        live = self._live
        if live is None:
            raise IndexNotFoundError(f"no published version in Milvus at {self.uri} (prefix {self.prefix})")
        try:
            return self._search_in(live, kind, field_name, data, k, filters, outputs)
        except BackendUnavailableError:
            newer = self.refresh()
            if newer is None or newer == live:
                raise
            return self._search_in(newer, kind, field_name, data, k, filters, outputs)

    def _search_in(
        self, version: str, kind: str, field_name: str, data: Any, k: int, filters: Filters, outputs: list[str]
    ) -> list[dict[str, Any]]:
        collection = self._name(kind, version)
        params = {"metric_type": "IP", "params": self.search_params if "sparse" not in field_name else {}}
        arguments: dict[str, Any] = {
            "anns_field": field_name,
            "filter": filter_expression(filters),
            "output_fields": outputs,
            "search_params": params,
        }
        if k <= MAX_TOPK:
            result = self._call(
                "search", self._client.search, collection, data=[data], limit=k, **arguments, timeout=self.call_timeout
            )
            return [{"score": hit["distance"], **hit["entity"]} for hit in result[0]]
        iterator = self._call(
            "search_iterator",
            self._client.search_iterator,
            collection,
            data=[data],
            batch_size=min(MAX_TOPK, 4096),
            limit=k,
            timeout=self.call_timeout,
            **arguments,
        )
        hits: list[dict[str, Any]] = []
        try:
            while batch := self._call("reading hits", iterator.next):
                hits.extend({"score": hit["distance"], **{f: hit[f] for f in outputs}} for hit in batch)
        finally:
            iterator.close()
        return hits[:k]

    def _top_bullets(self, query: np.ndarray, k: int, filters: Filters) -> list[BulletHit]:
        hits = self._search("bullets", "vector", query.tolist(), k, filters, ["paper_id", "position"])
        return [BulletHit(h["paper_id"], int(h["position"]), float(h["score"])) for h in hits]

    def _top_papers(self, query: np.ndarray, k: int, filters: Filters, field: PaperField) -> list[PaperScore]:
        hits = self._search("papers", field, query.tolist(), k, filters, ["paper_id"])
        return [PaperScore(h["paper_id"], float(h["score"])) for h in hits]

    def _sparse_bullets(self, weights: dict[int, float], k: int, filters: Filters) -> list[BulletHit]:
        hits = self._search("bullets", "sparse", weights, k, filters, ["paper_id", "position"])
        return [BulletHit(h["paper_id"], int(h["position"]), float(h["score"])) for h in hits if h["score"] > 0]

    def _sparse_papers(
        self, weights: dict[int, float], k: int, filters: Filters, field: Literal["summary", "title"]
    ) -> list[PaperScore]:
        hits = self._search("papers", f"{field}_sparse", weights, k, filters, ["paper_id"])
        return [PaperScore(h["paper_id"], float(h["score"])) for h in hits if h["score"] > 0]


def _filter_columns(records: Sequence[PaperRecord], counts: Sequence[int]) -> dict[str, list[Any]]:
    """The filter fields of each record, repeated `counts[i]` times."""
    return {
        name: [value for r, n in zip(records, counts, strict=True) for value in [getattr(r, attr)] * n]
        for name, attr in (
            ("paper_id", "paper_id"),
            ("first_date", "first_date"),
            ("last_date", "last_date"),
            ("votes", "votes"),
            ("authors", "authors"),
        )
    }


def _sparse(weights: Any) -> dict[int, float]:
    return {int(t): float(w) for t, w in weights.items() if float(w) != 0.0}


def _bullet_columns(records: Sequence[PaperRecord], dim: int) -> dict[str, Any]:
    counts = [len(r.bullet_vectors) for r in records]
    vectors = [augment(r.bullet_vectors, r.bullet_hubness) for r in records if len(r.bullet_vectors)]
    return {
        **_filter_columns(records, counts),
        "position": [i for n in counts for i in range(n)],
        "vector": np.concatenate(vectors) if vectors else np.zeros((0, dim + 1), np.float32),
        "sparse": [_sparse(w) for r in records for w in r.sparse_bullets],
    }


def _paper_columns(records: Sequence[PaperRecord]) -> dict[str, Any]:
    return {
        **_filter_columns(records, [1] * len(records)),
        "centroid": np.stack([augment(r.centroid, r.centroid_hubness)[0] for r in records]),
        "title": np.stack([r.title_vector for r in records]),
        "summary_sparse": [_sparse(r.sparse_summary) for r in records],
        "title_sparse": [_sparse(r.sparse_title) for r in records],
    }


def _reason(exc: Exception) -> str:
    """A one-line reason from a pymilvus / grpc exception."""
    message = getattr(exc, "message", None) or str(exc) or type(exc).__name__
    return " ".join(str(message).split())[:300]


@contextlib.contextmanager
def _quiet_pymilvus() -> Iterator[None]:
    """Silence pymilvus's own log lines (a failed connection at ERROR before it raises, which the
    caller reports in one line; Milvus Lite's missing MVCC timestamp at WARNING)."""
    logger = logging.getLogger("pymilvus")
    level = logger.level
    logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        logger.setLevel(level)
