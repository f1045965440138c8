"""Delivery on the real store with a real dispatcher process and the local receiver: signed,
retried, ordered per profile, never lost, never doubled, one destination never holding back
another. Triggers are queued as the daemon queues them (tests/stack/delivery.py)."""

from __future__ import annotations

import json
import signal
import statistics
import time
import uuid
from collections import defaultdict
from datetime import datetime

import psycopg
import pytest

from tests import storedb
from tests.core.test_webhooks import spec_signature_ok
from tests.stack import daemon
from tests.stack.delivery import (
    SECRET,
    Sink,
    cli,
    deliveries,
    destination,
    dispatcher,
    queue,
    update,
)

pytestmark = pytest.mark.stack


@pytest.fixture(scope="module")
def sink(tmp_path_factory):
    s = Sink(tmp_path_factory.mktemp("sink"))
    yield s
    s.close()


@pytest.fixture
def path():
    return f"/t-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def dsn():
    with storedb.fresh_database() as dsn:
        yield dsn


def wait(check, what, timeout=60.0):
    return daemon.wait_for(check, timeout=timeout, what=what)


def pids(n):
    base = uuid.uuid4().int % 10**9
    return [base + i for i in range(n)]


def test_deliveries_are_signed_verifiably_and_carry_the_trigger_id(tmp_path, sink, path, dsn):
    ids = queue(dsn, [update(p, 1) for p in pids(3)], {"profile.updated": ["esp"]})
    dispatcher(tmp_path, dsn, {"esp": destination(sink.url + path)})
    wait(lambda: len(sink.accepted(path)) == 3, "three deliveries")
    for r in sink.requests(path):
        headers = {"webhook-id": r["webhook_id"], "webhook-timestamp": r["timestamp"],
                   "webhook-signature": r["signature"]}
        assert spec_signature_ok(SECRET, headers, r["raw"].encode())
        assert r["idempotency_key"] == r["webhook_id"] and r["user_agent"].startswith("cdc-sync/")
        assert r["body"]["id"] == r["webhook_id"]
    assert sorted(sink.accepted(path)) == sorted(ids)
    wait(lambda: {d["status"] for d in deliveries(dsn, "esp")} == {"sent"}, "the sends to be recorded")


def test_an_endpoint_failing_for_20s_gets_every_trigger_once_it_recovers(tmp_path, sink, path, dsn):
    sink.control(path, status=500, seconds=20)
    ids = queue(dsn, [update(p, n) for p in pids(10) for n in range(3)], {"profile.updated": ["esp"]})
    dispatcher(tmp_path, dsn, {"esp": destination(sink.url + path)})
    time.sleep(19)
    assert sink.accepted(path) == []
    wait(lambda: len(sink.accepted(path)) == len(ids), "every trigger after recovery", timeout=60)
    summary = sink.summary(path)
    assert summary["delivered"] == len(ids) and summary["by_status"].get("500", 0) > 0
    assert sorted(sink.accepted(path)) == sorted(ids)
    wait(lambda: {d["status"] for d in deliveries(dsn, "esp")} == {"sent"}, "the sends to be recorded")


def test_retry_after_is_honoured(tmp_path, sink, path, dsn):
    sink.control(path, status=429, retry_after=3, seconds=60)
    [tid] = queue(dsn, [update(pids(1)[0], 1)], {"profile.updated": ["esp"]})
    dispatcher(tmp_path, dsn, {"esp": destination(sink.url + path)})
    wait(lambda: sink.requests(path), "the first attempt")
    sink.control(path, seconds=0)  # answered once with 429, then well
    wait(lambda: sink.accepted(path) == [tid], "the delivery after its Retry-After")
    attempts = [r for r in sink.requests(path) if r["webhook_id"] == tid]
    assert attempts[0]["status"] == 429 and attempts[-1]["status"] == 200
    assert attempts[1]["at"] - attempts[0]["at"] >= 3.0 - 0.05  # the sink's clock, both times


