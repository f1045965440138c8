"""Simulated shoppers for the demo: sign-ups, carts filled and abandoned, checkouts, profile
edits, consent changes, CRM edits.

Writes real rows into the demo `shop` (Postgres) and `crm` (MariaDB) databases,
so that Debezium streams real changes. Names and emails are made up.
"""

from __future__ import annotations

import argparse
import os
import random
import time
from collections.abc import Callable
from dataclasses import dataclass

import psycopg
import pymysql

FIRST = ["Ada", "Ben", "Chloe", "Dev", "Eva", "Finn", "Gita", "Hugo", "Iris", "Jonas", "Kai", "Lea"]
LAST = ["Novak", "Okafor", "Petit", "Quinn", "Rossi", "Sato", "Toivonen", "Ueda", "Vargas", "Weber"]
CITIES = [("Lyon", "FR"), ("Porto", "PT"), ("Leeds", "GB"), ("Graz", "AT"), ("Turku", "FI")]
TIERS = ["none", "bronze", "silver", "gold", "platinum"]


@dataclass
class Shop:
    pg: psycopg.Connection[tuple[object, ...]]
    crm: pymysql.connections.Connection
    rng: random.Random


def sign_up(shop: Shop) -> str:
    first, last = shop.rng.choice(FIRST), shop.rng.choice(LAST)
    email = f"{first}.{last}.{shop.rng.randrange(10**6)}@example.com".lower()
    city, country = shop.rng.choice(CITIES)
    with shop.pg.transaction():
        uid = shop.pg.execute(
            "INSERT INTO users (email, first_name, last_name, city, country) "
            "VALUES (%s, %s, %s, %s, %s) RETURNING id", (email, first, last, city, country),
        ).fetchone()[0]  # type: ignore[index]
        shop.pg.execute("INSERT INTO consents (user_id, channel, purpose, granted) "
                        "VALUES (%s, 'email', 'marketing', %s)", (uid, shop.rng.random() < 0.7))
    if shop.rng.random() < 0.5:  # the CRM team types emails by hand
        with shop.crm.cursor() as cur:
            cur.execute("INSERT INTO contacts (email, loyalty_tier, newsletter_opt_in) "
                        "VALUES (%s, 'none', 1)", (f" {email.title()} ",))
    return "sign-up"


def random_user(shop: Shop) -> int:
    return int(shop.pg.execute("SELECT id FROM users ORDER BY random() LIMIT 1").fetchone()[0])  # type: ignore[index]


def add_to_cart(shop: Shop) -> str:
    uid = random_user(shop)
    with shop.pg.transaction():
        row = shop.pg.execute("SELECT id FROM carts WHERE user_id = %s AND status = 'open'",
                              (uid,)).fetchone()
        cart = row[0] if row else shop.pg.execute(
            "INSERT INTO carts (user_id) VALUES (%s) RETURNING id", (uid,)).fetchone()[0]  # type: ignore[index]
        shop.pg.execute(
            "INSERT INTO cart_items (cart_id, product_id, quantity, unit_price) "
            "SELECT %s, id, %s, price FROM products ORDER BY random() LIMIT 1",
            (cart, shop.rng.randint(1, 3)))
        shop.pg.execute("UPDATE carts SET updated_at = now() WHERE id = %s", (cart,))
    return "add-to-cart"


def open_cart(shop: Shop) -> tuple[int, int] | None:
    """(cart id, user id) of a random open cart, if there is one."""
    row = shop.pg.execute("SELECT id, user_id FROM carts WHERE status = 'open' "
                          "ORDER BY random() LIMIT 1").fetchone()
    return None if row is None else (row[0], row[1])


def checkout(shop: Shop) -> str:
    with shop.pg.transaction():
        row = open_cart(shop)
        if row is None:
            return "checkout (no open cart)"
        cart, uid = row
        order = shop.pg.execute(
            "INSERT INTO orders (user_id, cart_id, total) SELECT %s, %s, "
            "coalesce(sum(quantity * unit_price), 0) FROM cart_items WHERE cart_id = %s "
            "RETURNING id", (uid, cart, cart)).fetchone()[0]  # type: ignore[index]
        shop.pg.execute("INSERT INTO order_items (order_id, product_id, quantity, unit_price) "
                        "SELECT %s, product_id, quantity, unit_price FROM cart_items "
                        "WHERE cart_id = %s", (order, cart))
        shop.pg.execute("UPDATE carts SET status = 'checked_out', updated_at = now() "
                        "WHERE id = %s", (cart,))
    return "checkout"


def empty_cart(shop: Shop) -> str:
    with shop.pg.transaction():
        row = open_cart(shop)
        if row is None:
            return "empty-cart (no open cart)"
        shop.pg.execute("DELETE FROM cart_items WHERE cart_id = %s", (row[0],))
        shop.pg.execute("UPDATE carts SET status = 'emptied', updated_at = now() WHERE id = %s",
                        (row[0],))
    return "empty-cart"


def edit_profile(shop: Shop) -> str:
    city, country = shop.rng.choice(CITIES)
    shop.pg.execute("UPDATE users SET city = %s, country = %s, updated_at = now() WHERE id = %s",
                    (city, country, random_user(shop)))
    return "edit-profile"


def change_consent(shop: Shop) -> str:
    granted = shop.rng.random() < 0.6
    shop.pg.execute("INSERT INTO consents (user_id, channel, purpose, granted) VALUES (%s, 'email',"
                    " 'marketing', %s) ON CONFLICT (user_id, channel, purpose) DO UPDATE SET"
                    " granted = excluded.granted, updated_at = now()", (random_user(shop), granted))
    return "consent-granted" if granted else "consent-withdrawn"


def crm_loyalty(shop: Shop) -> str:
    with shop.crm.cursor() as cur:
        cur.execute("UPDATE contacts SET loyalty_points = loyalty_points + %s, loyalty_tier = %s "
                    "ORDER BY RAND() LIMIT 1", (shop.rng.randint(10, 200), shop.rng.choice(TIERS)))
    return "crm-loyalty"


ACTIONS: list[tuple[float, Callable[[Shop], str]]] = [
    (0.15, sign_up), (0.35, add_to_cart), (0.15, checkout), (0.05, empty_cart),
    (0.12, edit_profile), (0.12, crm_loyalty), (0.06, change_consent),
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rate", type=float, default=2.0, help="actions per second")
    parser.add_argument("--duration", type=float, default=0, help="seconds; 0 runs until stopped")
    parser.add_argument("--seed", type=int, default=None)
    args = parser.parse_args()
    env = os.environ.get
    pg = psycopg.connect(f"host={env('SHOP_DB_HOST', '127.0.0.1')} port={env('SHOP_DB_PORT', '5432')} "
                         f"dbname=shop user={env('CDC_DB_USER', 'cdc')} "
                         f"password={env('CDC_DB_PASSWORD', 'cdc')}", autocommit=True)
    crm = pymysql.connect(host=env("CRM_DB_HOST", "127.0.0.1"), port=int(env("CRM_DB_PORT", "3306")),
                          user=env("CDC_DB_USER", "cdc"), password=env("CDC_DB_PASSWORD", "cdc"),
                          database="crm", autocommit=True)
    shop = Shop(pg, crm, random.Random(args.seed))
    weights = [w for w, _ in ACTIONS]
    deadline = time.monotonic() + args.duration if args.duration else None
    try:
        while deadline is None or time.monotonic() < deadline:
            action = shop.rng.choices([a for _, a in ACTIONS], weights)[0]
            print(f"shopper: {action(shop)}", flush=True)
            time.sleep(1 / args.rate)
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
