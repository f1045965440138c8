"""`make demo`'s program, headless and bounded: the receiver gets verified triggers of both kinds."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from tests import storedb

pytestmark = pytest.mark.stack
ROOT = Path(__file__).resolve().parents[2]


def delivered(record: Path) -> set[str]:
    if not record.exists():
        return set()
    kinds = set()
    for line in record.read_text().splitlines():
        r = json.loads(line)
        if r["status"] == 200 and r["verified"]:
            kinds.add(r["type"])
    return kinds


def test_the_demo_delivers_a_verified_cart_abandoned_and_profile_updated(tmp_path):
    base = 20000 + uuid.uuid4().int % 5000
    with storedb.fresh_database() as dsn:
        env = {**os.environ, "DEMO_DIR": str(tmp_path), "DEMO_SINK_PORT": str(base), "DEMO_RATE": "4",
               "DEMO_DURATION": "240", "CDC_SYNC_STORE__DSN": dsn,
               "CDC_SYNC_KAFKA__GROUP_ID": f"demo-{uuid.uuid4().hex[:8]}",
               "CDC_SYNC_API__PORT": str(base + 1), "CDC_SYNC_METRICS__PORT": str(base + 2)}
        demo = subprocess.Popen([sys.executable, str(ROOT / "demo" / "run.py")], env=env, cwd=tmp_path,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 240
        try:
            while time.monotonic() < deadline and demo.poll() is None:
                if {"cart.abandoned", "profile.updated"} <= delivered(tmp_path / "received.jsonl"):
                    break
                time.sleep(2)
        finally:
            if demo.poll() is None:
                demo.send_signal(signal.SIGINT)
            out, err = demo.communicate(timeout=120)
        assert demo.returncode == 0, err[-3000:]
        assert {"cart.abandoned", "profile.updated"} <= delivered(tmp_path / "received.jsonl"), \
            (out[-2000:], err[-2000:], (tmp_path / "cdc-sync.log").read_text()[-3000:])
        assert "Bearer cds_" in err and f"127.0.0.1:{base + 1}/v1/profiles" in err  # where to look
        assert "demo: events/s" in out or "events/s" in err