def test_a_400_is_dead_at_once_and_replay_sends_it(tmp_path, sink, path, dsn):
    sink.control(path, status=400, seconds=60)
    [tid] = queue(dsn, [update(pids(1)[0], 1)], {"profile.updated": ["esp"]})
    _, config = dispatcher(tmp_path, dsn, {"esp": destination(sink.url + path)})
    wait(lambda: deliveries(dsn, "esp")[0]["status"] == "dead", "the delivery to be dead")
    sink.control(path, seconds=0)
    [dead] = deliveries(dsn, "esp")
    assert dead["attempts"] == 1 and dead["last_status"] == 400 and "told to fail" in dead["last_body"]
    listed = [json.loads(x) for x in cli(config, "outbox", "list", "--status", "dead").stdout.splitlines()]
    assert [x["id"] for x in listed] == [tid] and listed[0]["deliveries"][0]["last_status"] == 400
    time.sleep(1)
    assert len(sink.requests(path)) == 1  # dead: not tried again
    replayed = cli(config, "outbox", "replay", tid)
    assert replayed.returncode == 0 and "queued 1" in replayed.stdout
    wait(lambda: sink.accepted(path) == [tid], "the replayed delivery")
    assert len([r for r in sink.requests(path) if r["webhook_id"] == tid]) == 2  # same id both times


def test_a_410_disables_its_destination_and_the_other_keeps_going(tmp_path, sink, path, dsn):
    sink.control(path + "/a", status=410, seconds=3600)
    ids = queue(dsn, [update(p, 1) for p in pids(20)], {"profile.updated": ["a", "b"]})
    _, config = dispatcher(tmp_path, dsn, {"a": destination(f"{sink.url}{path}/a"),
                                           "b": destination(f"{sink.url}{path}/b")})
    wait(lambda: len(sink.accepted(path + "/b")) == len(ids), "every delivery to b")
    requests_a = sink.requests(path + "/a")
    assert 1 <= len(requests_a) <= 4 and {r["status"] for r in requests_a} == {410}  # one per worker at most
    listed = cli(config, "outbox", "list")
    assert "destination a is DISABLED" in listed.stderr
    state = {d["name"]: d for d in map(json.loads, cli(config, "destinations", "list").stdout.splitlines())}
    assert state["a"]["state"] == "disabled" and state["b"]["state"] == "enabled"
    sink.control(path + "/a", status=200, seconds=1)  # the endpoint is back
    assert cli(config, "destinations", "enable", "a").returncode == 0
    wait(lambda: len(sink.accepted(path + "/a")) == len(ids), "every delivery to a once enabled")


def test_a_hanging_destination_does_not_slow_another(tmp_path, sink, path, dsn):
    sink.control(path + "/a", hang=True, seconds=40)
    _, _ = dispatcher(tmp_path, dsn, {"a": destination(f"{sink.url}{path}/a", timeout="10s"),
                                      "b": destination(f"{sink.url}{path}/b")})
    time.sleep(2)
    sent = []
    for p in pids(15):
        [tid] = queue(dsn, [update(p, 1)], {"profile.updated": ["a", "b"]})
        sent.append((tid, time.time()))
        time.sleep(0.2)
    wait(lambda: len(sink.accepted(path + "/b")) == len(sent), "every delivery to b while a hangs")
    arrived = {r["webhook_id"]: r["at"] for r in sink.requests(path + "/b") if r["status"] == 200}
    latency = [arrived[tid] - at for tid, at in sent]
    assert max(latency) < 3.0, \
        f"b's latency while a hangs: p50 {statistics.median(latency):.3f}s max {max(latency):.3f}s"
    assert sink.accepted(path + "/a") == []


