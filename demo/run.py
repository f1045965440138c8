"""`make demo`: the whole product on the local stack.

Simulated shoppers write to the shop (Postgres) and the CRM (MariaDB); `cdc-sync run` turns
the changes into profiles, fires triggers (abandoned carts 20 s after their last change) and
delivers them, signed, to a local ESP receiver (`cdc-sync sink`); `cdc-sync api` serves the
profiles. A live summary shows events a second, profiles, timers pending, triggers written and
delivered by type, end-to-end latency, and the latest deliveries.

Runs until Ctrl-C, or for DEMO_DURATION seconds. Expects the stack up and the connectors
applied (the Makefile does both first). Without a terminal (CI, a pipe) it prints a line every
5 s instead of the live view. Settings: DEMO_RATE (shopper actions a second, default 2),
DEMO_DIR (logs and the receiver's record, default .stack/logs), DEMO_SINK_PORT (9900).
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import signal
import subprocess
import sys
import time
import urllib.request
from collections import Counter, deque
from datetime import datetime
from pathlib import Path
from typing import Any

import psycopg
from prometheus_client.parser import text_string_to_metric_families
from rich.console import Console, Group
from rich.live import Live
from rich.table import Table

from cdc_sync import settings
from cdc_sync.core.tokens import hash_token, new_token

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
CONFIG = Path(os.environ.get("CDC_SYNC_CONFIG", ROOT / "config" / "cdc-sync.yaml"))
LOGS = Path(os.environ.get("DEMO_DIR", ROOT / ".stack" / "logs"))
RECEIVED = LOGS / "received.jsonl"
SINK_PORT = int(os.environ.get("DEMO_SINK_PORT", "9900"))


class Demo:
    def __init__(self) -> None:
        self.cfg = settings.load(CONFIG)  # with the environment's overrides, as the daemon reads it
        self.token = new_token()  # the API's demo token: this run only, never written down
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.api = f"http://127.0.0.1:{self.cfg.api.port}"
        self.metrics = f"http://127.0.0.1:{self.cfg.metrics.port}/metrics"
        self.last: tuple[float, float] | None = None  # (time, records consumed)
        self.received = Received(RECEIVED)

    def start(self) -> None:
        LOGS.mkdir(parents=True, exist_ok=True)
        # A signing secret for this run only, shared by the daemon and the receiver.
        secret = "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode()
        env = {**os.environ, "CDC_SYNC_ESP_SECRET": secret, "CDC_SYNC_SINK_SECRET": secret,
               "CDC_SYNC_DELIVERY__DESTINATIONS__ESP__URL": f"http://127.0.0.1:{SINK_PORT}/esp",
               "CDC_SYNC_API__TOKENS__DEMO__HASH": hash_token(self.token),
               "CDC_SYNC_API__TOKENS__DEMO__SCOPES": "profiles:read"}
        log = open(LOGS / "cdc-sync.log", "ab")  # noqa: SIM115 - lives as long as the processes
        cli = [str(BIN / "cdc-sync"), "--config", str(CONFIG)]
        # each in a session of its own: Ctrl-C reaches the demo only, which then stops each once
        own = {"env": env, "stdout": log, "stderr": log, "start_new_session": True}
        self.procs["receiver"] = subprocess.Popen([*cli, "sink", "--port", str(SINK_PORT), "--record",
                                                   str(RECEIVED)], **own)
        self.procs["daemon"] = subprocess.Popen([*cli, "run"], **own)
        self.procs["api"] = subprocess.Popen([*cli, "api"], **own)
        self.procs["shoppers"] = subprocess.Popen(
            [sys.executable, str(ROOT / "demo" / "shoppers.py"), "--rate", os.environ.get("DEMO_RATE", "2")],
            stdout=subprocess.DEVNULL, stderr=log, start_new_session=True)

    def stop(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs.values():
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()

    def exited(self) -> str | None:
        return next((f"{name} exited with {p.returncode}" for name, p in self.procs.items()
                     if p.poll() is not None), None)

    # ---- what the summary shows

    def numbers(self, conn: psycopg.Connection[Any]) -> dict[str, Any]:
        try:
            return self._numbers(conn)
        except psycopg.errors.UndefinedTable:  # the daemon has not created its tables yet
            return {"profiles": 0, "merges": 0, "dead": 0, "timers": 0, "rate": None, "written": {},
                    "delivered": Counter(), "latency": {}, "latest": [], "unverified": 0}

    def _numbers(self, conn: psycopg.Connection[Any]) -> dict[str, Any]:
        row = conn.execute(
            "SELECT (SELECT count(*) FROM profiles WHERE merged_into IS NULL),"
            " (SELECT count(*) FROM merges), (SELECT count(*) FROM dead_letters),"
            " (SELECT count(*) FROM trigger_timers WHERE state IN ('scheduled', 'held'))").fetchone()
        written = dict(conn.execute("SELECT type, count(*) FROM outbox GROUP BY type").fetchall())
        consumed = self.counter("cdc_sync_records_consumed_total")
        now = time.monotonic()
        rate = None
        if consumed is not None and self.last is not None and now > self.last[0]:
            rate = (consumed - self.last[1]) / (now - self.last[0])
        if consumed is not None:
            self.last = (now, consumed)
        got = self.received.read()
        return {"profiles": row[0], "merges": row[1], "dead": row[2], "timers": row[3], "rate": rate,
                "written": written, "delivered": got.delivered, "latency": got.latencies(),
                "latest": list(got.latest), "unverified": got.unverified}

    def counter(self, name: str) -> float | None:
        try:
            with urllib.request.urlopen(self.metrics, timeout=2) as answer:
                text = answer.read().decode()
        except OSError:
            return None
        return next((s.value for f in text_string_to_metric_families(text) for s in f.samples
                     if s.name == name), None)

    def view(self, n: dict[str, Any]) -> Group:
        head = Table.grid(padding=(0, 3))
        rate = "…" if n["rate"] is None else f"{n['rate']:,.1f}"
        for label, value in (("events/s", rate), ("profiles", f"{n['profiles']:,}"),
                             ("merges", f"{n['merges']:,}"), ("timers pending", f"{n['timers']:,}"),
                             ("dead letters", f"{n['dead']:,}"),
                             ("unverified webhooks", str(n["unverified"]))):
            head.add_row(f"[bold]{label}[/]", value)
        types = Table(title="triggers", title_justify="left")
        for col in ("type", "written", "delivered", "commit → webhook p50", "p99"):
            types.add_column(col, justify="right" if col != "type" else "left")
        for type_ in ("cart.abandoned", "profile.updated"):
            p50, p99 = n["latency"].get(type_, (None, None))
            types.add_row(type_, f"{n['written'].get(type_, 0):,}", f"{n['delivered'].get(type_, 0):,}",
                          "–" if p50 is None else f"{p50:,.1f} s", "–" if p99 is None else f"{p99:,.1f} s")
        latest = Table(title="latest deliveries", title_justify="left")
        for col in ("received", "type", "webhook-id", "verified", "answer"):
            latest.add_column(col)
        for r in reversed(n["latest"]):
            latest.add_row(datetime.fromtimestamp(r["at"]).strftime("%H:%M:%S"), r["type"],
                           (r["webhook_id"] or "?")[:8] + "…", "yes" if r["verified"] else "NO",
                           str(r["status"]))
        return Group(head, types, latest)

    def line(self, n: dict[str, Any]) -> str:
        rate = "…" if n["rate"] is None else f"{n['rate']:.1f}"
        return (f"events/s {rate}  profiles {n['profiles']}  timers {n['timers']}"
                f"  written {dict(n['written'])}"
                f"  delivered {dict(n['delivered'])}  unverified {n['unverified']}")


class Received:
    """What the receiver recorded, read as it grows: each call reads only the lines added since
    the last. Earlier runs' requests count too, as the store's counts of triggers written do."""

    def __init__(self, path: Path, keep: int = 5000) -> None:
        self.path, self.keep = path, keep
        self._reset()

    def _reset(self) -> None:
        self.offset = 0
        self.seen: set[str] = set()
        self.delivered: Counter[str] = Counter()
        self.unverified = 0
        self.latest: deque[dict[str, Any]] = deque(maxlen=5)
        self.ages: dict[str, deque[float]] = {}  # the newest `keep` latencies per type

    def read(self) -> Received:
        try:
            if self.path.stat().st_size < self.offset:  # truncated or replaced: count it anew
                self._reset()
            with self.path.open("rb") as f:
                f.seek(self.offset)
                chunk = f.read()
        except OSError:
            return self
        whole = chunk[:chunk.rfind(b"\n") + 1]  # a line still being written waits for the next read
        self.offset += len(whole)
        for line in whole.splitlines():
            if line.strip():
                self.add(json.loads(line))
        return self

    def add(self, r: dict[str, Any]) -> None:
        self.latest.append(r)
        self.unverified += not r["verified"]
        if r["status"] != 200 or not r["verified"] or r["webhook_id"] in self.seen:
            return
        self.seen.add(r["webhook_id"])
        self.delivered[r["type"]] += 1
        age = commit_to_arrival(r)
        if age is not None:
            self.ages.setdefault(r["type"], deque(maxlen=self.keep)).append(age)

    def latencies(self) -> dict[str, tuple[float, float]]:
        return {t: (pct(list(v), 0.5), pct(list(v), 0.99)) for t, v in self.ages.items() if v}


def commit_to_arrival(r: dict[str, Any]) -> float | None:
    """Seconds from the source commit a trigger answers to its arrival: a cart's last change (so
    its delay is in it), a profile's newest changed field (its window)."""
    body = r.get("body") or {}
    if r["type"] == "profile.updated":
        times = [c.get("changed_at") for c in (body.get("changes") or {}).values()]
    else:
        times = [(body.get("cart") or {}).get("updated_at") or body.get("occurred_at")]
    stamps = [datetime.fromisoformat(t.replace("Z", "+00:00")).timestamp() for t in times if t]
    return r["at"] - max(stamps) if stamps else None


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def where(demo: Demo) -> str:
    return (f"demo: every webhook the receiver got: {RECEIVED} (and curl localhost:{SINK_PORT}/_summary)\n"
            f"demo: the daemon's log: {LOGS / 'cdc-sync.log'}; its metrics: {demo.metrics}\n"
            f"demo: the send-time API, with a token for this run only:\n"
            f"      curl -H 'Authorization: Bearer {demo.token}' "
            f"'{demo.api}/v1/profiles?email=sally.thomas@acme.com'\n"
            f"      its OpenAPI document: {demo.api}/docs")


