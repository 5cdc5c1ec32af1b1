"""Bring a backend up to a set of paper records, writing only the papers that changed.

`record_fingerprint(record)` hashes every field of a `PaperRecord` (text as UTF-8, whole
numbers as int64, vectors and hubness as little-endian float32 bytes with their shapes, sparse
weights as (term, float32 weight) pairs sorted by term, zero weights dropped as the backends
drop them). `sync_backend` compares those fingerprints with the ones of the previous sync:

* same live version as the fingerprints' -> incremental: `begin_version(name)` from the live
  version, upsert the papers that are new or whose fingerprint changed, delete the ids that are
  gone, publish;
* no fingerprints, or the store's live version is another one (someone else built, or a sync
  never published) -> full: `begin_version(name, from_live=False)`, upsert everything, publish.

A sync that fails before `publish` leaves the previous version live (the backends promise it),
and the caller keeps its previous fingerprints, so the next sync is again incremental.
"""

from __future__ import annotations

import dataclasses
import hashlib
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import chain
from typing import Any

import numpy as np

from retrieval.backends.base import Backend, PaperRecord, check_version_name
from retrieval.errors import UsageError

__all__ = ["Fingerprints", "SyncReport", "record_fingerprint", "sync_backend"]

FINGERPRINT_FORMAT = 1
_PERSON = b"paperrecord1"  # blake2b personalisation: changes when the hashed layout does