def test_one_profiles_messages_arrive_in_order_under_concurrency_and_retries(tmp_path, sink, path, dsn):
    people = pids(6)
    sink.control(path, status=503, seconds=2)
    payloads = [update(p, n) for n in range(8) for p in people]  # interleaved, as triggers are
    by_profile = defaultdict(list)
    for payload, tid in zip(payloads, queue(dsn, payloads, {"profile.updated": ["esp"]}), strict=True):
        by_profile[payload["profile_id"]].append(tid)
    dispatcher(tmp_path, dsn, {"esp": destination(sink.url + path, concurrency=8)})
    wait(lambda: len(sink.accepted(path)) == len(payloads), "every delivery")
    arrived = defaultdict(list)
    for r in sink.requests(path):  # every attempt, failed or not: none may overtake an earlier message
        tids = arrived[r["body"]["profile_id"]]
        if not tids or tids[-1] != r["webhook_id"]:
            tids.append(r["webhook_id"])
    for pid, expected in by_profile.items():
        assert arrived[pid] == expected, f"profile {pid} out of order"


def test_a_dispatcher_killed_mid_send_delivers_everything_after_restart(tmp_path, sink, path, dsn):
    sink.control(path, hang=True, seconds=4)
    ids = queue(dsn, [update(p, 1) for p in pids(12)], {"profile.updated": ["esp"]})
    dest = {"esp": destination(sink.url + path, timeout="2s")}
    proc, _ = dispatcher(tmp_path, dsn, dest)
    wait(lambda: len(sink.requests(path)) >= 1, "requests in flight")
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)
    dispatcher(tmp_path, dsn, dest, name="restarted")
    wait(lambda: len(sink.accepted(path)) == len(ids), "every trigger after the restart", timeout=60)
    assert sorted(sink.accepted(path)) == sorted(ids)
    assert {r["webhook_id"] for r in sink.requests(path)} == set(ids)  # any duplicate carries its id
    wait(lambda: {d["status"] for d in deliveries(dsn, "esp")} == {"sent"}, "the sends to be recorded")


def test_a_delivery_older_than_max_retry_age_is_dead_with_the_reason(tmp_path, sink, path, dsn):
    sink.control(path, status=503, seconds=3600)
    queue(dsn, [update(pids(1)[0], 1)], {"profile.updated": ["esp"]})
    dispatcher(tmp_path, dsn, {"esp": destination(sink.url + path, max_retry_age="2s")})
    wait(lambda: deliveries(dsn, "esp")[0]["status"] == "dead", "the delivery to give up")
    [dead] = deliveries(dsn, "esp")
    assert dead["last_status"] == 503 and ("gave up" in dead["last_error"] or "older" in dead["last_error"])


def test_a_destination_added_later_gets_the_triggers_written_after(tmp_path, sink, path, dsn):
    queue(dsn, [update(pids(1)[0], 1)], {})
    [tid] = queue(dsn, [update(pids(1)[0], 2)], {"profile.updated": ["esp"]})
    dispatcher(tmp_path, dsn, {"esp": destination(sink.url + path)})
    wait(lambda: sink.accepted(path) == [tid], "the one routed trigger")
    with psycopg.connect(dsn) as conn:
        assert conn.execute("SELECT count(*) FROM outbox").fetchone()[0] == 2
    assert isinstance(datetime.now(), datetime)


def test_a_dispatcher_started_before_the_store_is_migrated_waits_for_it(tmp_path, sink, path):
    with storedb.fresh_database(migrated=False) as dsn:
        proc, config = dispatcher(tmp_path, dsn, {"esp": destination(sink.url + path)})
        time.sleep(2)
        assert cli(config, "migrate").returncode == 0
        [tid] = queue(dsn, [update(pids(1)[0], 1)], {"profile.updated": ["esp"]})
        wait(lambda: sink.accepted(path) == [tid], "the delivery once the store is migrated", timeout=30)
        log = (tmp_path / "dispatch.log").read_text()
        assert "no delivery tables yet" in log and "Traceback" not in log
