"""Trigger stage, the decision part: timers for carts and profile updates, and when they fire.

Plain functions over plain data, with time given as data (µs of event time): the services
layer reads the state, calls these, and writes what they return in the transaction that
applied the batch (docs/triggers.md).

- Abandoned cart: one timer per (cart, version of its last real change), due `delay` after
  that change's commit time. A newer real change reschedules (the old timer is superseded);
  a checkout (an order for the cart, or any order of its owner committed after that change),
  a cart status meaning checked out or emptied, or a cart with no items left cancels it.
  When the watermark passes the deadline the timer fires unless the cart is closed by then,
  the profile lacks consent, or its last abandoned-cart trigger is within the cooldown (then
  it is suppressed, not postponed); inside quiet hours it is held until the window ends.
- Profile updated: real changes of watched attributes open a window of `window` seconds of
  event time per profile; changes inside it join it, each field keeping its first old value
  and its newest new value. When the watermark passes the window's end it fires once with
  the fields whose value moved.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from enum import StrEnum
from typing import Any, Final, NamedTuple
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from cdc_sync.core.mutations import Version
from cdc_sync.core.rules import AbandonedCartRule, ProfileUpdatedRule, QuietHours, TriggersConfig

CART_ABANDONED: Final = "cart.abandoned"
PROFILE_UPDATED: Final = "profile.updated"
SCHEMA_VERSION: Final = 1
ABANDONED_CART: Final = "abandoned_cart"  # rule names, as in the config
PROFILE_UPDATE: Final = "profile_updated"
# Trigger ids are UUIDs derived from the timer that fired (rule, subject, version): the same
# cause gives the same id, which the delivery side uses as its idempotency key.
_NAMESPACE: Final = uuid.UUID("6c1f3a4e-8a5e-5b0c-9a57-2f1d6c0b7e01")
_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)


class State(StrEnum):
    """A timer's state; the first two are pending, the rest say how it ended."""

    SCHEDULED = "scheduled"
    HELD = "held"  # due inside quiet hours: waits for the window's end
    FIRED = "fired"
    RESCHEDULED = "rescheduled"  # a newer real change of the cart superseded it
    CHECKED_OUT = "checked_out"
    EMPTIED = "emptied"
    BELOW_MINIMUM = "below_minimum"
    NO_CONSENT = "no_consent"
    COOLDOWN = "cooldown"
    NO_PROFILE = "no_profile"  # the cart's owner is unknown
    NO_CHANGE = "no_change"  # a profile window whose fields all came back to their old values
    EXPIRED = "expired"  # due longer than the rule's max_age before the watermark (a replay, an outage)
    FAILED = "failed"  # the rule could not be evaluated (a bug, or data it cannot read): see the log


PENDING: Final = frozenset({State.SCHEDULED, State.HELD})


class Cause(NamedTuple):
    """Where a fact came from: its version (source, position, commit time) and Kafka record."""

    version: str
    topic: str | None = None
    partition: int | None = None
    offset: int | None = None


@dataclass(frozen=True, slots=True)
class Timer:
    """A durable timer; `due_us` is None once it has ended."""

    rule: str
    subject: str  # the cart id, or the profile id
    version: str  # the cart's last real change; the window's first change
    profile_id: int | None
    due_us: int | None
    state: State
    detail: Mapping[str, Any] = field(default_factory=dict)
    occurred_us: int | None = None  # fired: the trigger's event time

    @property
    def id(self) -> str:
        return f"{self.rule}:{self.subject}:{self.version}"

    @property
    def trigger_id(self) -> str:
        return str(uuid.uuid5(_NAMESPACE, self.id))


class Order(NamedTuple):
    order_id: str
    cart_id: str | None
    version: str


class Written(NamedTuple):
    """A trigger written to the outbox now: its id, type and event time."""

    id: str
    type: str
    occurred_at: datetime


class CartItem(NamedTuple):
    product_id: str | None
    name: str | None
    quantity: int
    unit_price: Decimal


