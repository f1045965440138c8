"""A real `cdc-sync sink` and `cdc-sync run --role dispatch` for delivery tests, and triggers
queued in a store as the daemon queues them."""

from __future__ import annotations

import base64
import json
import os
import secrets
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import psycopg

from cdc_sync.adapters.outbox import Outbox
from cdc_sync.core import triggers as t
from cdc_sync.core.mutations import Version
from cdc_sync.core.rules import ProfileUpdatedRule
from tests import storedb
from tests.stack import daemon

SECRET_ENV = "CDC_SYNC_TEST_WEBHOOK_SECRET"
# A secret made per test run, never written down: both the sink and the dispatchers read it.
SECRET = os.environ.setdefault(SECRET_ENV, "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode())


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Sink:
    """The local ESP receiver as a process; each test uses paths of its own."""

    def __init__(self, tmp: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.record = tmp / "received.jsonl"
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "cdc_sync.cli", "sink", "--port", str(self.port),
             "--secret-env", SECRET_ENV, "--record", str(self.record)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        daemon.wait_for(self._up, timeout=30, what="the sink to listen")

    def _up(self) -> bool:
        try:
            return httpx.get(f"{self.url}/_summary", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    def control(self, path: str, **mode: Any) -> None:
        httpx.post(f"{self.url}/_control", json={"path": path, **mode}, timeout=5).raise_for_status()

    def summary(self, path: str) -> dict[str, Any]:
        return httpx.get(f"{self.url}/_summary", params={"path": path}, timeout=5).json()  # type: ignore[no-any-return]

    def requests(self, path: str) -> list[dict[str, Any]]:
        """Every request to paths under `path`, in arrival order."""
        if not self.record.exists():
            return []
        rows = [json.loads(line) for line in self.record.read_text().splitlines() if line]
        return [r for r in rows if r["path"].startswith(path)]

    def accepted(self, path: str) -> list[str]:
        """Webhook ids answered 2xx, first copy of each, in arrival order."""
        out: list[str] = []
        for r in self.requests(path):
            if 200 <= r["status"] < 300 and r["verified"] and r["webhook_id"] not in out:
                out.append(r["webhook_id"])
        return out

    def close(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=10)


def destination(url: str, **over: Any) -> dict[str, Any]:
    """A destination entry for the config, with test-sized timeouts and retries."""
    return {"url": url, "secret_env": SECRET_ENV, "timeout": "3s", "concurrency": 4,
            "retry": {"initial": "300ms", "max": "3s"}, "circuit": {"failures": 5, "open_for": "1s",
                                                                     "open_for_max": "4s"}, **over}


def dispatcher(tmp: Path, dsn: str, destinations: dict[str, Any], name: str = "dispatch"
               ) -> tuple[subprocess.Popen[bytes], Path]:
    path = storedb.write_config(tmp / f"{name}.yaml", store={"dsn": dsn},
                                delivery={"destinations": destinations, "poll_interval": "200ms"})
    return daemon.start(path, "--role", "dispatch", log=tmp / f"{name}.log"), path


def update(profile_id: int, n: int, at_us: int | None = None) -> dict[str, Any]:
    """A `profile.updated` payload for the profile, its n-th: as the daemon writes them."""
    at = at_us or time.time_ns() // 1000
    v = Version(at, 1, "shop", (n,), uuid.uuid4().hex[:6]).key()
    timer = t.Timer(t.PROFILE_UPDATE, str(profile_id), v, profile_id, None, t.State.FIRED,
                    {"fields": {"city": {"old": ["Graz", False], "new": [f"city {n}", False],
                                         "cause": {"version": v}}}}, occurred_us=at)
    return t.window_payload(timer, t.ProfileFacts(profile_id, {"city": f"city {n}"}, {}),
                            ProfileUpdatedRule(watch=["city"], attributes=["city"]))


def queue(dsn: str, payloads: list[dict[str, Any]], routes: dict[str, list[str]]) -> list[str]:
    """Write triggers and their deliveries in one transaction, as the daemon does."""
    with psycopg.connect(dsn) as conn, conn.transaction():
        return [w.id for w in Outbox(conn, routes).write(payloads)]


def deliveries(dsn: str, destination: str) -> list[dict[str, Any]]:
    with psycopg.connect(dsn) as conn:
        cur = conn.execute("SELECT o.id::text, d.status, d.attempts, d.last_status, d.last_error, d.last_body"
                           " FROM deliveries d JOIN outbox o ON o.seq = d.outbox_seq"
                           " WHERE d.destination = %s ORDER BY o.seq", (destination,))
        cols = [c.name for c in cur.description or ()]
        return [dict(zip(cols, row, strict=True)) for row in cur.fetchall()]


def cli(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "cdc_sync.cli", "--config", str(config), *args],
                          capture_output=True, text=True, timeout=60)
