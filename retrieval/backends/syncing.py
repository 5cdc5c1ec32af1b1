"""Keeping an external backend (Milvus) at the index's version: what build-index calls.

Each index version records, in `backend_sync.json`, which store it was synced to, under which
backend version name, and every paper's record fingerprint. The next build hands those to
`sync_backend`, which then upserts only the papers whose records changed; a different store,
or a store whose live version is not the recorded one, gets a full sync.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from retrieval.backends.base import Backend, PaperRecord
from retrieval.backends.choice import backend_version_name
from retrieval.errors import UsageError

__all__ = ["BACKEND_SYNC_FILE", "Synced", "backend_current", "previous_sync", "sync_to_backend"]

BACKEND_SYNC_FILE = "backend_sync.json"


@dataclass(frozen=True)
class Synced:
    state: dict[str, Any]  # written to BACKEND_SYNC_FILE of the new index version
    report: dict[str, Any]  # for the build report


def store_name(backend: Backend) -> str:
    """Which store this is: its URI and collection prefix (or its class for another kind)."""
    return f"{getattr(backend, 'uri', type(backend).__name__)}#{getattr(backend, 'prefix', '')}"


def previous_sync(version_dir: Path) -> dict[str, Any] | None:
    """What the index version at `version_dir` recorded of its sync, if anything readable."""
    try:
        data = json.loads((version_dir / BACKEND_SYNC_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and isinstance(data.get("fingerprints"), dict) else None


def backend_current(backend: Backend, index_version: str) -> bool:
    """True when the backend's live version is this index version's."""
    return backend.refresh() == backend_version_name(index_version)


def sync_to_backend(
    backend: Backend, records: Sequence[PaperRecord], index_version: str, previous: dict[str, Any] | None
) -> Synced:
    """Publish `records` in the backend as `index_version`'s version; incremental when `previous`
    (what the live index version recorded) holds this store's fingerprints of its live version."""
    from retrieval.backends.sync import Fingerprints, sync_backend

    fingerprints = None
    if previous is not None and previous.get("store") == store_name(backend):
        try:
            fingerprints = Fingerprints.from_dict(previous.get("fingerprints"))
        except UsageError:
            fingerprints = None  # unreadable: a full sync
    new, report = sync_backend(backend, records, backend_version_name(index_version), fingerprints)
    state = {"store": store_name(backend), "fingerprints": new.to_dict()}
    return Synced(state, {"store": store_name(backend), **dataclasses.asdict(report)})
