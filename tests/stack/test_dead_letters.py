"""Dead letters: kept with their reason, one row per record, and replayed after a fix through
`cdc-sync dlq replay` (real store, the command as a user runs it)."""

from __future__ import annotations

import json
import subprocess
import sys

import psycopg
import pytest
import yaml

from cdc_sync.adapters import store as store_mod
from cdc_sync.core.events import RecordRef
from cdc_sync.services.preparer import prepare
from tests import storedb
from tests.workload import Record, Shop, with_offsets

pytestmark = pytest.mark.stack

WIDE = 2**70  # wider than 64 bits: no JSON serialiser the store uses can write it


def contact_with_wide_preferences(shop: Shop, person: int) -> list[Record]:
    (record,) = shop.crm_contact(person)
    envelope = json.loads(record.value)
    envelope["after"]["preferences"] = json.dumps({"points_ledger": WIDE})
    return [Record(record.topic, record.partition, record.key, json.dumps(envelope).encode())]


def demo_tables() -> dict:
    return yaml.safe_load(storedb.DEMO_CONFIG.read_text())["mapping"]["tables"]


def dlq(config, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "cdc_sync.cli", "--config", str(config), "dlq", *args],
                          capture_output=True, text=True, timeout=120)


def letters(dsn: str) -> list[tuple[int, str, str]]:
    with psycopg.connect(dsn) as conn:
        return conn.execute("SELECT kafka_offset, error, reason FROM dead_letters ORDER BY id").fetchall()


def emails(dsn: str) -> set[str]:
    with psycopg.connect(dsn) as conn:
        return {v for (v,) in conn.execute("SELECT value FROM identifiers WHERE type = 'email' AND live")}


def test_a_record_the_store_could_not_write_is_dead_lettered_and_replayed_after_the_mapping_is_fixed(
        tmp_path):
    shop = Shop(seed=5, people=10)
    records = with_offsets(shop.sign_up(1) + shop.sign_up(2) + contact_with_wide_preferences(shop, 1)
                           + shop.sign_up(3))
    with storedb.fresh_database() as dsn:
        cfg = storedb.demo_config(store={"dsn": dsn})
        store = store_mod.ProfileStore(store_mod.connect(dsn), cfg.mapping.aggregates)
        store.apply(*prepare(records, cfg.mapping))
        store.conn.close()
        ((_, error, reason),) = letters(dsn)
        assert error == "MappingError" and "preferences" in reason and str(WIDE) not in reason
        assert emails(dsn) == {shop.email(p) for p in (1, 2, 3)}  # the records after it applied

        still = storedb.write_config(tmp_path / "same.yaml", store={"dsn": dsn})
        out = dlq(still, "replay", "--all")
        assert out.returncode == 1 and "still failing 1: MappingError 1" in out.stdout, out.stderr
        with psycopg.connect(dsn) as conn:
            assert conn.execute("SELECT attempts FROM dead_letters").fetchone()[0] == 2

        tables = demo_tables()
        tables["crm:crm.contacts"]["attributes"]["preferences"] = {"column": "preferences", "type": "string"}
        fixed = storedb.write_config(tmp_path / "fixed.yaml", store={"dsn": dsn}, mapping={"tables": tables})
        out = dlq(fixed, "replay", "--reason", "64 BITS")
        assert out.returncode == 0 and "replayed 1 dead letter(s)" in out.stdout, out.stderr
        assert letters(dsn) == []
        with psycopg.connect(dsn) as conn:
            (value,) = conn.execute("SELECT value FROM profile_fields WHERE name = 'preferences'").fetchone()
        assert str(WIDE) in value


def test_replay_by_id_or_reason_touches_only_the_dead_letters_it_names(tmp_path):
    shop = Shop(seed=6, people=10)
    records = with_offsets(shop.sign_up(1) + shop.sign_up(2) + shop.sign_up(3) + shop.crm_contact(1)
                           + contact_with_wide_preferences(shop, 2) + shop.crm_contact(3))
    with storedb.fresh_database() as dsn:
        tables = demo_tables()
        without_crm = {k: v for k, v in tables.items() if not k.startswith("crm:")}
        narrow = storedb.demo_config(store={"dsn": dsn}, mapping={"tables": without_crm})
        store = store_mod.ProfileStore(store_mod.connect(dsn), narrow.mapping.aggregates)
        store.apply(*prepare(records, narrow.mapping))
        store.conn.close()
        assert [e for _, e, _ in letters(dsn)] == ["MappingError"] * 3
        with psycopg.connect(dsn) as conn:
            first, *_ = [i for (i,) in conn.execute("SELECT id FROM dead_letters ORDER BY id")]

        config = storedb.write_config(tmp_path / "full.yaml", store={"dsn": dsn})
        assert dlq(config, "replay", "--id", str(first)).returncode == 0
        assert len(letters(dsn)) == 2
        out = dlq(config, "replay", "--reason", "UNMAPPED table")
        assert out.returncode == 1 and "replayed 1 dead letter(s)" in out.stdout  # and one fails again
        ((_, error, reason),) = letters(dsn)  # the wide value: now mapped, and still refused
        assert error == "MappingError" and "preferences" in reason
        assert dlq(config, "replay").returncode != 0  # one of --id, --reason, --all is required


def test_a_record_dead_lettered_again_after_its_topic_was_recreated_is_kept():
    ref = RecordRef("shop.public.users", 0, 7)
    first = store_mod.DeadLetter(ref, b'{"id":1}', b"not json", "DecodeError", "not JSON")
    other = store_mod.DeadLetter(ref, b'{"id":1}', b"also not json", "DecodeError", "not JSON")
    with storedb.fresh_database() as dsn:
        store = store_mod.ProfileStore(store_mod.connect(dsn), {})
        store.apply([], [first])
        store.apply([], [first])  # redelivered: the same record, one dead letter
        store.apply([], [other])  # the topic was recreated: another record at that offset
        store.conn.close()
        with psycopg.connect(dsn) as conn:
            values = [bytes(v) for (v,) in conn.execute("SELECT value FROM dead_letters ORDER BY id")]
    assert values == [b"not json", b"also not json"]


def test_a_replayed_cart_change_schedules_its_abandoned_cart_timer(tmp_path):
    shop = Shop(seed=8, people=5)
    records = with_offsets(shop.sign_up(1) + shop.add_to_cart(1))
    with storedb.fresh_database() as dsn:
        tables = {k: v for k, v in demo_tables().items() if "cart" not in k}
        narrow = storedb.demo_config(store={"dsn": dsn}, mapping={"tables": tables}, triggers=None)
        store = store_mod.ProfileStore(store_mod.connect(dsn), narrow.mapping.aggregates)
        store.apply(*prepare(records, narrow.mapping))
        store.conn.close()
        assert [e for _, e, _ in letters(dsn)] == ["MappingError"] * 2  # the cart and its item
        config = storedb.write_config(tmp_path / "full.yaml", store={"dsn": dsn})
        assert dlq(config, "replay", "--all").returncode == 0
        with psycopg.connect(dsn) as conn:
            states = conn.execute("SELECT state FROM trigger_timers WHERE rule = 'abandoned_cart'").fetchall()
        assert states == [("scheduled",)]
