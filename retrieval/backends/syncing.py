"""Keeping an external backend (Milvus) at the index's version: what build-index calls.

Each index version records, in `backend_sync.json`, which store it was synced to, under which
backend version name, and every paper's record fingerprint. The next build hands those to
`sync_backend`, which then upserts only the papers whose records changed; a different store,
or a store whose live version is not the recorded one, gets a full sync.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from retrieval.backends.base import Backend, PaperRecord
from retrieval.backends.choice import backend_version_name

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
    """Publish `records` in the backend as `index_version`, incrementally when `previous` (the
    live index version's record) describes this store's live version."""
    from retrieval.backends.sync import sync_backend

    name = backend_version_name(index_version)
    fingerprints = None
    same_store = previous is not None and previous.get("store") == store_name(backend)
    if same_store and previous is not None and backend.refresh() == previous.get("version"):
        fingerprints = previous["fingerprints"]
    new_fingerprints, report = sync_backend(backend, list(records), name, fingerprints)
    state = {"store": store_name(backend), "version": name, "fingerprints": dict(new_fingerprints)}
    return Synced(state, {"store": store_name(backend), "version": name, **_plain(report)})


def _plain(report: Any) -> dict[str, Any]:
    if isinstance(report, dict):
        return dict(report)
    if hasattr(report, "__dataclass_fields__"):
        return {k: getattr(report, k) for k in report.__dataclass_fields__}
    return {"report": str(report)}
