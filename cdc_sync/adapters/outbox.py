"""The outbox in the profile store's Postgres: triggers queued for delivery.

Written in the transaction that applies the batch which caused them (the caller's); a row's
id is the trigger's deterministic id, so writing the same trigger twice leaves one row.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import orjson
import psycopg


class Outbox:
    """Outbox rows on one connection (the caller owns the transaction)."""

    def __init__(self, conn: psycopg.Connection[Any]) -> None:
        self.conn = conn

    def write(self, payloads: Sequence[Mapping[str, Any]]) -> list[str]:
        """Queue the triggers; one already there (same id) is left as it is. Returns the ids
        written now."""
        if not payloads:
            return []
        cur = self.conn.execute(
            "INSERT INTO outbox (id, type, profile_id, occurred_at, payload)"
            " SELECT (r.payload->>'id')::uuid, r.payload->>'type', (r.payload->>'profile_id')::bigint,"
            " (r.payload->>'occurred_at')::timestamptz,"
            " r.payload FROM jsonb_to_recordset(%s::jsonb) AS r(payload jsonb)"
            " ON CONFLICT (id) DO NOTHING RETURNING id::text",
            (orjson.dumps([{"payload": p} for p in payloads], default=str).decode(),))
        return [row[0] for row in cur.fetchall()]

    def newest(self, limit: int, type_: str | None = None) -> list[tuple[Any, ...]]:
        return self.conn.execute(
            "SELECT seq, id::text, type, profile_id, occurred_at, created_at, payload FROM outbox"
            " WHERE %s::text IS NULL OR type = %s ORDER BY seq DESC LIMIT %s",
            (type_, type_, limit)).fetchall()
