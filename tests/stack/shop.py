"""Writes to the demo shop's Postgres as its application would, for end-to-end tests."""

from __future__ import annotations

import uuid
from datetime import datetime

import psycopg

from tests import storedb

MUG, LAMP = 3, 7  # seeded products: 'Ceramic mug' 12.50, 'Desk lamp' 59.00


class Shop:
    """Writes to the demo shop as its application would."""

    def __init__(self) -> None:
        self.pg = psycopg.connect(storedb.server_dsn("shop"), autocommit=True)

    def user(self, consent: bool | None = True) -> int:
        email = f"trigger.{uuid.uuid4().hex[:10]}@example.com"
        with self.pg.transaction():
            uid = self.pg.execute("INSERT INTO users (email, first_name, city) VALUES (%s, 'Tess', 'Graz')"
                                  " RETURNING id", (email,)).fetchone()[0]
            if consent is not None:
                self.consent(uid, consent)
        return int(uid)

    def consent(self, uid: int, granted: bool) -> None:
        self.pg.execute("INSERT INTO consents (user_id, channel, purpose, granted) VALUES (%s, 'email',"
                        " 'marketing', %s) ON CONFLICT (user_id, channel, purpose) DO UPDATE SET"
                        " granted = excluded.granted, updated_at = now()", (uid, granted))

    def cart(self, uid: int, *items: tuple[int, int]) -> str:
        with self.pg.transaction():
            cart = self.pg.execute("INSERT INTO carts (user_id) VALUES (%s) RETURNING id",
                                   (uid,)).fetchone()[0]
            for product, quantity in items:
                self.add(cart, product, quantity)
        return str(cart)

    def add(self, cart: int | str, product: int, quantity: int) -> None:
        self.pg.execute("INSERT INTO cart_items (cart_id, product_id, quantity, unit_price)"
                        " SELECT %s, id, %s, price FROM products WHERE id = %s", (cart, quantity, product))
        self.pg.execute("UPDATE carts SET updated_at = now() WHERE id = %s", (cart,))

    def checkout(self, cart: str) -> None:
        with self.pg.transaction():
            self.pg.execute("INSERT INTO orders (user_id, cart_id, total) SELECT user_id, id, 1 FROM carts"
                            " WHERE id = %s", (cart,))
            self.pg.execute("UPDATE carts SET status = 'checked_out', updated_at = now() WHERE id = %s",
                            (cart,))

    def committed_now(self) -> datetime:
        return self.pg.execute("SELECT now()").fetchone()[0]
