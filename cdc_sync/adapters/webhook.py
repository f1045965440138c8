"""HTTP to one ESP endpoint: a pooled httpx client whose every outcome is an `Answer`.

Timeouts and connection errors are answers too (no status, the error's kind), so the caller
decides retries from one value; nothing from httpx escapes this module.
"""

from __future__ import annotations

from collections.abc import Mapping

import httpx

from cdc_sync import __version__
from cdc_sync.core.webhooks import Answer

USER_AGENT = f"cdc-sync/{__version__}"


class WebhookClient:
    """Keep-alive connections to one destination, at most `connections` at once."""

    def __init__(self, timeout: float, connections: int, excerpt: int,
                 transport: httpx.BaseTransport | None = None) -> None:
        self.excerpt = excerpt
        self._http = httpx.Client(
            timeout=httpx.Timeout(timeout), transport=transport, follow_redirects=False,
            limits=httpx.Limits(max_connections=connections, max_keepalive_connections=connections),
            headers={"user-agent": USER_AGENT})

    def close(self) -> None:
        self._http.close()

    def post(self, url: str, body: bytes, headers: Mapping[str, str]) -> Answer:
        """POST the body; the answer's status, Retry-After and a bounded excerpt of its body."""
        try:
            response = self._http.post(url, content=body, headers=dict(headers))
        except httpx.TimeoutException as exc:
            return Answer(None, error=f"timeout ({type(exc).__name__})")
        except httpx.HTTPError as exc:  # connection refused or reset, protocol errors
            return Answer(None, error=f"no answer ({type(exc).__name__})")
        text = response.content[:self.excerpt].decode("utf-8", "replace") if self.excerpt else ""
        return Answer(response.status_code, response.headers.get("retry-after"), text)
