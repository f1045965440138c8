"""`make bench`: how fast `cdc-sync run` applies a pre-filled topic of realistic Debezium events.

Fills a private set of topics once with a simulated shop and CRM (tests/workload.py), then
runs the real daemon, with history on, into a fresh profile store and watches its consumer
group catch up, sampling the process's memory as the number of profiles grows.
Prints `<name>: <value> <unit>` lines and writes them to bench/results/apply-triggers-{off,on}.json.
With triggers on it also reports how long after the watermark passed each trigger's time
the trigger was committed (p50, p99), from the daemon's `triggers committed` log lines.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import psycopg
from kafka import KafkaConsumer, TopicPartition
from kafka.admin import KafkaAdminClient

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests import storedb  # noqa: E402
from tests.stack import daemon  # noqa: E402
from tests.workload import Shop  # noqa: E402


def filled(prefix: str) -> int:
    consumer = KafkaConsumer(bootstrap_servers=daemon.KAFKA)
    try:
        tps = [tp for t in consumer.topics() if t.startswith(prefix)
               for tp in (TopicPartition(t, p) for p in consumer.partitions_for_topic(t) or ())]
        return sum(consumer.end_offsets(tps).values()) if tps else 0
    finally:
        consumer.close()


def prefill(prefix: str, records: int, people: int) -> float:
    """Produce the workload unless the topics already hold it; returns seconds spent."""
    have = filled(prefix)
    if have >= records:
        return 0.0
    if have:  # an interrupted fill: start over
        admin = KafkaAdminClient(bootstrap_servers=daemon.KAFKA)
        consumer = KafkaConsumer(bootstrap_servers=daemon.KAFKA)
        admin.delete_topics([t for t in consumer.topics() if t.startswith(prefix)])
        consumer.close()
        admin.close()
        time.sleep(3)
    started = time.monotonic()
    # heartbeats as Debezium's heartbeat.action.query writes them, so that the watermark moves
    daemon.produce(Shop(seed=42, people=people, topic_prefix=prefix).events(records, heartbeat_every=2000))
    return time.monotonic() - started


def rss_kb(pid: int, field: str = "VmRSS") -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def cpu_seconds(pids: list[int]) -> float:
    """User plus system CPU time the processes have used so far."""
    ticks = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
            ticks += int(fields[11]) + int(fields[12])
        except (OSError, IndexError, ValueError):
            pass
    return ticks / os.sysconf("SC_CLK_TCK")


def with_children(pid: int) -> list[int]:
    """The process and its descendants (the daemon and its prepare worker)."""
    pids, todo = [], [pid]
    while todo:
        current = todo.pop()
        pids.append(current)
        for children in Path(f"/proc/{current}/task").glob("*/children"):
            with contextlib.suppress(OSError, ValueError):  # it may end meanwhile
                todo += [int(c) for c in children.read_text().split()]
    return pids


def peak_rss_kb(pid: int) -> int:
    """The peak resident memory of the process and its descendants, summed."""
    return sum(rss_kb(p, "VmHWM") for p in with_children(pid))


def postgres_pids() -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if (entry / "comm").read_text().startswith("postgres"):
                    pids.append(int(entry.name))
            except OSError:
                pass
    return pids


def watch(proc: subprocess.Popen[bytes], group: str, prefix: str, total: int) -> list[tuple[float, int, int]]:
    """(seconds, records committed, RSS kB) once a second until the group has caught up."""
    samples: list[tuple[float, int, int]] = []
    started = time.monotonic()
    while proc.poll() is None:
        done = total - daemon.lag(group, prefix)
        samples.append((time.monotonic() - started, done, rss_kb(proc.pid)))
        if done >= total:
            break
        time.sleep(1.0)
    return samples


def rate_between(samples: list[tuple[float, int, int]], lo: float, hi: float, total: int) -> float:
    """Records per second between the moments `lo` and `hi` of the work were committed."""
    a = next(s for s in samples if s[1] >= lo * total)
    b = next(s for s in samples if s[1] >= hi * total)
    return (b[1] - a[1]) / max(b[0] - a[0], 1e-9)


def trigger_latencies(log: Path) -> list[float]:
    """Seconds from the poll that moved the watermark past each trigger's time to the commit
    that wrote it, one per trigger, from the daemon's `triggers committed` log lines."""
    out: list[float] = []
    for line in log.read_text(errors="replace").splitlines():
        if '"triggers committed"' in line:
            entry = json.loads(line)
            out += [entry["latency_ms"] / 1000] * entry["count"]
    return out


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def report(figures: dict[str, tuple[float, str]], out: Path) -> None:
    """Print `<name>: <value> <unit>` lines and write the figures to `out` as JSON."""
    for name, (value, unit) in figures.items():
        print(f"{name}: {value:,.0f} {unit}" if value >= 100 else f"{name}: {value:,.1f} {unit}")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({k: {"value": v, "unit": u} for k, (v, u) in figures.items()}, indent=2))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--records", type=int, default=int(os.environ.get("BENCH_RECORDS", 1_000_000)))
    parser.add_argument("--people", type=int, default=int(os.environ.get("BENCH_PEOPLE", 100_000)))
    parser.add_argument("--batch", type=int, default=int(os.environ.get("BENCH_BATCH", 2000)),
                        help="the daemon's kafka.max_poll_records")
    parser.add_argument("--triggers", choices=["on", "off"], default="on",
                        help="the demo config's trigger rules, or none (the trigger stage off)")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    out = args.out or ROOT / "bench" / "results" / f"apply-triggers-{args.triggers}.json"
    prefix = f"bench-{args.records}-{args.people}-v3-"

    fill_s = prefill(prefix, args.records, args.people)
    total = filled(prefix)
    group = f"bench-{uuid.uuid4().hex[:8]}"
    with storedb.fresh_database("cdc_sync_bench") as dsn, tempfile.TemporaryDirectory() as tmp:
        config = storedb.write_config(Path(tmp) / "bench.yaml", store={"dsn": dsn}, kafka={
            "group_id": group, "topic_pattern": f"^{prefix}.+", "max_poll_records": args.batch},
            triggers=None if args.triggers == "off" else {})
        log_path = Path(tmp) / "daemon.log"
        with open(log_path, "wb") as log:
            proc = subprocess.Popen([str(Path(sys.executable).parent / "cdc-sync"), "--config", str(config),
                                     "--log-level", "INFO", "--log-json", "run"], stderr=log)
        pg_before = cpu_seconds(postgres_pids())  # backends come and go: an estimate
        samples = watch(proc, group, prefix, total)
        peak_kb = peak_rss_kb(proc.pid)
        daemon_cpu = cpu_seconds(with_children(proc.pid))
        pg_cpu = cpu_seconds(postgres_pids()) - pg_before
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
        with psycopg.connect(dsn) as conn:
            profiles = conn.execute("SELECT count(*) FROM profiles WHERE merged_into IS NULL").fetchone()[0]
            history = conn.execute("SELECT count(*) FROM field_history").fetchone()[0]
        latencies = trigger_latencies(log_path)
    if samples[-1][1] < total:
        print(f"bench: the daemon exited with {proc.returncode} before catching up", file=sys.stderr)
        return 1

    at = {q: next(s for s in samples if s[1] >= q * total) for q in (0.25, 0.5, 1.0)}
    figures = {
        "apply": (rate_between(samples, 0.05, 1.0, total), "events/s"),
        "apply_first_half": (rate_between(samples, 0.05, 0.5, total), "events/s"),
        "apply_second_half": (rate_between(samples, 0.5, 1.0, total), "events/s"),
        "records": (total, "records"),
        "profiles": (profiles, "profiles"),
        "history_rows": (history, "rows"),
        "daemon_cpu": (daemon_cpu / total * 1e6, "µs/event"),
        "postgres_cpu": (pg_cpu / total * 1e6, "µs/event"),
        "elapsed": (samples[-1][0], "s"),
        "peak_rss": (peak_kb / 1024, "MiB"),
        "rss_at_25pct": (at[0.25][2] / 1024, "MiB"),
        "rss_at_50pct": (at[0.5][2] / 1024, "MiB"),
        "rss_at_100pct": (at[1.0][2] / 1024, "MiB"),
        "prefill": (fill_s, "s"),
    }
    if args.triggers == "on":
        figures["triggers"] = (len(latencies), "triggers")
        if latencies:
            figures["trigger_latency_p50"] = (percentile(latencies, 0.50) * 1000, "ms")
            figures["trigger_latency_p99"] = (percentile(latencies, 0.99) * 1000, "ms")
    report(figures, out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
