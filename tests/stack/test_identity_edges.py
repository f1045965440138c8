"""Edges of identity and history on the real store, each found in review: chained merges in
one batch, email reuse seen by a third table, a parent moved to nobody, a value whose change
time is unknown, restore after a fallback."""

from __future__ import annotations

from datetime import timedelta

import psycopg
import pytest

from cdc_sync.adapters import store as store_mod
from cdc_sync.core.mapping import AggregateSpec
from cdc_sync.core.mutations import EntityChange, Reference, commit_time
from tests import storedb
from tests.core.test_reconcile import CARTS, CONTACTS, CUSTOMERS, ITEMS, USERS, change, version

pytestmark = pytest.mark.stack


@pytest.fixture
def store():
    with storedb.fresh_database() as dsn:
        s = store_mod.ProfileStore(store_mod.connect(dsn), {
            "item_count": AggregateSpec.model_validate({"entity": "cart_item", "function": "count"})})
        s.dsn = dsn  # type: ignore[attr-defined]
        try:
            yield s
        finally:
            s.conn.close()


def rows(store, query: str) -> list[tuple]:
    with psycopg.connect(store.dsn) as conn:
        return conn.execute(query).fetchall()


def test_merges_chained_in_one_batch_leave_nothing_on_a_merged_away_profile(store):
    store.apply([change(USERS, 3, 1, ids=[("user_id", "3"), ("email", "c")])], [])
    store.apply([change(USERS, 2, 2, ids=[("user_id", "2"), ("email", "b")])], [])
    store.apply([change(USERS, 1, 3, ids=[("user_id", "1"), ("email", "a")], attrs={"city": "Lyon"})], [])
    store.apply([change(CONTACTS, 10, 10, ids=[("email", "a"), ("user_id", "2"), ("crm_contact_id", "10")]),
                 change(CUSTOMERS, 20, 11, ids=[("crm_contact_id", "10"), ("email", "c")])], [])
    store.apply([change(USERS, 1, 12, ids=[("user_id", "1"), ("email", "a")], attrs={"city": "Graz"},
                        before={"city": "Lyon"})], [])
    live = {pid for (pid,) in rows(store, "SELECT id FROM profiles WHERE merged_into IS NULL")}
    assert len(live) == 1
    for table in ("identifiers", "source_rows", "profile_fields"):
        assert {pid for (pid,) in rows(store, f"SELECT DISTINCT profile_id FROM {table}")} == live, table
    assert rows(store, "SELECT value FROM profile_fields WHERE name = 'city'") == [("Graz",)]


def test_a_crm_contact_claiming_a_reused_email_joins_its_new_holder_only(store):
    store.apply([change(USERS, 1, 1, ids=[("user_id", "1"), ("email", "e")], attrs={"city": "Lyon"})], [])
    store.apply([change(USERS, 2, 4, ids=[("user_id", "2"), ("email", "e")], attrs={"city": "Graz"})], [])
    store.apply([change(CONTACTS, 7, 5, ids=[("email", "e"), ("crm_contact_id", "7")],
                        attrs={"phone": "+9"})], [])
    store.apply([change(USERS, 1, 3, ids=[("user_id", "1"), ("email", "f")], attrs={"city": "Lyon"})], [])
    people = dict(rows(store, "SELECT value, profile_id FROM identifiers WHERE type <> 'email'"))
    assert people["1"] != people["2"] == people["7"]
    assert rows(store, "SELECT count(*) FROM merges") == [(0,)] or people["1"] not in {
        s for (s,) in rows(store, "SELECT survivor FROM merges")}


def test_a_cart_moved_to_nobody_takes_its_items_along(store):
    store.apply([change(USERS, 1, 1, ids=[("user_id", "1")]),
                 change(CARTS, 10, 2, owner=Reference("identifier", "user_id", "1"),
                        entity=EntityChange("cart", "10", {"status": "open"}, True), tracked=False),
                 change(ITEMS, 100, 3, owner=Reference("entity", "cart", "10"),
                        entity=EntityChange("cart_item", "100", {"qty": 1}), tracked=False)], [])
    assert rows(store, "SELECT aggregates->>'item_count' FROM profiles") == [("1",)]
    store.apply([change(CARTS, 10, 4, owner=None, entity=EntityChange("cart", "10", {"status": "open"}, True),
                        tracked=False)], [])
    assert rows(store, "SELECT profile_id FROM entities ORDER BY kind") == [(None,), (None,)]
    assert rows(store, "SELECT aggregates->>'item_count' FROM profiles") == [("0",)]


def test_an_unchanged_value_of_a_row_first_seen_in_an_update_is_kept_with_its_history(store):
    store.apply([change(USERS, 1, 1, ids=[("user_id", "1")], attrs={"phone": "X", "city": "Lyon"})], [])
    # The X -> Y update was lost (dead-lettered, say): the store never saw phone Y.
    for n, (city, before) in enumerate((("Graz", "Lyon"), ("Nice", "Graz")), start=3):
        store.apply([change(USERS, 1, n, ids=[("user_id", "1")], attrs={"phone": "Y", "city": city},
                            before={"phone": "Y", "city": before})], [])
    assert dict(rows(store, "SELECT name, value FROM profile_fields")) == {"phone": "Y", "city": "Nice"}
    assert rows(store, "SELECT count(*) FROM field_history WHERE commit_at IS NULL") == [(0,)]


def test_restore_after_a_fallback_keeps_the_value_that_remained(store):
    store.apply([change(USERS, 1, 1, ids=[("user_id", "1"), ("email", "e")], attrs={"phone": "X"})], [])
    store.apply([change(CONTACTS, 7, 2, ids=[("email", "e"), ("crm_contact_id", "7")],
                        attrs={"phone": "Y"})], [])
    store.apply([change(CONTACTS, 7, 3, deleted=True)], [])  # the phone falls back to the shop's
    (pid,) = rows(store, "SELECT id FROM profiles WHERE merged_into IS NULL")[0]
    assert store.restore(pid, commit_time(version(3, CONTACTS).key()) + timedelta(seconds=1)) == []
    assert rows(store, "SELECT value FROM profile_fields WHERE name = 'phone'") == [("X",)]


def test_a_merge_moves_the_merged_profiles_pending_deliveries_to_its_survivor(store):
    from tests.stack.delivery import queue, update

    store.apply([change(USERS, 1, 1, ids=[("user_id", "1"), ("email", "a")])], [])
    store.apply([change(USERS, 2, 2, ids=[("user_id", "2"), ("email", "b")])], [])
    ids = dict(rows(store, "SELECT value, profile_id FROM identifiers WHERE type = 'user_id'"))
    queue(store.dsn, [update(ids["1"], 1), update(ids["2"], 2)], {"profile.updated": ["esp"]})
    store.apply([change(CONTACTS, 10, 10, ids=[("email", "a"), ("email", "b"), ("crm_contact_id", "10")])],
                [])
    [(survivor,)] = rows(store, "SELECT id FROM profiles WHERE merged_into IS NULL")
    # one queue again: the older message (its seq) still leaves first
    assert rows(store, "SELECT profile_id FROM deliveries ORDER BY outbox_seq") == [(survivor,), (survivor,)]
