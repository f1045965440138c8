"""Triggers end to end on the real stack: shop rows written to Postgres, streamed by Debezium,
applied by `cdc-sync run`, decided in event time and written to the outbox. Delays are seconds
here (hours in production); every payload is checked against its schema when the store goes."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tests import storedb
from tests.stack import daemon
from tests.stack.shop import LAMP, MUG

pytestmark = pytest.mark.stack

DELAY_S = 4
RULES = {
    "allowed_lateness": "2s",
    "abandoned_cart": {"delay": f"{DELAY_S}s", "cooldown": "10m", "product": "product",
                       "attributes": ["first_name"], "identifiers": ["email"]},
    "profile_updated": {"watch": ["first_name", "last_name", "city"], "window": "2s",
                        "attributes": ["first_name"], "identifiers": ["email"]},
}


class Store:
    """Reads what the daemon wrote, and asks it through the CLI as an operator would."""

    def __init__(self, dsn: str, config: Path) -> None:
        self.dsn, self.config = dsn, config

    def query(self, sql: str, *args: Any) -> list[tuple[Any, ...]]:
        with psycopg.connect(self.dsn) as conn:
            return conn.execute(sql, args).fetchall()

    def abandoned(self, cart: str) -> list[dict[str, Any]]:
        return [r[0] for r in self.query("SELECT payload FROM outbox WHERE type = 'cart.abandoned'"
                                         " AND payload->'cart'->>'id' = %s ORDER BY seq", cart)]

    def updates(self, uid: int) -> list[dict[str, Any]]:
        return [r[0] for r in self.query(
            "SELECT o.payload FROM outbox o JOIN identifiers i ON i.type = 'user_id' AND i.value = %s"
            " AND o.profile_id = i.profile_id WHERE o.type = 'profile.updated' ORDER BY o.seq", str(uid))]

    def cli(self, *args: str) -> Any:
        out = subprocess.run([sys.executable, "-m", "cdc_sync.cli", "--config", str(self.config), *args],
                             capture_output=True, text=True, timeout=60, check=True).stdout
        return json.loads(out)

    def explain(self, cart: str) -> dict[str, Any]:
        return self.cli("triggers", "explain", "--cart", cart)  # type: ignore[no-any-return]

    def state(self, cart: str) -> str | None:
        timers = self.explain(cart)["timers"]
        return timers[0]["state"] if timers else None

    def watermark(self) -> datetime | None:
        mark = self.cli("triggers", "pending", "--json")["watermark"]
        return None if mark is None else datetime.fromisoformat(mark)

    def passed(self, moment: datetime) -> bool:
        mark = self.watermark()
        return mark is not None and mark > moment


def wait(check: Any, what: str, timeout: float = 90) -> Any:
    return daemon.wait_for(check, timeout=timeout, what=what)


def fired(store: Store, cart: str, what: str, timeout: float = 90) -> list[dict[str, Any]]:
    """Wait for the cart's trigger; on a timeout, say what `triggers explain` says of it."""
    try:
        return wait(lambda: store.abandoned(cart), what, timeout)  # type: ignore[no-any-return]
    except AssertionError as exc:
        raise AssertionError(f"{exc}; explain: {json.dumps(store.explain(cart))}; pending: "
                             f"{json.dumps(store.cli('triggers', 'pending', '--json'))}") from None


def at(payload_time: str) -> datetime:
    return datetime.fromisoformat(payload_time)


def start(tmp_path: Path, name: str, dsn: str, group: str, rules: dict[str, Any] = RULES, **kafka: Any
          ) -> tuple[subprocess.Popen[bytes], Path]:
    path = storedb.write_config(tmp_path / f"{name}.yaml", store={"dsn": dsn}, triggers=rules,
                                kafka={"group_id": group, **kafka})
    return daemon.start(path, log=tmp_path / f"{name}.log"), path


@contextmanager
def caught_up(tmp: Path, dsn: str, config: Path) -> Iterator[Store]:
    """A daemon for a module's tests (it outlives each test), yielded once it has caught up with
    the shop; stopped cleanly at the end."""
    proc = daemon.start(config, log=tmp / "daemon.log")
    daemon.STARTED.remove(proc)  # the autouse killer ends a test's daemons: this one is ours
    try:
        s = Store(dsn, config)
        recent = datetime.now(UTC) - timedelta(seconds=30)
        wait(lambda: s.watermark() is not None and s.passed(recent),
             "the daemon to catch up with the shop", timeout=240)
        yield s
        wait(lambda: daemon.joined(proc), what="the daemon to join before it is stopped")
        assert daemon.stop(proc) == 0, (tmp / "daemon.log").read_text()[-3000:]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """One daemon for the module's tests, on its own store and group, from the earliest offset."""
    tmp = tmp_path_factory.mktemp("triggers")
    with storedb.fresh_database() as dsn:
        config = storedb.write_config(tmp / "daemon.yaml", store={"dsn": dsn}, triggers=RULES,
                                      kafka={"group_id": f"triggers-{uuid.uuid4().hex[:8]}"})
        with caught_up(tmp, dsn, config) as s:
            yield s


def test_a_cart_left_alone_fires_exactly_one_cart_abandoned_after_the_delay(shop, store):
    uid = shop.user()
    cart = shop.cart(uid, (MUG, 2), (LAMP, 1))
    [payload] = fired(store, cart, "the cart to be abandoned")
    assert payload["cart"]["total"] == "84.00" and payload["cart"]["currency"] == "EUR"
    assert sorted((i["name"], i["quantity"], i["unit_price"]) for i in payload["cart"]["items"]) == \
        [("Ceramic mug", 2, "12.50"), ("Desk lamp", 1, "59.00")]
    assert at(payload["occurred_at"]) - at(payload["cart"]["last_changed_at"]) == timedelta(seconds=DELAY_S)
    assert payload["profile"]["attributes"] == {"first_name": "Tess"}
    assert payload["caused_by"][0]["kafka"]["topic"].startswith("shop.public.cart")
    wait(lambda: store.passed(at(payload["occurred_at"]) + timedelta(seconds=8)), "the watermark to move on")
    assert len(store.abandoned(cart)) == 1
    assert store.explain(cart)["verdict"].startswith("fired")


def test_a_cart_changed_again_reschedules_and_the_earlier_version_never_fires(shop, store):
    uid = shop.user()
    cart = shop.cart(uid, (MUG, 1))
    time.sleep(DELAY_S / 2)
    shop.add(cart, LAMP, 1)
    [payload] = wait(lambda: store.abandoned(cart), "the rescheduled cart to fire")
    assert len(payload["cart"]["items"]) == 2
    states = [x["state"] for x in store.explain(cart)["timers"]]
    assert states[0] == "fired" and "rescheduled" in states[1:]
    wait(lambda: store.passed(at(payload["occurred_at"]) + timedelta(seconds=5)), "the watermark to move on")
    assert len(store.abandoned(cart)) == 1


def test_a_second_abandoned_cart_within_the_cooldown_is_suppressed(shop, store):
    uid = shop.user()
    first = shop.cart(uid, (MUG, 1))
    wait(lambda: store.abandoned(first), "the first cart to fire")
    second = shop.cart(uid, (LAMP, 1))
    wait(lambda: store.state(second) == "cooldown", "the second cart to be suppressed")
    assert store.abandoned(second) == []


def test_no_consent_no_trigger_and_consent_granted_later_lets_the_next_cart_fire(shop, store):
    uid = shop.user(consent=None)
    first = shop.cart(uid, (MUG, 1))
    wait(lambda: store.state(first) == "no_consent", "the cart without consent to end")
    assert store.abandoned(first) == []
    shop.consent(uid, True)
    second = shop.cart(uid, (LAMP, 1))
    wait(lambda: store.abandoned(second), "the next cart to fire")


def test_three_quick_updates_become_one_profile_updated_and_a_restated_value_fires_nothing(shop, store):
    uid = shop.user()
    wait(lambda: store.updates(uid), "the new profile's own update")
    for column, value in (("first_name", "Tina"), ("last_name", "Berg"), ("city", "Linz")):
        shop.pg.execute(f"UPDATE users SET {column} = %s, updated_at = now() WHERE id = %s", (value, uid))
    update = wait(lambda: store.updates(uid)[1:], "the coalesced update")[0]
    changes = update["changes"]
    assert {k: (c["old_value"], c["new_value"]) for k, c in changes.items()} == \
        {"first_name": ("Tess", "Tina"), "last_name": (None, "Berg"), "city": ("Graz", "Linz")}
    shop.pg.execute("UPDATE users SET city = 'Linz', updated_at = now() WHERE id = %s", (uid,))
    restated_at = shop.committed_now()
    wait(lambda: store.passed(restated_at + timedelta(seconds=3)), "the watermark to pass the window")
    assert len(store.updates(uid)) == 2


def test_with_no_activity_heartbeats_alone_move_the_watermark_and_a_due_cart_fires(shop, store):
    uid = shop.user()
    cart = shop.cart(uid, (MUG, 1))
    created = shop.committed_now()
    [payload] = wait(lambda: store.abandoned(cart), "the cart to fire on heartbeats alone")
    due = at(payload["occurred_at"])
    # Nothing but heartbeat tables was written after the cart: no other partition reached its deadline.
    newest = store.query("SELECT max(event_us) FROM stream_progress"
                         " WHERE topic NOT LIKE '%%heartbeat%%'")[0][0]
    assert created - timedelta(seconds=2) < datetime.fromtimestamp(newest / 1e6, UTC) < due


