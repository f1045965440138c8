"""Aggregates kept from entities: filters compare JSON values, numbers compare as numbers."""

from __future__ import annotations

import psycopg
import pytest

from cdc_sync.adapters import store as store_mod
from cdc_sync.services.preparer import prepare
from tests import storedb
from tests.workload import Shop, with_offsets

pytestmark = pytest.mark.stack

AGGREGATES = {
    "order_count": {"entity": "order", "function": "count", "where": {"status": ["placed", "paid"]}},
    "lifetime_value": {"entity": "order", "function": "sum", "field": "total",
                       "where": {"status": ["placed", "paid"]}},
    "largest_order": {"entity": "order", "function": "max", "field": "total"},
    "last_order_at": {"entity": "order", "function": "max", "field": "placed_at"},
}


def order(shop: Shop, oid: int, status: str, total: str, placed_at: str, user: int = 1):
    row = {"id": oid, "user_id": user, "cart_id": None, "status": status, "total": total,
           "currency": "EUR", "placed_at": placed_at}
    return shop.shop.record("public", "orders", "c", {"id": oid}, None, row)


def aggregates_of(records) -> dict:
    """The one live profile's aggregates after applying `records` to a fresh store."""
    with storedb.fresh_database() as dsn:
        cfg = storedb.demo_config(store={"dsn": dsn}, mapping={"aggregates": AGGREGATES})
        store = store_mod.ProfileStore(store_mod.connect(dsn), cfg.mapping.aggregates)
        store.apply(*prepare(with_offsets(records), cfg.mapping))
        store.conn.close()
        with psycopg.connect(dsn) as conn:
            (aggregates,) = conn.execute(
                "SELECT aggregates FROM profiles WHERE merged_into IS NULL").fetchone()
    return aggregates


def test_aggregates_filter_by_status_and_compare_totals_as_numbers():
    shop = Shop(seed=1, people=5)
    records = (shop.sign_up(1)
               + order(shop, 1, "paid", "9.99", "2026-11-02T09:05:00.000000Z")
               + order(shop, 2, "paid", "10.50", "2026-11-03T10:00:00.000000Z")
               + order(shop, 3, "cancelled", "500.00", "2026-11-01T08:00:00.000000Z"))
    aggregates = aggregates_of(records)
    assert aggregates["order_count"] == 2
    assert aggregates["lifetime_value"] == "20.49"  # money stays exact: decimal text, not a float
    assert aggregates["largest_order"] == "500.00"  # compared as numbers: "500.00" > "10.50" > "9.99"
    assert aggregates["last_order_at"] == "2026-11-03T10:00:00.000000Z"


def test_a_changed_aggregate_config_is_recomputed_for_every_profile_once():
    shop = Shop(seed=1, people=5)
    records = shop.sign_up(1) + order(shop, 1, "paid", "9.99", "2026-11-02T09:05:00.000000Z")
    counted = {"order_count": AGGREGATES["order_count"]}
    with storedb.fresh_database() as dsn:
        before = storedb.demo_config(store={"dsn": dsn}, mapping={"aggregates": counted})
        store = store_mod.ProfileStore(store_mod.connect(dsn), before.mapping.aggregates)
        assert store.refresh_aggregates_if_changed() == 0  # a new store: nothing to recompute
        store.apply(*prepare(with_offsets(records), before.mapping))
        assert store.refresh_aggregates_if_changed() is None  # same config: nothing to do
        store.conn.close()

        after = storedb.demo_config(store={"dsn": dsn}, mapping={"aggregates": AGGREGATES})
        store = store_mod.ProfileStore(store_mod.connect(dsn), after.mapping.aggregates)
        assert store.refresh_aggregates_if_changed() == 1
        assert store.refresh_aggregates_if_changed() is None
        store.conn.close()
        with psycopg.connect(dsn) as conn:
            (aggregates,) = conn.execute("SELECT aggregates FROM profiles").fetchone()
    assert aggregates["largest_order"] == "9.99"
    assert aggregates["order_count"] == 1


def test_a_sum_of_integers_stays_a_number():
    shop = Shop(seed=1, people=5)
    rows = [{"id": i, "user_id": 1, "cart_id": None, "status": "paid", "total": i * 10,
             "currency": "EUR", "placed_at": "2026-11-02T09:05:00.000000Z"} for i in (1, 2)]
    records = shop.sign_up(1)
    for row in rows:
        records += shop.shop.record("public", "orders", "c", {"id": row["id"]}, None, row)
    aggregates = aggregates_of(records)
    assert aggregates["lifetime_value"] == 30


def test_the_start_up_recompute_works_in_chunks_and_covers_every_profile():
    shop = Shop(seed=1, people=50)
    records = []
    for person in range(1, 8):
        records += shop.sign_up(person)
        records += order(shop, person, "paid", "1.10", "2026-11-02T09:05:00.000000Z", person)
    with storedb.fresh_database() as dsn:
        before = storedb.demo_config(store={"dsn": dsn}, mapping={"aggregates": {}})
        store = store_mod.ProfileStore(store_mod.connect(dsn), before.mapping.aggregates)
        store.apply(*prepare(with_offsets(records), before.mapping))
        store.conn.close()
        after = storedb.demo_config(store={"dsn": dsn}, mapping={"aggregates": AGGREGATES})
        store = store_mod.ProfileStore(store_mod.connect(dsn), after.mapping.aggregates)
        store.recompute_chunk = 3  # 7 profiles: three chunks
        assert store.refresh_aggregates_if_changed() == 7
        store.conn.close()
        with psycopg.connect(dsn) as conn:
            values = [r[0] for r in conn.execute("SELECT aggregates->>'lifetime_value' FROM profiles")]
    assert values == ["1.10"] * 7
