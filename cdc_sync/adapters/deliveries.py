"""Deliveries in the profile store's Postgres: which trigger goes to which destination, and how
far each has come (sql/0009_deliveries.sql).

A claim is one short transaction: the oldest due row of a destination whose profile has no
earlier row still pending (so one person's messages leave in order), taken FOR UPDATE SKIP
LOCKED and leased past the request's timeout. Every later write names the lease, so a claim
that outlived its lease (its worker died, another took over) changes nothing.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, ParamSpec, TypeVar

import psycopg
from psycopg.rows import dict_row

from cdc_sync.core.errors import ConfigError, TransientError

_P = ParamSpec("_P")
_R = TypeVar("_R")


def _store_errors(method: Callable[_P, _R]) -> Callable[_P, _R]:
    """Postgres connection trouble, or a store not migrated yet, becomes TransientError (the
    dispatcher waits and reconnects)."""
    @functools.wraps(method)
    def wrapped(*args: _P.args, **kwargs: _P.kwargs) -> _R:
        try:
            return method(*args, **kwargs)
        except (psycopg.OperationalError, psycopg.errors.DeadlockDetected) as exc:
            raise TransientError(f"profile store: {exc}".splitlines()[0]) from None
        except psycopg.errors.UndefinedTable:  # `cdc-sync run` migrates it at start; wait for that
            raise TransientError("profile store has no delivery tables yet (cdc-sync migrate)") from None
    return wrapped


@dataclass(frozen=True, slots=True)
class Claim:
    """A delivery this dispatcher holds until `lease` is ended or expires."""

    destination: str
    seq: int
    lease: str
    attempts: int  # this attempt's number
    first_queued_at: datetime
    trigger_id: str
    type: str
    profile_id: int | None
    payload: dict[str, Any]


_CLAIM = (
    "WITH c AS (SELECT d.destination, d.outbox_seq FROM deliveries d"
    " WHERE d.destination = %(dest)s AND d.status = 'pending' AND d.due_at <= clock_timestamp()"
    # the profile's oldest pending delivery here: one index probe a candidate, whatever the stats
    " AND (d.profile_id IS NULL OR d.outbox_seq = (SELECT min(e.outbox_seq) FROM deliveries e"
    " WHERE e.destination = d.destination AND e.profile_id = d.profile_id AND e.status = 'pending'))"
    " ORDER BY d.due_at, d.outbox_seq LIMIT 1 FOR UPDATE OF d SKIP LOCKED)"
    " UPDATE deliveries d SET due_at = clock_timestamp() + make_interval(secs => %(lease)s),"
    " lease = gen_random_uuid(), attempts = d.attempts + 1, last_attempt_at = clock_timestamp()"
    " FROM c, outbox o WHERE d.destination = c.destination AND d.outbox_seq = c.outbox_seq"
    " AND o.seq = d.outbox_seq"
    " RETURNING d.destination, d.outbox_seq, d.lease::text, d.attempts, d.first_queued_at,"
    " o.id::text, o.type, o.profile_id, o.payload")


class Deliveries:
    """Delivery rows on one connection; each method is its own transaction (autocommit)."""

    def __init__(self, conn: psycopg.Connection[Any]) -> None:
        self.conn = conn

    @classmethod
    def connect(cls, dsn: str) -> Deliveries:
        try:
            return cls(psycopg.connect(dsn, autocommit=True, connect_timeout=5))
        except psycopg.OperationalError as exc:
            raise TransientError(f"profile store unreachable ({type(exc).__name__})") from None

    def close(self) -> None:
        self.conn.close()

    @_store_errors
    def claim(self, destination: str, lease_s: float) -> Claim | None:
        """The next due delivery of the destination, leased for `lease_s`; None when none is."""
        row = self.conn.execute(_CLAIM, {"dest": destination, "lease": lease_s}).fetchone()
        return None if row is None else Claim(*row)

    @_store_errors
    def retry_at(self, claim: Claim, delay_s: float, status: int | None, error: str, body: str) -> bool:
        """Put the delivery back, due in `delay_s`; False when the lease was lost."""
        return self._end(claim, "pending", status, error, body, delay_s)

    @_store_errors
    def finish(self, claim: Claim, status_: str, http_status: int | None, error: str | None = None,
               body: str = "") -> bool:
        """End the delivery as sent, dead or cancelled; False when the lease was lost."""
        return self._end(claim, status_, http_status, error, body, None)

    def _end(self, claim: Claim, status_: str, http_status: int | None, error: str | None, body: str,
             delay_s: float | None) -> bool:
        cur = self.conn.execute(
            # an end without an answer (too old, cancelled) keeps the last answer's status and body
            "UPDATE deliveries SET status = %(status)s, lease = NULL,"
            " last_status = coalesce(%(http)s, last_status), last_error = %(error)s,"
            " last_body = CASE WHEN %(http)s::int IS NULL THEN last_body ELSE %(body)s END,"
            " due_at = CASE WHEN %(delay)s::float8 IS NULL THEN due_at"
            " ELSE clock_timestamp() + make_interval(secs => %(delay)s::float8) END,"
            " done_at = CASE WHEN %(status)s = 'pending' THEN NULL ELSE clock_timestamp() END"
            " WHERE destination = %(dest)s AND outbox_seq = %(seq)s AND lease = %(lease)s::uuid",
            {"status": status_, "http": http_status, "error": error, "body": body or None,
             "delay": delay_s, "dest": claim.destination, "seq": claim.seq, "lease": claim.lease})
        return cur.rowcount == 1

    # ---- destinations

    @_store_errors
    def disabled(self) -> dict[str, tuple[datetime, str]]:
        """Disabled destinations: when, and why."""
        return {name: (at, why) for name, at, why in self.conn.execute(
            "SELECT name, disabled_at, disabled_reason FROM destinations WHERE disabled_at IS NOT NULL")}

    @_store_errors
    def disable(self, name: str, reason: str) -> None:
        self.conn.execute(
            "INSERT INTO destinations (name, disabled_at, disabled_reason) VALUES (%s, now(), %s)"
            " ON CONFLICT (name) DO UPDATE SET disabled_at = excluded.disabled_at,"
            " disabled_reason = excluded.disabled_reason", (name, reason))

    @_store_errors
    def enable(self, name: str) -> bool:
        """Enable a disabled destination; False when it was not disabled."""
        cur = self.conn.execute("UPDATE destinations SET disabled_at = NULL, disabled_reason = NULL"
                                " WHERE name = %s AND disabled_at IS NOT NULL", (name,))
        return cur.rowcount == 1

    # ---- for operators

    @_store_errors
    def listing(self, limit: int, status: str | None = None, destination: str | None = None,
                type_: str | None = None) -> list[dict[str, Any]]:
        """The newest triggers, each with its deliveries; with a status or destination, only
        triggers with such a delivery."""
        with self.conn.cursor(row_factory=dict_row) as cur:
            return cur.execute(
                "SELECT o.seq, o.id::text AS id, o.type, o.profile_id, o.occurred_at, o.created_at,"
                " coalesce(jsonb_agg(jsonb_strip_nulls(jsonb_build_object('destination', d.destination,"
                " 'status', d.status, 'attempts', d.attempts, 'due_at', CASE WHEN d.status = 'pending'"
                " THEN d.due_at END, 'last_attempt_at', d.last_attempt_at, 'last_status', d.last_status,"
                " 'last_error', d.last_error, 'last_body', d.last_body, 'done_at', d.done_at))"
                " ORDER BY d.destination) FILTER (WHERE d.destination IS NOT NULL), '[]') AS deliveries,"
                " o.payload FROM outbox o LEFT JOIN deliveries d ON d.outbox_seq = o.seq"
                " WHERE (%(type)s::text IS NULL OR o.type = %(type)s)"
                " AND (%(status)s::text IS NULL AND %(dest)s::text IS NULL"
                " OR EXISTS (SELECT 1 FROM deliveries x"
                " WHERE x.outbox_seq = o.seq AND (%(status)s::text IS NULL OR x.status = %(status)s)"
                " AND (%(dest)s::text IS NULL OR x.destination = %(dest)s)))"
                " GROUP BY o.seq ORDER BY o.seq DESC LIMIT %(limit)s",
                {"status": status, "dest": destination, "type": type_, "limit": limit}).fetchall()

    @_store_errors
    def counts(self) -> dict[tuple[str, str], int]:
        """(destination, status) -> deliveries."""
        return {(d, s): n for d, s, n in self.conn.execute(
            "SELECT destination, status, count(*) FROM deliveries GROUP BY 1, 2")}

    @_store_errors
    def replay(self, statuses: Sequence[str], trigger_id: str | None = None,
               destination: str | None = None) -> int:
        """Queue ended deliveries again from attempt one (a trigger's, or a destination's);
        returns how many. Their webhook-id stays the trigger's id."""
        if trigger_id is None and destination is None:
            raise ConfigError("replay wants a trigger id or a destination")
        try:
            cur = self.conn.execute(
                "UPDATE deliveries d SET status = 'pending', due_at = clock_timestamp(), lease = NULL,"
                " attempts = 0, first_queued_at = clock_timestamp(), done_at = NULL FROM outbox o"
                " WHERE o.seq = d.outbox_seq AND d.status = ANY(%s::text[])"
                " AND (%s::uuid IS NULL OR o.id = %s::uuid) AND (%s::text IS NULL OR d.destination = %s)",
                (list(statuses), trigger_id, trigger_id, destination, destination))
        except psycopg.errors.InvalidTextRepresentation:
            raise ConfigError(f"{trigger_id!r} is not a trigger id (a UUID, as `outbox list` shows)"
                              ) from None
        return cur.rowcount
