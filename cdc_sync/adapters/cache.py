"""The Redis profile cache: the one place that speaks to Redis."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

import redis
import structlog

from cdc_sync.core.errors import TransientError

log = structlog.get_logger("cdc_sync.cache")


def profile_key(profile_id: int) -> str:
    return f"cdc-sync:profile:{profile_id}"


def identifier_key(kind: str, value: str) -> str:
    """The key of an identifier's profile id: hashed, so no address appears in Redis's keys."""
    return f"cdc-sync:identifier:{hashlib.sha256(f'{kind}:{value}'.encode()).hexdigest()[:32]}"


class ProfileCache:
    """Cached profile documents with a short TTL, invalidated after every change."""

    def __init__(self, url: str, ttl_seconds: int) -> None:
        self._redis = redis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2)
        self.ttl = ttl_seconds

    def invalidate(self, profile_ids: Iterable[int]) -> None:
        """Drop cached profiles. A Redis outage is logged, not fatal: the TTL bounds staleness."""
        keys = [profile_key(pid) for pid in profile_ids]
        if not keys:
            return
        try:
            self._redis.delete(*keys)
        except redis.RedisError as exc:
            log.warning("cache invalidation failed; entries expire by TTL", error=str(exc),
                        profiles=len(keys), ttl_seconds=self.ttl)

    def get(self, profile_id: int) -> bytes | None:
        try:
            value = self._redis.get(profile_key(profile_id))
        except redis.RedisError as exc:
            raise TransientError(f"redis: {exc}") from exc
        return value if isinstance(value, bytes | None) else value.encode()

    def put(self, profile_id: int, document: bytes) -> None:
        try:
            self._redis.set(profile_key(profile_id), document, ex=self.ttl)
        except redis.RedisError as exc:
            raise TransientError(f"redis: {exc}") from exc

    def get_identifier(self, kind: str, value: str) -> int | None:
        """The profile id last seen for an identifier (the caller checks it against the profile)."""
        try:
            found = self._redis.get(identifier_key(kind, value))
        except redis.RedisError as exc:
            raise TransientError(f"redis: {exc}") from exc
        return None if found is None else int(found)

    def put_identifier(self, kind: str, value: str, profile_id: int) -> None:
        try:
            self._redis.set(identifier_key(kind, value), profile_id, ex=self.ttl)
        except redis.RedisError as exc:
            raise TransientError(f"redis: {exc}") from exc
