"""The daemon's readiness, by role and with checks left out (no services: Kafka is a closed port)."""

from __future__ import annotations

import socket

import httpx

from cdc_sync.core.config import Config, MetricsConfig
from cdc_sync.services.telemetry import Telemetry

NO_KAFKA = {"bootstrap_servers": "127.0.0.1:1"}


def served(consumes: bool = True) -> tuple[Telemetry, str]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    telemetry = Telemetry(Config(kafka=NO_KAFKA, metrics=MetricsConfig(port=port)), consumes=consumes)
    telemetry.serve(poll_store=False)
    return telemetry, f"http://127.0.0.1:{port}"


def test_a_dispatch_only_process_is_ready_on_postgres_alone_and_not_when_its_store_fails():
    telemetry, url = served(consumes=False)
    try:
        ready = httpx.get(f"{url}/readyz")
        assert ready.status_code == 200 and ready.json()["checks"] == {"postgres": True}
        telemetry.store_used("dispatch", False)
        down = httpx.get(f"{url}/readyz")
        assert down.status_code == 503 and down.json()["checks"] == {"postgres": False}
        telemetry.store_used("dispatch", True)
        assert httpx.get(f"{url}/readyz").status_code == 200
    finally:
        telemetry.close()


def test_a_consumer_is_unready_on_a_backlog_unless_lag_is_excluded():
    telemetry, url = served()
    try:
        telemetry.kafka_ok = True
        telemetry.partitions({("shop.public.users", 0): telemetry.cfg.api.max_lag_records + 1})
        backlog = httpx.get(f"{url}/readyz?exclude=kafka")
        assert backlog.status_code == 503 and backlog.json()["checks"] == {"postgres": True, "lag": False}
        excluded = httpx.get(f"{url}/readyz?exclude=kafka&exclude=lag&exclude=watermark")
        assert excluded.status_code == 200 and excluded.json()["checks"] == {"postgres": True}
        assert excluded.json()["excluded"] == ["kafka", "lag", "watermark"]
    finally:
        telemetry.close()


def test_an_unreachable_broker_is_unready_and_an_unknown_check_is_a_bad_request():
    telemetry, url = served()
    try:
        ready = httpx.get(f"{url}/readyz")
        assert ready.status_code == 503 and ready.json()["checks"]["kafka"] is False
        bad = httpx.get(f"{url}/readyz?exclude=lags")
        assert bad.status_code == 400 and bad.json()["unknown_checks"] == ["lags"]
    finally:
        telemetry.close()


def test_one_loop_s_store_failure_is_not_hidden_by_another_s_success():
    telemetry = Telemetry(Config(kafka=NO_KAFKA))
    telemetry.store_used("sync", False)
    telemetry.store_used("dispatch", True)
    assert telemetry.store_ok is False
