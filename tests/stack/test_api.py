"""The send-time profile API on the real store and Redis (and, for freshness, the real pipeline)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
import redis
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from cdc_sync import settings
from cdc_sync.adapters import store as store_mod
from cdc_sync.core.tokens import hash_token, new_token
from cdc_sync.services.api import create_app
from tests import storedb
from tests.core.test_reconcile import CONTACTS, USERS, change
from tests.stack import daemon
from tests.stack.test_kafka_outage import stackctl

pytestmark = pytest.mark.stack
ROOT = Path(__file__).resolve().parents[2]
READER, ADMIN = new_token(), new_token()
TOKENS = {"esp": {"hash": hash_token(READER), "scopes": ["profiles:read"]},
          "ops": {"hash": hash_token(ADMIN), "scopes": ["admin"]}}


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def world(tmp_path):
    """A fresh store with two people, Ann (id 1) and Bo (merged into Ann later), and the API."""
    with storedb.fresh_database() as dsn:
        cfg = settings.load(storedb.write_config(tmp_path / "api.yaml", store={"dsn": dsn},
                                                 api={"tokens": TOKENS}), env={})
        store = store_mod.ProfileStore(store_mod.connect(dsn), cfg.mapping.aggregates)
        ann = f"ann.{uuid.uuid4().hex[:8]}@example.com"
        store.apply([change(USERS, 1, 1, ids=[("user_id", "1"), ("email", ann)],
                            attrs={"first_name": "Ann", "city": "Graz"})], [])
        with TestClient(create_app(cfg)) as client:
            yield client, store, cfg, ann
        store.conn.close()


def test_no_token_an_unknown_one_or_the_wrong_scope_get_no_data(world):
    client, _, _, ann = world
    for headers in ({}, {"Authorization": "Basic abc"}, auth("cds_not-a-token")):
        r = client.get("/v1/profiles", params={"email": ann}, headers=headers)
        assert r.status_code == 401 and r.headers["content-type"] == "application/problem+json"
        assert r.json()["status"] == 401 and "Ann" not in r.text and ann not in r.text
        assert r.headers["www-authenticate"].startswith("Bearer")
    r = client.get("/v1/profiles/1/history", headers=auth(READER))  # history needs admin
    assert r.status_code == 403 and r.json()["title"] == "Forbidden" and "Graz" not in r.text
    pid = client.get("/v1/profiles", params={"email": ann}, headers=auth(READER)).json()["id"]
    history = client.get(f"/v1/profiles/{pid}/history", headers=auth(ADMIN))
    assert history.status_code == 200 and history.json()[0]["new"]["value"] in ("Ann", "Graz")


def test_a_profile_by_email_by_identifier_and_by_id_with_its_freshness(world):
    client, _, _, ann = world
    by_email = client.get("/v1/profiles", params={"email": ann.upper()}, headers=auth(READER))
    assert by_email.status_code == 200, by_email.text
    doc = by_email.json()
    assert doc["attributes"]["first_name"] == "Ann" and doc["identifiers"]["email"] == [ann]
    assert doc["freshness"]["source_commit_at"] is not None and doc["freshness"]["age_seconds"] >= 0
    assert doc["consent"] == {"consent_email_marketing": False}
    same = client.get("/v1/profiles", params={"identifier": "user_id:1"}, headers=auth(READER)).json()
    assert {**same, "freshness": None} == {**doc, "freshness": None}
    assert client.get(f"/v1/profiles/{doc['id']}", headers=auth(ADMIN)).json()["id"] == doc["id"]
    missing = client.get("/v1/profiles", params={"email": "nobody@example.com"}, headers=auth(READER))
    assert missing.status_code == 404 and missing.json()["detail"] == "no profile matches"
    bad = client.get("/v1/profiles", params={"identifier": "email"}, headers=auth(READER))
    assert bad.status_code == 400
    assert client.get("/v1/profiles/x", headers=auth(READER)).status_code == 400


def test_a_merged_profiles_old_id_answers_with_the_survivor(world):
    client, store, cfg, ann = world
    bo = f"bo.{uuid.uuid4().hex[:8]}@example.com"
    store.apply([change(USERS, 2, 2, ids=[("user_id", "2"), ("email", bo)], attrs={"city": "Linz"})], [])
    old = client.get("/v1/profiles", params={"email": bo}, headers=auth(READER)).json()["id"]
    survivor = client.get("/v1/profiles", params={"email": ann}, headers=auth(READER)).json()["id"]
    # one CRM contact with both addresses: the same person, so the two profiles merge; the
    # cache is then dropped for the profiles the batch touched, as the daemon does
    result = store.apply([change(CONTACTS, 10, 3, ids=[("crm_contact_id", "10"), ("email", ann),
                                                        ("user_id", "2")])], [])
    cache = storedb.cache_of(cfg)
    cache.invalidate(result.profiles)
    live = store.resolve(profile_id=old)
    assert live != old
    r = client.get(f"/v1/profiles/{old}", headers=auth(READER))
    assert r.status_code == 200 and r.json()["id"] == live and old in r.json()["aliases"]
    assert r.headers["content-location"] == f"/v1/profiles/{live}"
    assert live == survivor
    assert cache.get_or_alias(old) == (None, live)  # the next ask of the old id is answered from Redis
    hits = parse(client.get("/metrics").text).get(("cdc_sync_api_cache_total", (("result", "hit"),)), 0)
    again = client.get(f"/v1/profiles/{old}", headers=auth(READER))
    assert again.json()["id"] == live and again.headers["content-location"] == f"/v1/profiles/{live}"
    assert parse(client.get("/metrics").text)[("cdc_sync_api_cache_total", (("result", "hit"),))] > hits
    by_bo = client.get("/v1/profiles", params={"email": bo}, headers=auth(READER)).json()
    assert by_bo["id"] == live  # the cached identifier of the merged-away profile is not trusted


def test_answers_come_from_redis_once_cached_and_from_postgres_when_redis_is_stopped(world, tmp_path):
    client, store, cfg, ann = world
    first = client.get("/v1/profiles", params={"email": ann}, headers=auth(READER)).json()
    key = storedb.cache_of(cfg).profile_key(first["id"])
    assert redis.Redis.from_url(cfg.redis.url).exists(key) == 1
    cfg_down = settings.load(storedb.write_config(
        tmp_path / "down.yaml", store={"dsn": cfg.store.dsn}, api={"tokens": TOKENS},
        redis={"url": "redis://127.0.0.1:1/0"}), env={})  # nothing listens there: Redis is gone
    with TestClient(create_app(cfg_down)) as down:
        r = down.get("/v1/profiles", params={"email": ann}, headers=auth(READER))
        assert r.status_code == 200 and r.json()["id"] == first["id"]
        metrics = parse(down.get("/metrics").text)
        assert metrics[("cdc_sync_api_cache_total", (("result", "unavailable"),))] >= 1
        assert down.get("/readyz").json()["cache"].startswith("skipped")
        assert down.get("/readyz").json()["cache_namespace"] == storedb.cache_of(cfg).namespace
    stackctl("stop", "redis")  # and the real one stopped under an app that was using it
    try:
        r = client.get("/v1/profiles", params={"email": ann}, headers=auth(READER))
        assert r.status_code == 200 and r.json()["id"] == first["id"]
        assert client.get(f"/v1/profiles/{first['id']}", headers=auth(READER)).status_code == 200
        assert client.get("/readyz").status_code == 200  # ready: Postgres answers
    finally:
        stackctl("up", "redis")


def test_two_stores_sharing_one_redis_never_answer_with_each_other_s_profiles(world, tmp_path):
    client, _, cfg, ann = world
    assert client.get("/v1/profiles/1", headers=auth(READER)).json()["attributes"]["first_name"] == "Ann"
    with storedb.fresh_database() as other_dsn:  # its first profile is id 1 too
        other = store_mod.ProfileStore(store_mod.connect(other_dsn), cfg.mapping.aggregates)
        other.apply([change(USERS, 1, 1, ids=[("user_id", "1")], attrs={"first_name": "Cy"})], [])
        other_cfg = settings.load(storedb.write_config(tmp_path / "other.yaml", store={"dsn": other_dsn},
                                                       api={"tokens": TOKENS}), env={})
        with TestClient(create_app(other_cfg)) as other_client:
            for _ in range(2):  # the second answer is the cached one
                r = other_client.get("/v1/profiles/1", headers=auth(READER))
                assert r.json()["attributes"]["first_name"] == "Cy"
        other.conn.close()
    assert client.get("/v1/profiles/1", headers=auth(READER)).json()["attributes"]["first_name"] == "Ann"


def test_a_change_made_while_redis_was_unreachable_is_dropped_from_the_cache_when_it_answers(world):
    """The daemon's invalidation during an outage is kept and tried again: the stale document
    goes when Redis answers, not when its TTL (300 s) ends. CLIENT PAUSE keeps Redis's data
    while no command is answered, as a network partition would."""
    client, store, cfg, ann = world
    ask = lambda: client.get("/v1/profiles", params={"email": ann}, headers=auth(READER)).json()  # noqa: E731
    assert ask()["attributes"]["city"] == "Graz"  # cached now
    result = store.apply([change(USERS, 1, 2, ids=[("user_id", "1"), ("email", ann)],
                                 attrs={"first_name": "Ann", "city": "Wels"})], [])
    daemon_cache = storedb.cache_of(cfg, retry_s=0.5)
    admin = redis.Redis.from_url(cfg.redis.url)
    admin.execute_command("CLIENT", "PAUSE", 3000, "ALL")
    daemon_cache.invalidate(result.profiles)  # times out after 2 s: kept
    assert daemon_cache.pending == 1
    time.sleep(1.5)  # the pause (3 s) is over, and the retry interval (0.5 s) too
    assert ask()["attributes"]["city"] == "Graz"  # the stale entry, until the daemon tries again
    assert daemon_cache.flush() and daemon_cache.pending == 0
    answer = client.get("/v1/profiles", params={"email": ann}, headers=auth(READER))
    assert answer.status_code == 200, answer.text
    assert answer.json()["attributes"]["city"] == "Wels"


def parse(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of a Prometheus text exposition, parsed by prometheus-client's own parser."""
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def test_metrics_parse_and_move_and_probes_answer(world):
    client, _, _, ann = world
    before = parse(client.get("/metrics").text)
    for _ in range(3):
        client.get("/v1/profiles", params={"email": ann}, headers=auth(READER))
    after = parse(client.get("/metrics").text)
    key = ("cdc_sync_api_requests_total", (("route", "/v1/profiles"), ("status", "200")))
    assert after[key] - before.get(key, 0) == 3
    assert after[("cdc_sync_api_cache_total", (("result", "hit"),))] >= 2
    assert client.get("/healthz").json() == {"status": "ok"}
    assert client.get("/readyz").status_code == 200


