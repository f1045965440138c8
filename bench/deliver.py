"""`make bench`: delivery to the local ESP receiver.

1. Deliveries per second: a backlog of `profile.updated` triggers (several per profile, so
   per-profile order holds some back) queued in a fresh store, sent by `cdc-sync run --role
   dispatch` to `cdc-sync sink`, both real processes.
2. Source commit to webhook received, for `profile.updated` at a steady rate of source
   changes (500/s by default): `UPDATE users SET city …` in the shop's Postgres, one change a
   transaction, through Debezium, Kafka, `cdc-sync run` (sync and dispatch) and the receiver.
   Latency is the receiver's clock at arrival less the change's commit time (the payload's
   `changed_at`), same machine. The rule's window is 0 and the allowed lateness 100 ms here;
   with the demo's 5 s window a trigger waits the window out by design.

Prints `<name>: <value> <unit>` lines and writes them to bench/results/deliver.json.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path

import psycopg

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.apply import cpu_seconds, percentile, postgres_pids, report  # noqa: E402
from tests import storedb  # noqa: E402
from tests.stack import daemon  # noqa: E402
from tests.stack.delivery import Sink, destination, dispatcher, queue, update  # noqa: E402


def throughput(tmp: Path, sink: Sink, triggers: int, concurrency: int) -> dict[str, tuple[float, str]]:
    """Deliveries a second, first arrival to last, for a queued backlog, and the CPU each
    process spent a delivery (the dispatcher, the receiver, Postgres)."""
    path = f"/bench-{uuid.uuid4().hex[:6]}"
    people = max(1, triggers // 3)
    with storedb.fresh_database("cdc_sync_bench") as dsn:
        base = uuid.uuid4().int % 10**9
        for start in range(0, triggers, 1000):
            queue(dsn, [update(base + i % people, i) for i in range(start, min(triggers, start + 1000))],
                  {"profile.updated": ["esp"]})
        proc, _ = dispatcher(tmp, dsn, {"esp": destination(
            sink.url + path, concurrency=concurrency, rate_limit={"per_second": 100000, "burst": 100000})})
        pg = postgres_pids()
        cpu = [cpu_seconds([proc.pid]), cpu_seconds([sink.proc.pid]), cpu_seconds(pg)]
        try:
            daemon.wait_for(lambda: sink.summary(path)["delivered"] >= triggers, timeout=600,
                            what="the backlog to be delivered")
            cpu = [cpu_seconds([proc.pid]) - cpu[0], cpu_seconds([sink.proc.pid]) - cpu[1],
                   cpu_seconds(pg) - cpu[2]]
        finally:
            daemon.stop(proc)
            daemon.STARTED.remove(proc)
        times = [r["at"] for r in sink.requests(path) if r["status"] == 200]
    return {"delivery rate": (triggers / (max(times) - min(times)), "deliveries/s"),
            "dispatcher CPU per delivery": (cpu[0] / triggers * 1e6, "µs"),
            "receiver CPU per delivery": (cpu[1] / triggers * 1e6, "µs"),
            "Postgres CPU per delivery": (cpu[2] / triggers * 1e6, "µs")}


def writer(rate: float, seconds: float, users: list[int], connections: int = 4) -> int:
    """UPDATE users' city at `rate` transactions a second in all for `seconds`, one change a
    transaction, from several connections (one commit waits for its WAL flush); returns how many."""
    def write(k: int) -> int:
        done = 0
        share = rate / connections
        with psycopg.connect(storedb.server_dsn("shop"), autocommit=True) as shop:
            start = time.monotonic()
            while (elapsed := time.monotonic() - start) < seconds:
                while done < int(elapsed * share):
                    user = users[(done * connections + k) % len(users)]
                    shop.execute("UPDATE users SET city = %s WHERE id = %s",
                                 (f"Bench {uuid.uuid4().hex[:6]}", user))
                    done += 1
                time.sleep(0.002)
        return done

    with ThreadPoolExecutor(connections) as pool:
        return sum(pool.map(write, range(connections)))


def shoppers(people: int) -> list[int]:
    """Ids of `people` users of the shop, the newest, adding bench users (synthetic addresses)
    when it has fewer: a fresh stack's shop holds a handful, and changes spread over a handful
    of people coalesce and queue behind each other instead of measuring the path."""
    with psycopg.connect(storedb.server_dsn("shop"), autocommit=True) as shop:
        have = shop.execute("SELECT count(*) FROM users").fetchone()
        missing = people - (have[0] if have else 0)
        if missing > 0:
            tag = uuid.uuid4().hex[:8]
            with shop.cursor() as cur:
                cur.executemany("INSERT INTO users (email, city) VALUES (%s, 'Bench')",
                                [(f"bench-{tag}-{i}@example.test",) for i in range(missing)])
        return [r[0] for r in shop.execute("SELECT id FROM users ORDER BY id DESC LIMIT %s", (people,))]


def latency(tmp: Path, sink: Sink, rate: float, seconds: float, topics: str, split: bool, people: int
            ) -> dict[str, tuple[float, str]]:
    path = f"/latency-{uuid.uuid4().hex[:6]}"
    rules = {"allowed_lateness": "100ms",
             "profile_updated": {"watch": ["city"], "window": "0s", "attributes": ["city"]}}
    users = shoppers(people)
    group = f"bench-latency-{uuid.uuid4().hex[:8]}"
    daemon.start_at_the_end(group, topics)
    with storedb.fresh_database("cdc_sync_bench") as dsn:
        config = storedb.write_config(
            tmp / "latency.yaml", store={"dsn": dsn}, triggers=rules,
            kafka={"group_id": group, "topic_pattern": topics},
            delivery={"destinations": {"esp": destination(
                sink.url + path, concurrency=8, rate_limit={"per_second": 100000, "burst": 100000})},
                "poll_interval": "1s"})
        # sync and dispatch as two processes (`--role`), or one (`cdc-sync run`'s default)
        procs = [daemon.start(config, "--role", "sync", log=tmp / "latency.log"),
                 daemon.start(config, "--role", "dispatch", log=tmp / "latency-dispatch.log")] if split \
            else [daemon.start(config, log=tmp / "latency.log")]
        try:
            print(f"latency: the daemon reaches the watermark of the shop topics ({topics})", file=sys.stderr)
            daemon.wait_for(lambda: caught_up(dsn), timeout=900, what="the daemon to catch up")
            daemon.wait_for(lambda: not pending(dsn), timeout=900, what="the catch-up's deliveries")
            started = time.time()
            written = writer(rate, seconds, users)
            achieved = written / (time.time() - started)
            time.sleep(5)
        finally:
            for proc in procs:
                daemon.stop(proc)
                daemon.STARTED.remove(proc)
        lat = []
        for r in sink.requests(path):
            if r["status"] != 200 or r["type"] != "profile.updated":
                continue
            changed = datetime.fromisoformat(r["body"]["changes"]["city"]["changed_at"]).timestamp()
            if changed >= started:  # not the backlog's triggers, fired while catching up
                lat.append(r["at"] - changed)
        left = pending(dsn)
        with psycopg.connect(dsn) as conn:
            written = [r[0] for r in conn.execute(
                "SELECT extract(epoch FROM created_at - changed) FROM (SELECT created_at,"
                " (payload->'changes'->'city'->>'changed_at')::timestamptz AS changed FROM outbox) AS o"
                " WHERE changed >= to_timestamp(%s)", (started,))]
    return {"latency source changes written /s": (achieved, "changes/s"),
            "latency webhooks received": (len(lat), "webhooks"),
            "latency webhooks still pending at the end": (float(left), "deliveries"),
            "commit to trigger written p50": (percentile([float(w) for w in written], 0.50) * 1000, "ms"),
            "commit to trigger written p99": (percentile([float(w) for w in written], 0.99) * 1000, "ms"),
            "commit to webhook p50": (percentile(lat, 0.50) * 1000, "ms"),
            "commit to webhook p95": (percentile(lat, 0.95) * 1000, "ms"),
            "commit to webhook p99": (percentile(lat, 0.99) * 1000, "ms")}


def pending(dsn: str) -> int:
    with psycopg.connect(dsn) as conn:
        row = conn.execute("SELECT count(*) FROM deliveries WHERE status = 'pending'").fetchone()
    return int(row[0]) if row else 0


def caught_up(dsn: str) -> bool:
    """The group's watermark is within 10 s of now (its backlog is applied)."""
    with psycopg.connect(dsn) as conn:
        row = conn.execute("SELECT min(greatest(event_us, caught_up_us)) FROM stream_progress").fetchone()
    return bool(row and row[0] and time.time() - row[0] / 1e6 < 10)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--triggers", type=int, default=int(os.environ.get("BENCH_DELIVERIES", 6000)))
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--rate", type=float, default=500.0, help="source changes a second")
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--people", type=int, default=2000, help="shop users the changes are spread over")
    parser.add_argument("--topics", default=r"^shop\..+|^__debezium-heartbeat\.shop$",
                        help="the daemon's topic pattern (default: the shop's only)")
    parser.add_argument("--split", action="store_true",
                        help="run the dispatcher as its own process (--role sync + --role dispatch)")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "deliver.json")
    parser.add_argument("--keep", type=Path, help="write the processes' logs and configs here, and keep them")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="cdc-sync-bench-") as tmp_name:
        tmp = Path(tmp_name) if args.keep is None else args.keep
        tmp.mkdir(parents=True, exist_ok=True)
        sink = Sink(tmp)
        try:
            figures = {"deliveries": (float(args.triggers), "deliveries"),
                       **throughput(tmp, sink, args.triggers, args.concurrency)}
            if args.rate > 0:
                figures |= latency(tmp, sink, args.rate, args.seconds, args.topics, args.split, args.people)
        finally:
            sink.close()
    report(figures, args.out)
    print(json.dumps({k: round(v, 1) for k, (v, _) in figures.items()}), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
