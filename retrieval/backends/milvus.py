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
    check_version_name,
)
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
        batch_size: int = 2000,
        index_type: DenseIndex = "FLAT",
        index_params: dict[str, Any] | None = None,
        search_params: dict[str, Any] | None = None,
    ) -> None:
        if not _PREFIX.match(prefix):
            raise UsageError(f"prefix {prefix!r} is not allowed: use a letter then letters or digits (at most 32)")
        self.uri = str(uri)
        self.dim = int(dim)
        self.prefix = prefix
        self.timeout = float(timeout)
        self.batch_size = int(batch_size)
        self.index_type = index_type
        self.index_params = index_params or ({"nlist": 128} if index_type == "IVF_FLAT" else {})
        self.search_params = search_params or ({"nprobe": 16} if index_type == "IVF_FLAT" else {})
        self._client = self._connect(token)
        self._building: str | None = None
        self._live: str | None = None
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

        if self._call("has_collection", self._client.has_collection, self._meta):
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
        self._call("create_collection", self._client.create_collection, name, schema=schema, consistency_level="Strong")
        self._call("create_index", self._client.create_index, name, index, sync=False)
        self._call("load_collection", self._client.load_collection, name)

    # ------------------------------------------------------------------ versions
    def live_version(self) -> str | None:
        rows = self._call(
            "reading the live version",
            self._client.query,
            self._meta,
            filter=f"key == {_string(LIVE_KEY)}",
            output_fields=["value", "dim"],
            consistency_level="Strong",
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
        for name in self._call("list_collections", self._client.list_collections):
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
                self._call("drop_collection", self._client.drop_collection, self._name(kind, old))
        self._create_version(name)
        self._building = name
        if from_live and live is not None:
            for kind in ("bullets", "papers"):
                self._copy(self._name(kind, live), self._name(kind, name), drop_key="id" if kind == "bullets" else None)

    def _copy(self, source: str, target: str, drop_key: str | None) -> None:
        """Every row of `source` into `target`, in batches (the bullet ids are new)."""
        iterator = self._call(
            "query_iterator",
            self._client.query_iterator,
            source,
            batch_size=self.batch_size,
            filter="",
            output_fields=["*"],
        )
        try:
            while True:
                rows = self._call("reading rows", iterator.next)
                if not rows:
                    break
                if drop_key:
                    rows = [{k: v for k, v in row.items() if k != drop_key} for row in rows]
                self._call("insert", self._client.insert, target, rows)
        finally:
            iterator.close()

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
        bullet_rows = ({**_fields(r), **_bullet(r, i)} for r in records for i in range(len(r.bullet_vectors)))
        for batch in _batches(bullet_rows, self.batch_size):
            self._call("insert", self._client.insert, self._name("bullets", version), batch)
        for batch in _batches(({**_fields(r), **_paper(r)} for r in records), self.batch_size):
            self._call("insert", self._client.insert, self._name("papers", version), batch)

    def delete(self, paper_ids: Sequence[str]) -> None:
        self._delete(self._target(), list(paper_ids))

    def _delete(self, version: str, paper_ids: list[str]) -> None:
        for start in range(0, len(paper_ids), 1000):
            chunk = paper_ids[start : start + 1000]
            expression = "paper_id in [" + ", ".join(_string(p) for p in chunk) + "]"
            for kind in ("bullets", "papers"):
                self._call("delete", self._client.delete, self._name(kind, version), filter=expression)

    def publish(self, name: str) -> None:
        version = self._target()
        if version != name:
            raise UsageError(f"version {name} is not being built (the build in progress is {version})")
        for kind in ("bullets", "papers"):
            self._call("flush", self._client.flush, self._name(kind, name))
        row = {"key": LIVE_KEY, "value": name, "dim": self.dim, "vec": [1.0, 0.0]}
        self._call("publishing the version", self._client.upsert, self._meta, [row])
        self._live = name
        self._building = None

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._client.close()

    # ------------------------------------------------------------------ queries
    def _search(
        self, kind: str, field_name: str, data: Any, k: int, filters: Filters, outputs: list[str]
    ) -> list[dict[str, Any]]:
        if self._live is None:
            raise IndexNotFoundError(f"no published version in Milvus at {self.uri} (prefix {self.prefix})")
        collection = self._name(kind, self._live)
        params = {"metric_type": "IP", "params": self.search_params if "sparse" not in field_name else {}}
        arguments: dict[str, Any] = {
            "anns_field": field_name,
            "filter": filter_expression(filters),
            "output_fields": outputs,
            "search_params": params,
        }
        if k <= MAX_TOPK:
            result = self._call("search", self._client.search, collection, data=[data], limit=k, **arguments)
            return [{"score": hit["distance"], **hit["entity"]} for hit in result[0]]
        iterator = self._call(
            "search_iterator",
            self._client.search_iterator,
            collection,
            data=[data],
            batch_size=min(MAX_TOPK, 4096),
            limit=k,
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


def _fields(record: PaperRecord) -> dict[str, Any]:
    return {
        "paper_id": record.paper_id,
        "first_date": record.first_date,
        "last_date": record.last_date,
        "votes": record.votes,
        "authors": record.authors,
    }


def _sparse(weights: Any) -> dict[int, float]:
    return {int(t): float(w) for t, w in weights.items() if float(w) != 0.0}


def _bullet(record: PaperRecord, i: int) -> dict[str, Any]:
    vector = [*record.bullet_vectors[i].tolist(), float(record.bullet_hubness[i])]
    return {"position": i, "vector": vector, "sparse": _sparse(record.sparse_bullets[i])}


def _paper(record: PaperRecord) -> dict[str, Any]:
    return {
        "centroid": [*record.centroid.tolist(), record.centroid_hubness],
        "title": record.title_vector.tolist(),
        "summary_sparse": _sparse(record.sparse_summary),
        "title_sparse": _sparse(record.sparse_title),
    }


def _batches(rows: Iterator[dict[str, Any]], size: int) -> Iterator[list[dict[str, Any]]]:
    batch: list[dict[str, Any]] = []
    for row in rows:
        batch.append(row)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


def _reason(exc: Exception) -> str:
    """A one-line reason from a pymilvus / grpc exception."""
    message = getattr(exc, "message", None) or str(exc) or type(exc).__name__
    return " ".join(str(message).split())[:300]


@contextlib.contextmanager
def _quiet_pymilvus() -> Iterator[None]:
    """pymilvus logs a failed connection at ERROR before raising; the caller reports it in one line."""
    logger = logging.getLogger("pymilvus")
    level = logger.level
    logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        logger.setLevel(level)
