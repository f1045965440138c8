"""`make connectors` against the real Connect worker: idempotent, RUNNING."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from cdc_sync.adapters.connect import ConnectClient

pytestmark = pytest.mark.stack
ROOT = Path(__file__).resolve().parents[2]


def apply_connectors() -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "cdc_sync.cli", "connectors", "apply",
                           *map(str, sorted((ROOT / "connectors").glob("*.json")))],
                          capture_output=True, text=True, timeout=180, env=os.environ)


def test_applying_twice_leaves_connectors_running_with_unchanged_config():
    client = ConnectClient(os.environ.get("CONNECT_URL", "http://127.0.0.1:8083"))
    first = apply_connectors()
    assert first.returncode == 0, first.stderr
    configs = {n: client.get_config(n) for n in ("shop-postgres", "crm-mariadb")}
    second = apply_connectors()
    assert second.returncode == 0, second.stderr
    assert second.stdout.count("unchanged") == 2 and second.stdout.count("RUNNING") == 4
    assert {n: client.get_config(n) for n in configs} == configs
    for name in configs:
        status = client.status(name)
        assert status["connector"]["state"] == "RUNNING"
        assert [t["state"] for t in status["tasks"]] == ["RUNNING"]
    client.close()
