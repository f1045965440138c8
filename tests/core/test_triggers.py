"""The trigger decisions as pure functions, with time given as data (µs of event time)."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, time
from decimal import Decimal
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cdc_sync.core import triggers as t
from cdc_sync.core.mutations import Version
from cdc_sync.core.rules import AbandonedCartRule, ProfileUpdatedRule, QuietHours
from cdc_sync.core.watermark import PartitionTime, topic_source, watermark
from tests.payloads import validate

S = 1_000_000  # µs per second
T0 = int(datetime(2026, 12, 2, 12, 0, tzinfo=UTC).timestamp()) * S
RULE = AbandonedCartRule(delay=60, cooldown=3600, product="product")


def v(seconds: float, pos: int = 1) -> str:
    """A streamed version `seconds` after T0."""
    return Version(T0 + round(seconds * S), 2, "shop", (pos, pos)).key()


def item(qty: int = 1, price: str = "10.00", product: str = "5") -> t.CartItem:
    return t.CartItem(product, "Mug", qty, Decimal(price))


def cart(*items: t.CartItem, status: str = "open", orders: tuple[t.Order, ...] = (), had: bool | None = None,
         deleted: bool = False) -> t.Cart:
    return t.Cart("7", 42, None if deleted else {"status": status}, items,
                  bool(items) if had is None else had, orders)


def consenting(**attrs: object) -> t.ProfileFacts:
    return t.ProfileFacts(42, {"consent_email_marketing": True, **attrs}, {"email": ["a@example.com"]})


def scheduled(at: float, c: t.Cart | None = None) -> t.Timer:
    [timer] = t.schedule_cart(c or cart(item()), t.Cause(v(at)), [], RULE)
    return timer


# --- scheduling -------------------------------------------------------------------------------


def test_a_cart_change_schedules_a_timer_due_the_delay_after_its_commit_time():
    timer = scheduled(5)
    assert timer.state is t.State.SCHEDULED
    assert timer.due_us == T0 + 65 * S
    assert timer.id == f"abandoned_cart:7:{v(5)}"


def test_a_change_after_the_deadline_leaves_the_due_timer_to_fire():
    """A consumer that lags reads the later change before the watermark passes the deadline:
    the cart was abandoned all the same."""
    first = scheduled(5)
    [new] = t.schedule_cart(cart(item(), item()), t.Cause(v(90, 2)), [first], RULE)
    assert new.version == v(90, 2) and new.state is t.State.SCHEDULED


def test_a_newer_change_supersedes_the_pending_timer():
    first = scheduled(5)
    writes = t.schedule_cart(cart(item(), item()), t.Cause(v(20, 2)), [first], RULE)
    assert [(w.version, w.state) for w in writes] == \
        [(v(5), t.State.RESCHEDULED), (v(20, 2), t.State.SCHEDULED)]
    assert writes[1].due_us == T0 + 80 * S


def test_an_older_change_arriving_late_reschedules_nothing():
    first = scheduled(20, cart(item()))
    assert t.schedule_cart(cart(item()), t.Cause(v(5)), [first], RULE) == []


@pytest.mark.parametrize("c, state", [
    (cart(item(), orders=(t.Order("1", "7", v(1)),)), t.State.CHECKED_OUT),  # an order for this cart
    (cart(item(), orders=(t.Order("1", None, v(30)),)), t.State.CHECKED_OUT),  # any order after the change
    (cart(item(), status="checked_out"), t.State.CHECKED_OUT),
    (cart(had=True), t.State.EMPTIED),
    (cart(item(), status="emptied"), t.State.EMPTIED),
    (cart(item(), deleted=True), t.State.EMPTIED),
    (cart(), t.State.BELOW_MINIMUM),
])
def test_a_closed_cart_gets_no_pending_timer(c, state):
    [timer] = t.schedule_cart(c, t.Cause(v(20)), [], RULE)
    assert timer.state is state and timer.due_us is None


def test_an_order_placed_before_the_carts_last_change_does_not_check_it_out():
    c = cart(item(), orders=(t.Order("1", "3", v(1)),))
    assert t.cart_status(c, v(20), RULE) is t.CartStatus.OPEN


def test_checkout_of_a_scheduled_cart_cancels_its_timer():
    pending = scheduled(5)
    [ended] = t.schedule_cart(cart(item(), orders=(t.Order("9", "7", v(30)),)), None, [pending], RULE)
    assert ended.state is t.State.CHECKED_OUT and ended.due_us is None


def test_a_cart_whose_items_came_first_is_scheduled_by_its_own_change_not_before():
    unseen = t.Cart("7", None, None, (item(),), True, (), seen=False)
    assert t.schedule_cart(unseen, t.Cause(v(5)), [], RULE) == []


@pytest.mark.parametrize("rule, state", [
    (AbandonedCartRule(min_items=3), t.State.BELOW_MINIMUM),
    (AbandonedCartRule(min_value=Decimal("25.01")), t.State.BELOW_MINIMUM),
    (AbandonedCartRule(min_items=2, min_value=Decimal("25")), t.State.SCHEDULED),
])
def test_minimum_item_count_and_value(rule, state):
    [timer] = t.schedule_cart(cart(item(2, "12.50")), t.Cause(v(1)), [], rule)
    assert timer.state is state


def test_snapshot_reads_are_not_streamed_changes():
    assert t.streamed(v(1))
    assert not t.streamed(Version(T0, 2, "shop", (0, 1), "public.carts|{\"id\":7}").key())


# --- firing -----------------------------------------------------------------------------------


def fire(timer: t.Timer, c: t.Cart | None = None, profile: t.ProfileFacts | None = None,
         last: int | None = None, rule: AbandonedCartRule = RULE, mark: int | None = None) -> t.Timer:
    assert timer.due_us is not None
    return t.fire_cart(timer, c or cart(item()), profile if profile is not None else consenting(), last, rule,
                       timer.due_us if mark is None else mark)


def test_a_due_open_cart_fires_at_its_deadline():
    ended = fire(scheduled(5))
    assert ended.state is t.State.FIRED and ended.occurred_us == T0 + 65 * S and ended.due_us is None


def test_a_cart_checked_out_by_the_time_it_is_due_does_not_fire():
    ended = fire(scheduled(5), cart(item(), orders=(t.Order("1", "7", v(64)),)))
    assert ended.state is t.State.CHECKED_OUT


@pytest.mark.parametrize("attrs", [{"consent_email_marketing": False}, {"consent_email_marketing": None}, {}])
def test_without_consent_granted_no_trigger(attrs):
    ended = fire(scheduled(5), profile=t.ProfileFacts(42, attrs))
    assert ended.state is t.State.NO_CONSENT


def test_the_cooldown_suppresses_a_second_cart_due_within_it_and_holds_across_carts():
    second = scheduled(600)
    last_fired = T0 + 65 * S  # the first cart fired then
    assert fire(second, last=last_fired).state is t.State.COOLDOWN
    later = scheduled(3610)
    assert fire(later, last=last_fired).state is t.State.FIRED  # due 3,605 s later: past the cooldown


def test_a_timer_found_due_long_after_its_deadline_expires():
    timer = scheduled(5)
    assert fire(timer, mark=timer.due_us + 86_401 * S).state is t.State.EXPIRED  # type: ignore[operator]
    assert fire(timer, mark=timer.due_us + 86_399 * S).state is t.State.FIRED  # type: ignore[operator]


QUIET = QuietHours(start=time(21), end=time(8), default_timezone="Europe/Berlin")


def local_us(year: int, month: int, day: int, hour: int, minute: int = 0, zone: str = "Europe/Berlin") -> int:
    return int(datetime(year, month, day, hour, minute, tzinfo=ZoneInfo(zone)).timestamp()) * S


@pytest.mark.parametrize("moment, until", [
    (local_us(2026, 12, 2, 22), local_us(2026, 12, 3, 8)),  # evening: to the next morning
    (local_us(2026, 12, 3, 3), local_us(2026, 12, 3, 8)),  # after midnight: to this morning
    (local_us(2026, 12, 3, 8), None),  # the window's end is outside it
    (local_us(2026, 12, 3, 20, 59), None),
    (local_us(2027, 3, 27, 23), local_us(2027, 3, 28, 8)),  # across the spring DST change
])
def test_quiet_hours_hold_until_the_window_ends_in_local_time(moment, until):
    assert t.quiet_until(moment, ZoneInfo("Europe/Berlin"), QUIET) == until


def test_a_cart_due_in_quiet_hours_is_held_then_fires_when_the_window_ends():
    rule = RULE.model_copy(update={"quiet_hours": QUIET})
    due_at_night = t.Timer(t.ABANDONED_CART, "7", v(0), 42, local_us(2026, 12, 2, 23), t.State.SCHEDULED,
                           {"cause": t.Cause(v(0))._asdict()})
    held = fire(due_at_night, rule=rule)
    assert held.state is t.State.HELD and held.due_us == local_us(2026, 12, 3, 8)
    ended = fire(held, rule=rule)
    assert ended.state is t.State.FIRED and ended.occurred_us == local_us(2026, 12, 3, 8)


def test_quiet_hours_end_after_the_moment_on_the_night_the_clocks_go_back():
    quiet = QuietHours(start=time(1), end=time(2, 30), default_timezone="Europe/Berlin")
    zone = ZoneInfo("Europe/Berlin")
    second_two_fifteen = int(datetime(2026, 10, 25, 2, 15, tzinfo=zone).replace(fold=1).timestamp()) * S
    until = t.quiet_until(second_two_fifteen, zone, quiet)
    assert until is not None and until - second_two_fifteen == 15 * 60 * S


def test_quiet_hours_use_the_profiles_time_zone_when_it_has_one():
    rule = RULE.model_copy(update={"quiet_hours": QUIET})
    noon_in_berlin_is_night_in_tokyo = t.Timer(t.ABANDONED_CART, "7", v(0), 42, local_us(2026, 12, 2, 14),
                                               t.State.SCHEDULED, {"cause": t.Cause(v(0))._asdict()})
    assert fire(noon_in_berlin_is_night_in_tokyo, rule=rule).state is t.State.FIRED
    in_tokyo = fire(noon_in_berlin_is_night_in_tokyo, rule=rule, profile=consenting(timezone="Asia/Tokyo"))
    assert in_tokyo.state is t.State.HELD and in_tokyo.due_us == local_us(2026, 12, 3, 8, zone="Asia/Tokyo")


def test_trigger_ids_are_derived_from_the_rule_and_the_cause():
    assert scheduled(5).trigger_id == scheduled(5).trigger_id
    assert scheduled(5).trigger_id != scheduled(6).trigger_id


def test_the_cart_payload_fits_its_schema():
    ended = fire(scheduled(5), cart(item(2, "24.90"), item(1, "12.50", "3")))
    payload = validate(t.cart_payload(ended, cart(item(2, "24.90"), item(1, "12.50", "3")), consenting(),
                                      RULE.model_copy(update={"identifiers": ["email"]})))
    assert payload["cart"]["total"] == "62.30" and payload["cart"]["currency"] == "EUR"
    assert payload["cart"]["items"][0] == \
        {"product_id": "5", "name": "Mug", "quantity": 2, "unit_price": "24.90"}
    assert payload["occurred_at"] == "2026-12-02T12:01:05.000000Z"
    assert payload["profile"]["identifiers"] == {"email": ["a@example.com"]}
    assert payload["caused_by"][0]["source"] == "shop"


def test_an_item_whose_quantity_or_price_is_no_number_is_left_out():
    rule = AbandonedCartRule()
    assert t.item_of({"quantity": "x", "unit_price": "1"}, rule) is None
    assert t.item_of({"quantity": 1, "unit_price": "NaN"}, rule) is None
    assert t.item_of({"quantity": 2.7, "unit_price": "1"}, rule) is None
    assert t.item_of({"quantity": 1, "unit_price": "9E+999999"}, rule) is None
    assert t.item_of({"quantity": "2.00", "unit_price": "1"}, rule) == \
        t.CartItem(None, None, 2, Decimal(1))
    assert t.item_of({"quantity": 2, "unit_price": "1.5", "product_id": 3}, rule, "Cap") == \
        t.CartItem("3", "Cap", 2, Decimal("1.5"))


# --- profile updates --------------------------------------------------------------------------


UPDATES = ProfileUpdatedRule(watch=["city", "first_name", "last_name"], window=5)


def change(name: str, old: object, new: object, at: float, pos: int) -> t.FieldFact:
    return t.FieldFact(42, name, None if old is None else (old, False), (new, False), t.Cause(v(at, pos)))


def test_a_burst_of_changes_becomes_one_window_with_each_field():
    [window] = t.coalesce([change("first_name", "Ann", "Anna", 0, 1), change("city", "Graz", "Linz", 1, 2),
                           change("last_name", "Li", "Lee", 2, 3)], [], UPDATES)
    assert window.due_us == T0 + 5 * S and set(window.detail["fields"]) == {"first_name", "city", "last_name"}
    ended = t.fire_window(window, consenting(), UPDATES, T0 + 5 * S)
    assert ended.state is t.State.FIRED and ended.occurred_us == T0 + 2 * S
    payload = validate(t.window_payload(ended, consenting(), UPDATES))
    city = payload["changes"]["city"]
    assert city["old_value"] == "Graz" and city["new_value"] == "Linz"


def test_a_field_changed_twice_keeps_its_first_old_and_newest_new_value_in_any_order():
    a, b = change("city", "Graz", "Linz", 0, 1), change("city", "Linz", "Wels", 1, 2)
    for order in ([a, b], [b, a]):
        [window] = t.coalesce(order, [], UPDATES)
        f = window.detail["fields"]["city"]
        assert (f["old"], f["new"]) == (("Graz", False), ("Wels", False))


def test_changes_split_across_batches_join_the_pending_window():
    [window] = t.coalesce([change("city", "Graz", "Linz", 0, 1)], [], UPDATES)
    [joined] = t.coalesce([change("first_name", "A", "B", 3, 2)], [window], UPDATES)
    assert joined.id == window.id and set(joined.detail["fields"]) == {"city", "first_name"}


def test_a_change_after_the_window_opens_the_next_one():
    [window] = t.coalesce([change("city", "Graz", "Linz", 0, 1)], [], UPDATES)
    [later] = t.coalesce([change("city", "Linz", "Wels", 6, 2)], [window], UPDATES)
    assert later.id != window.id and later.due_us == T0 + 11 * S


def test_a_field_withdrawn_before_and_after_the_window_fires_nothing():
    gone = t.FieldFact(42, "city", (None, True), (None, True), t.Cause(v(1)))
    [window] = t.coalesce([gone], [], UPDATES)
    assert t.moved_fields(window) == {}


def test_a_field_that_came_back_to_its_old_value_fires_nothing():
    [window] = t.coalesce([change("city", "Graz", "Linz", 0, 1), change("city", "Linz", "Graz", 1, 2)], [],
                          UPDATES)
    assert t.fire_window(window, consenting(), UPDATES, T0 + 5 * S).state is t.State.NO_CHANGE


# --- the watermark ----------------------------------------------------------------------------


def p(group: str, topic: str, event: int, caught_up: int = 0) -> PartitionTime:
    return PartitionTime(group, topic, 0, event, caught_up)


def test_the_watermark_is_the_slowest_partition_less_the_lateness():
    parts = [p("g", "shop.public.carts", 100), p("g", "shop.public.orders", 40),
             p("g", "crm.crm.contacts", 70)]
    assert watermark(parts, 5, "g") == 35


def test_a_caught_up_partition_counts_at_its_sources_heartbeat():
    parts = [p("g", "shop.public.carts", 100), p("g", "shop.public.orders", 40, caught_up=120)]
    assert watermark(parts, 0, "g") == 100


def test_a_group_fires_by_its_own_watermark_only():
    """A replay, or a group reading fewer topics, speaks for its own partitions."""
    parts = [p("live", "a", 100), p("replay", "a", 10)]
    assert watermark(parts, 0, "live") == 100 and watermark(parts, 0, "replay") == 10
    assert watermark(parts, 5, "new") is None


@given(st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 10**6)), min_size=1, max_size=20))
def test_the_watermark_never_passes_a_partition_that_is_not_caught_up(times):
    parts = [PartitionTime("g", "t", i, e, c) for i, (e, c) in enumerate(times)]
    mark = watermark(parts, 0, "g")
    assert mark is not None and all(mark <= max(e, c) for e, c in times)


def test_topics_belong_to_their_prefixs_source():
    assert topic_source("shop.public.carts") == "shop"
    assert topic_source("__debezium-heartbeat.crm") == "crm"


def test_items_committed_before_the_carts_change_but_read_after_it_schedule_the_cart():
    [empty] = t.schedule_cart(cart(), t.Cause(v(5, 3)), [], RULE)  # the cart's update, its items not read yet
    assert empty.state is t.State.BELOW_MINIMUM
    [reopened] = t.schedule_cart(cart(item()), t.Cause(v(5, 2)), [empty], RULE)  # the older item arrives
    assert reopened.id == empty.id and reopened.state is t.State.SCHEDULED and reopened.due_us == T0 + 65 * S


def test_a_cart_that_ended_for_good_is_not_looked_at_again():
    ended = replace(scheduled(5), state=t.State.FIRED, due_us=None)
    assert t.schedule_cart(cart(item(), item()), t.Cause(v(1)), [ended], RULE) == []
