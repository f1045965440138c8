"""Connector files: ${ENV} placeholders are filled, or refused before anything is sent."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from cdc_sync.adapters.connect import ConnectClient
from cdc_sync.core.connectors import expand, parse_spec
from cdc_sync.core.errors import ConfigError
from cdc_sync.services.connectors import apply, load_specs

ROOT = Path(__file__).resolve().parents[1]
CONNECTOR_FILES = sorted((ROOT / "connectors").glob("*.json"))


def recording_client(requests: list[httpx.Request]) -> ConnectClient:
    def handle(request: httpx.Request) -> httpx.Response:
        requests.append(request)
        return httpx.Response(404)

    return ConnectClient("http://connect.test", transport=httpx.MockTransport(handle))


def test_placeholders_are_filled_from_the_environment():
    spec = expand("c", {"database.hostname": "${HOST}", "x": "a-${N}-b"}, {"HOST": "db", "N": "7"}, "f")
    assert dict(spec.config) == {"database.hostname": "db", "x": "a-7-b"}


def test_missing_variable_names_the_key_and_the_variable():
    with pytest.raises(ConfigError) as err:
        expand("c", {"database.password": "${DB_PASSWORD}"}, {}, "connectors/x.json")
    assert "connectors/x.json" in str(err.value)
    assert "config.database.password needs ${DB_PASSWORD}" in str(err.value)


def test_missing_variable_is_refused_before_any_request_is_sent(tmp_path):
    good = tmp_path / "a.json"
    good.write_text(json.dumps({"name": "a", "config": {"k": "v"}}))
    bad = tmp_path / "b.json"
    bad.write_text(json.dumps({"name": "b", "config": {"k": "${NOT_SET_ANYWHERE}"}}))
    requests: list[httpx.Request] = []
    client = recording_client(requests)
    with pytest.raises(ConfigError, match="NOT_SET_ANYWHERE"):
        apply(load_specs([good, bad], env={}), client)
    assert requests == []


def test_cli_refuses_missing_variable_with_exit_code_2(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "CDC_DB_PASSWORD"}
    res = subprocess.run([sys.executable, "-m", "cdc_sync.cli", "connectors", "apply",
                          "--connect-url", "http://127.0.0.1:9", *map(str, CONNECTOR_FILES)],
                         capture_output=True, text=True, env=env, timeout=60)
    assert res.returncode == 2
    assert "config.database.password needs ${CDC_DB_PASSWORD}" in res.stderr
    assert "Traceback" not in res.stderr


@pytest.mark.parametrize("text, why", [
    ("{", "not valid JSON"),
    ('{"config": {"a": "b"}}', "name: a non-empty string is required"),
    ('{"name": "x", "config": {"tasks.max": 1}}', "config.tasks.max: Connect wants string values"),
])
def test_malformed_connector_file_is_refused_with_the_key(text, why):
    with pytest.raises(ConfigError, match=why):
        parse_spec(text, "f.json")


@pytest.mark.parametrize("path", CONNECTOR_FILES, ids=lambda p: p.name)
def test_shipped_connectors_use_the_documented_essentials(path):
    name, config = parse_spec(path.read_text(), str(path))
    assert config["value.converter.schemas.enable"] == "false"
    assert config["decimal.handling.mode"] == "string"
    assert config["tombstones.on.delete"] == "true"
    assert int(config["heartbeat.interval.ms"]) > 0
    assert int(config["poll.interval.ms"]) <= 100
    assert "password" not in json.dumps({k: v for k, v in config.items() if "${" not in v})
