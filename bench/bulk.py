"""`make bench`, second workload: a bulk import followed by a bulk edit.

One table (`shop:public.users`), N new rows (op `c`), then one update of each (op `u`, a full
before image, last name and city changed): every event a different person, so the store
grows to N profiles. The inserts and the updates sit on two private topics, filled once and
kept for the next run. The real daemon applies the inserts into a fresh store and stops; a
second daemon then applies the updates to the same store; each phase is timed from 5 % to
100 % of its records committed. Prints `<name>: <value> <unit>` lines and writes them to
bench/results/bulk.json.

The config maps only the users table, in a form every version of cdc-sync reads, so the
same harness runs the previous version side by side (`PYTHONPATH=<its checkout>`).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from apply import (  # noqa: E402
    cpu_seconds,
    filled,
    peak_rss_kb,
    postgres_pids,
    rate_between,
    report,
    watch,
    with_children,
)

from tests import storedb  # noqa: E402
from tests.stack import daemon  # noqa: E402
from tests.workload import PARTITIONS, Record  # noqa: E402

MAPPING = {
    "unmapped": "ignore",
    "ignore": [],
    "aggregates": {},
    "sources": {"shop": {"priority": 2}},
    "tables": {"shop:public.users": {
        "identifiers": {"user_id": "id", "email": {"column": "email", "normalize": "email"}},
        "attributes": {"first_name": "first_name", "last_name": "last_name", "city": "city",
                       "phone": {"column": "phone", "normalize": "phone"},
                       "signed_up_at": {"column": "created_at", "type": "datetime"}}}},
}


def user(i: int) -> dict[str, object]:
    return {"id": i, "email": f"Bulk.User{i}@Example.com", "first_name": f"First{i % 977}",
            "last_name": f"Last{i % 499}", "phone": None if i % 3 else f"+33 6 {i:08d}",
            "city": ("Lyon", "Porto", "Graz", "Cork")[i % 4], "created_at": 1_790_000_000_000_000 + i}


def records(topic: str, rows: int, update: bool) -> Iterator[Record]:
    """Debezium Postgres envelopes (schemas off); updates come after every insert in LSN."""
    lsn = 0x3000000 + (rows * 200 if update else 0)
    for i in range(1, rows + 1):
        lsn += 120
        before = user(i)
        after = dict(before, last_name=f"Edited{i % 313}", city="Leeds") if update else before
        commit_us = 1_790_000_000_000_000 + lsn
        envelope = {"before": before if update else None, "after": after, "op": "u" if update else "c",
                    "source": {"connector": "postgresql", "name": "shop", "db": "shop",
                               "schema": "public", "table": "users", "ts_ms": commit_us // 1000,
                               "ts_us": commit_us, "snapshot": "false", "lsn": lsn,
                               "sequence": json.dumps([str(lsn - 60), str(lsn)])},
                    "ts_ms": commit_us // 1000, "transaction": None}
        key = json.dumps({"id": i}, separators=(",", ":")).encode()
        yield Record(topic, i % PARTITIONS, key, json.dumps(envelope, separators=(",", ":")).encode())


def prefill(topic: str, rows: int, update: bool) -> None:
    if filled(topic) < rows:
        daemon.produce(records(topic, rows, update))


def run_phase(config: Path, group: str, topic: str, total: int) -> dict[str, tuple[float, str]]:
    """One daemon applies one topic; returns its rate, CPU and memory."""
    proc = subprocess.Popen([str(Path(sys.executable).parent / "cdc-sync"), "--config", str(config),
                             "--log-level", "WARNING", "run"])
    pg_before = cpu_seconds(postgres_pids())
    samples = watch(proc, group, topic, total)
    daemon_cpu, pg_cpu = cpu_seconds(with_children(proc.pid)), cpu_seconds(postgres_pids()) - pg_before
    peak = peak_rss_kb(proc.pid)
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=60)
    if samples[-1][1] < total:
        raise SystemExit(f"bench: the daemon exited with {proc.returncode} before catching up")
    return {"rate": (rate_between(samples, 0.05, 1.0, total), "events/s"),
            "daemon_cpu": (daemon_cpu / total * 1e6, "µs/event"),
            "postgres_cpu": (pg_cpu / total * 1e6, "µs/event"),
            "peak_rss": (peak / 1024, "MiB")}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=int(os.environ.get("BENCH_BULK_ROWS", 200_000)))
    parser.add_argument("--batch", type=int, default=int(os.environ.get("BENCH_BATCH", 2000)))
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "bulk.json")
    args = parser.parse_args()
    inserts, updates = f"bench-bulk-{args.rows}-v1-insert", f"bench-bulk-{args.rows}-v1-update"
    prefill(inserts, args.rows, update=False)
    prefill(updates, args.rows, update=True)
    figures: dict[str, tuple[float, str]] = {}
    # Not migrated here: the daemon migrates it with its own checkout's schema (side by side).
    store = storedb.fresh_database("cdc_sync_bench", migrated=False)
    with store as dsn, tempfile.TemporaryDirectory() as tmp:
        for phase, topic in (("insert", inserts), ("update", updates)):
            group = f"bench-{uuid.uuid4().hex[:8]}"
            config = storedb.write_config(Path(tmp) / f"{phase}.yaml", store={"dsn": dsn}, kafka={
                "group_id": group, "topic_pattern": f"^{topic}$", "max_poll_records": args.batch})
            raw = yaml.safe_load(config.read_text())
            raw["mapping"] = MAPPING
            config.write_text(yaml.safe_dump(raw))
            for name, figure in run_phase(config, group, topic, filled(topic)).items():
                figures[f"{phase}_{name}"] = figure
        with psycopg.connect(dsn) as conn:
            figures["profiles"] = (conn.execute(
                "SELECT count(*) FROM profiles WHERE merged_into IS NULL").fetchone()[0], "profiles")
            figures["history_rows"] = (
                conn.execute("SELECT count(*) FROM field_history").fetchone()[0], "rows")
    report(figures, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
