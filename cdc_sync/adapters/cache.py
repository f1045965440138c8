"""The Redis profile cache: the one place that speaks to Redis.

Keys live under `cdc-sync:<namespace>:`, where the namespace names the profile store (see
ProfileStore.cache_namespace): stores sharing one Redis database never read each other's
documents, and a daemon and an API on the same store agree whatever DSN each uses.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Iterable

import redis
import structlog

from cdc_sync.core.errors import TransientError

log = structlog.get_logger("cdc_sync.cache")


class ProfileCache:
    """Cached profile documents with a short TTL, invalidated after every change.

    An invalidation Redis refuses is kept and tried again (with the next one, or `flush()`), so a
    document that went stale during an outage is dropped when Redis is back, not at its TTL. Past
    `max_pending` profiles, every document of the store is dropped instead."""

    def __init__(self, url: str, ttl_seconds: int, namespace: str, max_pending: int = 100_000,
                 retry_s: float = 2.0) -> None:
        self._redis = redis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2)
        self.ttl, self.namespace = ttl_seconds, namespace
        self.prefix = f"cdc-sync:{namespace}:"
        self.max_pending, self.retry_s = max_pending, retry_s
        self._lock = threading.Lock()
        self._pending: set[int] = set()
        self._drop_all = False  # too many pending: drop every document of this store
        self._failed_at: float | None = None  # the last refusal, while the outage lasts

    def profile_key(self, profile_id: int) -> str:
        return f"{self.prefix}profile:{profile_id}"

    def identifier_key(self, kind: str, value: str) -> str:
        """An identifier's key: hashed, so no address appears in Redis's keys."""
        return f"{self.prefix}identifier:{hashlib.sha256(f'{kind}:{value}'.encode()).hexdigest()[:32]}"

    def alias_key(self, profile_id: int) -> str:
        return f"{self.prefix}alias:{profile_id}"

    # ---- invalidation (the daemon, and commands that change profiles)

    @property
    def pending(self) -> int:
        with self._lock:
            return len(self._pending) + self._drop_all

    def invalidate(self, profile_ids: Iterable[int]) -> None:
        """Drop cached profiles (the daemon). A Redis outage is logged, not fatal: they are kept
        and dropped with a later call, or `flush()`."""
        with self._lock:
            self._pending.update(profile_ids)
            if len(self._pending) > self.max_pending:
                self._pending.clear()
                self._drop_all = True
        self.flush()

    def flush(self) -> bool:
        """Try the pending invalidations (at most every `retry_s` while Redis refuses them);
        True when none is left."""
        with self._lock:
            if not self._pending and not self._drop_all:
                return True
            if self._failed_at is not None and time.monotonic() - self._failed_at < self.retry_s:
                return False
            try:
                self._delete()
            except redis.RedisError as exc:
                if self._failed_at is None:
                    log.warning("cache invalidation failed; kept and tried again until Redis answers",
                                error=str(exc), profiles=len(self._pending), all=self._drop_all)
                self._failed_at = time.monotonic()
                return False
            if self._failed_at is not None:
                log.info("cache invalidations caught up after an outage")
            self._failed_at = None
            return True

    def _delete(self) -> None:
        """Delete what is pending (the lock is held); cleared only once Redis took it."""
        if self._drop_all:
            for keys in _batched(self._redis.scan_iter(match=f"{self.prefix}profile:*", count=1000)):
                self._redis.delete(*keys)
            self._drop_all = False
        pending = sorted(self._pending)
        for i in range(0, len(pending), 1000):
            self._redis.delete(*(self.profile_key(pid) for pid in pending[i:i + 1000]))
        self._pending.clear()

    def delete(self, profile_ids: Iterable[int]) -> None:
        """Drop cached profiles now, or raise TransientError (a caller that cannot wait: the
        API, a one-shot command)."""
        keys = [self.profile_key(pid) for pid in profile_ids]
        try:
            if keys:
                self._redis.delete(*keys)
        except redis.RedisError as exc:
            raise TransientError(f"redis: {exc}") from exc

    # ---- documents (the API)

    def get(self, profile_id: int) -> bytes | None:
        return self._get(self.profile_key(profile_id))

    def put(self, profile_id: int, document: bytes) -> None:
        self._set(self.profile_key(profile_id), document)

    def get_identifier(self, kind: str, value: str) -> int | None:
        """The profile id last seen for an identifier (the caller checks it against the profile)."""
        found = self._get(self.identifier_key(kind, value))
        return None if found is None else int(found)

    def put_identifier(self, kind: str, value: str, profile_id: int) -> None:
        self._set(self.identifier_key(kind, value), profile_id)

    def get_or_alias(self, profile_id: int) -> tuple[bytes | None, int | None]:
        """In one round trip: the id's document, and the survivor last seen for it if it was
        merged (the caller checks the survivor's aliases)."""
        try:
            doc, alias = self._redis.mget(self.profile_key(profile_id), self.alias_key(profile_id))
        except redis.RedisError as exc:
            raise TransientError(f"redis: {exc}") from exc
        return doc, None if alias is None else int(alias)

    def put_alias(self, merged_id: int, survivor: int) -> None:
        self._set(self.alias_key(merged_id), survivor)

    def _get(self, key: str) -> bytes | None:
        try:
            value = self._redis.get(key)
        except redis.RedisError as exc:
            raise TransientError(f"redis: {exc}") from exc
        return value if isinstance(value, bytes | None) else value.encode()

    def _set(self, key: str, value: bytes | int) -> None:
        try:
            self._redis.set(key, value, ex=self.ttl)
        except redis.RedisError as exc:
            raise TransientError(f"redis: {exc}") from exc


def _batched(keys: Iterable[bytes], size: int = 1000) -> Iterable[list[bytes]]:
    batch: list[bytes] = []
    for key in keys:
        batch.append(key)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch
