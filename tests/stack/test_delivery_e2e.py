"""From a shopper's cart in the shop's Postgres to a verified webhook at the local receiver:
Debezium, `cdc-sync run` (sync and dispatch in one process), the outbox, the dispatcher."""

from __future__ import annotations

import json
import uuid

import httpx
import psycopg
import pytest

from tests import storedb
from tests.core.test_webhooks import spec_signature_ok
from tests.stack.delivery import SECRET, Sink, cli, deliveries, destination
from tests.stack.shop import LAMP, MUG
from tests.stack.test_api import parse
from tests.stack.test_triggers_e2e import RULES, caught_up, fired, wait

pytestmark = pytest.mark.stack


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """The daemon with two destinations on the receiver (`recheck` starts disabled), once it has
    caught up with the shop and delivered what the shop's history fired."""
    tmp = tmp_path_factory.mktemp("delivery-e2e")
    sink = Sink(tmp)
    port = 19900 + uuid.uuid4().int % 90
    try:
        with storedb.fresh_database() as dsn:
            with psycopg.connect(dsn, autocommit=True) as conn:
                conn.execute("INSERT INTO destinations VALUES ('recheck', now(), 'held by the test')")
            config = storedb.write_config(
                tmp / "daemon.yaml", store={"dsn": dsn}, triggers=RULES,
                kafka={"group_id": f"delivery-{uuid.uuid4().hex[:8]}"}, metrics={"port": port},
                delivery={"destinations": {  # carts only: the history's profile updates are many
                    "esp": destination(f"{sink.url}/esp", types=["cart.abandoned"]),
                    "recheck": destination(f"{sink.url}/recheck", types=["cart.abandoned"])},
                          "poll_interval": "200ms"})
            with caught_up(tmp, dsn, config) as store:
                # recent history fires too (within each rule's max_age); its deliveries go first
                wait(lambda: not [d for d in deliveries(dsn, "esp") if d["status"] == "pending"],
                     "the history's deliveries to be sent", timeout=240)
                yield store, sink, f"http://127.0.0.1:{port}/metrics"
    finally:
        sink.close()


def cart_requests(sink, path, cart):
    return [r for r in sink.requests(path)
            if r["type"] == "cart.abandoned" and r["body"]["cart"]["id"] == cart]


def test_an_abandoned_cart_reaches_the_receiver_as_one_verified_cart_abandoned(shop, world):
    store, sink, metrics = world
    cart = shop.cart(shop.user(), (MUG, 2), (LAMP, 1))
    [payload] = fired(store, cart, "the cart to be abandoned", timeout=120)
    [request] = wait(lambda: cart_requests(sink, "/esp", cart), "the webhook", timeout=30)
    headers = {k: request[v] for k, v in (("webhook-id", "webhook_id"), ("webhook-timestamp", "timestamp"),
                                          ("webhook-signature", "signature"))}
    assert spec_signature_ok(SECRET, headers, request["raw"].encode())
    assert request["body"] == payload and request["webhook_id"] == payload["id"]
    assert request["body"]["cart"]["total"] == "84.00"
    # the latency from the trigger's event time, to its write and to its accepted send
    counted = parse(httpx.get(metrics).text)
    assert counted[("cdc_sync_event_to_trigger_seconds_count", (("type", "cart.abandoned"),))] >= 1
    assert counted[("cdc_sync_event_to_delivered_seconds_count",
                    (("destination", "esp"), ("type", "cart.abandoned")))] >= 1


def test_a_cart_checked_out_between_trigger_and_send_is_cancelled_and_says_why(shop, world):
    store, sink, _ = world
    cart = shop.cart(shop.user(), (LAMP, 1))
    [payload] = fired(store, cart, "the cart to be abandoned", timeout=120)
    shop.checkout(cart)
    wait(lambda: store.query("SELECT 1 FROM trigger_orders WHERE cart_id = %s", cart),
         "the daemon to apply the checkout")
    assert cli(store.config, "destinations", "enable", "recheck").returncode == 0
    wait(lambda: any(d["id"] == payload["id"] and d["status"] == "cancelled"
                     for d in deliveries(store.dsn, "recheck")), "the send to be cancelled", timeout=120)
    [delivery] = [d for d in deliveries(store.dsn, "recheck") if d["id"] == payload["id"]]
    assert delivery["last_error"] == "checked_out" and delivery["attempts"] == 1
    assert cart_requests(sink, "/recheck", cart) == []
    listed = [json.loads(line) for line in
              cli(store.config, "outbox", "list", "--status", "cancelled").stdout.splitlines()]
    [doc] = [x for x in listed if x["id"] == payload["id"]]
    assert {"destination": "recheck", "status": "cancelled", "last_error": "checked_out"}.items() <= \
        [d for d in doc["deliveries"] if d["destination"] == "recheck"][0].items()
