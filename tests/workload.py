"""Realistic Debezium records for tests and benchmarks, without running a source database.

A simulated shop (Postgres connector, source `shop`) and CRM (MariaDB connector, source
`crm`) produce the envelopes Debezium 3.x writes with JSON converters and schemas
disabled: users sign up and change their details, carts fill and check out, orders are
placed, consents change, CRM contacts are typed in with messy emails. Positions and
commit times only grow within a source, as in a real log.
"""

from __future__ import annotations

import json
import random
import zlib
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from cdc_sync.adapters.kafka import RawRecord
from cdc_sync.core.events import RecordRef

PARTITIONS = 3
CITIES = ["Lyon", "Porto", "Leeds", "Graz", "Turku", "Malmö", "Gdańsk", "Cork"]
TIERS = ["none", "bronze", "silver", "gold", "platinum"]


@dataclass(frozen=True, slots=True)
class Record:
    topic: str
    partition: int
    key: bytes
    value: bytes | None


def _dumps(doc: Any) -> bytes:
    return json.dumps(doc, separators=(",", ":")).encode()


@dataclass
class _Source:
    """One source database's clock and log position."""

    name: str
    connector: str
    db: str
    topic_prefix: str
    now_us: int
    rng: random.Random
    lsn: int = 0x1000000
    last_commit: int = 0
    pos: int = 4
    tx: int = 700

    def source_block(self, schema: str, table: str) -> dict[str, Any]:
        self.now_us += self.rng.randint(200, 5000)
        ms = self.now_us // 1000
        base = {"version": "3.6.1.Final", "connector": self.connector, "name": self.name,
                "ts_ms": ms, "snapshot": "false", "db": self.db, "table": table}
        if self.connector == "postgresql":
            self.lsn += self.rng.randint(80, 400)
            self.tx += 1
            block = {**base, "ts_us": self.now_us, "ts_ns": self.now_us * 1000, "schema": schema,
                     "sequence": json.dumps([str(self.last_commit), str(self.lsn)]),
                     "txId": self.tx, "lsn": self.lsn, "xmin": None}
            self.last_commit = self.lsn + 40
            return block
        self.pos += self.rng.randint(200, 900)
        return {**base, "version": "3.5.0.Final", "server_id": 1, "gtid": None,
                "file": "mysql-bin.000001", "pos": self.pos, "row": 0, "thread": 9, "query": None}

    def record(self, schema: str, table: str, op: str, key: dict[str, Any],
               before: dict[str, Any] | None, after: dict[str, Any] | None) -> list[Record]:
        source = self.source_block(schema, table)
        topic = f"{self.topic_prefix}.{schema}.{table}"
        k = _dumps(key)
        partition = zlib.crc32(k) % PARTITIONS
        envelope = {"before": before, "after": after, "source": source, "transaction": None,
                    "op": op, "ts_ms": source["ts_ms"] + 3, "ts_us": None, "ts_ns": None}
        out = [Record(topic, partition, k, _dumps(envelope))]
        if op == "d":
            out.append(Record(topic, partition, k, None))  # the tombstone after a delete
        return out


class Rows(dict[int, dict[str, Any]]):
    """Rows by id that can also hand out a random id in constant time (the log is long)."""

    def __init__(self) -> None:
        super().__init__()
        self._ids: list[int] = []
        self._at: dict[int, int] = {}

    def __setitem__(self, key: int, row: dict[str, Any]) -> None:
        if key not in self:
            self._at[key] = len(self._ids)
            self._ids.append(key)
        super().__setitem__(key, row)

    def pop(self, key: int) -> dict[str, Any]:  # type: ignore[override]
        i, last = self._at.pop(key), self._ids.pop()
        if last != key:
            self._ids[i], self._at[last] = last, i
        return super().pop(key)

    def random_id(self, rng: random.Random) -> int:
        return self._ids[rng.randrange(len(self._ids))]


