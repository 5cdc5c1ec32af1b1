"""The Milvus backend: the same protocol on `pymilvus.MilvusClient` (`pip install '.[milvus]'`).

`uri` is a local `*.db` file (Milvus Lite: the Milvus server binary, started in-process; one
process per file) or `http://host:19530` (a standalone server or a cluster; `token` for auth).

Row-level versions. Three collections per `prefix` (letters and digits)::

    <prefix>_bullets   one row per bullet and version span: key "<paper>/<born>/<position>",
                       paper_id, position, born, died, filter fields,
                       vector = [v, hub(v)] (FLAT / IVF_FLAT / HNSW on a server, metric IP),
                       sparse = BM25 document weights (SPARSE_INVERTED_INDEX, IP)
    <prefix>_papers    one row per paper and version span: key "<paper>/<born>", the same
                       fields, centroid = [c, hub(c)], title, summary_sparse, title_sparse
    <prefix>_meta      key "live": the live version's name, its number L and base B, the
                       previous live version kept readable (number, base), the dimension

Versions are numbers 1, 2, ... A row belongs to version V when `base(V) <= born <= V < died`
(`died` = `ALIVE` while no later version replaced it); `base(V)` is the number of the version
that started empty (`from_live=False`) that V descends from, so a full rebuild cuts off every
older row without touching it. Queries add that condition for their version to the user's
filter, so Milvus filters while it searches.

* `begin_version(name)` allots N = L + 1 and copies nothing. It first collects every row the
  live version does not read (rows of older versions, rows born > L of a build that never
  published) and gives rows that such a build marked `died` back `died = ALIVE`.
* `upsert` inserts the papers' rows with `born = N` and rewrites their rows of the live version
  with `died = N` (Milvus replaces whole rows, so those rows are read back with their vectors);
  `delete` only does the second. An incremental build of one paper writes that paper's rows.
* `publish(name)` is one upsert of the "live" row: the one atomic step. The version that was
  live stays readable (as "previous") until the next `begin_version` or `collect()`; rows that
  neither reads are collected at once. With `keep_previous=False` publish collects everything
  the new version does not read.

A reader holds the version it read at `refresh` (or at creation). After each search it reads
the "live" row (one small query, about 1 ms) and, when its version is neither the live nor the
previous one any more (a later build collected it, so the answer may miss rows), moves to the
live version and searches again. So a reader that still holds L answers exactly from L until L
is retired, then from the live version, never from a half-collected L. With `recheck_s > 0` a
reader reads the live row at most once per `recheck_s` seconds instead: cheaper searches, but
for up to `recheck_s` after a build collected its version, its answers can miss the papers
that changed since.

Milvus Lite has no aliases (create_alias answers UNIMPLEMENTED) and no `not` in expressions;
the meta row is our alias and every expression is written without `not`.
"""

from __future__ import annotations

import contextlib
import logging
import math
import re
import threading
import time
import warnings
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
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

__all__ = ["ALIVE", "MilvusBackend", "filter_expression"]

MAX_TOPK = 16384  # Milvus refuses a larger limit in one search (and in one query)
AUTHORS_MAX = 65535  # VARCHAR bytes
ID_MAX = 64
KEY_MAX = 128  # paper id, "/", born, "/", position
ALIVE = 2**62  # `died` of a row no version replaced yet
LIVE_KEY = "live"
KINDS = ("bullets", "papers")
DenseIndex = Literal["FLAT", "IVF_FLAT", "HNSW", "AUTOINDEX"]
T = TypeVar("T")
_OPEN: Counter[str] = Counter()  # backends using each pymilvus connection alias
_OPEN_LOCK = threading.Lock()
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


@dataclass(frozen=True)
class _View:
    """A published version as readers see it: its name, number and base."""

    name: str
    number: int
    base: int

    def rows(self) -> str:
        """The expression selecting this version's rows."""
        return f"born >= {self.base} and born <= {self.number} and died > {self.number}"

    def not_rows(self) -> str:
        """The expression selecting every other row (Milvus Lite has no `not`)."""
        return f"(born < {self.base} or born > {self.number} or died <= {self.number})"


@dataclass(frozen=True)
class _Live:
    """The "live" meta row: the live version and the previous one still readable (or None)."""

    live: _View
    previous: _View | None

    def readable(self, view: _View) -> bool:
        """Whether a reader holding `view` still gets all of its rows."""
        return any(v is not None and (v.number, v.base) == (view.number, view.base) for v in (self.live, self.previous))


