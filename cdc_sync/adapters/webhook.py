"""HTTP to one ESP endpoint: a pooled httpx client whose every outcome is an `Answer`.

Timeouts and connection errors are answers too (no status, the error's kind), so the caller
decides retries from one value; nothing from httpx escapes this module.
"""

from __future__ import annotations

import time
from collections.abc import Mapping

import httpx

from cdc_sync import __version__
from cdc_sync.core.webhooks import Answer

USER_AGENT = f"cdc-sync/{__version__}"


class WebhookClient:
    """Keep-alive connections to one destination, at most `connections` at once."""

    def __init__(self, timeout: float, connections: int, excerpt: int,
                 transport: httpx.BaseTransport | None = None) -> None:
        self.excerpt, self.timeout = excerpt, timeout
        self._http = httpx.Client(
            timeout=httpx.Timeout(timeout), transport=transport, follow_redirects=False,
            limits=httpx.Limits(max_connections=connections, max_keepalive_connections=connections),
            headers={"user-agent": USER_AGENT})

    def close(self) -> None:
        self._http.close()

    def post(self, url: str, body: bytes, headers: Mapping[str, str]) -> Answer:
        """POST the body; the answer's status, Retry-After and a bounded excerpt of its body.
        An answer still trickling in at twice the timeout is abandoned, so an attempt ends well
        within the lease that makes its delivery ours (httpx's timeouts bound each read only)."""
        started = time.monotonic()
        try:
            with self._http.stream("POST", url, content=body, headers=dict(headers)) as response:
                excerpt = self._excerpt(response, started + 2 * self.timeout)
        except httpx.TimeoutException as exc:
            return Answer(None, error=f"timeout ({type(exc).__name__})")
        except httpx.HTTPError as exc:  # connection refused or reset, protocol errors
            return Answer(None, error=f"no answer ({type(exc).__name__})")
        return Answer(response.status_code, response.headers.get("retry-after"), excerpt)

    def _excerpt(self, response: httpx.Response, deadline: float) -> str:
        """Read the answer to its end (so the connection is kept) but no longer than the
        deadline; a failed answer's first `excerpt` bytes are kept."""
        kept = b""
        for chunk in response.iter_bytes():
            if len(kept) < self.excerpt:
                kept += chunk
            if time.monotonic() > deadline:
                break
        return "" if response.is_success else kept[:self.excerpt].decode("utf-8", "replace")
