"""Stages 4 and 5, trigger and outbox: run in the transaction that applies each batch.

`Scheduler` is handed to `ProfileStore.apply` as its `then`: once a batch's changes are
written it records how far the stream has come, schedules, reschedules or cancels the timers
of the carts and profiles the batch changed, then fires every timer the watermark has passed,
writing each trigger to the outbox. All of it commits with the batch, and the Kafka offsets
only after that: a crash means redelivery, and redelivery finds the timers already in their
new state, so nothing fires twice (docs/triggers.md).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

import structlog

from cdc_sync.adapters.outbox import Outbox
from cdc_sync.adapters.store import AppliedBatch
from cdc_sync.adapters.timers import TimerStore
from cdc_sync.core import triggers as t
from cdc_sync.core.rules import AbandonedCartRule, ProfileUpdatedRule, TriggersConfig
from cdc_sync.core.watermark import StreamReport, watermark

log = structlog.get_logger("cdc_sync.triggers")


class Scheduler:
    """The trigger rules, applied to one batch at a time (the applier thread's)."""

    def __init__(self, rules: TriggersConfig, routes: Mapping[str, Sequence[str]] | None = None) -> None:
        self.watermark_us: int | None = None
        self.rules = rules
        self.routes = routes or {}  # trigger type -> destinations: each gets a delivery row
        self.lateness_us = round(rules.allowed_lateness * 1e6)
        # The sources' heartbeat times as last read from the store (replaced, never mutated:
        # the consumer takes it before each poll, from another thread).
        self.heartbeats: dict[str, int] = {}

    def __call__(self, report: StreamReport, applied: AppliedBatch) -> list[t.Written]:
        """Timers and triggers for one applied batch; returns the triggers written to the outbox."""
        self.schedule(applied)
        return self.advance(report, applied)

    def schedule(self, applied: AppliedBatch) -> list[t.Written]:
        """Schedule, reschedule or cancel the timers of what the batch changed (no firing: a
        part of a batch that was split schedules its own changes only)."""
        timers = TimerStore(applied.conn)
        if self.rules.abandoned_cart is not None:
            self._schedule_carts(timers, applied, self.rules.abandoned_cart)
        if self.rules.profile_updated is not None:
            self._open_windows(timers, applied, self.rules.profile_updated)
        return []

    def advance(self, report: StreamReport, applied: AppliedBatch) -> list[t.Written]:
        """Record how far the whole batch took the stream, then fire what the watermark passed."""
        timers = TimerStore(applied.conn)
        progress, self.heartbeats = timers.record_progress(report)
        mark = watermark(progress, self.lateness_us, report.group)
        self.watermark_us = mark  # for the metrics (read after the batch commits)
        return [] if mark is None else self._fire(timers, mark)

    # ---- scheduling

    def _schedule_carts(self, timers: TimerStore, applied: AppliedBatch, rule: AbandonedCartRule) -> None:
        changed, orders = _cart_changes(applied, rule)
        timers.record_orders(orders)
        owners = {pid for pid, _ in orders if pid is not None}
        checked = {o.cart_id for _, o in orders if o.cart_id is not None}
        pending = timers.pending_of(t.ABANDONED_CART, owners) if owners else []
        ids = set(changed) | checked | {p.subject for p in pending}
        if not ids:
            return
        carts = timers.carts(rule, ids)
        stored = timers.timers_of(t.ABANDONED_CART, ids)
        writes = []
        for cid, cart in carts.items():
            cause = changed.get(cid)
            if cause is not None and not stored.get(cid) and cart.newest > cause.version:
                cause = t.Cause(cart.newest)  # items that arrived before their cart count too
            try:
                writes += t.schedule_cart(cart, cause, stored.get(cid, []), rule)
            except Exception as exc:  # one cart the rule cannot read must not stop the stream
                log.error("abandoned_cart: cart not scheduled", cart=cid, error=type(exc).__name__)
        timers.write(writes)

    def _open_windows(self, timers: TimerStore, applied: AppliedBatch, rule: ProfileUpdatedRule) -> None:
        watched = set(rule.watch)
        facts: dict[int, list[t.FieldFact]] = {}
        for c in applied.changes:
            if c.name not in watched or not t.streamed(c.new.version):
                continue
            ref = c.ref
            cause = t.Cause(c.new.version, *(ref if ref is not None else (None, None, None)))
            old = None if c.old is None else (c.old.value, c.old.deleted)
            facts.setdefault(c.profile_id, []).append(
                t.FieldFact(c.profile_id, c.name, old, (c.new.value, c.new.deleted), cause))
        if not facts:
            return
        stored = timers.timers_of(t.PROFILE_UPDATE, (str(p) for p in facts))
        writes = []
        for pid, changes in facts.items():
            writes += t.coalesce(changes, stored.get(str(pid), []), rule)
        timers.write(writes)

    # ---- firing

    def _fire(self, timers: TimerStore, mark: int) -> list[t.Written]:
        due = timers.due(mark, self.rules.fire_batch)
        if not due:
            return []
        ended: list[t.Timer] = []
        payloads: list[dict[str, Any]] = []
        carts = [d for d in due if d.rule == t.ABANDONED_CART]
        windows = [d for d in due if d.rule == t.PROFILE_UPDATE]
        if carts and self.rules.abandoned_cart is not None:
            self._fire_carts(timers, carts, self.rules.abandoned_cart, mark, ended, payloads)
        if windows and self.rules.profile_updated is not None:
            self._fire_windows(timers, windows, self.rules.profile_updated, mark, ended, payloads)
        timers.write(ended)
        payloads.sort(key=lambda p: (p["occurred_at"], p["id"]))  # queued (and sent) in event-time order
        written = Outbox(timers.conn, self.routes).write(payloads)
        for e in ended:
            if e.state is t.State.NO_CONSENT:  # ids only: the log never names the person
                log.info("trigger not sent: no consent", rule=e.rule, timer=e.id)
        unsent = Counter(e.state.value for e in ended if e.state not in t.PENDING | {t.State.FIRED})
        if unsent:  # counted per batch by why; `triggers explain` and trigger_timers say which
            log.info("due timers ended without a trigger", **unsent)
        if written:
            log.info("triggers written to the outbox", count=len(written), watermark=t.iso(mark))
        return written

    def _fire_carts(self, timers: TimerStore, due: Sequence[t.Timer], rule: AbandonedCartRule, mark: int,
                    ended: list[t.Timer], payloads: list[dict[str, Any]]) -> None:
        carts = timers.carts(rule, {d.subject for d in due})
        owners = {c.profile_id for c in carts.values() if c.profile_id is not None}
        wanted = [*rule.attributes, *(a for a in (rule.consent_attribute,
                  rule.quiet_hours.timezone_attribute if rule.quiet_hours else None) if a)]
        profiles = timers.profiles(owners, wanted, rule.identifiers)
        last = timers.last_fired(t.ABANDONED_CART, {p.profile_id for p in profiles.values()})
        for timer in due:
            cart = carts[timer.subject]
            profile = profiles.get(cart.profile_id) if cart.profile_id is not None else None
            try:
                end = t.fire_cart(timer, cart, profile,
                                  last.get(profile.profile_id) if profile is not None else None, rule, mark)
                payload = t.cart_payload(end, cart, profile, rule) \
                    if end.state is t.State.FIRED and profile is not None else None
            except Exception as exc:  # ended as failed, so that it is not tried on every batch
                log.error("abandoned_cart: timer failed", timer=timer.id, error=type(exc).__name__)
                end, payload = replace(timer, state=t.State.FAILED, due_us=None), None
            ended.append(end)
            if payload is not None and profile is not None and end.occurred_us is not None:
                last[profile.profile_id] = end.occurred_us
                payloads.append(payload)

    def _fire_windows(self, timers: TimerStore, due: Sequence[t.Timer], rule: ProfileUpdatedRule, mark: int,
                      ended: list[t.Timer], payloads: list[dict[str, Any]]) -> None:
        wanted = [*rule.attributes, *((rule.consent_attribute,) if rule.consent_attribute else ())]
        profiles = timers.profiles({d.profile_id for d in due if d.profile_id is not None}, wanted,
                                   rule.identifiers)
        for window in due:
            profile = profiles.get(window.profile_id) if window.profile_id is not None else None
            try:
                end = t.fire_window(window, profile, rule, mark)
                if end.state is t.State.FIRED and profile is not None:
                    payloads.append(t.window_payload(end, profile, rule))
            except Exception as exc:  # ended as failed, so that it is not tried on every batch
                log.error("profile_updated: window failed", timer=window.id, error=type(exc).__name__)
                end = replace(window, state=t.State.FAILED, due_us=None)
            ended.append(end)


def _cart_changes(applied: AppliedBatch, rule: AbandonedCartRule
                  ) -> tuple[dict[str, t.Cause], list[tuple[int | None, t.Order]]]:
    """The batch's newest real change of each cart (its own, or one of its items'), and its
    orders with their owners."""
    changed: dict[str, t.Cause] = {}
    orders: list[tuple[int | None, t.Order]] = []
    for e in applied.entities:
        if e.kind == rule.order and e.data is not None:
            cart = e.data.get(rule.order_cart_field)
            named = None if cart is None else str(cart)
            orders.append((e.profile_id, t.Order(e.entity_id, named, e.version)))
            continue
        if not t.streamed(e.version):
            continue
        if e.kind == rule.cart:
            cid = e.entity_id
        elif e.kind == rule.item and e.parent is not None and e.parent[0] == rule.cart:
            cid = e.parent[1]
        else:
            continue
        if cid not in changed or e.version > changed[cid].version:
            ref = e.ref
            changed[cid] = t.Cause(e.version, *(ref if ref is not None else (None, None, None)))
    return changed, orders
