"""The broker goes away while the daemon runs: the daemon waits for it and loses nothing.

This test stops the stack's Kafka for 20 s: other tests using the broker at that time fail.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg
import pytest

from tests import storedb
from tests.stack import daemon
from tests.workload import Shop

pytestmark = pytest.mark.stack
STACKCTL = Path(__file__).resolve().parents[2] / "stack" / "stackctl.py"
CONNECT = os.environ.get("CONNECT_URL", "http://127.0.0.1:8083")


def stackctl(*args: str) -> None:
    res = subprocess.run([sys.executable, str(STACKCTL), *args], capture_output=True, text=True,
                         timeout=300)
    assert res.returncode == 0, f"stackctl {' '.join(args)}: {res.stderr}"


def connect_answers() -> bool:
    try:
        with urllib.request.urlopen(f"{CONNECT}/connectors", timeout=5) as resp:
            return bool(resp.status == 200)
    except OSError:
        return False


def broker_up() -> None:
    """Kafka back on its port with its data, and Connect answering again."""
    stackctl("up", "kafka")
    if not _within(30, connect_answers):  # Connect did not come through the outage: restart it
        stackctl("stop", "connect")
        stackctl("up", "connect")


def _within(seconds: float, check) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(1)
    return False


def emails(dsn: str) -> set[str]:
    with psycopg.connect(dsn) as conn:
        return {v for (v,) in conn.execute("SELECT value FROM identifiers WHERE type = 'email'")}


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


@contextmanager
def store_refusing(dsn: str) -> Iterator[None]:
    """No connection to the store database (the daemon's own is cut) until the block ends."""
    dbname = dsn.rsplit("/", 1)[1]
    with psycopg.connect(storedb.server_dsn("postgres"), autocommit=True) as admin:
        admin.execute(f'ALTER DATABASE "{dbname}" ALLOW_CONNECTIONS false')
        admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (dbname,))
        try:
            yield
        finally:
            admin.execute(f'ALTER DATABASE "{dbname}" ALLOW_CONNECTIONS true')


def test_a_broker_outage_of_20s_stops_nothing_and_loses_nothing(tmp_path):
    prefix, group = f"t{uuid.uuid4().hex[:8]}-", f"outage-{uuid.uuid4().hex[:6]}"
    shop = Shop(seed=3, people=90, topic_prefix=prefix)
    first, in_flight, after = ([r for p in people for r in shop.sign_up(p)]
                               for people in (range(30), range(30, 60), range(60, 90)))
    log = tmp_path / "outage.log"
    with storedb.fresh_database() as dsn:
        path = storedb.write_config(tmp_path / "outage.yaml", store={"dsn": dsn}, kafka={
            "group_id": group, "topic_pattern": f"^{prefix}.+", "max_poll_records": 10})
        daemon.produce(first)
        proc = daemon.start(path, log=log)
        daemon.wait_for(lambda: len(emails(dsn)) == 30, what="the daemon to be at work")
        with store_refusing(dsn):  # a batch is read but cannot be applied yet
            daemon.produce(in_flight)
            daemon.wait_for(lambda: "store unavailable, retrying" in log.read_text(), what="a batch in hand")
            stackctl("stop", "kafka")
        try:  # the batch is applied now, with the broker gone: its offsets cannot be committed
            cpu = cpu_seconds(proc.pid)
            time.sleep(20)
            assert proc.poll() is None, log.read_text()[-3000:]
            assert cpu_seconds(proc.pid) - cpu < 5, "the daemon spun while the broker was down"
        finally:
            broker_up()
        daemon.produce(after)
        daemon.run_until_caught_up([proc], group, prefix, timeout=120)  # committed, and exits 0
        assert emails(dsn) == {shop.email(p) for p in range(90)}
    text = log.read_text()
    assert "offset commit failed, retrying" in text and "Traceback" not in text
    assert len(text.splitlines()) < 200, "the outage is logged, not flooded"
    assert connect_answers(), "Kafka Connect is healthy for the tests after this one"
