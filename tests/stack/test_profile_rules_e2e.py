"""End to end on the demo schema: the profile a shop expects once two sources share a field
or a row changes its owner. Real Postgres and MariaDB writes, Debezium, Kafka, the daemon."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg
import pytest

from cdc_sync.services import inspection
from tests.stack import daemon
from tests.stack.conftest import attr, profile

pytestmark = pytest.mark.stack


def unique_email(tag: str) -> str:
    return f"{tag}.{uuid.uuid4().hex[:10]}@example.com"


def merges_of(cfg, *profiles: int) -> int:
    with psycopg.connect(cfg.store.dsn) as conn:
        return conn.execute("SELECT count(*) FROM merges WHERE survivor = ANY(%s) OR merged = ANY(%s)",
                            (list(profiles), list(profiles))).fetchone()[0]


def test_a_shop_edit_of_the_city_keeps_the_phone_the_crm_changed(running, shop_db, crm_db):
    cfg, _, _ = running
    email = unique_email("phone")
    uid = shop_db.execute("INSERT INTO users (email, first_name, phone, city) VALUES"
                          " (%s, 'Ada', '+33 6 11 11 11 11', 'Lyon') RETURNING id", (email,)).fetchone()[0]
    with crm_db.cursor() as cur:
        cur.execute("INSERT INTO contacts (email, phone) VALUES (%s, '+33 6 11 11 11 11')", (email,))
        cid = cur.lastrowid
    daemon.wait_for(lambda: (p := profile(cfg, email)) and any(
        i["type"] == "crm_contact_id" for i in p["identifiers"]), what="one profile from both sources")

    with crm_db.cursor() as cur:
        cur.execute("UPDATE contacts SET phone = '+33 6 22 22 22 22' WHERE id = %s", (cid,))
    daemon.wait_for(lambda: attr(profile(cfg, email), "phone") == "+33622222222", what="the CRM's phone")
    shop_db.execute("UPDATE users SET city = 'Porto' WHERE id = %s", (uid,))
    doc = daemon.wait_for(lambda: (p := profile(cfg, email)) and attr(p, "city") == "Porto" and p,
                          what="the shop's city")
    assert attr(doc, "phone") == "+33622222222"  # the shop restated its old phone; no real change


def test_a_shop_user_without_a_phone_does_not_erase_the_crm_phone(running, shop_db, crm_db):
    cfg, _, _ = running
    email = unique_email("nophone")
    with crm_db.cursor() as cur:
        cur.execute("INSERT INTO contacts (email, phone) VALUES (%s, '+49 30 7777777')", (email,))
    daemon.wait_for(lambda: attr(profile(cfg, email), "phone") == "+49307777777", what="the CRM's phone")
    shop_db.execute("INSERT INTO users (email, first_name) VALUES (%s, 'Noor')", (email,))
    doc = daemon.wait_for(lambda: (p := profile(cfg, email)) and attr(p, "first_name") == "Noor" and p,
                          what="the shop user on the same profile")
    assert attr(doc, "phone") == "+49307777777"


def test_an_order_moved_to_another_user_takes_its_items_and_aggregates_and_merges_nobody(
        running, shop_db):
    cfg, _, _ = running
    first, second = unique_email("buyer"), unique_email("payer")
    a = shop_db.execute("INSERT INTO users (email) VALUES (%s) RETURNING id", (first,)).fetchone()[0]
    b = shop_db.execute("INSERT INTO users (email) VALUES (%s) RETURNING id", (second,)).fetchone()[0]
    oid = shop_db.execute("INSERT INTO orders (user_id, status, total) VALUES (%s, 'paid', 127.55)"
                          " RETURNING id", (a,)).fetchone()[0]
    shop_db.execute("INSERT INTO order_items (order_id, product_id, quantity, unit_price)"
                    " VALUES (%s, 1, 1, 127.55)", (oid,))
    daemon.wait_for(lambda: (p := profile(cfg, first)) and p["aggregates"].get("order_count") == 1
                    and p["entities"].get("order", [{}])[0].get("order_item"), what="the first owner's order")
    assert profile(cfg, first)["aggregates"]["lifetime_value"] == "127.55"  # exact decimal text

    shop_db.execute("UPDATE orders SET user_id = %s WHERE id = %s", (b, oid))
    doc = daemon.wait_for(lambda: (p := profile(cfg, second)) and p["aggregates"].get("order_count") == 1
                          and p, what="the order on its new owner")
    (order,) = doc["entities"]["order"]
    assert order["id"] == str(oid) and len(order["order_item"]) == 1  # the items moved with it
    assert doc["aggregates"]["lifetime_value"] == "127.55"
    old = profile(cfg, first)
    assert old["aggregates"]["order_count"] == 0 and "order" not in old["entities"]
    assert old["id"] != doc["id"] and merges_of(cfg, old["id"], doc["id"]) == 0


def cart_items(doc) -> list[dict]:
    carts = doc["entities"].get("cart", [])
    return carts[0].get("cart_item", []) if carts else []


@contextmanager
def replica_identity_default(shop_db, *tables: str) -> Iterator[None]:
    """Postgres sends no before image on update and only the key on delete."""
    for table in tables:
        shop_db.execute(f"ALTER TABLE {table} REPLICA IDENTITY DEFAULT")
    try:
        yield
    finally:
        for table in tables:
            shop_db.execute(f"ALTER TABLE {table} REPLICA IDENTITY FULL")


def test_tables_with_replica_identity_default_still_apply_updates_and_deletes(running, shop_db):
    cfg, _, _ = running
    email = unique_email("default")
    uid = shop_db.execute("INSERT INTO users (email) VALUES (%s) RETURNING id", (email,)).fetchone()[0]
    with replica_identity_default(shop_db, "consents", "cart_items"):
        consent = shop_db.execute("INSERT INTO consents (user_id, channel, purpose, granted)"
                                  " VALUES (%s, 'sms', 'marketing', true) RETURNING id", (uid,)).fetchone()[0]
        cart = shop_db.execute("INSERT INTO carts (user_id) VALUES (%s) RETURNING id", (uid,)).fetchone()[0]
        keep, drop = (shop_db.execute("INSERT INTO cart_items (cart_id, product_id, quantity, unit_price)"
                                      " VALUES (%s, %s, 1, 9.90) RETURNING id", (cart, product)).fetchone()[0]
                      for product in (1, 2))
        daemon.wait_for(lambda: (p := profile(cfg, email)) and attr(p, "consent_sms_marketing") is True
                        and len(cart_items(p)) == 2, what="the consent and both cart items")

        shop_db.execute("UPDATE consents SET granted = false WHERE id = %s", (consent,))
        shop_db.execute("UPDATE cart_items SET quantity = 4 WHERE id = %s", (keep,))
        shop_db.execute("DELETE FROM cart_items WHERE id = %s", (drop,))
        doc = daemon.wait_for(
            lambda: (p := profile(cfg, email)) and attr(p, "consent_sms_marketing") is False
            and [i["quantity"] for i in cart_items(p)] == [4] and p,
            what="the update and delete without before images")
        assert doc["entities"]["cart"][0]["cart_item"][0]["id"] == str(keep)

        shop_db.execute("DELETE FROM consents WHERE id = %s", (consent,))
        doc = daemon.wait_for(lambda: (p := profile(cfg, email))
                              and p["attributes"]["consent_sms_marketing"]["deleted"] and p,
                              what="the consent's delete with a key-only before image")
    assert inspection.show(cfg, None, ("user_id", str(uid)))["id"] == doc["id"]