def interrupted(signum: int, frame: object) -> None:
    raise KeyboardInterrupt  # SIGTERM stops the demo as Ctrl-C does: every process stopped cleanly


def main() -> int:
    signal.signal(signal.SIGTERM, interrupted)
    duration = float(os.environ.get("DEMO_DURATION", "0"))
    demo = Demo()
    console = Console(stderr=False)
    demo.start()
    print("demo: shoppers write to the shop and the CRM; cdc-sync turns their changes into profiles,"
          " triggers and webhooks. Ctrl-C stops.\n" + where(demo), file=sys.stderr, flush=True)
    deadline = time.monotonic() + duration if duration else None
    failed = None
    try:
        with psycopg.connect(demo.cfg.store.dsn, autocommit=True, connect_timeout=10) as conn:
            if console.is_terminal:
                with Live(console=console, refresh_per_second=1, transient=False) as live:
                    while (deadline is None or time.monotonic() < deadline) and not (failed := demo.exited()):
                        live.update(demo.view(demo.numbers(conn)))
                        time.sleep(2)
            else:
                while (deadline is None or time.monotonic() < deadline) and not (failed := demo.exited()):
                    time.sleep(5)
                    print("demo: " + demo.line(demo.numbers(conn)), flush=True)
    except KeyboardInterrupt:
        pass
    finally:
        demo.stop()
    with psycopg.connect(demo.cfg.store.dsn, autocommit=True, connect_timeout=10) as conn:
        print(f"\ndemo: {demo.line(demo.numbers(conn))}", file=sys.stderr)
    print(where(demo), file=sys.stderr, flush=True)
    if failed:
        print(f"demo: {failed}; see {LOGS / 'cdc-sync.log'}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