def test_the_openapi_document_in_the_repo_is_the_one_served(world):
    client, *_ = world
    served = client.get("/openapi.json").json()
    assert json.loads((ROOT / "docs" / "openapi.json").read_text()) == served, \
        "docs/openapi.json is stale: `cdc-sync api openapi > docs/openapi.json`"


def test_a_source_change_is_served_within_seconds_of_its_commit(shop, tmp_path):
    """The real path: the shop's Postgres, Debezium, the daemon (which drops the cached entry),
    and `cdc-sync api` as a process, asked over HTTP."""
    import httpx

    group = f"e2e-{uuid.uuid4().hex[:8]}"
    daemon.start_at_the_end(group, storedb.demo_config().kafka.topic_pattern)
    with storedb.fresh_database() as dsn:
        config = storedb.write_config(tmp_path / "daemon.yaml", store={"dsn": dsn}, api={"tokens": TOKENS},
                                      kafka={"group_id": group}, triggers=None)
        proc = daemon.start(config, log=tmp_path / "daemon.log")
        port = 18080 + uuid.uuid4().int % 1000
        api = subprocess.Popen([sys.executable, "-m", "cdc_sync.cli", "--config", str(config), "api",
                                "--port", str(port), "--workers", "2"], stdout=subprocess.DEVNULL,
                               stderr=(tmp_path / "api.log").open("wb"))
        asked = [0]
        try:
            daemon.wait_for(lambda: daemon.joined(proc), what="the daemon to join")
            base = f"http://127.0.0.1:{port}"
            daemon.wait_for(lambda: _answers(f"{base}/healthz"), what="the API to listen")
            uid = shop.user()
            email = shop.pg.execute("SELECT email FROM users WHERE id = %s", (uid,)).fetchone()[0]

            def city() -> str | None:
                asked[0] += 1
                r = httpx.get(f"{base}/v1/profiles", params={"email": email}, headers=auth(READER))
                return r.json()["attributes"].get("city") if r.status_code == 200 else None

            assert daemon.wait_for(city, timeout=60, what="the new shopper to be served") == "Graz"
            assert city() == "Graz"  # now cached (TTL 300 s): only the daemon's invalidation can refresh it
            shop.pg.execute("UPDATE users SET city = 'Wien', updated_at = now() WHERE id = %s", (uid,))
            committed = time.monotonic()
            daemon.wait_for(lambda: city() == "Wien", timeout=30, what="the change to be served")
            print(f"change served {time.monotonic() - committed:.2f} s after its commit")
            # two worker processes, one count: every scrape (whichever worker answers) sums both
            for _ in range(4):
                counted = parse(httpx.get(f"{base}/metrics").text)
                assert sum(v for (name, labels), v in counted.items() if name == "cdc_sync_api_requests_total"
                           and ("route", "/v1/profiles") in labels) == asked[0]
        finally:
            api.terminate()
            api.wait(timeout=10)
            assert daemon.stop(proc) == 0, (tmp_path / "daemon.log").read_text()[-3000:]


def _answers(url: str) -> bool:
    import httpx

    try:
        return httpx.get(url, timeout=1).status_code == 200
    except httpx.HTTPError:
        return False