@dataclass(frozen=True, slots=True)
class Cart:
    """A cart as the store holds it after the batch."""

    cart_id: str
    profile_id: int | None
    data: Mapping[str, Any] | None  # None: deleted (or, with `seen` false, not seen yet)
    items: tuple[CartItem, ...]
    had_items: bool  # an item row existed at some point (a deleted one counts)
    orders: tuple[Order, ...]  # orders of the cart's owner, and the batch's orders naming it
    seen: bool = True  # False: only its items have arrived so far
    newest: str = ""  # the newest version stored of the cart and its items


class CartStatus(StrEnum):
    OPEN = "open"
    CHECKED_OUT = "checked_out"
    EMPTIED = "emptied"
    BELOW_MINIMUM = "below_minimum"


@dataclass(frozen=True, slots=True)
class ProfileFacts:
    """What a trigger needs of its profile: attribute values (live ones) and identifiers."""

    profile_id: int
    attributes: Mapping[str, Any]
    identifiers: Mapping[str, Sequence[str]] = field(default_factory=dict)


def commit_us(version: str) -> int:
    """The commit time (µs) a version key starts with."""
    return int(version[:version.index("/")], 16)


def streamed(version: str) -> bool:
    """Whether a version is a streamed change: a snapshot read's key ends in its row's tiebreak.
    A snapshot says what a row is, not when it last changed, so it schedules nothing."""
    return version.endswith("/")


def total(items: Iterable[CartItem]) -> Decimal:
    return sum((i.unit_price * i.quantity for i in items), Decimal(0))


def cart_status(cart: Cart, version: str, rule: AbandonedCartRule) -> CartStatus:
    """Whether the cart, as of its change `version`, is still open and worth a trigger."""
    status = None if cart.data is None or rule.status_field is None else cart.data.get(rule.status_field)
    if status in rule.checked_out_statuses or \
            any(o.cart_id == cart.cart_id or o.version > version for o in cart.orders):
        return CartStatus.CHECKED_OUT
    if cart.data is None or status in rule.emptied_statuses or (cart.had_items and not cart.items):
        return CartStatus.EMPTIED
    if not cart.items or sum(i.quantity for i in cart.items) < rule.min_items \
            or total(cart.items) < rule.min_value:
        return CartStatus.BELOW_MINIMUM
    return CartStatus.OPEN


REOPENABLE: Final = frozenset({State.BELOW_MINIMUM, State.EMPTIED})  # items may still arrive late


def schedule_cart(cart: Cart, changed: Cause | None, timers: Sequence[Timer],
                  rule: AbandonedCartRule) -> list[Timer]:
    """The timers to write for a cart the batch touched. `changed` is its newest real change in
    the batch (None when only an order touched it); `timers` are the cart's stored ones.

    A change newer than every timer supersedes the pending one with a new timer. Otherwise the
    latest timer is looked at again with what the cart holds now: a pending one ends when the
    cart closed; one that ended below the minimum or empty is scheduled after all when items
    committed before its change arrive only now (topics are not read in commit order)."""
    if not cart.seen:  # its items came first: the cart's own change schedules it
        return []
    latest = max(timers, key=lambda t: t.version, default=None)
    if changed is not None and (latest is None or changed.version > latest.version):
        # A change after a timer's deadline does not undo it: the cart was abandoned by then
        # (a consumer that lags reads both before the watermark passes the deadline).
        at = commit_us(changed.version)
        superseded = [t for t in timers if t.state in PENDING and t.due_us is not None and t.due_us > at]
        return [*(replace(t, state=State.RESCHEDULED, due_us=None) for t in superseded),
                _cart_timer(cart, changed, rule)]
    if latest is None or latest.state not in PENDING | REOPENABLE:
        return []
    status = cart_status(cart, latest.version, rule)
    if status is CartStatus.OPEN:
        reopened = _cart_timer(cart, Cause(**latest.detail["cause"]), rule)
        return [] if latest.state in PENDING else [reopened]
    if latest.state is State(status.value):
        return []
    return [replace(latest, state=State(status.value), due_us=None)]


