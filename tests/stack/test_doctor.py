"""`cdc-sync doctor` and `cdc-sync connectors status|restart` on the real stack.

This test pauses the CRM connector for a few seconds: CRM changes made meanwhile wait in the
binlog, and are streamed once it runs again."""

from __future__ import annotations

import httpx
import pytest

from cdc_sync.adapters import store as store_mod
from tests import storedb
from tests.stack import daemon
from tests.stack.delivery import cli

pytestmark = pytest.mark.stack
CONNECT = storedb.env("CONNECT_URL", "http://127.0.0.1:8083")


@pytest.fixture
def config(tmp_path):
    with storedb.fresh_database() as dsn:
        store_mod.migrate(store_mod.connect(dsn))
        yield storedb.write_config(tmp_path / "doctor.yaml", store={"dsn": dsn})


def state(name: str) -> str:
    return str(httpx.get(f"{CONNECT}/connectors/{name}/status").json()["connector"]["state"])


def test_doctor_passes_on_the_healthy_stack_and_fails_with_a_paused_connector(config):
    healthy = cli(config, "doctor", "--max-lag", str(10**12))  # a new group: it has read nothing yet
    assert healthy.returncode == 0, healthy.stdout + healthy.stderr
    for check in ("OK    connector shop-postgres", "OK    connector crm-mariadb", "OK    slot ",
                  "OK    dead letters", "OK    destinations"):
        assert check in healthy.stdout, healthy.stdout
    httpx.put(f"{CONNECT}/connectors/crm-mariadb/pause").raise_for_status()
    try:
        daemon.wait_for(lambda: state("crm-mariadb") == "PAUSED", what="the connector to pause")
        sick = cli(config, "doctor", "--max-lag", str(10**12))
        assert sick.returncode == 1
        assert "FAIL  connector crm-mariadb" in sick.stdout and "cdc-sync connectors restart crm-mariadb" \
            in sick.stdout, sick.stdout
        status = cli(config, "connectors", "status", "crm-mariadb")
        assert status.returncode == 1 and "PAUSED" in status.stdout
        restarted = cli(config, "connectors", "restart", "crm-mariadb")
        assert restarted.returncode == 0 and "RUNNING" in restarted.stdout, restarted.stderr
    finally:
        httpx.put(f"{CONNECT}/connectors/crm-mariadb/resume")
    daemon.wait_for(lambda: state("crm-mariadb") == "RUNNING", what="the connector to run again")
    assert cli(config, "connectors", "status").returncode == 0
    assert cli(config, "doctor", "--max-lag", str(10**12)).returncode == 0


def test_doctor_fails_on_lag_and_says_what_to_do(config):
    lagging = cli(config, "doctor", "--max-lag", "1")
    assert lagging.returncode == 1 and "FAIL  consumer lag" in lagging.stdout
    assert "-> is `cdc-sync run` running" in lagging.stdout
