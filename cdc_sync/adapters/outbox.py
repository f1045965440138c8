"""The outbox in the profile store's Postgres: triggers queued for delivery.

Written in the transaction that applies the batch which caused them (the caller's); a row's
id is the trigger's deterministic id, so writing the same trigger twice leaves one row.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import orjson
import psycopg

from cdc_sync.core.triggers import Written

NOTIFY_CHANNEL = "cdc_sync_deliveries"  # dispatchers LISTEN here: a new delivery wakes them at once


class Outbox:
    """Outbox rows on one connection (the caller owns the transaction). `routes` maps a trigger
    type to the destinations that take it: each gets a delivery row with the trigger."""

    def __init__(self, conn: psycopg.Connection[Any],
                 routes: Mapping[str, Sequence[str]] | None = None) -> None:
        self.conn = conn
        self.routes = routes or {}

    def write(self, payloads: Sequence[Mapping[str, Any]]) -> list[Written]:
        """Queue the triggers, and their deliveries; one already there (same id) is left as it
        is. Returns those written now."""
        if not payloads:
            return []
        pairs = [(type_, dest) for type_, dests in sorted(self.routes.items()) for dest in dests]
        cur = self.conn.execute(
            "WITH written AS (INSERT INTO outbox (id, type, profile_id, occurred_at, payload)"
            " SELECT (r.payload->>'id')::uuid, r.payload->>'type', (r.payload->>'profile_id')::bigint,"
            " (r.payload->>'occurred_at')::timestamptz,"
            " r.payload FROM jsonb_to_recordset(%s::jsonb) AS r(payload jsonb)"
            " ON CONFLICT (id) DO NOTHING RETURNING seq, id, type, profile_id, occurred_at),"
            " queued AS (INSERT INTO deliveries (destination, outbox_seq, profile_id)"
            " SELECT d.destination, w.seq, w.profile_id FROM written w"
            " JOIN unnest(%s::text[], %s::text[]) AS d(type, destination) ON d.type = w.type"
            " RETURNING 1),"
            " woken AS (SELECT pg_notify(%s, '') FROM (SELECT 1 FROM queued LIMIT 1) AS q)"
            # woken is read in the output: a join to it could be removed by the planner, unrun
            " SELECT w.id::text, w.type, w.occurred_at, (SELECT count(*) FROM woken) FROM written w",
            (orjson.dumps([{"payload": p} for p in payloads], default=str).decode(),
             [t for t, _ in pairs], [d for _, d in pairs], NOTIFY_CHANNEL))
        return [Written(row[0], row[1], row[2]) for row in cur.fetchall()]

    def newest(self, limit: int, type_: str | None = None) -> list[tuple[Any, ...]]:
        return self.conn.execute(
            "SELECT seq, id::text, type, profile_id, occurred_at, created_at, payload FROM outbox"
            " WHERE %s::text IS NULL OR type = %s ORDER BY seq DESC LIMIT %s",
            (type_, type_, limit)).fetchall()
