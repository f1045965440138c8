"""Durable timers and the stream's progress, in the profile store's Postgres.

Every method runs on the connection it is given, inside the transaction that applies a batch
(the caller's), so a trigger is written together with the changes that caused it. Reads go
through indexes: timers by due time and by subject, entities by kind and id, by parent and by
owner. They are planned for each call (`prepare=False`): a plan prepared while the store was
still small (a generic plan for `= ANY(array)`) scans tables once they have grown.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import orjson
import psycopg

from cdc_sync.core.rules import AbandonedCartRule
from cdc_sync.core.triggers import Cart, Order, ProfileFacts, State, Timer, item_of
from cdc_sync.core.watermark import PartitionTime, StreamReport, topic_source


def _recordset(rows: Iterable[Mapping[str, Any]]) -> str:
    return orjson.dumps(list(rows), default=str).decode()


_TIMER_COLUMNS = "rule, subject, version, profile_id, due_us, state, detail, occurred_us"


def _timer(row: Sequence[Any]) -> Timer:
    rule, subject, version, pid, due, state, detail, occurred = row
    return Timer(rule, subject, version, pid, due, State(state), detail, occurred)


class _CartRows:
    """A cart's stored rows, before they become a core `Cart` (the rule reads the columns)."""

    def __init__(self) -> None:
        self.profile_id: int | None = None
        self.data: Mapping[str, Any] | None = None
        self.deleted = False
        self.seen = False
        self.versions: list[str] = []  # of the cart and its items
        self.items: list[tuple[Mapping[str, Any], str | None]] = []  # live items, product name
        self.had_items = False
        self.orders: list[Order] = []


