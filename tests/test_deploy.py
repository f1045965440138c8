"""The deployment files (Dockerfile, deploy/systemd, deploy/k8s, compose's cdc-sync services)
agree with the code: their commands parse as `cdc-sync` commands, their ports are the ones the
code listens on, and their probes ask paths the code serves. Static checks: no Docker engine,
no cluster."""

from __future__ import annotations

import configparser
import re
import shlex
import socket
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
import yaml

from cdc_sync.cli import build_parser
from cdc_sync.core.config import ApiConfig, Config, MetricsConfig
from cdc_sync.services.api import create_app
from cdc_sync.services.telemetry import CHECKS, Telemetry

ROOT = Path(__file__).resolve().parents[1]
API_PORT, METRICS_PORT = ApiConfig().port, MetricsConfig().port


def parses(argv: list[str]) -> str:
    """The subcommand a `cdc-sync` argument list runs (argparse exits on one that does not parse)."""
    args = build_parser().parse_args(argv)
    return str(args.func.__name__)


def daemon_paths() -> set[str]:
    """The paths the daemon's probe server answers: asked of a real one on a free port."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    cfg = Config(metrics=MetricsConfig(port=port), kafka={"bootstrap_servers": "127.0.0.1:1"})
    telemetry = Telemetry(cfg)
    telemetry.serve(poll_store=False)
    try:
        asked = ("/healthz", "/readyz", "/metrics", "/nothing")
        return {path for path in asked if httpx.get(f"http://127.0.0.1:{port}{path}").status_code != 404}
    finally:
        telemetry.close()


def api_paths() -> set[str]:
    return {getattr(r, "path", "") for r in create_app(Config(), open_pool=False).routes}


def test_the_probe_paths_exist():
    assert {"/healthz", "/readyz", "/metrics"} <= daemon_paths()
    assert {"/healthz", "/readyz", "/metrics"} <= api_paths()


def test_the_dockerfile_runs_as_a_user_and_exposes_the_code_s_ports():
    text = (ROOT / "Dockerfile").read_text()
    user = re.search(r"^USER\s+(\S+)", text, re.M)
    assert user and not user.group(1).startswith(("root", "0:", "0 ")) and user.group(1) != "0"
    assert re.search(r'^ENTRYPOINT \["cdc-sync"\]', text, re.M)
    cmd = re.search(r"^CMD (\[.*\])", text, re.M)
    assert cmd and parses(yaml.safe_load(cmd.group(1))) == "cmd_run"
    exposed = {int(p) for line in re.findall(r"^EXPOSE (.+)$", text, re.M) for p in line.split()}
    assert exposed == {API_PORT, METRICS_PORT}


UNITS = sorted((ROOT / "deploy" / "systemd").glob("*.service"))


@pytest.mark.parametrize("unit", UNITS, ids=lambda p: p.name)
def test_systemd_units_restart_on_failure_read_secrets_from_a_file_and_run_a_real_command(unit):
    ini = configparser.ConfigParser(interpolation=None, strict=False)
    ini.read_string(unit.read_text())
    service = ini["Service"]
    assert service["Restart"] == "on-failure"
    assert service["EnvironmentFile"].startswith("/etc/cdc-sync/")
    assert int(service["TimeoutStopSec"]) >= 20
    argv = shlex.split(service["ExecStart"])
    assert argv[0].endswith("/cdc-sync")
    assert parses(argv[1:]) in ("cmd_run", "cmd_api")
    assert "User" in service and service["User"] != "root"


def k8s_documents() -> list[dict]:
    return [d for f in sorted((ROOT / "deploy" / "k8s").glob("*.yaml"))
            for d in yaml.safe_load_all(f.read_text()) if d]


def test_k8s_probes_ports_and_commands_agree_with_the_code():
    deployments = [d for d in k8s_documents() if d["kind"] == "Deployment"]
    assert {d["metadata"]["name"] for d in deployments} == {"cdc-sync", "cdc-sync-api"}
    for d in deployments:
        pod = d["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        [container] = pod["containers"]
        command = parses(container["args"])
        want_port, paths = (API_PORT, api_paths()) if command == "cmd_api" else (METRICS_PORT, daemon_paths())
        ports = {p["name"]: p["containerPort"] for p in container["ports"]}
        for probe in ("livenessProbe", "readinessProbe"):
            get = container[probe]["httpGet"]
            assert ports[get["port"]] == want_port, (d["metadata"]["name"], probe)
            assert urlsplit(get["path"]).path in paths
        assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
        ready = urlsplit(container["readinessProbe"]["httpGet"]["path"])
        assert ready.path == "/readyz"
        if command == "cmd_run":  # a backlog must not hold rollouts and drains: see telemetry.py
            assert sorted(parse_qs(ready.query)["exclude"]) == ["lag", "watermark"]
            assert set(parse_qs(ready.query)["exclude"]) <= set(CHECKS)
        assert container["envFrom"][0]["secretRef"]["name"] == "cdc-sync-secrets"
    for budget in (d for d in k8s_documents() if d["kind"] == "PodDisruptionBudget"):
        assert budget["spec"]["unhealthyPodEvictionPolicy"] == "AlwaysAllow"  # unready pods may go
    kinds = {d["kind"] for d in k8s_documents()}
    assert {"ConfigMap", "Secret", "PodDisruptionBudget", "Service"} <= kinds
    config = next(d for d in k8s_documents() if d["kind"] == "ConfigMap")["data"]["cdc-sync.yaml"]
    parsed = yaml.safe_load(config)
    assert parsed["metrics"]["port"] == METRICS_PORT and parsed["api"]["port"] == API_PORT
    assert "partition" in (ROOT / "deploy" / "k8s" / "daemon.yaml").read_text()  # the scaling note


def test_compose_runs_the_daemon_the_api_and_the_receiver_with_the_code_s_ports():
    services = yaml.safe_load((ROOT / "compose" / "docker-compose.yml").read_text())["services"]
    assert parses(services["daemon"]["command"]) == "cmd_run"
    assert parses(services["api"]["command"]) == "cmd_api"
    assert parses(services["sink"]["command"]) == "cmd_sink"
    assert f"{METRICS_PORT}:{METRICS_PORT}" in services["daemon"]["ports"]
    assert f"{API_PORT}:{API_PORT}" in services["api"]["ports"]
    # the demo destination is http://127.0.0.1:9900/esp: the receiver shares the daemon's network
    assert services["sink"]["network_mode"] == "service:daemon" and "9900" in services["sink"]["command"]
    demo = yaml.safe_load((ROOT / "config" / "cdc-sync.yaml").read_text())
    assert demo["delivery"]["destinations"]["esp"]["url"].startswith("http://127.0.0.1:9900/")