def _cart_timer(cart: Cart, changed: Cause, rule: AbandonedCartRule) -> Timer:
    status = cart_status(cart, changed.version, rule)
    due = commit_us(changed.version) + round(rule.delay * 1e6)
    is_open = status is CartStatus.OPEN
    return Timer(ABANDONED_CART, cart.cart_id, changed.version, cart.profile_id, due if is_open else None,
                 State.SCHEDULED if is_open else State(status.value), {"cause": changed._asdict()})


def quiet_until(moment_us: int, zone: ZoneInfo, quiet: QuietHours) -> int | None:
    """The end of the quiet window `moment_us` falls in (µs), None when it falls in none."""
    local = (_EPOCH + timedelta(microseconds=moment_us)).astimezone(zone)
    now = local.time().replace(tzinfo=None)
    inside = quiet.start <= now < quiet.end if quiet.start < quiet.end else \
        (now >= quiet.start or now < quiet.end)
    if not inside:
        return None
    day = local.date() if now < quiet.end else local.date() + timedelta(days=1)
    end = datetime.combine(day, quiet.end, tzinfo=zone)
    if end.astimezone(UTC) <= local.astimezone(UTC):  # the clocks went back: the later of the two
        end = end.replace(fold=1)
    return (end.astimezone(UTC) - _EPOCH) // timedelta(microseconds=1)


def profile_zone(profile: ProfileFacts, quiet: QuietHours) -> ZoneInfo:
    """The profile's time zone: its attribute when it names a known zone, else the default."""
    name = profile.attributes.get(quiet.timezone_attribute) if quiet.timezone_attribute else None
    if isinstance(name, str):
        try:
            return ZoneInfo(name)
        except (ZoneInfoNotFoundError, ValueError):
            pass
    return ZoneInfo(quiet.default_timezone)


def fire_cart(timer: Timer, cart: Cart, profile: ProfileFacts | None, last_fired_us: int | None,
              rule: AbandonedCartRule, watermark_us: int) -> Timer:
    """A due cart timer's end: fired, held for quiet hours, or why not."""
    assert timer.due_us is not None, "only pending timers fire"
    if watermark_us - timer.due_us > round(rule.max_age * 1e6):
        return replace(timer, state=State.EXPIRED, due_us=None)
    status = cart_status(cart, timer.version, rule)
    if status is not CartStatus.OPEN:
        return replace(timer, state=State(status.value), due_us=None)
    if profile is None:
        return replace(timer, state=State.NO_PROFILE, due_us=None)
    at = timer.due_us
    if rule.consent_attribute is not None and profile.attributes.get(rule.consent_attribute) is not True:
        return replace(timer, state=State.NO_CONSENT, due_us=None, profile_id=profile.profile_id)
    if last_fired_us is not None and at < last_fired_us + round(rule.cooldown * 1e6):
        return replace(timer, state=State.COOLDOWN, due_us=None, profile_id=profile.profile_id)
    if rule.quiet_hours is not None:
        until = quiet_until(at, profile_zone(profile, rule.quiet_hours), rule.quiet_hours)
        if until is not None:
            return replace(timer, state=State.HELD, due_us=until, profile_id=profile.profile_id)
    return replace(timer, state=State.FIRED, due_us=None, occurred_us=at, profile_id=profile.profile_id)


# --- profile updates --------------------------------------------------------------------------


class FieldFact(NamedTuple):
    """One real change of a watched attribute (values as stored; deleted = withdrawn)."""

    profile_id: int
    name: str
    old: tuple[Any, bool] | None  # (value, deleted); None: the profile had no such attribute
    new: tuple[Any, bool]
    cause: Cause