@dataclass(frozen=True)
class Fingerprints:
    """The fingerprint of every paper in the backend's version `version` (after a sync)."""

    version: str
    papers: Mapping[str, str]

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready form (`from_dict` reads it back)."""
        return {"format": FINGERPRINT_FORMAT, "version": self.version, "papers": dict(self.papers)}

    @classmethod
    def from_dict(cls, data: Any) -> Fingerprints:
        """Read `to_dict`'s form; anything else is a one-line `UsageError` (pass None instead:
        the next sync is then a full one)."""
        if not isinstance(data, dict) or data.get("format") != FINGERPRINT_FORMAT:
            raise UsageError(f"fingerprints: expected a dict with format {FINGERPRINT_FORMAT}, got {str(data)[:60]!r}")
        version, papers = data.get("version"), data.get("papers")
        if not isinstance(version, str) or not isinstance(papers, dict):
            raise UsageError("fingerprints: 'version' must be a string and 'papers' a dict of id -> fingerprint")
        bad = next((k for k, v in papers.items() if not isinstance(k, str) or not isinstance(v, str)), None)
        if bad is not None:
            raise UsageError(f"fingerprints: paper {str(bad)[:60]!r} has no string fingerprint")
        return cls(check_version_name(version), dict(papers))


@dataclass(frozen=True)
class SyncReport:
    """What one sync did: papers upserted (new or changed), deleted (gone), kept (unchanged)."""

    version: str
    full: bool
    reason: str
    upserted: int
    deleted: int
    kept: int
    seconds: float
    phases: dict[str, float] = field(default_factory=dict)  # begin, upsert, delete, publish (s)


def _sparse_rows(h: Any, rows: Sequence[Mapping[Any, Any]]) -> None:
    """Sparse rows as (non-zero count per row, terms sorted within each row, float32 weights)."""
    lengths = [len(row) for row in rows]
    total = sum(lengths)
    terms = np.fromiter(chain.from_iterable(row.keys() for row in rows), dtype=np.int64, count=total)
    weights = np.fromiter(chain.from_iterable(row.values() for row in rows), dtype=np.float64, count=total)
    owner = np.repeat(np.arange(len(rows)), lengths)
    order = np.lexsort((terms, owner))
    order = order[weights[order] != 0.0]
    counts = np.bincount(owner[order], minlength=len(rows)).astype("<u8")
    h.update(counts.tobytes() + terms[order].astype("<u8").tobytes() + weights[order].astype("<f4").tobytes())


def _hash_value(h: Any, value: Any) -> None:
    """Feed one field value into `h`, tagged and length-prefixed so no two layouts collide."""
    if isinstance(value, str):
        data = value.encode("utf-8")
        h.update(b"s" + len(data).to_bytes(8, "little") + data)
    elif isinstance(value, bool | int | np.integer):
        h.update(b"i" + int(value).to_bytes(8, "little", signed=True))
    elif isinstance(value, float | np.floating):
        h.update(b"f" + np.float32(value).astype("<f4").tobytes())
    elif isinstance(value, np.ndarray):
        array = np.ascontiguousarray(value, dtype="<f4")
        h.update(b"a" + len(array.shape).to_bytes(1, "little"))
        h.update(b"".join(int(n).to_bytes(8, "little") for n in array.shape) + array.tobytes())
    elif isinstance(value, Mapping):
        h.update(b"m")
        _sparse_rows(h, [value])
    elif isinstance(value, tuple) and all(isinstance(item, Mapping) for item in value):
        h.update(b"t" + len(value).to_bytes(8, "little"))
        _sparse_rows(h, value)
    else:
        raise TypeError(f"record_fingerprint cannot hash a {type(value).__name__}")


def record_fingerprint(record: PaperRecord) -> str:
    """A stable hex digest over every field of `record` (see the module docstring)."""
    if not isinstance(record, PaperRecord):
        raise UsageError(f"sync takes PaperRecord objects, got {type(record).__name__}")
    h = hashlib.blake2b(digest_size=16, person=_PERSON)
    for f in dataclasses.fields(record):
        h.update(f.name.encode("ascii"))
        _hash_value(h, getattr(record, f.name))
    return h.hexdigest()


def sync_backend(
    backend: Backend,
    records: Iterable[PaperRecord],
    version_name: str,
    previous_fingerprints: Fingerprints | None,
    *,
    batch_size: int = 500,
) -> tuple[Fingerprints, SyncReport]:
    """Make version `version_name` of `backend` hold exactly `records`, and publish it.

    Returns the new fingerprints (keep them for the next sync) and a report. Records are
    upserted in batches of `batch_size`; a paper id given twice is a `UsageError`."""
    check_version_name(version_name)
    if batch_size < 1:
        raise UsageError(f"batch_size: must be at least 1, got {batch_size}")
    started = time.perf_counter()
    live = backend.live_version()
    if previous_fingerprints is None:
        full, reason = True, "no previous fingerprints"
    elif previous_fingerprints.version != live:
        full, reason = True, f"the live version is {live}, the fingerprints belong to {previous_fingerprints.version}"
    else:
        full, reason = False, f"incremental from {live}"
    previous: Mapping[str, str] = {} if full or previous_fingerprints is None else previous_fingerprints.papers
    phases = {"begin": 0.0, "upsert": 0.0, "delete": 0.0, "publish": 0.0}

    def timed(phase: str, fn: Any, *args: Any) -> None:
        at = time.perf_counter()
        fn(*args)
        phases[phase] += time.perf_counter() - at

    timed("begin", lambda: backend.begin_version(version_name, from_live=not full))
    fingerprints: dict[str, str] = {}
    pending: list[PaperRecord] = []
    upserted = 0
    for record in records:
        fingerprint = record_fingerprint(record)
        if record.paper_id in fingerprints:
            raise UsageError(f"paper {record.paper_id[:80]} appears twice in the records")
        fingerprints[record.paper_id] = fingerprint
        if previous.get(record.paper_id) != fingerprint:
            pending.append(record)
        if len(pending) >= batch_size:
            timed("upsert", backend.upsert, pending)
            upserted += len(pending)
            pending = []
    if pending:
        timed("upsert", backend.upsert, pending)
        upserted += len(pending)
    gone = [paper_id for paper_id in previous if paper_id not in fingerprints]
    if gone:
        timed("delete", backend.delete, gone)
    timed("publish", backend.publish, version_name)
    report = SyncReport(
        version=version_name,
        full=full,
        reason=reason,
        upserted=upserted,
        deleted=len(gone),
        kept=len(fingerprints) - upserted,
        seconds=round(time.perf_counter() - started, 4),
        phases={k: round(v, 4) for k, v in phases.items()},
    )
    return Fingerprints(version_name, fingerprints), report
