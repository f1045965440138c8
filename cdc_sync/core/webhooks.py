"""Stage 6, deliver, the decisions: Standard Webhooks signatures, what an answer means, and
when to try again. Pure: time and randomness come in as values.

Signatures follow the Standard Webhooks spec: the secret is `whsec_` + base64 of the key; the
signed content is `{webhook-id}.{webhook-timestamp}.{body}`; the signature is `v1,` + base64
of its HMAC-SHA256.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from enum import StrEnum
from typing import Final

SECRET_PREFIX: Final = "whsec_"
RETRIED_STATUSES: Final = frozenset({408, 425, 429, 500, 502, 503, 504})
TOLERANCE_S: Final = 300  # a receiver refuses a timestamp further than this from its clock


def secret_key(secret: str) -> bytes:
    """The HMAC key of a `whsec_…` secret; ValueError (never quoting it) when it is not one."""
    text = secret.strip()
    if not text.startswith(SECRET_PREFIX):
        raise ValueError("a signing secret starts with whsec_ followed by base64")
    try:
        key = base64.b64decode(text[len(SECRET_PREFIX):], validate=True)
    except binascii.Error:
        raise ValueError("the signing secret after whsec_ is not base64") from None
    if len(key) < 16:
        raise ValueError("the signing secret is shorter than 16 bytes")
    return key


def sign(key: bytes, msg_id: str, timestamp: int, body: bytes) -> str:
    """The `webhook-signature` header value for one attempt."""
    content = f"{msg_id}.{timestamp}.".encode() + body
    return "v1," + base64.b64encode(hmac.new(key, content, hashlib.sha256).digest()).decode()


def headers(key: bytes, msg_id: str, timestamp: int, body: bytes) -> dict[str, str]:
    """Every header cdc-sync sets on a delivery attempt: the id is stable across retries, the
    timestamp and signature are fresh per attempt."""
    return {"webhook-id": msg_id, "webhook-timestamp": str(timestamp),
            "webhook-signature": sign(key, msg_id, timestamp, body), "idempotency-key": msg_id,
            "content-type": "application/json"}


def verify(keys: list[bytes], msg_id: str, timestamp: str, signatures: str, body: bytes, now: float,
           tolerance_s: int = TOLERANCE_S) -> bool:
    """Whether a request's headers carry a valid v1 signature by any of `keys`, made recently."""
    try:
        at = int(timestamp)
    except ValueError:
        return False
    if abs(now - at) > tolerance_s:
        return False
    wanted = {sign(key, msg_id, at, body) for key in keys}
    given = signatures.split()  # several space-separated `v1,…` entries are allowed
    return any(hmac.compare_digest(g, w) for g in given for w in wanted)


class Outcome(StrEnum):
    SENT = "sent"
    RETRY = "retry"  # a transient failure: try again later
    DEAD = "dead"  # the endpoint refused this message for good
    GONE = "gone"  # 410: the endpoint is gone; the destination is disabled


@dataclass(frozen=True, slots=True)
class Answer:
    """What one attempt got: an HTTP status (None: no answer, `error` says why)."""

    status: int | None
    retry_after: str | None = None
    body: str = ""
    error: str | None = None


def outcome(answer: Answer) -> Outcome:
    """2xx is sent; timeouts, connection errors and the retried statuses are tried again; 410
    disables the destination; anything else (3xx, other 4xx and 5xx) is dead at once."""
    status = answer.status
    if status is None or status in RETRIED_STATUSES:
        return Outcome.RETRY
    if 200 <= status < 300:
        return Outcome.SENT
    if status == 410:
        return Outcome.GONE
    return Outcome.DEAD


def counts_against_circuit(answer: Answer) -> bool:
    """A failure of the endpoint itself (no answer, or a 5xx or 408); a 429 is the endpoint
    asking us to slow down, which the retry delay and the destination's pause answer."""
    return answer.status is None or answer.status == 408 or answer.status >= 500


def retry_after_s(value: str | None, now: float) -> float | None:
    """Seconds a Retry-After header asks to wait: delta seconds or an HTTP date; None when absent
    or unreadable."""
    if not value:
        return None
    text = value.strip()
    if text.isdigit():
        return float(text)
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        return None
    return max(0.0, when.timestamp() - now)


def backoff_s(attempt: int, initial: float, cap: float, draw: float) -> float:
    """Full jitter: a uniform draw (`draw` in [0, 1)) up to min(cap, initial * 2^(attempt-1))."""
    ceiling = min(cap, initial * 2 ** min(max(attempt - 1, 0), 60))
    return float(draw * ceiling)


def next_try_s(answer: Answer, attempt: int, initial: float, cap: float, retry_after_max: float,
               draw: float, now: float) -> float:
    """Seconds until the next attempt after a retried failure: the server's Retry-After when it
    gave one (clamped to [0, retry_after_max]), else the jittered backoff."""
    asked = retry_after_s(answer.retry_after, now)
    if asked is not None:
        return min(max(asked, 0.0), retry_after_max)
    return backoff_s(attempt, initial, cap, draw)
