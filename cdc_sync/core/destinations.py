"""The `delivery:` section: where triggers go, and how carefully they are sent.

A destination is an ESP webhook endpoint: its URL, its signing secret (named, never inline:
an environment variable or a file), the trigger types it takes, and its limits. Adding one
needs no code (docs/delivery.md).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from cdc_sync.core.bodies import FORMATTERS
from cdc_sync.core.rules import Duration

TRIGGER_TYPES = ("cart.abandoned", "profile.updated")
FORMATS = tuple(FORMATTERS)


class _Part(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class RateLimit(_Part):
    """A token bucket: `per_second` on average, `burst` at once (per dispatcher process)."""

    per_second: float = Field(default=50.0, gt=0)
    burst: int = Field(default=100, gt=0)


class Retry(_Part):
    """Exponential backoff with full jitter: attempt n waits a random time up to
    min(max, initial * 2^(n-1)); a Retry-After header is honoured, clamped to retry_after_max."""

    initial: Duration = 1.0
    max: Duration = 300.0
    retry_after_max: Duration = 3600.0


class Circuit(_Part):
    """After `failures` failed attempts in a row, stop sending for `open_for` (doubling while
    probes fail, up to `open_for_max`), then let one probe through."""

    failures: int = Field(default=5, gt=0)
    open_for: Duration = 10.0
    open_for_max: Duration = 300.0


class Destination(_Part):
    """One webhook endpoint."""

    url: str = Field(pattern=r"^https?://")
    secret_env: str | None = None  # an environment variable holding the `whsec_…` secret
    secret_file: str | None = None  # or a file holding it
    types: list[str] = list(TRIGGER_TYPES)
    format: str = "standard"
    timeout: Duration = 10.0
    concurrency: int = Field(default=4, gt=0, le=64)
    rate_limit: RateLimit = RateLimit()
    retry: Retry = Retry()
    circuit: Circuit = Circuit()
    max_retry_age: Duration = 86400.0
    # Extra request headers (an ESP's API key), each value read from the environment variable named.
    headers_env: dict[str, str] = {}

    @field_validator("types")
    @classmethod
    def _known_types(cls, types: list[str]) -> list[str]:
        unknown = sorted(set(types) - set(TRIGGER_TYPES))
        if unknown:
            raise ValueError(f"unknown trigger type {unknown[0]!r} (known: {', '.join(TRIGGER_TYPES)})")
        if not types:
            raise ValueError("a destination takes at least one trigger type")
        return types

    @field_validator("format")
    @classmethod
    def _known_format(cls, name: str) -> str:
        if name not in FORMATS:
            raise ValueError(f"unknown body format {name!r} (known: {', '.join(FORMATS)})")
        return name

    @field_validator("timeout", "max_retry_age")
    @classmethod
    def _positive(cls, seconds: float) -> float:
        if seconds <= 0:
            raise ValueError("must be above zero")
        return seconds

    @model_validator(mode="after")
    def _one_secret(self) -> Destination:
        if (self.secret_env is None) == (self.secret_file is None):
            raise ValueError("give the signing secret as exactly one of secret_env (an environment "
                             "variable's name) or secret_file (a path); never inline")
        return self

    @property
    def lease(self) -> float:
        """How long a claimed delivery is ours: longer than an attempt can last (connect, write,
        and reading the answer until twice the timeout, plus the read in progress then)."""
        return self.timeout * 4 + 5.0


class DeliveryConfig(_Part):
    """Destinations by name, and how often an idle dispatcher looks for due deliveries."""

    destinations: dict[str, Destination] = {}
    poll_interval: Duration = 1.0

    @field_validator("poll_interval")
    @classmethod
    def _not_zero(cls, seconds: float) -> float:
        if seconds < 0.01:
            raise ValueError("at least 10ms: an idle dispatcher would spin on the store")
        return seconds

    response_excerpt: int = Field(default=512, ge=0, le=65536)  # bytes of a failed answer kept

    @field_validator("destinations")
    @classmethod
    def _names(cls, destinations: dict[str, Destination]) -> dict[str, Destination]:
        for name in destinations:
            if not name or not all(c.isalnum() or c in "-_" for c in name):
                raise ValueError(f"destination name {name!r}: letters, digits, - and _ only")
        return destinations

    def routes(self) -> dict[str, list[str]]:
        """Trigger type -> the destinations that take it."""
        out: dict[str, list[str]] = {}
        for name, d in sorted(self.destinations.items()):
            for type_ in d.types:
                out.setdefault(type_, []).append(name)
        return out


@dataclass(frozen=True, slots=True)
class Credentials:
    """What signs and authenticates a destination's requests, read once at start (settings.py)."""

    key: bytes
    headers: Mapping[str, str]
