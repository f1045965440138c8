"""Profiles and history as JSON-ready documents, for `cdc-sync profile …` and the send-time API."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from cdc_sync.core.mutations import Version, commit_time


def version_document(key: str) -> dict[str, Any] | None:
    """A version as a reader wants it: when, where in the source, which source (None: a value
    whose change time is unknown)."""
    if not key:
        return None
    v = Version.from_key(key)
    return {
        "commit_at": commit_time(key).isoformat(),
        "source": v.source,
        "position": list(v.position),
        "priority": v.priority,
    }


def profile_document(profile: Sequence[Any], aliases: Sequence[int],
                     identifiers: Sequence[Sequence[Any]], fields: Sequence[Sequence[Any]],
                     entities: Sequence[Sequence[Any]]) -> dict[str, Any]:
    """The profile: identifiers, attributes (value and version; tombstones shown as deleted),
    entities with their children nested under the parent, aggregates and aliases."""
    pid, aggregates, created_at, updated_at = profile
    return {
        "id": pid,
        "aliases": list(aliases),
        "identifiers": [{"type": t, "value": v, "live": live, "version": version_document(ver)}
                        for t, v, live, ver in identifiers],
        "attributes": {name: {"value": value, "deleted": deleted, "version": version_document(ver),
                              "source_table": table or None}
                       for name, value, deleted, ver, table in fields},
        "entities": nest_entities(entities),
        "aggregates": aggregates,
        "created_at": created_at.isoformat(),
        "updated_at": updated_at.isoformat(),
    }


def nest_entities(rows: Sequence[Sequence[Any]]) -> dict[str, list[dict[str, Any]]]:
    """Live entities grouped by kind; a child (cart item) appears under its parent (cart)."""
    docs: dict[tuple[str, str], dict[str, Any]] = {}
    parents: dict[tuple[str, str], tuple[str, str] | None] = {}
    for kind, eid, parent_kind, parent_id, data, deleted, version in rows:
        if deleted:
            continue
        docs[(kind, eid)] = {"id": eid, **(data or {}), "version": version_document(version)}
        parents[(kind, eid)] = (parent_kind, parent_id) if parent_kind else None
    top: dict[str, list[dict[str, Any]]] = {}
    for key, doc in docs.items():
        parent = parents[key]
        if parent is not None and parent in docs:
            docs[parent].setdefault(key[0], []).append(doc)
        else:
            top.setdefault(key[0], []).append(doc)
    return top


def history_document(row: Sequence[Any]) -> dict[str, Any]:
    """One applied change of the history, with its version and where it came from."""
    (hid, pid, field, old, old_deleted, new, new_deleted, version, commit_at, topic, partition,
     offset, cause, applied_at) = row
    return {
        "id": hid, "profile_id": pid, "field": field,
        "old": None if old_deleted is None else {"value": old, "deleted": old_deleted},
        "new": {"value": new, "deleted": new_deleted},
        "version": version_document(version), "cause": cause,
        "record": None if topic is None else {"topic": topic, "partition": partition, "offset": offset},
        "applied_at": applied_at.isoformat(),
    }