def coalesce(changes: Sequence[FieldFact], windows: Sequence[Timer], rule: ProfileUpdatedRule) -> list[Timer]:
    """Fold one profile's watched changes into its pending windows, opening new ones where a
    change falls after every pending window's end. Returns the windows to write."""
    length = round(rule.window * 1e6)
    open_ = sorted((w for w in windows if w.state in PENDING), key=lambda w: w.version)
    touched: dict[str, Timer] = {}
    for change in sorted(changes, key=lambda c: c.cause.version):
        at = commit_us(change.cause.version)
        window = next((w for w in reversed(open_) if w.due_us is not None and at < w.due_us), None)
        if window is None:
            window = Timer(PROFILE_UPDATE, str(change.profile_id), change.cause.version, change.profile_id,
                           at + length, State.SCHEDULED, {"fields": {}})
            open_.append(window)
        fields = dict(window.detail.get("fields", {}))
        seen = fields.get(change.name)
        if seen is None:
            fields[change.name] = {"old": change.old, "new": change.new, "cause": change.cause._asdict()}
        elif change.cause.version > seen["cause"]["version"]:
            fields[change.name] = {**seen, "new": change.new, "cause": change.cause._asdict()}
        else:
            fields[change.name] = {**seen, "old": change.old}  # an older change arrived late
        updated = replace(window, detail={"fields": fields})
        open_[open_.index(window)] = updated
        touched[updated.id] = updated
    return list(touched.values())


def moved_fields(window: Timer) -> dict[str, Mapping[str, Any]]:
    """The window's fields whose value moved from before the window to its end."""
    out = {}
    for name, f in window.detail.get("fields", {}).items():
        old, new = f["old"], f["new"]
        if old is None and new[1]:  # appeared and was withdrawn within the window
            continue
        if old is not None and (list(old) == list(new) or (old[1] and new[1])):  # same, or gone both times
            continue
        out[name] = f
    return out


def fire_window(window: Timer, profile: ProfileFacts | None, rule: ProfileUpdatedRule,
                watermark_us: int) -> Timer:
    """A due profile window's end: fired with its moved fields, or why not."""
    assert window.due_us is not None, "only pending windows fire"
    if watermark_us - window.due_us > round(rule.max_age * 1e6):
        return replace(window, state=State.EXPIRED, due_us=None)
    fields = moved_fields(window)
    if not fields:
        return replace(window, state=State.NO_CHANGE, due_us=None)
    if profile is None:
        return replace(window, state=State.NO_PROFILE, due_us=None)
    if rule.consent_attribute is not None and profile.attributes.get(rule.consent_attribute) is not True:
        return replace(window, state=State.NO_CONSENT, due_us=None, profile_id=profile.profile_id)
    at = max(commit_us(f["cause"]["version"]) for f in fields.values())
    return replace(window, state=State.FIRED, due_us=None, occurred_us=at, profile_id=profile.profile_id)


# --- payloads ---------------------------------------------------------------------------------


