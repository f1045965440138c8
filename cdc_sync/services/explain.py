"""`cdc-sync triggers …`: what is scheduled, and why a cart did or did not fire."""

from __future__ import annotations

from typing import Any

from cdc_sync.adapters import store as store_mod
from cdc_sync.adapters.timers import TimerStore
from cdc_sync.core import triggers as t
from cdc_sync.core.config import Config
from cdc_sync.core.watermark import slowest, watermark

WHY = {
    t.State.SCHEDULED: "waiting for the watermark to pass its deadline",
    t.State.HELD: "held for quiet hours: written when the window ends (its new deadline)",
    t.State.FIRED: "fired: written to the outbox",
    t.State.RESCHEDULED: "rescheduled: the cart changed again later, a newer timer replaced this one",
    t.State.CHECKED_OUT: "checked out: an order for the cart (or by its owner after this change),"
                         " or a checked-out status",
    t.State.EMPTIED: "emptied: no items left, an emptied status, or the cart deleted",
    t.State.BELOW_MINIMUM: "below the minimum item count or cart value",
    t.State.NO_CONSENT: "no consent: the consent attribute was not granted when it fell due",
    t.State.COOLDOWN: "suppressed: the profile had an abandoned-cart trigger within the cooldown",
    t.State.NO_PROFILE: "the cart's owner is not known",
    t.State.NO_CHANGE: "no change: every field came back to its old value within the window",
    t.State.EXPIRED: "expired: it fell due longer than max_age before the watermark (a replay or an outage)",
    t.State.FAILED: "failed: the rule could not be evaluated; the daemon's log names the timer and the error",
}


def _timers(cfg: Config) -> tuple[TimerStore, Any]:
    conn = store_mod.connect(cfg.store.dsn)
    return TimerStore(conn), conn


def _mark(timers: TimerStore, cfg: Config) -> dict[str, Any]:
    parts = timers.partitions()
    group = cfg.kafka.group_id
    mark = watermark(parts, round(cfg.triggers.allowed_lateness * 1e6), group)
    held = slowest(parts, group)
    return {"group": group, "watermark": None if mark is None else t.iso(mark),
            "allowed_lateness_s": cfg.triggers.allowed_lateness,
            "slowest_partition": None if held is None else {
                "group": held.group, "topic": held.topic, "partition": held.partition,
                "at": t.iso(max(held.event_us, held.caught_up_us))},
            "heartbeats": {s: t.iso(us) for s, us in sorted(timers.heartbeats().items())}}


def pending(cfg: Config, limit: int) -> dict[str, Any]:
    """Scheduled and held timers, soonest first, with the current watermark."""
    timers, conn = _timers(cfg)
    try:
        with conn.transaction():
            doc = _mark(timers, cfg)
            doc["timers"] = [_timer_doc(x) for x in timers.pending(limit)]
        return doc
    finally:
        conn.close()


def explain_cart(cfg: Config, cart_id: str) -> dict[str, Any]:
    """Every timer a cart had, newest first, each with why it ended (or what it waits for)."""
    timers, conn = _timers(cfg)
    try:
        with conn.transaction():
            doc = _mark(timers, cfg)
            every = timers.timers_of(t.ABANDONED_CART, [cart_id], history=True)
            history = list(reversed(every.get(cart_id, [])))
            rule = cfg.triggers.abandoned_cart
            cart = timers.carts(rule, [cart_id])[cart_id] if rule is not None else None
        doc["cart"] = cart_id
        if cart is not None and cart.seen and rule is not None:
            doc["now"] = {"profile_id": cart.profile_id, "items": sum(i.quantity for i in cart.items),
                          "total": str(t.total(cart.items)),
                          "status": t.cart_status(cart, cart.newest, rule).value}
        doc["timers"] = [_timer_doc(x) for x in history]
        doc["verdict"] = _verdict(history, doc["watermark"], rule is not None, cart is not None and cart.seen)
        return doc
    finally:
        conn.close()


def _verdict(history: list[t.Timer], mark: str | None, enabled: bool, seen: bool) -> str:
    if not enabled:
        return "the abandoned_cart rule is off (no triggers.abandoned_cart in the config)"
    if not history:
        return ("no timer: the store has the cart, but no change of it was streamed (snapshot reads"
                " schedule nothing)" if seen else "no timer: the store has no such cart (yet)")
    latest = history[0]
    if latest.state is t.State.SCHEDULED and latest.due_us is not None:
        return f"waiting for the watermark: due at {t.iso(latest.due_us)}, watermark at {mark or 'none yet'}"
    return WHY[latest.state]


def _timer_doc(x: t.Timer) -> dict[str, Any]:
    doc: dict[str, Any] = {"rule": x.rule, "subject": x.subject, "version": x.version,
                           "changed_at": t.iso(t.commit_us(x.version)), "profile_id": x.profile_id,
                           "state": x.state.value, "why": WHY[x.state]}
    if x.due_us is not None:
        doc["due_at"] = t.iso(x.due_us)
    if x.occurred_us is not None:
        doc["occurred_at"] = t.iso(x.occurred_us)
        doc["trigger_id"] = x.trigger_id
    return doc
