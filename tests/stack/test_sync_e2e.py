"""End to end: rows written in shop (Postgres) and crm (MariaDB) become one profile."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import uuid

import psycopg
import pytest
from kafka import KafkaConsumer, TopicPartition

from cdc_sync.services import inspection
from tests import storedb
from tests.stack import daemon
from tests.stack.conftest import attr, profile

pytestmark = pytest.mark.stack


def replay(topic: str, match) -> tuple[TopicPartition, int]:
    """Re-send an already delivered record (an at-least-once redelivery); returns where it landed."""
    consumer = KafkaConsumer(bootstrap_servers=daemon.KAFKA, group_id=None, enable_auto_commit=False,
                             auto_offset_reset="earliest", consumer_timeout_ms=5000)
    consumer.subscribe([topic])
    found = next(m for m in consumer if m.value and match(json.loads(m.key), json.loads(m.value)))
    consumer.close()
    producer = daemon.KafkaProducer(bootstrap_servers=daemon.KAFKA)
    meta = producer.send(topic, key=found.key, value=found.value, partition=found.partition).get(30)
    producer.close()
    return TopicPartition(topic, meta.partition), meta.offset


def committed(group: str, tp: TopicPartition) -> int:
    """The group's committed offset (read without joining the group)."""
    consumer = KafkaConsumer(bootstrap_servers=daemon.KAFKA, group_id=group, enable_auto_commit=False)
    offset = consumer.committed(tp)
    consumer.close(autocommit=False)
    return -1 if offset is None else offset


def test_user_and_crm_contact_with_one_email_become_one_profile_that_follows_changes(
        running, shop_db, crm_db):
    cfg, group, _ = running
    email = f"e2e.{uuid.uuid4().hex[:10]}@example.com"
    uid = shop_db.execute("INSERT INTO users (email, first_name, city) VALUES (%s, 'Rosa', 'Lyon')"
                          " RETURNING id", (email,)).fetchone()[0]
    with crm_db.cursor() as cur:
        cur.execute("INSERT INTO contacts (email, loyalty_tier) VALUES (%s, 'gold')",
                    (f"  {email.upper()} ",))
        cid = cur.lastrowid

    doc = daemon.wait_for(lambda: (p := profile(cfg, email)) and attr(p, "loyalty_tier") and
                          attr(p, "first_name") and p, what="one profile from both sources")
    ids = {(i["type"], i["value"]) for i in doc["identifiers"]}
    assert {("user_id", str(uid)), ("crm_contact_id", str(cid)), ("email", email)} <= ids
    assert (attr(doc, "first_name"), attr(doc, "loyalty_tier")) == ("Rosa", "gold")

    shop_db.execute("UPDATE users SET city = 'Porto' WHERE id = %s", (uid,))
    with crm_db.cursor() as cur:
        cur.execute("UPDATE contacts SET loyalty_tier = 'platinum' WHERE id = %s", (cid,))
    daemon.wait_for(lambda: (p := profile(cfg, email)) and attr(p, "city") == "Porto"
                    and attr(p, "loyalty_tier") == "platinum", what="updates from both sources")

    shop_db.execute("DELETE FROM users WHERE id = %s", (uid,))
    doc = daemon.wait_for(lambda: (p := profile(cfg, email)) and p["attributes"]["city"]["deleted"] and p,
                          what="the delete's tombstone")
    assert doc["attributes"]["first_name"]["deleted"] and attr(doc, "loyalty_tier") == "platinum"

    tp, offset = replay("shop.public.users", lambda k, v: k == {"id": uid} and v["op"] == "u")
    daemon.wait_for(lambda: committed(group, tp) > offset, what="the replayed update to be consumed")
    doc = profile(cfg, email)
    assert doc["attributes"]["city"]["deleted"] and doc["attributes"]["city"]["value"] is None


def test_profile_history_records_each_applied_change_and_restore_rolls_back(running, shop_db):
    cfg, _, _ = running
    email = f"hist.{uuid.uuid4().hex[:10]}@example.com"
    uid = shop_db.execute("INSERT INTO users (email, city) VALUES (%s, 'Graz') RETURNING id",
                          (email,)).fetchone()[0]
    daemon.wait_for(lambda: profile(cfg, email), what="the profile")
    before_change = shop_db.execute("SELECT now()").fetchone()[0]
    shop_db.execute("UPDATE users SET city = 'Cork' WHERE id = %s", (uid,))
    doc = daemon.wait_for(lambda: (p := profile(cfg, email)) and attr(p, "city") == "Cork" and p,
                          what="the update")

    changes = inspection.history(cfg, doc["id"], None, "city", 10)
    values = [(c["old"] and c["old"]["value"], c["new"]["value"]) for c in changes]
    assert values == [("Graz", "Cork"), (None, "Graz")]
    assert changes[0]["record"]["topic"] == "shop.public.users"

    assert inspection.restore(cfg, doc["id"], before_change) >= 1
    doc = profile(cfg, email)
    assert attr(doc, "city") == "Graz"
    assert inspection.history(cfg, doc["id"], None, "city", 1)[0]["cause"] == "restore"