def iso(us: int) -> str:
    """µs of event time as RFC 3339 UTC with microseconds."""
    return (_EPOCH + timedelta(microseconds=us)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def cause_doc(cause: Mapping[str, Any]) -> dict[str, Any]:
    """A cause as the payload shows it: the source, its position, the commit time, the record."""
    v = Version.from_key(cause["version"])
    doc: dict[str, Any] = {"source": v.source, "position": list(v.position), "committed_at": iso(v.commit_us),
                           "version": cause["version"]}
    if cause.get("topic") is not None:
        doc["kafka"] = {"topic": cause["topic"], "partition": cause["partition"], "offset": cause["offset"]}
    return doc


def _profile_doc(profile: ProfileFacts, attributes: Sequence[str], identifiers: Sequence[str]
                 ) -> dict[str, Any]:
    return {"id": profile.profile_id,
            "attributes": {n: profile.attributes[n] for n in attributes if n in profile.attributes},
            "identifiers": {t: list(profile.identifiers[t]) for t in identifiers
                            if profile.identifiers.get(t)}}


def _decimal_text(value: Decimal) -> str:
    return format(value, "f")  # as precise as the source's column


def cart_payload(timer: Timer, cart: Cart, profile: ProfileFacts, rule: AbandonedCartRule) -> dict[str, Any]:
    """The `cart.abandoned` payload (schemas/cart.abandoned.v1.json)."""
    assert timer.occurred_us is not None
    currency = cart.data.get(rule.currency_field) if cart.data and rule.currency_field else None
    items = [{"product_id": i.product_id, "quantity": i.quantity, "unit_price": _decimal_text(i.unit_price),
              **({"name": i.name} if i.name is not None else {})} for i in cart.items]
    return {
        "id": timer.trigger_id, "type": CART_ABANDONED, "schema_version": SCHEMA_VERSION,
        "occurred_at": iso(timer.occurred_us), "profile_id": profile.profile_id,
        "profile": _profile_doc(profile, rule.attributes, rule.identifiers),
        "cart": {"id": cart.cart_id, "items": items, "total": _decimal_text(total(cart.items)),
                 "currency": currency if isinstance(currency, str) and currency else rule.currency,
                 "last_changed_at": iso(commit_us(timer.version))},
        "caused_by": [cause_doc(timer.detail["cause"])],
    }


def window_payload(timer: Timer, profile: ProfileFacts, rule: ProfileUpdatedRule) -> dict[str, Any]:
    """The `profile.updated` payload (schemas/profile.updated.v1.json)."""
    assert timer.occurred_us is not None
    fields = moved_fields(timer)
    changes = {name: {"old_value": None if f["old"] is None or f["old"][1] else f["old"][0],
                      "old_deleted": f["old"] is None or bool(f["old"][1]),
                      "new_value": None if f["new"][1] else f["new"][0], "new_deleted": bool(f["new"][1]),
                      "version": f["cause"]["version"], "changed_at": iso(commit_us(f["cause"]["version"]))}
               for name, f in sorted(fields.items())}
    return {
        "id": timer.trigger_id, "type": PROFILE_UPDATED, "schema_version": SCHEMA_VERSION,
        "occurred_at": iso(timer.occurred_us), "profile_id": profile.profile_id,
        "profile": _profile_doc(profile, rule.attributes, rule.identifiers),
        "changes": changes,
        "caused_by": [cause_doc(f["cause"]) for _, f in sorted(fields.items())],
    }


_MAX_AMOUNT: Final = Decimal(10) ** 15  # beyond any cart: a value this large is no price or quantity


def item_of(data: Mapping[str, Any], rule: AbandonedCartRule, name: str | None = None) -> CartItem | None:
    """A cart item from its entity data (and its product's name, when the catalogue has it);
    None when its quantity is no whole number or its price no number (within any cart's reach)."""
    try:
        count = Decimal(str(data.get(rule.quantity_field)))
        price = Decimal(str(data.get(rule.price_field)))
        if not (count.is_finite() and price.is_finite() and abs(count) < _MAX_AMOUNT
                and abs(price) < _MAX_AMOUNT and count == count.to_integral_value()):
            return None
    except (TypeError, ValueError, ArithmeticError):
        return None
    quantity = int(count)
    product = data.get(rule.product_field)
    product_id = None if product is None else str(product)
    return CartItem(product_id, name, quantity, price)


def send_refusal(payload: Mapping[str, Any], cart: Cart | None, profile: ProfileFacts | None,
                 rules: TriggersConfig) -> str | None:
    """Just before a trigger goes out: None when it still may, else why not. A cart checked out,
    emptied or below the minimum since it fired is no abandoned cart; consent withdrawn since
    is no consent (ESPs that decide only when the trigger arrives would still email them)."""
    rule: AbandonedCartRule | ProfileUpdatedRule | None
    if payload.get("type") == CART_ABANDONED:
        rule = rules.abandoned_cart
        if rule is not None:
            if cart is None or not cart.seen:
                return "cart_gone"
            status = cart_status(cart, payload["caused_by"][0]["version"], rule)
            if status is not CartStatus.OPEN:
                return status.value
    else:
        rule = rules.profile_updated
    consent = rule.consent_attribute if rule is not None else None
    if consent is not None and (profile is None or profile.attributes.get(consent) is not True):
        return State.NO_CONSENT.value
    return None
