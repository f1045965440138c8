"""Rows written in the demo databases arrive on Kafka as Debezium change events."""

from __future__ import annotations

import uuid

import pytest

pytestmark = pytest.mark.stack


def test_postgres_insert_update_delete_arrive_in_order_with_tombstone(shop_db, topic_reader):
    reader = topic_reader("shop.public.users")
    email = f"t-{uuid.uuid4().hex[:10]}@example.com"
    uid = shop_db.execute("INSERT INTO users (email, first_name) VALUES (%s, 'Ann') RETURNING id",
                          (email,)).fetchone()[0]
    shop_db.execute("UPDATE users SET first_name = 'Anna' WHERE id = %s", (uid,))
    shop_db.execute("DELETE FROM users WHERE id = %s", (uid,))

    def mine(records):
        return [(k, v) for k, v in records if k == {"id": uid}]

    records = mine(reader.read_until(lambda rs: len(mine(rs)) >= 4))
    ops = [v["op"] if v else None for _, v in records]
    assert ops == ["c", "u", "d", None]
    create, update, delete, _ = (v for _, v in records)
    assert create["after"]["email"] == email and create["before"] is None
    assert update["before"]["first_name"] == "Ann" and update["after"]["first_name"] == "Anna"
    assert delete["before"]["first_name"] == "Anna" and delete["after"] is None
    assert create["source"]["connector"] == "postgresql" and "lsn" in create["source"]


def test_postgres_decimal_arrives_as_string(shop_db, topic_reader):
    reader = topic_reader("shop.public.products")
    sku = f"T-{uuid.uuid4().hex[:8]}"
    shop_db.execute("INSERT INTO products (sku, name, category, price) VALUES (%s, 'x', 'test', 12.34)",
                    (sku,))
    records = reader.read_until(lambda rs: any(v and v["after"]["sku"] == sku for _, v in rs))
    (value,) = [v for _, v in records if v and v["after"]["sku"] == sku]
    assert value["after"]["price"] == "12.34"


def test_mariadb_insert_and_update_arrive_with_binlog_position(crm_db, topic_reader):
    reader = topic_reader("crm.crm.contacts")
    email = f" T-{uuid.uuid4().hex[:10]}@Example.COM "
    with crm_db.cursor() as cur:
        cur.execute("INSERT INTO contacts (email, loyalty_tier) VALUES (%s, 'silver')", (email,))
        cid = cur.lastrowid
        cur.execute("UPDATE contacts SET loyalty_tier = 'gold' WHERE id = %s", (cid,))

    def mine(records):
        return [v for k, v in records if k == {"id": cid}]

    values = mine(reader.read_until(lambda rs: len(mine(rs)) >= 2))
    assert [v["op"] for v in values] == ["c", "u"]
    assert values[0]["after"]["email"] == email  # verbatim: normalising is the mapping's job
    assert values[1]["after"]["loyalty_tier"] == "gold"
    source = values[1]["source"]
    assert source["connector"] == "mariadb" and source["file"] and source["pos"] > 0
