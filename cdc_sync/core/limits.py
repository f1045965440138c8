"""How hard one destination is pushed: a token bucket for its rate, a circuit breaker for its
health. Plain state machines; the caller passes the time (monotonic seconds) and holds a lock.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


@dataclass(slots=True)
class TokenBucket:
    """`rate` tokens a second, at most `burst` saved up."""

    rate: float
    burst: int
    tokens: float = -1.0
    at: float = 0.0

    def take(self, now: float) -> float:
        """Take a token: 0 when one was there, else the seconds until one is (nothing taken)."""
        if self.tokens < 0:  # first use: a full bucket
            self.tokens, self.at = float(self.burst), now
        self.tokens = min(float(self.burst), self.tokens + (now - self.at) * self.rate)
        self.at = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return 0.0
        return (1.0 - self.tokens) / self.rate


class CircuitState(StrEnum):
    CLOSED = "closed"  # sending
    OPEN = "open"  # not sending until `until`
    PROBING = "half_open"  # one attempt is out to see whether the endpoint is back


@dataclass(slots=True)
class CircuitBreaker:
    """Opens after `threshold` failures in a row; after `open_for` lets one probe through; a
    failed probe opens it again for twice as long (up to `open_for_max`), a good one closes it."""

    threshold: int
    open_for: float
    open_for_max: float
    state: CircuitState = CircuitState.CLOSED
    failures: int = 0
    until: float = 0.0
    current_open_for: float = 0.0

    def allow(self, now: float) -> float:
        """0 when an attempt may start now (in half-open: this one is the probe), else the
        seconds to wait before asking again."""
        if self.state is CircuitState.CLOSED:
            return 0.0
        if self.state is CircuitState.OPEN and now >= self.until:
            self.state = CircuitState.PROBING
            return 0.0
        if self.state is CircuitState.PROBING:
            return min(1.0, self.open_for)  # the probe's answer decides
        return self.until - now

    def record(self, ok: bool, now: float) -> CircuitState | None:
        """Note an attempt's result; returns the new state when it changed."""
        before = self.state
        if ok:
            self.state, self.failures, self.current_open_for = CircuitState.CLOSED, 0, 0.0
        elif self.state is CircuitState.PROBING:
            self.current_open_for = min(self.open_for_max, self.current_open_for * 2)
            self.state, self.until = CircuitState.OPEN, now + self.current_open_for
        elif self.state is CircuitState.CLOSED:  # open: attempts started before it opened
            self.failures += 1
            if self.failures >= self.threshold:
                self.current_open_for = self.open_for
                self.state, self.until = CircuitState.OPEN, now + self.open_for
        return self.state if self.state is not before else None