def test_cache_entry_is_invalidated_after_a_change(running, shop_db):
    cfg, _, _ = running
    email = f"cache.{uuid.uuid4().hex[:10]}@example.com"
    uid = shop_db.execute("INSERT INTO users (email) VALUES (%s) RETURNING id", (email,)).fetchone()[0]
    pid = daemon.wait_for(lambda: (p := profile(cfg, email)) and p["id"], what="the profile")
    cache = storedb.cache_of(cfg, 60)
    cache.put(pid, b"stale")
    shop_db.execute("UPDATE users SET city = 'Turku' WHERE id = %s", (uid,))
    daemon.wait_for(lambda: cache.get(pid) is None, what="the cache entry to be dropped")
    with psycopg.connect(cfg.store.dsn) as conn:  # dropped after the change was durable
        assert conn.execute("SELECT new_value FROM field_history WHERE profile_id = %s AND field = 'city'"
                            " ORDER BY id DESC LIMIT 1", (pid,)).fetchone()[0] == "Turku"


def cli(config, *args):
    return subprocess.run([sys.executable, "-m", "cdc_sync.cli", "--config", str(config), *args],
                          capture_output=True, text=True, timeout=60)


def test_profile_commands_print_json_and_refuse_bad_input(running, shop_db):
    cfg, _, config = running
    email = f"CLI.{uuid.uuid4().hex[:10]}@Example.com"
    uid = shop_db.execute("INSERT INTO users (email, city) VALUES (%s, 'Leeds') RETURNING id",
                          (email,)).fetchone()[0]
    daemon.wait_for(lambda: profile(cfg, email.lower()), what="the profile")

    shown = cli(config, "profile", "show", "--email", f"  {email} ")  # normalised like the mapping
    assert shown.returncode == 0, shown.stderr
    doc = json.loads(shown.stdout)
    assert doc["attributes"]["city"]["value"] == "Leeds"
    assert doc["attributes"]["city"]["version"]["source"] == "shop"
    by_id = cli(config, "profile", "show", "--identifier", f"user_id={uid}")
    assert json.loads(by_id.stdout)["id"] == doc["id"]

    history = cli(config, "profile", "history", "--id", str(doc["id"]), "--field", "city")
    assert [json.loads(line)["new"]["value"] for line in history.stdout.splitlines()] == ["Leeds"]

    missing = cli(config, "profile", "show", "--email", "nobody@example.invalid")
    assert missing.returncode == 1 and missing.stderr.strip() == "cdc-sync: no profile matches"
    bad_time = cli(config, "profile", "restore", str(doc["id"]), "--as-of", "yesterday")
    assert bad_time.returncode == 2 and "not an ISO 8601 time" in bad_time.stderr
    assert "Traceback" not in missing.stderr + bad_time.stderr
    assert cli(config, "dlq", "list").returncode == 0


def test_store_outage_is_retried_and_loses_nothing(running, shop_db):
    cfg, _, _ = running
    dbname = cfg.store.dsn.rsplit("/", 1)[1]
    emails = [f"outage.{i}.{uuid.uuid4().hex[:8]}@example.com" for i in range(5)]
    shop_db.execute("INSERT INTO users (email) VALUES (%s)", (emails[0],))
    daemon.wait_for(lambda: profile(cfg, emails[0]), what="the daemon to be at work")
    with psycopg.connect(storedb.server_dsn("postgres"), autocommit=True) as admin:
        # The store goes away: no new connections, and the daemon's own is cut.
        admin.execute(f'ALTER DATABASE "{dbname}" ALLOW_CONNECTIONS false')
        admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (dbname,))
        try:
            for email in emails[1:]:
                shop_db.execute("INSERT INTO users (email) VALUES (%s)", (email,))
            time.sleep(8)  # the daemon polls these, fails to apply them, backs off and retries
        finally:
            admin.execute(f'ALTER DATABASE "{dbname}" ALLOW_CONNECTIONS true')
    for email in emails:
        daemon.wait_for(lambda e=email: profile(cfg, e), what="every row written during the outage")


def test_a_daemon_started_before_its_store_waits_for_it(tmp_path, shop_db):
    with storedb.fresh_database() as dsn:
        dbname = dsn.rsplit("/", 1)[1]
        group = f"late-{uuid.uuid4().hex[:8]}"
        path = storedb.write_config(tmp_path / "late.yaml", store={"dsn": dsn}, kafka={"group_id": group})
        cfg = storedb.demo_config(store={"dsn": dsn}, kafka={"group_id": group})
        email = f"late.{uuid.uuid4().hex[:10]}@example.com"
        with psycopg.connect(storedb.server_dsn("postgres"), autocommit=True) as admin:
            admin.execute(f'ALTER DATABASE "{dbname}" ALLOW_CONNECTIONS false')
            proc = daemon.start(path, log=tmp_path / "late.log")
            try:
                shop_db.execute("INSERT INTO users (email) VALUES (%s)", (email,))
                time.sleep(5)
                assert proc.poll() is None, (tmp_path / "late.log").read_text()[-2000:]
            finally:
                admin.execute(f'ALTER DATABASE "{dbname}" ALLOW_CONNECTIONS true')
        daemon.wait_for(lambda: profile(cfg, email), what="the row written before the store was up")
        assert daemon.stop(proc) == 0
        assert "store unavailable, retrying" in (tmp_path / "late.log").read_text()
