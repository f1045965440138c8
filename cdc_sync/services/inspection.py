"""`cdc-sync profile …`, `cdc-sync dlq …`, `cdc-sync migrate`: reading and repairing the store."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from cdc_sync.adapters import store as store_mod
from cdc_sync.core.config import Config
from cdc_sync.core.errors import CdcSyncError
from cdc_sync.core.views import history_document, profile_document
from cdc_sync.services import caching


class NotFound(CdcSyncError):
    """No profile matches what was asked for."""


def open_store(cfg: Config) -> store_mod.ProfileStore:
    return store_mod.ProfileStore(store_mod.connect(cfg.store.dsn), cfg.mapping.aggregates)


def migrate(cfg: Config) -> list[str]:
    """Create or upgrade the profile store's schema; returns the migrations applied now."""
    conn = store_mod.connect(cfg.store.dsn)
    try:
        return store_mod.migrate(conn)
    finally:
        conn.close()


def find(store: store_mod.ProfileStore, profile_id: int | None, identifier: tuple[str, str] | None) -> int:
    pid = store.resolve(profile_id=profile_id, identifier=identifier)
    if pid is None:
        raise NotFound("no profile matches")
    return pid


def show(cfg: Config, profile_id: int | None, identifier: tuple[str, str] | None) -> dict[str, Any]:
    """The profile document for an id (an alias resolves to its survivor) or an identifier."""
    store = open_store(cfg)
    try:
        rows = store.document_rows(find(store, profile_id, identifier))
        assert rows.profile is not None
        return profile_document(rows.profile, rows.aliases, rows.identifiers, rows.fields, rows.entities)
    finally:
        store.conn.close()


def history(cfg: Config, profile_id: int | None, identifier: tuple[str, str] | None,
            field: str | None, limit: int) -> list[dict[str, Any]]:
    store = open_store(cfg)
    try:
        pid = find(store, profile_id, identifier)
        return [history_document(r) for r in store.history(pid, field, limit)]
    finally:
        store.conn.close()


def restore(cfg: Config, profile_id: int, as_of: datetime) -> int:
    """Roll a profile's fields back to `as_of`, recorded as new changes; returns how many."""
    store = open_store(cfg)
    try:
        pid = find(store, profile_id, None)
        changes = store.restore(pid, as_of)
        # the API must not serve the pre-restore document until its TTL ends
        cache = caching.profile_cache(cfg, store)
        if cache is not None:
            caching.drop(cache, [pid])
        return len(changes)
    finally:
        store.conn.close()


def dead_letters(cfg: Config, limit: int) -> list[dict[str, Any]]:
    store = open_store(cfg)
    try:
        return [
            {"id": i, "topic": t, "partition": p, "offset": o, "error": e, "reason": r,
             "failed_at": f.isoformat(), "value_bytes": n}
            for i, t, p, o, e, r, f, n in store.dead_letters(limit)
        ]
    finally:
        store.conn.close()
