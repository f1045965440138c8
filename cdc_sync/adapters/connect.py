"""Kafka Connect REST API: the one place that speaks HTTP to Connect."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import httpx

from cdc_sync.core.config import without_password
from cdc_sync.core.errors import CdcSyncError, TransientError


class ConnectError(CdcSyncError):
    """Connect answered, but refused the request (bad config, unknown plugin…)."""


class ConnectClient:
    """A thin client for the endpoints cdc-sync uses: config, status, restart."""

    def __init__(self, base_url: str, timeout: float = 30.0,
                 transport: httpx.BaseTransport | None = None) -> None:
        self._http = httpx.Client(base_url=base_url, timeout=timeout, transport=transport)
        self.base_url = base_url

    def close(self) -> None:
        self._http.close()

    def _request(self, method: str, path: str, body: Any = None) -> Any:
        try:
            resp = self._http.request(method, path, json=body)
        except httpx.HTTPError as exc:
            where = without_password(self.base_url)
            raise TransientError(f"Kafka Connect at {where} unreachable: {exc}") from exc
        if resp.status_code == 404:
            return None
        if resp.status_code >= 500 or resp.status_code == 409:
            raise TransientError(f"Kafka Connect {method} {path}: HTTP {resp.status_code}")
        if resp.status_code >= 400:
            message = resp.json().get("message", resp.text) if resp.content else resp.reason_phrase
            raise ConnectError(f"Kafka Connect refused {method} {path}: {message}")
        return resp.json() if resp.content else None

    def get_config(self, name: str) -> dict[str, str] | None:
        """The connector's current config, or None when it does not exist."""
        result: dict[str, str] | None = self._request("GET", f"/connectors/{name}/config")
        return result

    def put_config(self, name: str, config: Mapping[str, str]) -> None:
        """Create or update a connector (idempotent)."""
        self._request("PUT", f"/connectors/{name}/config", dict(config))

    def status(self, name: str) -> dict[str, Any] | None:
        """The connector's status document (`connector.state`, `tasks[].state`), or None."""
        result: dict[str, Any] | None = self._request("GET", f"/connectors/{name}/status")
        return result

    def connectors(self) -> list[str]:
        """The names of every connector Connect runs."""
        return sorted(self._request("GET", "/connectors") or [])

    def restart(self, name: str) -> dict[str, Any] | None:
        """Restart the connector and its failed tasks (Connect 3.0+); None when it does not exist."""
        result: dict[str, Any] | None = self._request(
            "POST", f"/connectors/{name}/restart?includeTasks=true&onlyFailed=false")
        return result

    def pause(self, name: str) -> None:
        self._request("PUT", f"/connectors/{name}/pause")

    def resume(self, name: str) -> None:
        self._request("PUT", f"/connectors/{name}/resume")
