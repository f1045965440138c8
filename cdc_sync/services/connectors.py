"""Apply connector files to Kafka Connect idempotently and wait until each one runs."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from cdc_sync.adapters.connect import ConnectClient
from cdc_sync.core.connectors import ConnectorSpec, expand, parse_spec
from cdc_sync.core.errors import CdcSyncError, ConfigError


class ConnectorNotRunning(CdcSyncError):
    """A connector or one of its tasks did not reach RUNNING in time."""


@dataclass(frozen=True, slots=True)
class Applied:
    """What applying one connector did, and the state it ended in."""

    name: str
    changed: bool
    state: str
    tasks: tuple[str, ...]


def load_specs(paths: Sequence[Path], env: Mapping[str, str]) -> list[ConnectorSpec]:
    """Read and expand every file first: one bad file means nothing is sent."""
    specs = []
    for path in paths:
        try:
            text = path.read_text()
        except OSError as exc:
            raise ConfigError(f"{path}: cannot read ({exc.strerror})") from None
        name, raw = parse_spec(text, str(path))
        specs.append(expand(name, raw, env, str(path)))
    return specs


def apply(specs: Sequence[ConnectorSpec], client: ConnectClient, timeout: float = 60.0,
          sleep: Callable[[float], None] = time.sleep) -> list[Applied]:
    """PUT each config (only when it differs), then wait until connector and tasks are RUNNING."""
    changed = {}
    for spec in specs:
        current = client.get_config(spec.name)
        wanted = {**spec.config, "name": spec.name}
        changed[spec.name] = current != wanted
        if changed[spec.name]:
            client.put_config(spec.name, spec.config)
    return [wait_running(client, spec.name, changed[spec.name], timeout, sleep) for spec in specs]


def wait_running(client: ConnectClient, name: str, changed: bool, timeout: float,
                 sleep: Callable[[float], None]) -> Applied:
    deadline = time.monotonic() + timeout
    state, tasks = "UNKNOWN", ()
    while time.monotonic() < deadline:
        status = client.status(name) or {}
        state = status.get("connector", {}).get("state", "UNKNOWN")
        tasks = tuple(t.get("state", "UNKNOWN") for t in status.get("tasks", []))
        if state == "RUNNING" and tasks and all(t == "RUNNING" for t in tasks):
            return Applied(name, changed, state, tasks)
        if state == "FAILED" or "FAILED" in tasks:
            raise ConnectorNotRunning(f"connector {name} FAILED: {first_trace_line(status)}")
        sleep(0.5)
    raise ConnectorNotRunning(
        f"connector {name} not RUNNING after {timeout:.0f}s (connector {state}, tasks {list(tasks)})")


def first_trace_line(status: Mapping[str, object]) -> str:
    """The exception line of a failed connector or task, which says why it failed."""
    parts = [status.get("connector"), *list(status.get("tasks") or [])]  # type: ignore[call-overload]
    for part in parts:
        if isinstance(part, dict) and part.get("trace"):
            return str(part["trace"]).splitlines()[0]
    return "no trace given"