@dataclass
class Shop:
    """The simulated shop and CRM; `events()` yields records in each source's log order."""

    seed: int
    people: int
    topic_prefix: str = ""
    delete_rate: float = 0.01
    rng: random.Random = field(init=False)
    shop: _Source = field(init=False)
    crm: _Source = field(init=False)

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)
        start = 1_790_000_000_000_000
        prefix = self.topic_prefix
        self.shop = _Source("shop", "postgresql", "shop", f"{prefix}shop", start, self.rng)
        self.crm = _Source("crm", "mariadb", "crm", f"{prefix}crm", start + 1000, self.rng)
        self.users = Rows()
        self.contacts = Rows()
        self.contact_of: dict[int, int] = {}  # person -> their CRM contact
        self.carts = Rows()  # open carts only: a checkout takes the cart out
        self.cart_of: dict[int, int] = {}  # user id -> open cart id
        self.items = Rows()
        self.next_id = {"cart": 1, "item": 1, "order": 1, "contact": 1}

    def email(self, person: int) -> str:
        return f"person{person}@example.com"

    # ---------------------------------------------------------------- actions

    def sign_up(self, person: int) -> list[Record]:
        row = {"id": person, "email": self.email(person), "first_name": f"First{person}",
               "last_name": f"Last{person % 97}", "phone": None,
               "city": self.rng.choice(CITIES), "country": "FR", "birth_date": 7000 + person % 9000,
               "created_at": "2026-11-01T10:00:00.000000Z", "updated_at": "2026-11-01T10:00:00.000000Z"}
        self.users[person] = row
        return self.shop.record("public", "users", "c", {"id": person}, None, row)

    def edit_user(self, person: int) -> list[Record]:
        before = self.users[person]
        after = dict(before, city=self.rng.choice(CITIES),
                     phone=f"+33 6 {self.rng.randrange(10**8):08d}")
        if self.rng.random() < 0.05:  # an email change moves the identifier
            after["email"] = f"person{person}.new{self.rng.randrange(100)}@example.com"
        self.users[person] = after
        return self.shop.record("public", "users", "u", {"id": person}, before, after)

    def delete_user(self, person: int) -> list[Record]:
        before = self.users.pop(person)
        return self.shop.record("public", "users", "d", {"id": person}, before, None)

    def crm_contact(self, person: int) -> list[Record]:
        if person in self.contact_of:  # the CRM keys contacts by email: one per person
            return []
        cid = self.next_id["contact"]
        self.next_id["contact"] += 1
        self.contact_of[person] = cid
        # The address the person uses now: a contact made with an address the shop user gave up
        # earlier is the one case whose merge depends on delivery order (docs/mapping.md).
        email = self.users[person]["email"]
        row = {"id": cid, "email": f" {email.title()} ", "phone": None,
               "loyalty_tier": "none", "loyalty_points": 0,
               "preferences": '{"language":"fr"}', "newsletter_opt_in": 1,
               "updated_at": "2026-11-01T10:00:00.000Z"}
        self.contacts[cid] = row
        return self.crm.record("crm", "contacts", "c", {"id": cid}, None, row)

    def crm_loyalty(self) -> list[Record]:
        cid = self.contacts.random_id(self.rng)
        before = self.contacts[cid]
        after = dict(before, loyalty_points=before["loyalty_points"] + self.rng.randint(5, 50),
                     loyalty_tier=self.rng.choice(TIERS))
        self.contacts[cid] = after
        return self.crm.record("crm", "contacts", "u", {"id": cid}, before, after)

    def add_to_cart(self, person: int) -> list[Record]:
        out: list[Record] = []
        cart = self.carts[self.cart_of[person]] if person in self.cart_of else None
        if cart is None:
            cid = self.next_id["cart"]
            self.next_id["cart"] += 1
            cart = {"id": cid, "user_id": person, "status": "open",
                    "created_at": "2026-11-02T09:00:00.000000Z", "updated_at": "2026-11-02T09:00:00.000000Z"}
            self.carts[cid] = cart
            self.cart_of[person] = cid
            out += self.shop.record("public", "carts", "c", {"id": cid}, None, cart)
        iid = self.next_id["item"]
        self.next_id["item"] += 1
        item = {"id": iid, "cart_id": cart["id"], "product_id": self.rng.randint(1, 8),
                "quantity": self.rng.randint(1, 3), "unit_price": "24.90",
                "added_at": "2026-11-02T09:01:00.000000Z"}
        self.items[iid] = item
        return out + self.shop.record("public", "cart_items", "c", {"id": iid}, None, item)

    def checkout(self) -> list[Record]:
        if not self.carts:
            return []
        cart = self.carts[self.carts.random_id(self.rng)]
        oid = self.next_id["order"]
        self.next_id["order"] += 1
        order = {"id": oid, "user_id": cart["user_id"], "cart_id": cart["id"], "status": "paid",
                 "total": f"{self.rng.randint(10, 300)}.90", "currency": "EUR",
                 "placed_at": "2026-11-02T09:05:00.000000Z"}
        after = dict(cart, status="checked_out")
        self.carts.pop(cart["id"])
        del self.cart_of[cart["user_id"]]
        return (self.shop.record("public", "orders", "c", {"id": oid}, None, order)
                + self.shop.record("public", "carts", "u", {"id": cart["id"]}, cart, after))

    def remove_item(self) -> list[Record]:
        iid = self.items.random_id(self.rng)
        before = self.items.pop(iid)
        return self.shop.record("public", "cart_items", "d", {"id": iid}, before, None)

    def consent(self, person: int) -> list[Record]:
        row = {"id": person, "user_id": person, "channel": "email", "purpose": "marketing",
               "granted": self.rng.random() < 0.7, "updated_at": "2026-11-01T10:00:00.000000Z"}
        return self.shop.record("public", "consents", "u" if self.rng.random() < 0.5 else "c",
                                {"id": person}, None, row)

    def products(self) -> list[Record]:
        row = {"id": 1, "sku": "TEE-BLK-M", "name": "Organic tee", "category": "apparel",
               "price": "24.90", "currency": "EUR"}
        return self.shop.record("public", "products", "u", {"id": 1}, row, row)

    # ---------------------------------------------------------------- the log

    def step(self) -> list[Record]:
        """One shopper action, chosen with realistic weights."""
        r = self.rng.random()
        if not self.users or r < 0.08:
            person = len(self.users) + len(self.contacts) + self.rng.randrange(self.people)
            person = person % self.people + 1
            if person in self.users:
                return self.edit_user(person)
            out = self.sign_up(person)
            return out + (self.crm_contact(person) if self.rng.random() < 0.5 else [])
        person = self.users.random_id(self.rng)
        if r < 0.20:
            return self.edit_user(person)
        if r < 0.28 and self.contacts:
            return self.crm_loyalty()
        if r < 0.60:
            return self.add_to_cart(person)
        if r < 0.72:
            return self.checkout()
        if r < 0.80 and self.items:
            return self.remove_item()
        if r < 0.92:
            return self.consent(person)
        if r < 0.92 + self.delete_rate and len(self.users) > 3:
            return self.delete_user(person)
        return self.products()

    def events(self, count: int, heartbeat_every: int = 0) -> Iterator[Record]:
        """At least `count` records (an action may write a few), in source log order; with
        `heartbeat_every`, each source also writes its heartbeat table that often, its clock
        first brought level with the other's (as both follow the wall clock)."""
        made, beat = 0, heartbeat_every
        while made < count:
            for rec in self.step():
                made += 1
                yield rec
            if heartbeat_every and made >= beat:
                beat += heartbeat_every
                yield from self.heartbeats()

    def heartbeats(self) -> list[Record]:
        """One write of each source's heartbeat table (Debezium's heartbeat.action.query)."""
        now = max(self.shop.now_us, self.crm.now_us)
        out = []
        for source, schema in ((self.shop, "public"), (self.crm, "crm")):
            source.now_us = now
            out += source.record(schema, "cdc_heartbeat", "u", {"id": 1}, {"id": 1, "ts": now // 1000},
                                 {"id": 1, "ts": now // 1000})
        return out


def with_offsets(records: list[Record]) -> list[RawRecord]:
    """Records as the consumer hands them on: each numbered by its offset in its partition."""
    offsets: dict[tuple[str, int], int] = defaultdict(int)
    out = []
    for r in records:
        tp = (r.topic, r.partition)
        out.append(RawRecord(RecordRef(r.topic, r.partition, offsets[tp]), r.key, r.value))
        offsets[tp] += 1
    return out