def test_quiet_hours_hold_a_due_cart_and_write_it_when_the_window_ends(shop, tmp_path):
    now = datetime.now(UTC).replace(microsecond=0)
    start_at, end_at = now - timedelta(minutes=1), now + timedelta(seconds=DELAY_S + 14)
    quiet = {"start": start_at.time().isoformat(), "end": end_at.time().isoformat(),
             "timezone_attribute": None, "default_timezone": "UTC"}
    rules = {**RULES, "abandoned_cart": {**RULES["abandoned_cart"], "quiet_hours": quiet}}
    with storedb.fresh_database() as dsn:
        proc, path = start(tmp_path, "quiet", dsn, f"quiet-{uuid.uuid4().hex[:8]}", rules)
        store = Store(dsn, path)
        cart = shop.cart(shop.user(), (MUG, 1))
        wait(lambda: store.state(cart) == "held", "the due cart to be held", timeout=120)
        assert store.abandoned(cart) == []
        [payload] = wait(lambda: store.abandoned(cart), "the held cart to be written", timeout=90)
        assert at(payload["occurred_at"]) == end_at
        wait(lambda: daemon.joined(proc), what="the daemon to join")
        assert daemon.stop(proc) == 0


def test_a_cart_checked_out_before_the_deadline_never_fires_after_a_long_stop_nor_in_a_replay(shop, tmp_path):
    group = f"stopped-{uuid.uuid4().hex[:8]}"
    with storedb.fresh_database() as dsn, storedb.fresh_database() as replay_dsn:
        proc, path = start(tmp_path, "first", dsn, group)
        store = Store(dsn, path)
        wait(lambda: store.passed(datetime.now(UTC) - timedelta(seconds=30)), "the daemon to catch up", 180)
        bought = shop.cart(shop.user(), (MUG, 1))
        wait(lambda: store.state(bought) == "scheduled", "the cart to be scheduled")
        assert daemon.stop(proc) == 0
        shop.checkout(bought)  # while the daemon is down, before the deadline
        left = shop.cart(shop.user(), (LAMP, 1))
        time.sleep(DELAY_S + 10)  # long after both deadlines
        proc, _ = start(tmp_path, "again", dsn, group)
        fired(store, left, "the abandoned cart to fire after the restart")
        assert store.abandoned(bought) == [] and store.state(bought) == "checked_out"

        replay, replay_path = start(tmp_path, "replay", replay_dsn, f"replay-{uuid.uuid4().hex[:8]}")
        replayed = Store(replay_dsn, replay_path)
        fired(replayed, left, "the replay to fire the abandoned cart", timeout=180)
        assert replayed.abandoned(bought) == [] and replayed.state(bought) == "checked_out"
        for p in (proc, replay):
            wait(lambda p=p: daemon.joined(p), what="the daemons to join")
            assert daemon.stop(p) == 0


def test_two_replicas_and_a_sigkill_write_each_expected_trigger_exactly_once(shop, tmp_path):
    group = f"replicas-{uuid.uuid4().hex[:8]}"
    with storedb.fresh_database() as dsn:
        a, path = start(tmp_path, "a", dsn, group, max_poll_records=20)
        b, _ = start(tmp_path, "b", dsn, group, max_poll_records=20)
        store = Store(dsn, path)
        wait(lambda: store.passed(datetime.now(UTC) - timedelta(seconds=30)), "the replicas to catch up", 180)
        left, bought = [], []
        for i in range(8):
            cart = shop.cart(shop.user(), (MUG, 1 + i % 3))
            (bought if i % 2 else left).append(cart)
            if i == 3:
                a.send_signal(signal.SIGKILL)  # mid-run, a batch possibly in hand
                a.wait(timeout=10)
        for cart in bought:
            shop.checkout(cart)
        a, _ = start(tmp_path, "a2", dsn, group, max_poll_records=20)
        for cart in left:
            fired(store, cart, f"cart {cart} to fire")
        last = max(at(store.abandoned(c)[0]["occurred_at"]) for c in left)
        wait(lambda: store.passed(last + timedelta(seconds=8)), "the watermark to move on")
        assert [len(store.abandoned(c)) for c in left] == [1] * len(left)
        assert [store.abandoned(c) for c in bought] == [[]] * len(bought)
        # this test's carts only: an older cart of the shop that another test's shoppers filled
        # again (the demo's) is rightly abandoned twice
        duplicated = store.query("SELECT payload->'cart'->>'id' FROM outbox WHERE type = 'cart.abandoned'"
                                 " AND payload->'cart'->>'id' = ANY(%s) GROUP BY 1 HAVING count(*) > 1",
                                 left + bought)
        assert duplicated == []
        for p in (a, b):
            wait(lambda p=p: daemon.joined(p), what="the replicas to join")
            assert daemon.stop(p) == 0
