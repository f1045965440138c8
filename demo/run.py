"""`make demo`: simulated shoppers write to the shop and the CRM; cdc-sync turns the changes
into profiles and triggers and delivers them, signed, to a local ESP receiver; this screen
shows the profile store filling up, change by change, the triggers written to the outbox
(abandoned carts fire 20 s after their last change), and the webhooks the receiver got.

Runs until Ctrl-C, or for DEMO_DURATION seconds when set. Expects the stack up and the
connectors applied (the Makefile does both first). DEMO_TAIL=1 also prints the raw change
events. The daemon's log goes to .stack/logs/cdc-sync.log.
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
from pathlib import Path

import psycopg

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
CONFIG = Path(os.environ.get("CDC_SYNC_CONFIG", ROOT / "config" / "cdc-sync.yaml"))
STORE_DSN = os.environ.get("CDC_SYNC_STORE__DSN", "postgresql://cdc:cdc@127.0.0.1:5432/cdc_sync")


LOGS = ROOT / ".stack" / "logs"
RECEIVED = LOGS / "received.jsonl"


def start(procs: dict[str, subprocess.Popen[bytes]]) -> None:
    # A signing secret for this run only, shared by the daemon and the receiver, never written down.
    secret = "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode()
    env = {**os.environ, "CDC_SYNC_ESP_SECRET": secret, "CDC_SYNC_SINK_SECRET": secret}
    procs["sink"] = subprocess.Popen([str(BIN / "cdc-sync"), "sink", "--port", "9900",
                                      "--record", str(RECEIVED)], env=env,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    log = open(LOGS / "cdc-sync.log", "ab")  # noqa: SIM115 - lives as long as the daemon
    procs["cdc-sync"] = subprocess.Popen([str(BIN / "cdc-sync"), "--config", str(CONFIG), "run"],
                                         env=env, stdout=log, stderr=log)
    procs["shoppers"] = subprocess.Popen([sys.executable, str(ROOT / "demo" / "shoppers.py"),
                                          "--rate", os.environ.get("DEMO_RATE", "2")],
                                         stdout=subprocess.DEVNULL)
    if os.environ.get("DEMO_TAIL"):
        procs["tail"] = subprocess.Popen([str(BIN / "cdc-sync"), "--config", str(CONFIG), "tail"])


def report(conn: psycopg.Connection[tuple[object, ...]], seen: int, fired: int) -> tuple[int, int]:
    """Print the store's totals, the field changes applied and the triggers written since the
    last report."""
    profiles, merges, dead, triggers, delivered = conn.execute(
        "SELECT (SELECT count(*) FROM profiles WHERE merged_into IS NULL),"
        " (SELECT count(*) FROM merges), (SELECT count(*) FROM dead_letters),"
        " (SELECT count(*) FROM outbox),"
        " (SELECT count(*) FROM deliveries WHERE status = 'sent')").fetchone() or (0, 0, 0, 0, 0)
    rows = conn.execute(  # the newest few: a backlog is summarised, not replayed
        "SELECT id, profile_id, field, old_value, new_value, new_deleted, topic FROM field_history"
        " WHERE id > %s ORDER BY id DESC LIMIT 8", (seen,)).fetchall()
    print(f"profiles {profiles:>5}  merges {merges:>4}  dead letters {dead:>3}  triggers {triggers:>4}"
          f"  delivered {delivered:>4}", flush=True)
    for hid, pid, field, old, new, deleted, topic in reversed(rows):
        shown = "(deleted)" if deleted else new
        print(f"  profile {pid:>5}  {field:<24} {old!s:>14} -> {shown!s:<20} from {topic or 'merge'}")
        seen = max(seen, hid)
    for seq, type_, pid, payload in conn.execute(
            "SELECT seq, type, profile_id, payload FROM outbox WHERE seq > %s ORDER BY seq DESC LIMIT 4",
            (fired,)).fetchall()[::-1]:
        what = (f"cart {payload['cart']['id']}, total {payload['cart']['total']}"  # type: ignore[index]
                if type_ == "cart.abandoned" else ", ".join(sorted(payload["changes"])))  # type: ignore[index]
        print(f"  trigger {type_:<16} profile {pid:>5}  {what}  (id {str(payload['id'])[:8]})")  # type: ignore[index]
        fired = max(fired, int(seq))  # type: ignore[call-overload]
    return seen, fired


def receiver_summary() -> str:
    """The local ESP receiver's summary: requests, webhooks delivered (each id once), by type."""
    try:
        with urllib.request.urlopen("http://127.0.0.1:9900/_summary", timeout=2) as answer:
            doc = json.loads(answer.read())
    except (OSError, ValueError):
        return ""
    return (f"{doc['requests']} request(s), {doc['delivered']} webhook(s) delivered "
            f"({doc['duplicates']} duplicate(s), {doc['unverified']} unverified): {doc['by_type']}")


def main() -> int:
    duration = float(os.environ.get("DEMO_DURATION", "0"))
    procs: dict[str, subprocess.Popen[bytes]] = {}
    start(procs)
    print("demo: shoppers write to shop (Postgres) and crm (MariaDB); cdc-sync reconciles the "
          "changes into profiles. Ctrl-C stops.\n"
          "      try: .venv/bin/cdc-sync --config config/cdc-sync.yaml profile show "
          "--email sally.thomas@acme.com\n"
          "      webhooks: the receiver writes each to .stack/logs/received.jsonl; summary: "
          "curl localhost:9900/_summary\n"
          "      deliveries: .venv/bin/cdc-sync --config config/cdc-sync.yaml outbox list --limit 5",
          file=sys.stderr, flush=True)
    deadline = time.monotonic() + duration if duration else None
    seen = fired = 0
    try:
        with psycopg.connect(STORE_DSN, autocommit=True) as conn:
            while deadline is None or time.monotonic() < deadline:
                time.sleep(3)
                for name, proc in procs.items():
                    if proc.poll() is not None:
                        print(f"demo: {name} exited with {proc.returncode}; see .stack/logs/cdc-sync.log",
                              file=sys.stderr)
                        return 1
                seen, fired = report(conn, seen, fired)
    except KeyboardInterrupt:
        pass
    finally:
        summary = receiver_summary()
        if summary:
            print(f"demo: the receiver got {summary}", file=sys.stderr)
        for proc in procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in procs.values():
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
    return 0


if __name__ == "__main__":
    sys.exit(main())