@dataclass
class _Build:
    """The version being built: its name, number N, base, and the papers given rows born N."""

    name: str
    number: int
    base: int
    born_here: set[str] = field(default_factory=set)

    @property
    def on_live(self) -> bool:
        """Whether it starts from the live version's rows (`from_live=True` with a live one)."""
        return self.base < self.number


class MilvusBackend(Backend):
    """The protocol over Milvus (see the module docstring). One client per backend object.

    `writes` counts the rows this object wrote since its last `begin_version`: per collection
    `inserted`, `rewritten` (a `died` change) and `deleted`, and `collected` (old versions and
    leftovers removed by `begin_version`, `publish` and `collect`).
    """

    def __init__(
        self,
        uri: str,
        dim: int,
        *,
        prefix: str = "dailypapers",
        token: str = "",
        timeout: float = 5.0,
        call_timeout: float = 120.0,
        search_timeout: float | None = None,
        batch_size: int = 1000,
        index_type: DenseIndex = "FLAT",
        index_params: dict[str, Any] | None = None,
        search_params: dict[str, Any] | None = None,
        keep_previous: bool = True,
        recheck_s: float = 0.0,
    ) -> None:
        if not _PREFIX.match(prefix):
            raise UsageError(f"prefix {prefix!r} is not allowed: use a letter then letters or digits (at most 32)")
        self.uri = str(uri)
        self.dim = int(dim)
        self.prefix = prefix
        self.timeout = float(timeout)  # connecting
        # Whole seconds: pymilvus's retry loop honours `timeout` only when it is an int (a float
        # leaves it retrying an unreachable server 75 times, about 3.5 minutes).
        self.call_timeout = max(1, math.ceil(call_timeout))  # each request, retries included
        # searches and the live-version reads they make: a service answers 503 after this long
        self.search_timeout = max(1, math.ceil(search_timeout)) if search_timeout is not None else self.call_timeout
        self.batch_size = int(batch_size)
        self.index_type = index_type
        self.index_params = index_params or ({"nlist": 128} if index_type == "IVF_FLAT" else {})
        self.search_params = search_params or ({"nprobe": 16} if index_type == "IVF_FLAT" else {})
        self.keep_previous = bool(keep_previous)
        self.recheck_s = float(recheck_s)
        self._checked_at = float("-inf")  # time.monotonic() of the last read of the live row
        self.writes: Counter[str] = Counter()
        self._closed = False
        self._client = self._connect(token)
        self._build: _Build | None = None
        self._view: _View | None = None
        self._handles: dict[str, Any] = {}  # pymilvus Collection handles, for column writes
        try:
            self._ensure_collections()
            self.refresh()
        except BaseException:
            self.close()
            raise

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
                client = MilvusClient(uri=self.uri, token=token, timeout=self.timeout)
            except Exception as exc:  # pymilvus raises MilvusException, grpc errors or OSError
                raise BackendUnavailableError(f"cannot reach Milvus at {self.uri}: {_reason(exc)}") from exc
        with _OPEN_LOCK:  # pymilvus shares one connection per URI and token: count its users
            _OPEN[client._using] += 1
        return client

    def _call(self, what: str, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run one client call; any failure becomes a one-line `BackendUnavailableError`."""
        try:
            return fn(*args, **kwargs)
        except Exception as exc:
            raise BackendUnavailableError(f"Milvus at {self.uri}: {what} failed: {_reason(exc)}") from exc

    def _name(self, kind: str) -> str:
        return f"{self.prefix}_{kind}"

    @property
    def _meta(self) -> str:
        return f"{self.prefix}_meta"

    def _ensure_collections(self) -> None:
        """Create the meta, bullets and papers collections when missing; refuse other layouts."""
        from pymilvus import DataType, MilvusClient

        meta = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False)
        meta.add_field("key", DataType.VARCHAR, is_primary=True, max_length=64)
        meta.add_field("value", DataType.VARCHAR, max_length=256)
        for name in ("number", "base", "previous", "previous_base", "dim"):
            meta.add_field(name, DataType.INT64)
        meta.add_field("vec", DataType.FLOAT_VECTOR, dim=2)  # Milvus needs one vector field
        dense: dict[str, Any] = {"index_type": self.index_type, "metric_type": "IP", "params": self.index_params}
        sparse: dict[str, Any] = {"index_type": "SPARSE_INVERTED_INDEX", "metric_type": "IP"}
        wanted: dict[str, tuple[Any, dict[str, dict[str, Any]]]] = {
            self._meta: (meta, {"vec": {"index_type": "FLAT", "metric_type": "IP"}}),
            self._name("bullets"): (self._bullet_schema(), {"vector": dense, "sparse": sparse}),
            self._name("papers"): (
                self._paper_schema(),
                {"centroid": dense, "title": dense, "summary_sparse": sparse, "title_sparse": sparse},
            ),
        }
        for name, (schema, indexes) in wanted.items():
            if self._call("has_collection", self._client.has_collection, name, timeout=self.call_timeout):
                self._check_layout(name, schema)
                continue
            index = self._client.prepare_index_params()
            for field_name, params in indexes.items():
                index.add_index(field_name, **params)
            self._create(name, schema, index)

    def _check_layout(self, name: str, schema: Any) -> None:
        """Refuse a collection whose fields (names, vector sizes) are not the ones we write."""
        described = self._call("describe_collection", self._client.describe_collection, name, timeout=self.call_timeout)
        have = {f["name"]: f.get("params", {}).get("dim") for f in described["fields"]}
        want = {f.name: f.params.get("dim") for f in schema.fields}
        if have != want:
            raise IndexMismatchError(
                f"Milvus at {self.uri}: collection {name} holds another layout or dimension than this "
                f"backend ({self.dim} dims, row-level versions); drop the prefix {self.prefix}'s collections "
                "or use another prefix"
            )

    def _bullet_schema(self) -> Any:
        from pymilvus import DataType, MilvusClient

        schema = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False)
        schema.add_field("key", DataType.VARCHAR, is_primary=True, max_length=KEY_MAX)
        schema.add_field("paper_id", DataType.VARCHAR, max_length=ID_MAX)
        schema.add_field("position", DataType.INT32)
        self._common_fields(schema)
        schema.add_field("vector", DataType.FLOAT_VECTOR, dim=self.dim + 1)
        schema.add_field("sparse", DataType.SPARSE_FLOAT_VECTOR)
        return schema

    def _paper_schema(self) -> Any:
        from pymilvus import DataType, MilvusClient

        schema = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False)
        schema.add_field("key", DataType.VARCHAR, is_primary=True, max_length=KEY_MAX)
        schema.add_field("paper_id", DataType.VARCHAR, max_length=ID_MAX)
        self._common_fields(schema)
        schema.add_field("centroid", DataType.FLOAT_VECTOR, dim=self.dim + 1)
        schema.add_field("title", DataType.FLOAT_VECTOR, dim=self.dim)
        schema.add_field("summary_sparse", DataType.SPARSE_FLOAT_VECTOR)
        schema.add_field("title_sparse", DataType.SPARSE_FLOAT_VECTOR)
        return schema

    @staticmethod
    def _common_fields(schema: Any) -> None:
        from pymilvus import DataType

        schema.add_field("born", DataType.INT64)
        schema.add_field("died", DataType.INT64)
        schema.add_field("first_date", DataType.VARCHAR, max_length=10)
        schema.add_field("last_date", DataType.VARCHAR, max_length=10)
        schema.add_field("votes", DataType.INT64)
        schema.add_field("authors", DataType.VARCHAR, max_length=AUTHORS_MAX)

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

    def _handle(self, collection: str) -> Any:
        """A pymilvus `Collection` on the client's own connection (`MilvusClient._using`, pymilvus 2.5)."""
        from pymilvus import Collection

        handle = self._handles.get(collection)
        if handle is None:
            handle = self._call(
                "opening a collection", Collection, collection, using=self._client._using, timeout=self.call_timeout
            )
            self._handles[collection] = handle
        return handle

    def _write(self, kind: str, columns: dict[str, Any], how: Literal["insert", "upsert"]) -> None:
        """Insert (or upsert: replace by key) columns of equal length in batches of `batch_size`.

        Column-wise through pymilvus's `Collection`: packing row dicts costs pymilvus about five
        times as long (3.6 s against 0.74 s per 2,000 bullets)."""
        handle = self._handle(self._name(kind))
        ordered: list[Any] = []
        for f in handle.schema.fields:
            column = columns[f.name]
            if f.dtype.name == "FLOAT_VECTOR":
                column = np.asarray(column, dtype=np.float32)
            elif f.dtype.name == "SPARSE_FLOAT_VECTOR":  # a CSR matrix skips pymilvus's per-pair type checks
                column = rows_to_csr(column)
            ordered.append(column)
        total = len(columns["key"])
        for start in range(0, total, self.batch_size):
            batch = [column[start : start + self.batch_size] for column in ordered]
            self._call(how, getattr(handle, how), batch, timeout=self.call_timeout)
        self.writes[f"{kind}_{'inserted' if how == 'insert' else 'rewritten'}"] += total

    def _rows(self, kind: str, expression: str) -> list[dict[str, Any]]:
        """Every field of every row matching `expression` (a query, or an iterator past one query's limit)."""
        collection = self._name(kind)
        rows = self._call(
            "query",
            self._client.query,
            collection,
            filter=expression,
            output_fields=["*"],
            limit=MAX_TOPK,
            timeout=self.call_timeout,
        )
        if len(rows) < MAX_TOPK:
            return list(rows)
        with _quiet_pymilvus():  # Milvus Lite gives no MVCC timestamp; pymilvus warns and uses its own
            iterator = self._call(
                "query_iterator",
                self._client.query_iterator,
                collection,
                batch_size=self.batch_size,
                filter=expression,
                output_fields=["*"],
                timeout=self.call_timeout,
            )
        found: list[dict[str, Any]] = []
        try:
            while batch := self._call("reading rows", iterator.next):
                found.extend(batch)
        finally:
            iterator.close()
        return found

    def _delete_where(self, kind: str, expression: str, counter: str) -> None:
        result = self._call(
            "delete", self._client.delete, self._name(kind), filter=expression, timeout=self.call_timeout
        )
        # Milvus Lite answers with the deleted keys, a server with {"delete_count": n}
        self.writes[counter] += len(result) if isinstance(result, list) else int(result.get("delete_count", 0))

    def count(self, expression: str = "born >= 0") -> dict[str, int]:
        """Rows matching `expression` per collection (every row by default), e.g. `"born == 3"`."""
        found = {}
        for kind in KINDS:
            rows = self._call(
                "count",
                self._client.query,
                self._name(kind),
                filter=expression,
                output_fields=["count(*)"],
                timeout=self.call_timeout,
            )
            found[kind] = int(rows[0]["count(*)"])
        return found

    # ------------------------------------------------------------------ versions
    def _read_live(self) -> _Live | None:
        rows = self._call(
            "reading the live version",
            self._client.query,
            self._meta,
            filter=f"key == {_string(LIVE_KEY)}",
            output_fields=["value", "number", "base", "previous", "previous_base", "dim"],
            consistency_level="Strong",
            timeout=self.search_timeout,
        )
        if not rows:
            return None
        row = rows[0]
        if int(row["dim"]) != self.dim:
            raise IndexMismatchError(
                f"Milvus at {self.uri} (prefix {self.prefix}) holds {row['dim']}-dim vectors, "
                f"the backend expects {self.dim}; rebuild it or use another prefix"
            )
        live = _View(str(row["value"]), int(row["number"]), int(row["base"]))
        previous = None
        if int(row["previous"]) > 0:
            previous = _View("", int(row["previous"]), int(row["previous_base"]))
        return _Live(live, previous)

    def _write_live(self, live: _View, previous: _View | None) -> None:
        row = {
            "key": LIVE_KEY,
            "value": live.name,
            "number": live.number,
            "base": live.base,
            "previous": previous.number if previous else 0,
            "previous_base": previous.base if previous else 0,
            "dim": self.dim,
            "vec": [1.0, 0.0],
        }
        self._call("publishing the version", self._client.upsert, self._meta, [row], timeout=self.call_timeout)

    def live_version(self) -> str | None:
        state = self._read_live()
        return state.live.name if state else None

    def refresh(self) -> str | None:
        checked = time.monotonic()
        state = self._read_live()
        self._view = state.live if state else None
        self._checked_at = checked
        return self._view.name if self._view else None

    def collect(self) -> None:
        """Retire the previous version and remove every row the live version does not read
        (all rows when there is none). A reader still on the previous version moves to the live
        one at its next search."""
        state = self._read_live()
        if state is not None and state.previous is not None:
            self._write_live(state.live, None)
        keep = [state.live] if state else []
        self._collect(keep)

    def _collect(self, keep: Sequence[_View]) -> None:
        """Delete the rows none of `keep` reads."""
        expression = " and ".join(v.not_rows() for v in keep) if keep else "born >= 0"
        for kind in KINDS:
            self._delete_where(kind, expression, "collected")

    def begin_version(self, name: str, *, from_live: bool = True) -> None:
        check_version_name(name)
        self.writes.clear()
        self._build = None
        self.refresh()
        live = self._view
        if live is not None and name == live.name:
            raise UsageError(f"version {name} is the live version; begin a version with a new name")
        self.collect()
        if live is not None:  # rows a build that never published marked as replaced are alive again
            for kind in KINDS:
                marked = self._rows(kind, f"died > {live.number} and died < {ALIVE}")
                if marked:
                    self._write(kind, _columns_of(marked, died=ALIVE), "upsert")
        number = live.number + 1 if live else 1
        base = live.base if (from_live and live is not None) else number
        self._build = _Build(name, number, base)

    def _target(self) -> _Build:
        if self._build is None:
            raise UsageError("no version is being built; call begin_version(name) first")
        return self._build

    def upsert(self, papers: Sequence[PaperRecord]) -> None:
        build = self._target()
        records = self._check_records(papers)
        for record in records:
            if len(record.paper_id) > ID_MAX or len(record.authors.encode("utf-8")) > AUTHORS_MAX:
                raise UsageError(
                    f"paper {record.paper_id[:80]}: Milvus keeps ids up to {ID_MAX} characters and authors "
                    f"up to {AUTHORS_MAX} bytes"
                )
        for start in range(0, len(records), max(1, self.batch_size)):
            chunk = records[start : start + max(1, self.batch_size)]
            self._retire([r.paper_id for r in chunk])
            self._write("bullets", _bullet_columns(chunk, self.dim, build.number), "insert")
            self._write("papers", _paper_columns(chunk, build.number), "insert")
            build.born_here.update(r.paper_id for r in chunk)

    def delete(self, paper_ids: Sequence[str]) -> None:
        self._target()
        ids = list(dict.fromkeys(str(p) for p in paper_ids))
        for start in range(0, len(ids), max(1, self.batch_size)):
            self._retire(ids[start : start + max(1, self.batch_size)])

    def _retire(self, paper_ids: list[str]) -> None:
        """Take these papers out of the version being built: delete rows it gave them, and mark
        their rows inherited from the live version `died = N`."""
        build = self._target()
        mine = [p for p in paper_ids if p in build.born_here]
        if mine:
            for kind in KINDS:
                self._delete_where(kind, f"born == {build.number} and {_ids(mine)}", f"{kind}_deleted")
            build.born_here.difference_update(mine)
        if build.on_live and paper_ids:
            inherited = f"born >= {build.base} and born < {build.number} and died == {ALIVE} and {_ids(paper_ids)}"
            for kind in KINDS:
                rows = self._rows(kind, inherited)
                if rows:
                    self._write(kind, _columns_of(rows, died=build.number), "upsert")

    def publish(self, name: str) -> None:
        build = self._target()
        if build.name != name:
            raise UsageError(f"version {name} is not being built (the build in progress is {build.name})")
        for kind in KINDS:
            self._call("flush", self._client.flush, self._name(kind), timeout=self.call_timeout)
        state = self._read_live()
        new = _View(name, build.number, build.base)
        previous = state.live if (state and self.keep_previous) else None
        self._write_live(new, previous)  # the switch
        self._view = new
        self._build = None
        self._collect([new, previous] if previous else [new])

    def close(self) -> None:
        """Release this backend's share of the client connection (closed when the last user goes:
        pymilvus shares one per URI and token, so one backend closing must not cut the others)."""
        if self._closed:
            return
        self._closed = True
        with _OPEN_LOCK:
            alias = self._client._using
            _OPEN[alias] -= 1
            if _OPEN[alias] > 0:
                return
            del _OPEN[alias]
        with contextlib.suppress(Exception):
            self._client.close()

    # ------------------------------------------------------------------ queries
    def _search(
        self, kind: str, field_name: str, data: Any, k: int, filters: Filters, outputs: list[str]
    ) -> list[dict[str, Any]]:
        """Search the version this reader holds, then check it is still readable (not collected
        by a later build); when it is not, move to the live version and search again."""
        for _ in range(5):
            view = self._view
            if view is None:
                raise IndexNotFoundError(f"no published version in Milvus at {self.uri} (prefix {self.prefix})")
            hits = self._search_in(view, kind, field_name, data, k, filters, outputs)
            checked = time.monotonic()
            if checked - self._checked_at < self.recheck_s:
                return hits
            state = self._read_live()
            if state is not None and state.readable(view):
                self._checked_at = checked
                return hits
            self._view = state.live if state else None
        raise BackendUnavailableError(f"Milvus at {self.uri}: the live version kept changing during a search")

    def _search_in(
        self, view: _View, kind: str, field_name: str, data: Any, k: int, filters: Filters, outputs: list[str]
    ) -> list[dict[str, Any]]:
        collection = self._name(kind)
        params = {"metric_type": "IP", "params": self.search_params if "sparse" not in field_name else {}}
        user = filter_expression(filters)
        arguments: dict[str, Any] = {
            "anns_field": field_name,
            "filter": f"{view.rows()} and ({user})" if user else view.rows(),
            "output_fields": outputs,
            "search_params": params,
        }
        if k <= MAX_TOPK:
            result = self._call(
                "search",
                self._client.search,
                collection,
                data=[data],
                limit=k,
                **arguments,
                timeout=self.search_timeout,
            )
            return [{"score": hit["distance"], **hit["entity"]} for hit in result[0]]
        iterator = self._call(
            "search_iterator",
            self._client.search_iterator,
            collection,
            data=[data],
            batch_size=min(MAX_TOPK, 4096),
            limit=k,
            timeout=self.search_timeout,
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


def _ids(paper_ids: Sequence[str]) -> str:
    return "paper_id in [" + ", ".join(_string(p) for p in paper_ids) + "]"


def _columns_of(rows: Sequence[dict[str, Any]], *, died: int) -> dict[str, Any]:
    """Rows read back from Milvus as columns, with `died` set: their rewrite."""
    columns: dict[str, Any] = {name: [row[name] for row in rows] for name in rows[0]}
    columns["died"] = [died] * len(rows)
    return columns


def _filter_columns(records: Sequence[PaperRecord], counts: Sequence[int], born: int) -> dict[str, list[Any]]:
    """The filter fields and the version span of each record, repeated `counts[i]` times."""
    columns = {
        name: [value for r, n in zip(records, counts, strict=True) for value in [getattr(r, attr)] * n]
        for name, attr in (
            ("paper_id", "paper_id"),
            ("first_date", "first_date"),
            ("last_date", "last_date"),
            ("votes", "votes"),
            ("authors", "authors"),
        )
    }
    total = sum(counts)
    return {**columns, "born": [born] * total, "died": [ALIVE] * total}


def _sparse(weights: Any) -> dict[int, float]:
    return {int(t): float(w) for t, w in weights.items() if float(w) != 0.0}


def _bullet_columns(records: Sequence[PaperRecord], dim: int, born: int) -> dict[str, Any]:
    counts = [len(r.bullet_vectors) for r in records]
    vectors = [augment(r.bullet_vectors, r.bullet_hubness) for r in records if len(r.bullet_vectors)]
    return {
        **_filter_columns(records, counts, born),
        "key": [f"{r.paper_id}/{born}/{i}" for r in records for i in range(len(r.bullet_vectors))],
        "position": [i for n in counts for i in range(n)],
        "vector": np.concatenate(vectors) if vectors else np.zeros((0, dim + 1), np.float32),
        "sparse": [_sparse(w) for r in records for w in r.sparse_bullets],
    }


def _paper_columns(records: Sequence[PaperRecord], born: int) -> dict[str, Any]:
    return {
        **_filter_columns(records, [1] * len(records), born),
        "key": [f"{r.paper_id}/{born}" for r in records],
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
    # pymilvus.milvus_client has its own stderr handler and does not propagate: quiet each one.
    names = ["pymilvus", *(n for n in logging.Logger.manager.loggerDict if n.startswith("pymilvus."))]
    loggers = [logging.getLogger(n) for n in names]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)
