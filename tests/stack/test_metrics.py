"""The daemon's /metrics, /healthz and /readyz while changes flow through the real pipeline."""

from __future__ import annotations

import uuid

import httpx
import pytest

from tests import storedb
from tests.stack import daemon
from tests.stack.test_api import parse

pytestmark = pytest.mark.stack


def scrape(url: str) -> dict:
    return parse(httpx.get(f"{url}/metrics", timeout=5).text)


def test_metrics_parse_and_move_when_events_flow(shop, tmp_path):
    port = 19100 + uuid.uuid4().int % 800
    group = f"e2e-{uuid.uuid4().hex[:8]}"
    daemon.start_at_the_end(group, storedb.demo_config().kafka.topic_pattern)
    with storedb.fresh_database() as dsn:
        config = storedb.write_config(tmp_path / "daemon.yaml", store={"dsn": dsn}, triggers=None,
                                      kafka={"group_id": group},
                                      metrics={"port": port})
        proc = daemon.start(config, log=tmp_path / "daemon.log")
        url = f"http://127.0.0.1:{port}"
        try:
            daemon.wait_for(lambda: daemon.joined(proc), what="the daemon to join")
            assert httpx.get(f"{url}/healthz").json() == {"status": "ok"}
            before = scrape(url)
            for _ in range(3):
                shop.user()
            daemon.wait_for(lambda: scrape(url).get(("cdc_sync_field_changes_applied_total", ()), 0)
                            >= before.get(("cdc_sync_field_changes_applied_total", ()), 0) + 3,
                            timeout=60, what="the changes to be counted")
            after = scrape(url)
            assert after[("cdc_sync_records_consumed_total", ())] > before.get(
                ("cdc_sync_records_consumed_total", ()), 0)
            assert after[("cdc_sync_batch_seconds_count", ())] >= 1
            assert after[("cdc_sync_commit_to_applied_seconds_count", ())] >= 1
            assert any(name == "cdc_sync_consumer_lag" for name, _ in after)
            ready = httpx.get(f"{url}/readyz")
            assert ready.status_code == 200, ready.text
            assert ready.json()["checks"] == {"kafka": True, "postgres": True, "lag": True}
        finally:
            assert daemon.stop(proc) == 0, (tmp_path / "daemon.log").read_text()[-3000:]