class TimerStore:
    """Timers, progress and outbox rows on one connection (the caller owns the transaction)."""

    def __init__(self, conn: psycopg.Connection[Any]) -> None:
        self.conn = conn

    # ---- the stream's progress

    def record_progress(self, report: StreamReport) -> tuple[list[PartitionTime], dict[str, int]]:
        """Store the batch's event times; returns every group's partitions (for the watermark)
        and the sources' heartbeat times, as the store has them now."""
        c = self.conn
        with c.pipeline():
            if report.times.heartbeats:
                c.execute(
                    "INSERT INTO source_heartbeats (source, commit_us) SELECT * FROM"
                    " jsonb_to_recordset(%s::jsonb) AS r(source text, commit_us bigint)"
                    " ON CONFLICT (source) DO UPDATE SET commit_us ="
                    " greatest(source_heartbeats.commit_us, excluded.commit_us), updated_at = now()",
                    (_recordset({"source": s, "commit_us": us}
                                for s, us in sorted(report.times.heartbeats.items())),))
            keys = sorted(set(report.partitions) | set(report.times.partitions))
            if keys:
                c.execute(
                    "INSERT INTO stream_progress (group_id, topic, kafka_partition, source, event_us,"
                    " caught_up_us) SELECT %s, * FROM jsonb_to_recordset(%s::jsonb) AS r(topic text, p int,"
                    " source text, event_us bigint, caught_up_us bigint)"
                    " ON CONFLICT (group_id, topic, kafka_partition) DO UPDATE SET"
                    " event_us = greatest(stream_progress.event_us, excluded.event_us),"
                    " caught_up_us = greatest(stream_progress.caught_up_us, excluded.caught_up_us),"
                    " updated_at = now() WHERE excluded.event_us > stream_progress.event_us"
                    " OR excluded.caught_up_us > stream_progress.caught_up_us",
                    (report.group, _recordset(
                        {"topic": t, "p": p, "source": topic_source(t),
                         "event_us": report.times.partitions.get((t, p), 0),
                         "caught_up_us": report.caught_up_us((t, p))} for t, p in keys)))
            parts = c.execute("SELECT group_id, topic, kafka_partition, event_us, caught_up_us"
                              " FROM stream_progress")
            beats = c.execute("SELECT source, commit_us FROM source_heartbeats")
        return [PartitionTime(*row) for row in parts.fetchall()], dict(beats.fetchall())

    def partitions(self) -> list[PartitionTime]:
        return [PartitionTime(*row) for row in self.conn.execute(
            "SELECT group_id, topic, kafka_partition, event_us, caught_up_us FROM stream_progress"
            " ORDER BY group_id, topic, kafka_partition")]

    def heartbeats(self) -> dict[str, int]:
        return dict(self.conn.execute("SELECT source, commit_us FROM source_heartbeats").fetchall())

    # ---- timers

    def timers_of(self, rule: str, subjects: Iterable[str], history: bool = False) -> dict[str, list[Timer]]:
        """The rule's pending timers for these subjects (carts, profiles) and the latest of
        each, by subject, oldest first; with `history`, every one they ever had."""
        latest = "" if history else (
            " AND (state IN ('scheduled', 'held') OR version = (SELECT max(l.version) FROM trigger_timers l"
            " WHERE l.rule = t.rule AND l.subject = t.subject))")
        out: dict[str, list[Timer]] = {}
        query = (f"SELECT {_TIMER_COLUMNS} FROM trigger_timers t WHERE rule = %s"
                 " AND subject = ANY(%s::text[])" + latest + " ORDER BY version")
        for row in self.conn.execute(query, (rule, sorted(subjects)), prepare=False):
            out.setdefault(row[1], []).append(_timer(row))
        return out

    def pending_of(self, rule: str, pids: Iterable[int]) -> list[Timer]:
        """The rule's pending timers of these profiles (an order may check their carts out)."""
        return [_timer(row) for row in self.conn.execute(
            f"SELECT {_TIMER_COLUMNS} FROM trigger_timers WHERE state IN ('scheduled', 'held')"
            " AND profile_id = ANY(%s::bigint[]) AND rule = %s", (sorted(pids), rule), prepare=False)]

    def due(self, watermark_us: int, limit: int) -> list[Timer]:
        """Pending timers whose time the watermark has passed, oldest first, locked."""
        return [_timer(row) for row in self.conn.execute(
            f"SELECT {_TIMER_COLUMNS} FROM trigger_timers WHERE state IN ('scheduled', 'held')"
            " AND due_us <= %s ORDER BY due_us, id LIMIT %s FOR UPDATE", (watermark_us, limit),
            prepare=False)]

    def waiting(self) -> int:
        """Timers scheduled or held (the metrics' timers_pending)."""
        row = self.conn.execute("SELECT count(*) FROM trigger_timers WHERE state IN ('scheduled', 'held')"
                                ).fetchone()
        return int(row[0]) if row else 0

    def pending(self, limit: int) -> list[Timer]:
        return [_timer(row) for row in self.conn.execute(
            f"SELECT {_TIMER_COLUMNS} FROM trigger_timers WHERE state IN ('scheduled', 'held')"
            " ORDER BY due_us, id LIMIT %s", (limit,))]

    def write(self, timers: Sequence[Timer]) -> None:
        if not timers:
            return
        self.conn.execute(
            "INSERT INTO trigger_timers (id, rule, subject, version, profile_id, due_us, state, detail,"
            " occurred_us) SELECT * FROM jsonb_to_recordset(%s::jsonb) AS r(id text, rule text, subject text,"
            " version text, profile_id bigint, due_us bigint, state text, detail jsonb, occurred_us bigint)"
            " ON CONFLICT (id) DO UPDATE SET profile_id = excluded.profile_id, due_us = excluded.due_us,"
            " state = excluded.state, detail = excluded.detail, occurred_us = excluded.occurred_us,"
            " updated_at = now()",
            (_recordset({"id": t.id, "rule": t.rule, "subject": t.subject, "version": t.version,
                         "profile_id": t.profile_id, "due_us": t.due_us, "state": t.state.value,
                         "detail": t.detail, "occurred_us": t.occurred_us}
                        for t in sorted(timers, key=lambda t: t.id)),))

    def last_fired(self, rule: str, pids: Iterable[int]) -> dict[int, int]:
        """Each profile's newest fired trigger of the rule (event time µs)."""
        ids = sorted(pids)  # live profiles: a merged-away one's triggers count for its survivor
        return dict(self.conn.execute(
            "SELECT coalesce(p.merged_into, p.id), max(t.occurred_us) FROM profiles p"
            " JOIN trigger_timers t ON t.profile_id = p.id AND t.rule = %s AND t.state = 'fired'"
            " WHERE p.id = ANY(%s::bigint[]) OR p.merged_into = ANY(%s::bigint[]) GROUP BY 1",
            (rule, ids, ids), prepare=False).fetchall())

    # ---- what the rules read

    def carts(self, rule: AbandonedCartRule, cart_ids: Iterable[str]) -> dict[str, Cart]:
        """The carts with their live items (product names joined when a catalogue is mapped) and
        their owners' orders. Items whose quantity or price is no number are left out."""
        rows = self._cart_rows(rule, cart_ids)
        out = {}
        for cid, r in rows.items():
            items = tuple(i for i in (item_of(data, rule, name) for data, name in r.items) if i is not None)
            out[cid] = Cart(cid, r.profile_id, None if r.deleted else r.data, items, r.had_items,
                            tuple(r.orders), r.seen, max(r.versions, default=""))
        return out

    def _cart_rows(self, rule: AbandonedCartRule, cart_ids: Iterable[str]) -> dict[str, _CartRows]:
        ids = sorted(set(cart_ids))
        rows = {cid: _CartRows() for cid in ids}
        if not ids:
            return rows
        c = self.conn
        with c.pipeline():
            carts = c.execute("SELECT entity_id, profile_id, data, deleted, version FROM entities"
                              " WHERE kind = %s AND entity_id = ANY(%s::text[])", (rule.cart, ids),
                              prepare=False)
            items = c.execute(
                "SELECT i.parent_id, i.data, i.deleted, i.version, p.data->>%s FROM entities i"
                " LEFT JOIN entities p ON p.kind = %s AND p.entity_id = i.data->>%s AND NOT p.deleted"
                " WHERE i.parent_kind = %s AND i.parent_id = ANY(%s::text[]) AND i.kind = %s",
                (rule.product_name_field, rule.product or "", rule.product_field, rule.cart, ids, rule.item),
                prepare=False)
            orders = c.execute(  # those naming the cart, and those of its owner and of its aliases
                "SELECT o.cart_id, o.order_id, o.cart_id, o.version FROM trigger_orders o"
                " WHERE o.cart_id = ANY(%(ids)s::text[])"
                " UNION SELECT c.entity_id, o.order_id, o.cart_id, o.version FROM entities c"
                " JOIN trigger_orders o ON o.profile_id = c.profile_id"
                " WHERE c.kind = %(cart)s AND c.entity_id = ANY(%(ids)s::text[])"
                " UNION SELECT c.entity_id, o.order_id, o.cart_id, o.version FROM entities c"
                " JOIN profiles p ON p.merged_into = c.profile_id"
                " JOIN trigger_orders o ON o.profile_id = p.id"
                " WHERE c.kind = %(cart)s AND c.entity_id = ANY(%(ids)s::text[])",
                {"ids": ids, "cart": rule.cart}, prepare=False)
        for cid, pid, data, deleted, version in carts.fetchall():
            r = rows[cid]
            r.profile_id, r.data, r.deleted, r.seen = pid, data, deleted, True
            r.versions.append(version)
        for cid, data, deleted, version, name in items.fetchall():
            r = rows[cid]
            r.had_items = True
            r.versions.append(version)
            if not deleted and data is not None:
                r.items.append((data, name))
        for cid, oid, cart_ref, version in orders.fetchall():
            rows[cid].orders.append(Order(oid, cart_ref, version))
        return rows

    def record_orders(self, orders: Sequence[tuple[int | None, Order]]) -> None:
        """Note the batch's orders as checkouts, each keeping the first version seen of it."""
        if not orders:
            return
        self.conn.execute(
            "INSERT INTO trigger_orders (order_id, profile_id, cart_id, version) SELECT DISTINCT ON"
            " (order_id) * FROM jsonb_to_recordset(%s::jsonb) AS r(order_id text, profile_id bigint,"
            " cart_id text, version text) ORDER BY order_id, version"
            " ON CONFLICT (order_id) DO UPDATE SET profile_id = coalesce(excluded.profile_id,"
            " trigger_orders.profile_id), cart_id = excluded.cart_id,"
            " version = least(trigger_orders.version, excluded.version)",
            (_recordset({"order_id": o.order_id, "profile_id": pid, "cart_id": o.cart_id,
                         "version": o.version} for pid, o in orders),))

    def profiles(self, pids: Iterable[int], attributes: Iterable[str], identifiers: Iterable[str]
                 ) -> dict[int, ProfileFacts]:
        """Live profiles by the ids given (a merged one answers as its survivor), with the named
        attributes (live values) and identifier types."""
        ids = sorted(set(pids))
        if not ids:
            return {}
        c = self.conn
        with c.pipeline():
            alive = c.execute("SELECT id, coalesce(merged_into, id) FROM profiles"
                              " WHERE id = ANY(%s::bigint[])", (ids,), prepare=False)
            fields = c.execute(
                "SELECT f.profile_id, f.name, f.value FROM profiles p JOIN profile_fields f"
                " ON f.profile_id = coalesce(p.merged_into, p.id) WHERE p.id = ANY(%s::bigint[])"
                " AND f.name = ANY(%s::text[]) AND NOT f.deleted", (ids, sorted(set(attributes))),
                prepare=False)
            idents = c.execute(
                "SELECT i.profile_id, i.type, i.value FROM profiles p JOIN identifiers i"
                " ON i.profile_id = coalesce(p.merged_into, p.id) WHERE p.id = ANY(%s::bigint[])"
                " AND i.type = ANY(%s::text[]) AND i.live ORDER BY i.type, i.value",
                (ids, sorted(set(identifiers))), prepare=False)
        survivor = dict(alive.fetchall())
        attrs: dict[int, dict[str, Any]] = {}
        for pid, name, value in fields.fetchall():
            attrs.setdefault(pid, {})[name] = value
        found: dict[int, dict[str, list[str]]] = {}
        for pid, type_, value in idents.fetchall():
            found.setdefault(pid, {}).setdefault(type_, [])
            if value not in found[pid][type_]:
                found[pid][type_].append(value)
        return {pid: ProfileFacts(s, attrs.get(s, {}), found.get(s, {})) for pid, s in survivor.items()}
